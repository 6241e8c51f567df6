"""Command runners (issue 15): a side role that runs only the saved commands assigned to it.

Each refusal a command runner meets is shown here with its audit entry (the full route ×
caller table, with a command-runner column, is authz_matrix.yaml); then what it may do: run an
assigned saved command (an ordinary ``run``, at most once per id, recording which saved command
and version it was), read the devices and its own commands only; and what administrators do
to saved commands (edit keeps assignments, remove drops them).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from jcstate.cli import main
from jcstate.secret import Secret
from jcstate.server.roles import ALL_ROLES, COMMAND_RUNNER, ROLES, allows

POLICY = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: base}\nspec: {}\n"


class Caller:
    """Raw HTTP as one token, so tests see status codes, not exceptions."""

    def __init__(self, server: Any, token: str):
        self.url, self.headers = server.url, {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        resp = requests.request(
            method, self.url + path, json=body, params=params, headers=self.headers, timeout=10
        )
        return resp.status_code, resp.json()


def _runner(server: Any, name: str = "helpdesk") -> tuple[str, Caller]:
    row, plain = server.ctx.store.create_token(name, COMMAND_RUNNER, None)
    return row["id"], Caller(server, plain)


def _audit(server: Any, actor: str) -> list[dict[str, Any]]:
    return [a for a in server.ctx.store.list_audit() if a["actor"] == actor]


def test_the_side_role_never_passes_a_rung():
    for needed in ROLES:
        assert not allows(COMMAND_RUNNER, needed)
        assert allows(COMMAND_RUNNER, needed, (COMMAND_RUNNER,))
    assert allows("manager", "read-only") and not allows("read-only", "manager")
    with pytest.raises(ValueError):
        allows("administrator", COMMAND_RUNNER)  # "at least command-runner" has no meaning
    assert COMMAND_RUNNER in ALL_ROLES and COMMAND_RUNNER not in ROLES


def test_each_refusal_of_a_command_runner_is_audited(sqlite_server):
    server = sqlite_server
    admin = Caller(server, server.token("administrator"))
    _, device_id = server.device("web1")
    server.ctx.store.set_recovery_key(
        device_id, "", server.ctx.vault.seal("recovery", f"{device_id}/", Secret("1111-2222"))
    )
    assert admin("POST", "/api/v1/saved-commands", {"name": "uptime", "argv": ["uptime"]})[0] == 201
    assert admin("POST", "/api/v1/saved-commands", {"name": "reboot", "argv": ["reboot"]})[0] == 201
    runner_id, runner = _runner(server)
    assert admin("PUT", f"/api/v1/saved-commands/uptime/assignments/token/{runner_id}")[0] == 200
    dev = f"/api/v1/devices/{device_id}"
    refused = {
        "arbitrary run": ("POST", f"{dev}/commands/run", {"run": {"argv": ["id"]}}),
        "lock": ("POST", f"{dev}/commands/lock", {}),
        "restart": ("POST", f"{dev}/commands/restart", {}),
        "shutdown": ("POST", f"{dev}/commands/shutdown", {}),
        "erase": ("POST", f"{dev}/commands/erase", {"confirm": device_id}),
        "recovery key": ("GET", f"{dev}/recovery-key", None),
        "unassigned saved command": ("POST", f"{dev}/commands/saved/reboot", {}),
        "missing saved command": ("POST", f"{dev}/commands/saved/nope", {}),
        "push": ("POST", "/api/v1/revisions", {"files": {"base.yaml": POLICY}}),
        "labels": ("PATCH", f"{dev}/labels", {"add": {"a": "b"}}),
        "bulk run": ("POST", "/api/v1/commands/batch/run", {"all": True, "run": {"argv": ["id"]}}),
        "token": ("POST", "/api/v1/tokens", {"role": "administrator"}),
        "assign itself": ("PUT", f"/api/v1/saved-commands/reboot/assignments/token/{runner_id}"),
        "edit a saved command": ("PATCH", "/api/v1/saved-commands/uptime", {"argv": ["sh"]}),
        "document": ("GET", f"{dev}/document", None),
        "audit": ("GET", "/api/v1/audit", None),
    }
    for what, (method, path, *body) in refused.items():
        status, answer = runner(method, path, *body)
        assert status == 403, (what, status, answer)
    trail = _audit(server, f"token:{runner_id}")
    assert len(trail) == len(refused)
    assert {a["outcome"] for a in trail} == {"denied"}
    assert all(a["role"] == COMMAND_RUNNER for a in trail)
    # the missing and the unassigned saved command are refused alike: no names are learnt
    saved_denials = [a for a in trail if "/commands/saved/" in a["action"]]
    assert sorted(a["detail"]["saved"] for a in saved_denials) == ["nope", "reboot"]
    assert server.ctx.queue.list(device_id) == []  # nothing was queued
    assert not server.ctx.store.list_revisions(10)  # nothing was pushed
    # the program cannot be widened through the body of a saved run either
    status, _ = runner("POST", f"{dev}/commands/saved/uptime", {"run": {"argv": ["sh"]}})
    assert status == 422
    assert server.ctx.queue.list(device_id) == []


def test_a_command_runner_runs_its_saved_command_once_per_id(server):  # SQLite and PostgreSQL
    admin = Caller(server, server.token("administrator"))
    client, device_id = server.device("web1")
    body = {"name": "disk", "argv": ["df", "-h", "/"], "timeout": 60, "description": "free space"}
    assert admin("POST", "/api/v1/saved-commands", body)[0] == 201
    assert admin("POST", "/api/v1/saved-commands", {"name": "other", "argv": ["w"]})[0] == 201
    runner_id, runner = _runner(server)
    status, answer = admin("PUT", f"/api/v1/saved-commands/disk/assignments/token/{runner_id}")
    assert (status, answer["created"]) == (200, True)

    status, listed = runner("GET", "/api/v1/saved-commands")
    assert status == 200 and [s["name"] for s in listed] == ["disk"]
    assert "assignedTo" not in listed[0]  # who else may run it is not a runner's business
    status, made = runner("POST", "/api/v1/devices/web1/commands/saved/disk", {"id": "disk-1"})
    assert status == 201, made
    assert made["created"] and made["saved"] == {"name": "disk", "version": 1}
    assert made["run"] == {"argv": ["df", "-h", "/"], "timeout": 60}
    # a retry with the same id is the same command: at most once
    status, again = runner("POST", "/api/v1/devices/web1/commands/saved/disk", {"id": "disk-1"})
    assert (status, again["created"], again["seq"]) == (201, False, made["seq"])
    [sent] = client.work("", 0, 0)["commands"]
    assert sent["id"] == "disk-1" and sent["run"] == {"argv": ["df", "-h", "/"], "timeout": 60}

    ok = [a for a in _audit(server, f"token:{runner_id}") if a["outcome"] == "ok"]
    assert [(a["detail"]["saved"], a["detail"]["program"]) for a in ok] == [("disk", "df")] * 2
    shown = admin("GET", "/api/v1/audit", action="command.saved")[1]
    assert {a["action"] for a in shown} == {"command.saved"} and len(shown) == 2

    # it reads the device and its own commands, not the others'
    manager = Caller(server, server.token("manager"))
    status, _ = manager("POST", "/api/v1/devices/web1/commands/saved/disk", {"id": "m-1"})
    assert status == 201  # the same saved command, another caller's id: not a way to read it
    status, answer = runner("POST", "/api/v1/devices/web1/commands/saved/disk", {"id": "m-1"})
    assert status == 409 and "stdout" not in answer
    assert manager("POST", "/api/v1/devices/web1/commands/saved/other", {})[0] == 201  # any
    lock = manager("POST", "/api/v1/devices/web1/commands/lock", {})[1]
    status, device = runner("GET", "/api/v1/devices/web1")
    assert status == 200 and [c["id"] for c in device["commands"]] == ["disk-1"]
    assert [c["id"] for c in runner("GET", "/api/v1/commands")[1]] == ["disk-1"]
    assert runner("GET", "/api/v1/commands/m-1")[0] == 404
    assert runner("GET", f"/api/v1/commands/{lock['id']}")[0] == 404
    assert runner("GET", "/api/v1/commands/disk-1")[0] == 200
    assert len(manager("GET", "/api/v1/commands")[1]) == 4
    assert runner("GET", "/api/v1/devices")[0] == 200


def test_edit_keeps_assignments_and_remove_drops_them(server):  # SQLite and PostgreSQL
    admin = Caller(server, server.token("administrator"))
    server.device("web1")
    assert admin("POST", "/api/v1/saved-commands", {"name": "svc", "argv": ["true"]})[0] == 201
    runner_id, runner = _runner(server)
    admin("PUT", f"/api/v1/saved-commands/svc/assignments/token/{runner_id}")
    status, edited = admin("PATCH", "/api/v1/saved-commands/svc", {"argv": ["systemctl", "status"]})
    assert status == 200 and edited["version"] == 2
    assert [(a["kind"], a["id"]) for a in edited["assignedTo"]] == [("token", runner_id)]
    [entry] = admin("GET", "/api/v1/audit", action="saved-command.edit")[1]
    assert (
        entry["detail"].items()
        >= {
            "argvChanged": True,
            "programBefore": "true",
            "program": "systemctl",
            "version": 2,
            "assignments": 1,
        }.items()
    )
    status, made = runner("POST", "/api/v1/devices/web1/commands/saved/svc", {})
    assert status == 201 and made["run"]["argv"] == ["systemctl", "status"]
    assert made["saved"] == {"name": "svc", "version": 2}
    # unassign, then assign again, then remove: each time the runner's answer follows
    assert admin("DELETE", f"/api/v1/saved-commands/svc/assignments/token/{runner_id}")[0] == 200
    assert runner("POST", "/api/v1/devices/web1/commands/saved/svc", {})[0] == 403
    assert admin("DELETE", f"/api/v1/saved-commands/svc/assignments/token/{runner_id}")[0] == 404
    admin("PUT", f"/api/v1/saved-commands/svc/assignments/token/{runner_id}")
    assert admin("DELETE", "/api/v1/saved-commands/svc")[0] == 200
    assert runner("GET", "/api/v1/saved-commands") == (200, [])
    assert admin("POST", "/api/v1/saved-commands", {"name": "svc", "argv": ["true"]})[0] == 201
    assert runner("POST", "/api/v1/devices/web1/commands/saved/svc", {})[0] == 403  # not revived


def test_what_can_be_saved_and_to_whom_it_is_assigned(sqlite_server):
    from jcstate.server.admins import AdminAccounts

    server = sqlite_server
    admin = Caller(server, server.token("administrator"))
    before = admin("GET", "/api/v1/saved-commands")[1]
    bad = [
        {"name": "x", "argv": []},  # no program
        {"name": "-x", "argv": ["id"]},  # a name that reads as an option
        {"name": "x", "argv": ["id"], "timeout": 0},
        {"name": "x", "command": "rm -rf /"},  # never a shell line
        {"name": "x", "argv": ["id"], "user": "root"},  # nothing but argv and timeout
    ]
    for body in bad:
        assert admin("POST", "/api/v1/saved-commands", body)[0] == 422, body
    assert admin("POST", "/api/v1/saved-commands", {"name": "x", "argv": ["id"]})[0] == 201
    assert admin("POST", "/api/v1/saved-commands", {"name": "x", "argv": ["w"]})[0] == 409
    assert len(admin("GET", "/api/v1/saved-commands")[1]) == len(before) + 1
    # only command runners are assigned: a manager may run any saved command already
    manager_id = server.ctx.store.create_token("m", "manager", None)[0]["id"]
    status, answer = admin("PUT", f"/api/v1/saved-commands/x/assignments/token/{manager_id}")
    assert status == 422 and "manager role" in answer["detail"]
    assert admin("PUT", "/api/v1/saved-commands/x/assignments/token/0123456789abcdef")[0] == 404
    assert admin("PUT", "/api/v1/saved-commands/nope/assignments/token/0123456789abcdef")[0] == 404
    # a console account of the side role is assigned by name
    AdminAccounts(server.ctx.store).add("anna", COMMAND_RUNNER, "long enough password", None)
    AdminAccounts(server.ctx.store).add("bob", "read-only", "long enough password", None)
    assert admin("PUT", "/api/v1/saved-commands/x/assignments/admin/anna")[0] == 200
    assert admin("PUT", "/api/v1/saved-commands/x/assignments/admin/bob")[0] == 422
    [row] = [r for r in admin("GET", "/api/v1/saved-commands")[1] if r["name"] == "x"]
    assert [(a["kind"], a["id"]) for a in row["assignedTo"]] == [("admin", "anna")]
    # tokens and console accounts of the side role are created like any other
    status, token = admin("POST", "/api/v1/tokens", {"role": COMMAND_RUNNER, "name": "desk"})
    assert status == 201 and token["role"] == COMMAND_RUNNER
    assert Caller(server, token["token"])("GET", "/api/v1/whoami")[1]["role"] == COMMAND_RUNNER
    body = {"name": "carl", "role": COMMAND_RUNNER, "password": "long enough password"}
    assert admin("POST", "/api/v1/admins", body)[0] == 201
    # an account removed and made again under its name does not inherit its saved commands
    assert admin("DELETE", "/api/v1/admins/anna")[0] == 200
    AdminAccounts(server.ctx.store).add("anna", COMMAND_RUNNER, "long enough password", None)
    [row] = [r for r in admin("GET", "/api/v1/saved-commands")[1] if r["name"] == "x"]
    assert row["assignedTo"] == []
    # an edit must change something
    assert admin("PATCH", "/api/v1/saved-commands/x", {})[0] == 422
    assert admin("PATCH", "/api/v1/saved-commands/nope", {"argv": ["w"]})[0] == 404


def test_the_cli_saves_assigns_and_runs(sqlite_server, capsys, monkeypatch):
    server = sqlite_server
    client, device_id = server.device("web1")
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("administrator"))

    def jcstate(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = jcstate(
        "command", "saved", "add", "disk", "--timeout", "60", "--", "df", "-h", "/"
    )
    assert code == 0, err
    assert "saved disk (version 1): df -h /" in out
    runner_id, _ = _runner(server)
    runner_token = server.ctx.store.create_token("r2", COMMAND_RUNNER, None)
    code, out, err = jcstate("command", "saved", "assign", "disk", "--token-id", runner_id)
    assert code == 0 and f"assigned to token {runner_id}" in out, err
    code, out, err = jcstate("command", "saved", "list")
    assert "df -h /" in out and f"token:{runner_id}" in out
    code, out, err = jcstate("command", "saved", "assign", "disk")
    assert code == 1 and "--token-id" in err

    monkeypatch.setenv("JCSTATE_TOKEN", runner_token[1])  # a runner it is not assigned to
    code, out, err = jcstate("command", "run", "web1", "--saved", "disk")
    assert code == 1 and "not assigned to you" in err
    code, out, err = jcstate("command", "run", "web1", "--saved", "disk", "--", "sh")
    assert code == 1 and "-- ARGV" in err  # nothing is added to a saved command
    runner_id2 = runner_token[0]["id"]
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("administrator"))
    jcstate("command", "saved", "assign", "disk", "--token-id", runner_id2)
    monkeypatch.setenv("JCSTATE_TOKEN", runner_token[1])
    code, out, err = jcstate("command", "saved", "list", "--output", "json")
    assert [s["name"] for s in json.loads(out)] == ["disk"]
    code, out, err = jcstate("command", "run", "web1", "--saved", "disk")
    assert code == 0, err
    command_id = out.strip()
    [sent] = client.work("", 0, 0)["commands"]
    assert sent["id"] == command_id and sent["run"]["argv"] == ["df", "-h", "/"]
    client.command_results(
        [{"id": command_id, "action": "run", "status": "succeeded", "exitCode": 0, "stdout": "ok"}]
    )
    code, out, err = jcstate("command", "show", command_id)
    assert code == 0 and "(saved command disk, version 1)" in out and "succeeded" in out

    monkeypatch.setenv("JCSTATE_TOKEN", server.token("administrator"))
    code, out, err = jcstate("command", "saved", "edit", "disk", "--", "df", "-h", "/var")
    assert code == 0 and "version 2" in out and "still assigned to 2" in out
    code, out, err = jcstate("command", "saved", "unassign", "disk", "--token-id", runner_id2)
    assert code == 0, err
    code, out, err = jcstate("command", "saved", "remove", "disk")
    assert code == 0 and "removed disk" in out
    code, out, err = jcstate("command", "saved", "list", "--output", "json")
    assert json.loads(out) == []


def test_a_console_command_runner_sees_only_its_run_page(sqlite_server):
    from console_session import csrf_of, signed_in

    server = sqlite_server
    _, device_id = server.device("web1")
    admin = Caller(server, server.token("administrator"))
    admin("POST", "/api/v1/saved-commands", {"name": "disk", "argv": ["df", "-h"]})
    admin("POST", "/api/v1/saved-commands", {"name": "reboot", "argv": ["reboot"]})
    web = signed_in(server, "anna", COMMAND_RUNNER)
    assert admin("PUT", "/api/v1/saved-commands/disk/assignments/admin/anna")[0] == 200

    landing = web.get("/devices")  # where sign-in sends everyone
    assert landing.url.path == "/run" and "df -h" in landing.text
    assert "reboot" not in landing.text and ">Devices</a>" not in landing.text
    for path in (f"/devices/{device_id}", "/commands", "/policies", "/audit", "/admins"):
        assert web.get(path).status_code == 403, path
    csrf = csrf_of(web, "/run")
    lock = web.post(f"/devices/{device_id}/actions/lock", data={"csrf": csrf})
    assert lock.status_code == 403
    refused = web.post("/run", data={"csrf": csrf, "device": "web1", "saved": "reboot"})
    assert refused.status_code == 403 and "not assigned to you" in refused.text
    assert server.ctx.queue.list(device_id) == []
    assert web.post("/run", data={"device": "web1", "saved": "disk"}).status_code == 403  # CSRF

    done = web.post("/run", data={"csrf": csrf, "device": "web1", "saved": "disk"})
    assert done.status_code == 200 and "queued" in done.text
    [row] = server.ctx.queue.list(device_id)
    assert (row["created_by"], row["saved"], row["body"]["run"]["argv"]) == (
        "admin:anna",
        "disk",
        ["df", "-h"],
    )
    assert row["id"] in done.text  # listed under "Your commands"
    trail = [a for a in server.ctx.store.list_audit() if a["actor"] == "admin:anna"]
    assert {(a["action"], a["outcome"]) for a in trail} >= {
        ("POST /run", "ok"),
        ("POST /run", "denied"),
    }
    # a manager uses the same page for any saved command
    boss = signed_in(server, "boss", "manager")
    page = boss.get("/run").text
    assert "reboot" in page and "df -h" in page
