"""Authorization matrix: every route × method × caller, compared with authz_matrix.yaml."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from wheels import build_wheel, minimal_files, minimal_wheel

from jcstate.agent import signing
from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.secret import Secret

MATRIX = Path(__file__).with_name("authz_matrix.yaml")
POLICY = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: base}\nspec: {}\n"


def _api_routes(app: Any) -> set[str]:
    routes = {"GET /openapi.json"}
    for path, ops in app.openapi()["paths"].items():
        routes |= {f"{method.upper()} {path}" for method in ops}
    return routes


class Callers:
    """Builds each kind of caller's credentials for one request."""

    def __init__(self, server: Any, tmp: Path):
        self.server = server
        self.tmp = tmp
        store = server.ctx.store
        self.tokens = {r: server.token(r) for r in ("read-only", "manager", "administrator")}
        self.tokens["administrator"] = self._person_token()
        # the side role: a token whose id saved commands are assigned to
        runner, self.tokens["command-runner"] = store.create_token("runner", "command-runner", None)
        self.runner_id = runner["id"]
        pending_key = store.create_connect_key("approval", auto_approve=False)["key"]
        self.pending, self.pending_id = server.device("pending", connect_key=pending_key)
        self.device, self.device_id = server.device("device")
        self.other, _ = server.device("other")
        self.n = 0

    def _person_token(self) -> str:
        """The administrator's token belongs to a person (a console account two days old),
        so that it may approve an erase another person asked for (two-person erase)."""
        from jcstate.server.admins import AdminAccounts, admins

        store = self.server.ctx.store
        AdminAccounts(store).add("authz-admin", "administrator", "long enough password", None)
        with store.transaction() as conn:
            conn.execute(
                admins.update()
                .where(admins.c.name == "authz-admin")
                .values(created_at=0.0, password_changed_at=0.0)
            )
        made = store.create_token("test administrator", "administrator", None, owner="authz-admin")
        return made[1]

    def fresh_n(self) -> int:
        self.n += 1
        return self.n

    def headers(self, caller: str, method: str, target: str, body: bytes) -> dict[str, str]:
        if caller in self.tokens:
            return {"Authorization": f"Bearer {self.tokens[caller]}"}
        if caller == "anonymous":
            return {}
        client, device_id = {
            "pending": (self.pending, self.pending_id),
            "device": (self.device, self.device_id),
            "other_device": (self.other, self.device_id),  # other's key, this device's id
        }[caller]
        return signing.sign_headers(client.identity.private_key, method, target, body, device_id)

    def fresh(self, kind: str) -> str:
        """A new object for routes that consume one (revoke, delete)."""
        store = self.server.ctx.store
        self.n += 1
        if kind == "ref":
            key = base64.b64encode(os.urandom(32)).decode()
            row, _ = store.enroll(
                public_key=key,
                key_row=store.list_connect_keys()[0],
                info={"hostname": f"target{self.n}", "os": "linux"},
            )
            return row["id"]
        if kind == "token_id":
            return store.create_token("target", "read-only", None)[0]["id"]
        if kind == "saved":  # a saved command assigned to the command-runner token
            from jcstate.server.saved import SavedCommands

            saved = SavedCommands(store)
            name = f"saved{self.n}"
            saved.add(name, ["id", "-u"], None, "", "test")
            saved.assign(name, "token", self.runner_id, "test")
            return name
        if kind == "runner_id":  # another command-runner token, to assign to
            return store.create_token("runner", "command-runner", None)[0]["id"]
        if kind == "key_id":
            return store.create_connect_key("target")["id"]
        if kind == "release":  # a stored agent release: its version
            version = f"9.{self.n}"
            data = minimal_wheel(self.tmp / "wheels", version)
            store.add_release(
                version=version,
                sha256=hashlib.sha256(data).hexdigest(),
                filename=f"jcstate-{version}-py3-none-any.whl",
                data=data,
                created_by="test",
            )
            return version
        raise KeyError(kind)


def _request(server: Any, callers: Callers, caller: str, route: str) -> int:
    method, path = route.split(" ", 1)
    body_obj: Any = None
    ref = None
    if "{ref}" in path:  # a password name, or a device
        ref = "pw1" if path.startswith("/api/v1/passwords/") else callers.fresh("ref")
        path = path.replace("{ref}", ref)
    if route == "GET /api/v1/devices/{ref}/recovery-key":  # something to read back
        sealed = server.ctx.vault.seal("recovery", f"{ref}/", Secret("1111-2222"))
        server.ctx.store.set_recovery_key(ref, "", sealed)
    if route.endswith(("/approve", "/reject")) and "{command_id}" in path:
        # an erase another person asked for, awaiting approval
        device_id = callers.fresh("ref")
        row, _ = server.ctx.queue.issue(
            device_id, {"action": "erase", "confirm": device_id}, "test", requested_by="other"
        )
        path = path.replace("{command_id}", row["id"])
    if "{command_id}" in path:  # a queued command of a fresh device
        row, _ = server.ctx.queue.issue(callers.fresh("ref"), {"action": "lock"}, "test")
        path = path.replace("{command_id}", row["id"])
    if "{token_id}" in path:
        path = path.replace("{token_id}", callers.fresh("token_id"))
    if "{key_id}" in path:
        path = path.replace("{key_id}", callers.fresh("key_id"))
    release = None
    if "{version}" in path or "{sha256}" in path or route.endswith("/commands/update"):
        release = server.ctx.store.release(callers.fresh("release"))
        path = path.replace("{version}", release["version"]).replace("{sha256}", release["sha256"])
    if "{revision}" in path:
        path = path.replace("{revision}", "1")
    if path.startswith("/api/v1/rollout"):
        _staged(server)  # a rollout in progress to show, promote or abort
    elif path.startswith("/api/v1/revisions") and method == "POST":
        _staged(server, again=False)  # no rollout in progress: it would refuse a push
    if "{user}" in path:
        if method == "DELETE":  # something to delete
            sealed = server.ctx.vault.seal("totp", "bob", Secret("JBSWY3DPEHPK3PXP"))
            server.ctx.store.set_secret("totp", "bob", sealed)
        path = path.replace("{user}", "bob")
    if "{name}" in path:  # a console account to remove or change
        from jcstate.server.admins import AdminAccounts

        name = "a" + os.urandom(4).hex()
        AdminAccounts(server.ctx.store).add(name, "manager", "long enough password", None)
        path = path.replace("{name}", name)
    if "{saved}" in path:
        saved = callers.fresh("saved")
        path = path.replace("{saved}", saved)
        if "{kind}/{ident}" in path:  # PUT: a new runner to assign to; DELETE: the assigned one
            ident = callers.fresh("runner_id") if method == "PUT" else callers.runner_id
            path = path.replace("{kind}/{ident}", f"token/{ident}")
    if "{batch}" in path:  # a batch of one command
        device = server.ctx.store.device(callers.fresh("ref"))
        batch, _ = server.ctx.queue.issue_batch([device], {"action": "lock"}, "test")
        path = path.replace("{batch}", batch)
    target = path
    if route == "POST /api/v1/totp/{user}":  # bob is enrolled again by each caller
        target += "?rotate=true&force=true"
    if route == "GET /api/v1/device/work":
        target += "?etag=&wait=0"
    bodies = {
        "POST /api/v1/revisions": {"files": {"base.yaml": POLICY}},
        "PUT /api/v1/devices/{ref}/labels": {"labels": {"a": "b"}},
        "POST /api/v1/tokens": {"role": "read-only"},
        "POST /api/v1/connect-keys": {"name": "k"},
        "PUT /api/v1/passwords/{ref}": {"password": "hunter2"},
        "POST /api/v1/device/reports": {"reportId": os.urandom(8).hex(), "ok": True},
        "POST /api/v1/devices/{ref}/commands/lock": {},
        "POST /api/v1/devices/{ref}/commands/converge": {},
        "POST /api/v1/devices/{ref}/commands/elevate": {
            "user": "alice",
            "seconds": 3600,
            "reason": "INC-1",
        },
        "POST /api/v1/devices/{ref}/commands/restart": {"delay": 0},
        "POST /api/v1/devices/{ref}/commands/shutdown": {},
        "POST /api/v1/devices/{ref}/commands/run": {"run": {"argv": ["id", "-u"]}},
        "POST /api/v1/devices/{ref}/commands/erase": {"confirm": ref},
        "POST /api/v1/device/commands/results": {"results": []},
        "POST /api/v1/admins": {
            "name": "a" + os.urandom(4).hex(),
            "role": "read-only",
            "password": "long enough password",
        },
        "PUT /api/v1/admins/{name}/password": {"password": "another long password"},
        "POST /api/v1/device/escrow": {"volume": None, "key": "AAAA-BBBB-CCCC"},
        "PATCH /api/v1/devices/{ref}/labels": {"add": {"a": "b"}, "remove": ["c"]},
        "PATCH /api/v1/labels": {"os": "linux", "add": {"seen": "yes"}},
        "POST /api/v1/revisions/{revision}/rollback": {"message": "back"},
        "POST /api/v1/rollout/promote": {"message": "now"},
        "POST /api/v1/rollout/abort": {"message": "back"},
        "POST /api/v1/commands/batch/lock": {"os": "linux"},
        "POST /api/v1/commands/batch/restart": {"os": "linux", "delay": 0},
        "POST /api/v1/commands/batch/shutdown": {"os": "linux"},
        "POST /api/v1/commands/batch/run": {"os": "linux", "run": {"argv": ["id", "-u"]}},
        "POST /api/v1/saved-commands": {"name": f"new{callers.fresh_n()}", "argv": ["uptime"]},
        "PATCH /api/v1/saved-commands/{saved}": {"argv": ["uptime"], "description": "edited"},
        "POST /api/v1/devices/{ref}/commands/saved/{saved}": {},
    }
    body_obj = bodies.get(route)
    if release is not None and route.endswith("/commands/update"):
        body_obj = {"version": release["version"]}
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if route == "POST /api/v1/releases":  # the wheel itself, a new version each time
        n = callers.fresh_n()
        body = build_wheel(callers.tmp / "up", f"8.{n}", minimal_files(f"8.{n}")).read_bytes()
        headers = {"Content-Type": "application/octet-stream"}
        headers |= callers.headers(caller, method, target, body)
    elif route == "POST /api/v1/enroll":
        fresh = Client(server.url, Identity(str(callers.tmp / f"enroll{callers.fresh_n()}")))
        body_obj = {
            "connectKey": server.connect_key,
            "publicKey": fresh.identity.public_key_b64,
            "hostname": "new",
            "os": "linux",
        }
        body = json.dumps(body_obj).encode()
        headers |= signing.sign_headers(fresh.identity.private_key, method, target, body, "")
    else:
        body = b"" if body_obj is None else json.dumps(body_obj).encode()
        headers |= callers.headers(caller, method, target, body)
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(server.url).netloc)
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _staged(server: Any, again: bool = True) -> None:
    """End the rollout in progress, if any; with ``again`` stage a new one (every device a
    canary, an hour's wait)."""
    from jcstate.server import rollout

    store = server.ctx.store
    current = rollout.open_rollout(store)
    if current is not None:
        rollout.abort(store, current["id"], "test", "next request")
    if again:
        files = {"base.yaml": POLICY + f"# {os.urandom(4).hex()}\n"}
        staged = {"canary": "100%", "wait": 3600, "halt_on": 1, "seed": "s", "actor": "test"}
        store.add_revision(files, "test", "staged", rollout=staged)


def test_every_route_has_a_row_and_every_row_a_route(sqlite_server):
    table = yaml.safe_load(MATRIX.read_text())
    assert set(table["routes"]) == _api_routes(sqlite_server.app), (
        "authz_matrix.yaml and the API disagree: add a row for each new route"
    )


def test_authorization_matrix(sqlite_server, tmp_path):
    server = sqlite_server
    table = yaml.safe_load(MATRIX.read_text())
    server.admin().call("POST", "/api/v1/revisions", {"files": {"base.yaml": POLICY}})
    callers = Callers(server, tmp_path)
    wrong = []
    for route, expected in sorted(table["routes"].items()):
        for caller, want in zip(table["callers"], expected, strict=True):
            got = _request(server, callers, caller, route)
            if got != want:
                wrong.append(f"{route} as {caller}: expected {want}, got {got}")
    assert not wrong, "\n".join(wrong)
