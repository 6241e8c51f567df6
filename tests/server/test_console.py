"""The browser console over HTTP, as a browser's forms use it (no JavaScript): sign-in with
passwords and TOTP, sessions, CSRF, roles, actions and the audit trail, on a live server.

The same flows driven in a real browser are in test_console_browser.py and, with a real agent
in a test host, tests/e2e/test_console_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from console_session import (
    PASSWORD,
    add_admin,
    code_for,
    csrf_of,
    hidden,
    post_signin,
    seed_of,
    signed_in,
)
from live import live_server

from jcstate.server.console.devices import ACTION_ROLES


def audit(server, **match):
    return [
        a for a in server.ctx.store.list_audit(1000) if all(a.get(k) == v for k, v in match.items())
    ]


def commands_of(server, device_id):
    return server.ctx.queue.list(device_id, limit=100)


def test_pages_carry_strict_security_headers(sqlite_server):
    resp = httpx.get(sqlite_server.url + "/signin")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert 'autocomplete="username"' in resp.text
    assert 'autocomplete="current-password"' in resp.text
    assert "<script>" not in resp.text and " style=" not in resp.text  # no inline code


def test_signin_refuses_a_wrong_password_and_audits_it(server):
    add_admin(server, "rita", "read-only")
    with httpx.Client(base_url=server.url, follow_redirects=True) as client:
        resp = post_signin(client, "rita", "not the password")
        assert resp.status_code == 401 and "Wrong name or password" in resp.text
        assert client.get("/devices").url.path == "/signin"  # still not signed in
        resp = post_signin(client, "rita", PASSWORD)
        assert resp.status_code == 200 and resp.url.path == "/devices"
    denied = audit(server, action="console sign-in", outcome="denied")
    assert denied and denied[0]["target"] == "admin:rita"
    assert audit(server, action="console sign-in", outcome="ok", actor="admin:rita")


def test_administrator_enrols_totp_then_must_give_a_fresh_code(server):
    add_admin(server, "ada", "administrator")
    with httpx.Client(base_url=server.url, follow_redirects=True) as client:
        resp = post_signin(client, "ada", PASSWORD)
        assert resp.url.path == "/signin/totp" and "Set up your authenticator" in resp.text
        assert 'src="data:image/png;base64,' in resp.text  # the QR code, allowed by the CSP
        seed = seed_of(resp.text)
        assert client.get("/devices").url.path == "/signin"  # a password alone is not enough
        wrong = client.post("/signin/totp", data={"csrf": hidden(resp.text), "code": "000000"})
        assert wrong.status_code == 401
        ok = client.post("/signin/totp", data={"csrf": hidden(wrong.text), "code": code_for(seed)})
        assert ok.url.path == "/devices" and "ada (administrator)" in ok.text
    with httpx.Client(base_url=server.url, follow_redirects=True) as client:
        resp = post_signin(client, "ada", PASSWORD)
        assert "Enter the 6-digit code" in resp.text and "seed" not in resp.text
        # the code used at enrolment cannot be used again
        again = client.post(
            "/signin/totp", data={"csrf": hidden(resp.text), "code": code_for(seed)}
        )
        assert again.status_code == 401
        nxt = client.post(
            "/signin/totp", data={"csrf": hidden(again.text), "code": code_for(seed, 1)}
        )
        assert nxt.url.path == "/devices"


def test_failed_signins_are_rate_limited_per_account(sqlite_server):
    add_admin(sqlite_server, "mo", "manager")
    with httpx.Client(base_url=sqlite_server.url, follow_redirects=True) as client:
        for _ in range(5):
            assert post_signin(client, "mo", "guess").status_code == 401
        # even the right password is refused now
        resp = post_signin(client, "mo", PASSWORD)
        assert resp.status_code == 429 and "too many failed sign-ins" in resp.text.lower()
    assert audit(sqlite_server, action="console sign-in", outcome="refused")


def test_failed_signins_are_rate_limited_per_address(sqlite_server):
    add_admin(sqlite_server, "mo", "manager")
    with httpx.Client(base_url=sqlite_server.url, follow_redirects=True) as client:
        for i in range(20):  # a different account each time: only the address adds up
            assert post_signin(client, f"nobody{i}", "guess").status_code == 401
        resp = post_signin(client, "mo", PASSWORD)
        assert resp.status_code == 429 and "from this address" in resp.text
    refused = audit(sqlite_server, action="console sign-in", outcome="refused")
    assert refused[0]["detail"]["address"] == "127.0.0.1"


def test_signin_form_needs_its_csrf_token(sqlite_server):
    add_admin(sqlite_server, "mo", "manager")
    with httpx.Client(base_url=sqlite_server.url) as client:
        resp = client.post("/signin", data={"username": "mo", "password": PASSWORD})
        assert resp.status_code == 403 and "Set-Cookie" not in resp.headers


def test_a_post_without_the_csrf_token_is_refused_and_audited(server):
    _, device_id = server.device("web1")
    client = signed_in(server, "mia", "manager")
    resp = client.post(f"/devices/{device_id}/actions/lock", data={})
    assert resp.status_code == 403 and "did not come from this console" in resp.text
    resp = client.post(f"/devices/{device_id}/actions/lock", data={"csrf": "forged"})
    assert resp.status_code == 403
    assert commands_of(server, device_id) == []
    refused = audit(server, actor="admin:mia", outcome="denied")
    assert refused and refused[0]["detail"]["reason"] == "missing or wrong CSRF token"
    # with the token, the same form queues the lock, audited under the admin's name
    resp = client.post(f"/devices/{device_id}/actions/lock", data={"csrf": csrf_of(client)})
    assert resp.status_code == 200 and "queued" in resp.text
    [made] = commands_of(server, device_id)
    assert made["action"] == "lock" and made["created_by"] == "admin:mia"
    ok = audit(server, actor="admin:mia", outcome="ok")
    assert ok[0]["action"] == "POST /devices/{device}/actions/{action}"
    assert ok[0]["target"] == device_id and ok[0]["detail"]["action"] == "lock"


def test_a_manager_cannot_erase_even_by_posting_the_form(server):
    _, device_id = server.device("web1")
    client = signed_in(server, "mia", "manager")
    page = client.get(f"/devices/{device_id}").text
    assert "Erase (administrators only)" in page
    assert f'href="/devices/{device_id}/actions/erase"' not in page
    assert client.get(f"/devices/{device_id}/actions/erase").status_code == 403
    resp = client.post(
        f"/devices/{device_id}/actions/erase", data={"csrf": csrf_of(client), "hostname": "web1"}
    )
    assert resp.status_code == 403
    assert commands_of(server, device_id) == []
    assert audit(server, actor="admin:mia", outcome="denied", target=device_id)


def test_read_only_sees_no_actions_and_cannot_post_them(sqlite_server):
    _, device_id = sqlite_server.device("web1")
    client = signed_in(sqlite_server, "rita", "read-only")
    page = client.get(f"/devices/{device_id}").text
    assert "Actions" not in page and "/actions/" not in page
    resp = client.post(f"/devices/{device_id}/actions/lock", data={"csrf": csrf_of(client)})
    assert resp.status_code == 403
    assert commands_of(sqlite_server, device_id) == []


def test_erase_needs_the_hostname_typed_back(server):
    _, device_id = server.device("web1")
    client = signed_in(server, "ada", "administrator")
    csrf = csrf_of(client)
    resp = client.post(
        f"/devices/{device_id}/actions/erase", data={"csrf": csrf, "hostname": "web2"}
    )
    assert resp.status_code == 422 and "does not match" in resp.text
    assert commands_of(server, device_id) == []
    assert audit(server, actor="admin:ada", outcome="refused", target=device_id)
    resp = client.post(
        f"/devices/{device_id}/actions/erase", data={"csrf": csrf, "hostname": "web1"}
    )
    assert resp.status_code == 200
    [made] = commands_of(server, device_id)
    assert made["action"] == "erase" and made["created_by"] == "admin:ada"


def test_run_command_takes_argv_or_a_shell_line(sqlite_server):
    _, device_id = sqlite_server.device("web1")
    client = signed_in(sqlite_server, "mia", "manager")
    csrf = csrf_of(client)
    form = {"csrf": csrf, "mode": "argv", "line": "id -u 'a b'", "user": "nobody", "timeout": "9"}
    assert client.post(f"/devices/{device_id}/actions/run", data=form).status_code == 200
    form = {"csrf": csrf, "mode": "shell", "line": "echo hi | wc -c", "timeout": ""}
    assert client.post(f"/devices/{device_id}/actions/run", data=form).status_code == 200
    bad = {"csrf": csrf, "mode": "argv", "line": "x", "timeout": "0"}
    assert client.post(f"/devices/{device_id}/actions/run", data=bad).status_code == 422
    shell, argv = commands_of(sqlite_server, device_id)
    assert argv["body"]["run"] == {"argv": ["id", "-u", "a b"], "user": "nobody", "timeout": 9}
    assert shell["body"]["run"]["command"] == "echo hi | wc -c"
    assert "argv" not in shell["body"]["run"]


def test_html_in_hostnames_and_labels_is_shown_as_text(sqlite_server):
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    _, device_id = sqlite_server.device(hostname=payload)
    sqlite_server.ctx.store.set_device(device_id, labels={"team": payload})
    client = signed_in(sqlite_server, "rita", "read-only")
    for path in ("/devices", f"/devices/{device_id}"):
        page = client.get(path).text
        assert payload not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_signout_and_idle_timeout_end_the_session(tmp_path):
    with live_server(f"sqlite:///{tmp_path}/j.db", str(tmp_path), session_idle=1.5) as srv:
        client = signed_in(srv, "rita", "read-only")
        cookie = dict(client.cookies)
        client.post("/signout", data={"csrf": csrf_of(client)})
        with httpx.Client(base_url=srv.url, cookies=cookie) as replay:
            assert replay.get("/devices").status_code == 303  # to the sign-in page
        client = signed_in(srv, "otto", "read-only")
        assert client.get("/devices").url.path == "/devices"
        time.sleep(2)
        assert client.get("/devices").url.path == "/signin"


def test_session_lifetime_ends_an_active_session(tmp_path):
    lifetime = 4.0
    with live_server(f"sqlite:///{tmp_path}/j.db", str(tmp_path), session_lifetime=lifetime) as srv:
        client = signed_in(srv, "rita", "read-only")
        signed = time.monotonic()  # the session began at or before this instant
        while time.monotonic() - signed < lifetime / 2:  # busy, never idle
            path = client.get("/devices").url.path
            if time.monotonic() - signed < lifetime:  # a slow machine may answer late
                assert path == "/devices"
            time.sleep(0.25)
        time.sleep(max(0.0, lifetime + 0.5 - (time.monotonic() - signed)))
        assert client.get("/devices").url.path == "/signin"


def test_session_cookie_flags(sqlite_server):
    add_admin(sqlite_server, "rita", "read-only")
    with httpx.Client(base_url=sqlite_server.url) as client:
        resp = post_signin(client, "rita", PASSWORD)
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert resp.headers["location"] == "/devices"


def test_console_action_roles_are_those_of_the_api():
    matrix = yaml.safe_load(
        (Path(__file__).with_name("authz_matrix.yaml")).read_text(encoding="utf-8")
    )
    callers = matrix["callers"]
    for action, role in ACTION_ROLES.items():
        row = matrix["routes"][f"POST /api/v1/devices/{{ref}}/commands/{action}"]
        allowed = [c for c, status in zip(callers, row, strict=True) if status < 400]
        lowest = next(r for r in ("read-only", "manager", "administrator") if r in allowed)
        assert lowest == role, action


def test_admin_cli_adds_lists_and_removes_accounts_through_the_api(sqlite_server):
    env = {"JCSTATE_SERVER": sqlite_server.url, "JCSTATE_TOKEN": sqlite_server.admin_token}

    def jcstate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jcstate", "admin", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
            timeout=60,
            check=False,
        )

    made = jcstate("add", "carol", "--role", "manager", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout + made.stderr
    listed = jcstate("list")
    assert "carol" in listed.stdout and "manager" in listed.stdout
    short = jcstate("passwd", "carol", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 10" in short.stderr
    with httpx.Client(base_url=sqlite_server.url, follow_redirects=True) as client:
        assert post_signin(client, "carol", PASSWORD).url.path == "/devices"
        changed = jcstate("passwd", "carol", "--password-stdin", stdin="a new long password\n")
        assert changed.returncode == 0, changed.stderr
        assert client.get("/devices").url.path == "/signin"  # sessions ended with the change
    assert jcstate("remove", "carol").returncode == 0
    assert "carol" not in jcstate("list").stdout
    stored = [a for a in sqlite_server.ctx.store.list_audit(100) if a["target"] == "carol"]
    assert {a["action"] for a in stored} >= {
        "POST /api/v1/admins",
        "PUT /api/v1/admins/{name}/password",
        "DELETE /api/v1/admins/{name}",
    }
    assert PASSWORD not in str(sqlite_server.ctx.store.list_audit(1000))


def test_passwords_are_stored_as_scrypt_verifiers_only(sqlite_server):
    add_admin(sqlite_server, "rita", "read-only")
    from jcstate.server.admins import AdminAccounts

    row = AdminAccounts(sqlite_server.ctx.store).get("rita")
    assert row["password_hash"].startswith("scrypt$32768$8$1$")
    assert PASSWORD not in row["password_hash"]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
def test_signin_never_redirects_off_the_console(sqlite_server, target):
    add_admin(sqlite_server, "rita", "read-only")
    with httpx.Client(base_url=sqlite_server.url) as client:
        form = client.get("/signin", params={"next": target}).text
        resp = client.post(
            "/signin",
            data={"csrf": hidden(form), "next": target, "username": "rita", "password": PASSWORD},
        )
        assert resp.headers["location"] == "/devices"


def test_commands_page_filters_and_cancels(server):
    _, web = server.device("web1")
    _, db1 = server.device("db1")
    queue = server.ctx.queue
    lock, _ = queue.issue(web, {"action": "lock"}, "token:x")
    queue.issue(db1, {"action": "restart"}, "token:x")
    reader = signed_in(server, "rita", "read-only")
    page = reader.get("/commands").text
    assert "2 commands" in page and "Cancel</button>" not in page
    assert "1 command<" in reader.get("/commands", params={"action": "restart"}).text
    only_web = reader.get("/commands", params={"device": "web"}).text
    assert "web1" in only_web and "db1" not in only_web
    refused = reader.post(f"/commands/{lock['seq']}/cancel", data={"csrf": csrf_of(reader)})
    assert refused.status_code == 403
    manager = signed_in(server, "mia", "manager")
    resp = manager.post(
        f"/commands/{lock['seq']}/cancel",
        data={"csrf": csrf_of(manager), "back": "/commands?state=cancelled"},
    )
    assert resp.status_code == 200 and resp.url.path == "/commands"
    assert "web1" in resp.text and "db1" not in resp.text  # back on the filtered page
    assert queue.by_seq(lock["seq"])["state"] == "cancelled"
    entry = audit(server, actor="admin:mia", outcome="ok")[0]
    assert entry["detail"] == {"command": lock["id"], "result": "cancelled", "address": "127.0.0.1"}
    live = manager.get("/commands/live").json()
    assert live[f"cmd-{lock['seq']}-state"] == "cancelled"


POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: team}}
spec:
  users:
    - {{name: {user}, uid: 1500}}
"""


def test_policies_pages_list_diff_and_blast_radius(sqlite_server):
    admin = sqlite_server.admin()
    admin.call("POST", "/api/v1/revisions", {"files": {"team.yaml": POLICY.format(user="alice")}})
    admin.call(
        "POST",
        "/api/v1/revisions",
        {
            "files": {"team.yaml": POLICY.format(user="bob")},
            "message": "bob replaces alice",
            "commit": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        },
    )
    sqlite_server.device("web1")
    client = signed_in(sqlite_server, "rita", "read-only")
    listing = client.get("/policies").text
    assert "bob replaces alice" in listing and 'href="/policies/2"' in listing
    assert "<code>9fceb02d0ae5</code>" in listing  # the commit the files came from
    diff = client.get("/policies/diff", params={"from": 1, "to": 2}).text
    assert '<span class="del">-    - {name: alice, uid: 1500}</span>' in diff
    assert '<span class="add">+    - {name: bob, uid: 1500}</span>' in diff
    shown = client.get("/policies/2").text
    assert "web1" in shown and "team.yaml" in shown and "bob" in shown
    assert "<code>9fceb02d0ae598e95dc970b74767f19372d61af8</code>" in shown
    assert client.get("/policies/9").status_code == 404


def test_audit_page_is_for_administrators_and_filters(server):
    _, device_id = server.device("web1")
    manager = signed_in(server, "mia", "manager")
    manager.post(f"/devices/{device_id}/actions/lock", data={})  # refused: no CSRF token
    assert manager.get("/audit").status_code == 403
    boss = signed_in(server, "ada", "administrator")
    page = boss.get("/audit", params={"actor": "admin:mia", "outcome": "denied"}).text
    assert "missing or wrong CSRF token" in page and "needs role administrator" in page
    assert "console sign-in" not in page  # other outcomes and actors are filtered out
    page = boss.get("/audit", params={"target": device_id, "since": "2000-01-01T00:00"}).text
    assert "missing or wrong CSRF token" in page
    assert "No entry matches" in boss.get("/audit", params={"until": "2000-01-01T00:00"}).text


def test_admins_page_adds_accounts_and_tokens_for_administrators_only(sqlite_server):
    manager = signed_in(sqlite_server, "mia", "manager")
    assert manager.get("/admins").status_code == 403
    boss = signed_in(sqlite_server, "ada", "administrator")
    csrf = csrf_of(boss, "/admins")
    resp = boss.post(
        "/admins", data={"csrf": csrf, "name": "newbie", "role": "read-only", "password": "x"}
    )
    assert resp.status_code == 422 and "at least 10" in resp.text
    resp = boss.post(
        "/admins", data={"csrf": csrf, "name": "newbie", "role": "read-only", "password": PASSWORD}
    )
    assert resp.status_code == 200 and "newbie" in resp.text
    resp = boss.post("/tokens", data={"csrf": csrf, "name": "ci", "role": "manager"})
    token = hidden_code(resp.text)
    assert (
        httpx.get(
            sqlite_server.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
        ).json()["role"]
        == "manager"
    )
    resp = boss.post("/connect-keys", data={"csrf": csrf, "name": "lab", "labels": "site=lab"})
    assert resp.status_code == 201 and "site=lab" in resp.text
    resp = boss.post("/admins/newbie/remove", data={"csrf": csrf})
    assert "newbie" not in resp.text
    done = {a["action"] for a in audit(sqlite_server, actor="admin:ada", outcome="ok")}
    assert {"POST /admins", "POST /tokens", "POST /connect-keys"} <= done


def hidden_code(page: str) -> str:
    import re

    found = re.search(r"New token ci: <code>([^<]+)</code>", page)
    assert found, page
    return found.group(1)


def test_recovery_key_needs_the_password_again_and_is_audited(sqlite_server):
    from jcstate.secret import Secret

    _, device_id = sqlite_server.device("mac1", os_name="darwin")
    ctx = sqlite_server.ctx
    ctx.store.set_recovery_key(
        device_id, "", ctx.vault.seal("recovery", f"{device_id}/", Secret("AAAA-BBBB-CCCC"))
    )
    manager = signed_in(sqlite_server, "mia", "manager")
    assert "Reveal recovery key" not in manager.get(f"/devices/{device_id}").text
    resp = manager.post(
        f"/devices/{device_id}/recovery-key", data={"csrf": csrf_of(manager), "password": PASSWORD}
    )
    assert resp.status_code == 403 and "AAAA-BBBB-CCCC" not in resp.text
    boss = signed_in(sqlite_server, "ada", "administrator")
    page = boss.get(f"/devices/{device_id}").text
    assert "Reveal recovery key" in page and "AAAA-BBBB-CCCC" not in page
    csrf = hidden(page)
    wrong = boss.post(f"/devices/{device_id}/recovery-key", data={"csrf": csrf, "password": "x"})
    assert wrong.status_code == 403 and "AAAA-BBBB-CCCC" not in wrong.text
    shown = boss.post(
        f"/devices/{device_id}/recovery-key", data={"csrf": csrf, "password": PASSWORD}
    )
    assert shown.status_code == 200 and "AAAA-BBBB-CCCC" in shown.text
    entries = audit(sqlite_server, actor="admin:ada", target=device_id)
    assert [e["outcome"] for e in entries] == ["ok", "denied"]
    assert "AAAA" not in str(entries)


def test_sessions_are_shared_by_every_server_process(server):
    """A second process on the same database (here: a second engine and store) honours the
    session; a sign-out through one ends it for the other."""
    from jcstate.server import db as dbmod
    from jcstate.server.sessions import Sessions
    from jcstate.server.store import Store

    client = signed_in(server, "rita", "read-only")
    cookie = client.cookies["jcstate"]
    engine = dbmod.connect(str(server.ctx.store.engine.url.render_as_string(False)))
    try:
        other = Sessions(Store(engine), idle=60, lifetime=600)
        assert other.find(cookie).admin == "rita"
        client.post("/signout", data={"csrf": csrf_of(client)})
        assert other.find(cookie) is None
    finally:
        engine.dispose()


# -- staged rollout and just-in-time admin (issue 15) ---------------------------------------
def _staged(server):
    """Revision 1 everywhere, then revision 2 staged on the ring=0 device (canary1)."""
    server.canary_client, canary = server.device("canary1")
    _, rest = server.device("rest1")
    manager = server.admin("manager")
    manager.call("PUT", f"/api/v1/devices/{canary}/labels", {"labels": {"ring": "0"}})
    manager.call("POST", "/api/v1/revisions", {"files": {"team.yaml": POLICY.format(user="al")}})
    pushed = manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"team.yaml": POLICY.format(user="bo")}, "canary": "label:ring=0"},
    )
    assert pushed["revision"] == 2
    return canary, rest


def test_rollout_page_is_read_only_below_manager(sqlite_server):
    reader = signed_in(sqlite_server, "rita", "read-only")
    assert "No staged rollout yet" in reader.get("/rollout").text
    _staged(sqlite_server)
    page = reader.get("/rollout").text
    assert 'id="rollout-state">canary<' in page and "<code>label:ring=0</code>" in page
    assert "canary1" in page and "1 canary to converge ok on revision 2" in page
    assert "/rollout/promote" not in page and "/rollout/abort" not in page
    assert reader.get("/rollout/promote").status_code == 403
    for what in ("promote", "abort"):
        resp = reader.post(f"/rollout/{what}", data={"csrf": csrf_of(reader)})
        assert resp.status_code == 403
    assert sqlite_server.admin().call("GET", "/api/v1/rollout")["state"] == "canary"
    denied = audit(sqlite_server, actor="admin:rita", outcome="denied")
    assert {a["action"] for a in denied} == {
        "GET /rollout/{what}",
        "POST /rollout/promote",
        "POST /rollout/abort",
    }
    runner = signed_in(sqlite_server, "cora", "command-runner")
    assert runner.get("/rollout").status_code == 403


def test_manager_promotes_then_aborts_a_rollout_through_the_api(sqlite_server):
    _staged(sqlite_server)
    manager = signed_in(sqlite_server, "mia", "manager")
    page = manager.get("/rollout").text
    assert 'href="/rollout/promote"' in page and 'href="/rollout/abort"' in page
    confirm = manager.get("/rollout/promote").text
    assert "Promote rollout 1 (revision 2)?" in confirm and 'name="force"' not in confirm
    assert manager.post("/rollout/promote", data={}).status_code == 403  # no CSRF token
    resp = manager.post(
        "/rollout/promote", data={"csrf": csrf_of(manager), "message": "change window"}
    )
    assert resp.status_code == 200 and "Rollout promoted." in resp.text
    api = sqlite_server.admin()
    status = api.call("GET", "/api/v1/rollout")
    assert status["state"] == "promoted" and status["reason"] == "change window"
    assert status["endedBy"] == "admin:mia"
    rows = api.call("GET", "/api/v1/audit", action="rollout.promote")
    assert [r["outcome"] for r in rows] == ["ok", "denied"]  # the post without a CSRF token
    entry = rows[0]
    assert entry["actor"] == "admin:mia" and entry["target"] == "2"
    assert entry["route"] == "POST /rollout/promote" and entry["detail"]["was"] == "canary"
    # nothing left to end: refused with the API's reason, nothing audited as done
    again = manager.post("/rollout/abort", data={"csrf": csrf_of(manager)})
    assert again.status_code == 409 and "no rollout is in progress" in again.text
    # a second rollout, aborted
    api.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"team.yaml": POLICY.format(user="cy")}, "canary": "label:ring=0"},
    )
    resp = manager.post("/rollout/abort", data={"csrf": csrf_of(manager), "message": "bad"})
    assert resp.status_code == 200 and "Rollout aborted." in resp.text
    assert api.call("GET", "/api/v1/rollout")["state"] == "aborted"
    [entry] = api.call("GET", "/api/v1/audit", action="rollout.abort")
    assert entry["actor"] == "admin:mia" and entry["target"] == "3"


def test_a_halted_rollout_is_promoted_only_with_force(sqlite_server):
    _staged(sqlite_server)
    client = sqlite_server.canary_client  # the canary reports a failed converge
    etag = client.work("", 0)["etag"]
    failed = {"kind": "user", "name": "bo", "action": "create", "status": "failed"}
    client.report(
        {
            "reportId": "report-halt-1",
            "etag": etag,
            "ok": False,
            "changed": False,
            "report": {"results": [failed], "counts": {"failed": 1}},
        }
    )
    api = sqlite_server.admin()
    deadline = time.monotonic() + 15
    while api.call("GET", "/api/v1/rollout")["state"] != "halted":
        assert time.monotonic() < deadline, "the rollout did not halt"
        time.sleep(0.1)
    manager = signed_in(sqlite_server, "mia", "manager")
    assert "an admin: the rollout halted" in manager.get("/rollout").text
    assert 'name="force"' in manager.get("/rollout/promote").text
    refused = manager.post("/rollout/promote", data={"csrf": csrf_of(manager)})
    assert refused.status_code == 409 and "force=true" in refused.text
    assert api.call("GET", "/api/v1/rollout")["state"] == "halted"
    forced = manager.post("/rollout/promote", data={"csrf": csrf_of(manager), "force": "1"})
    assert forced.status_code == 200 and "Rollout promoted." in forced.text
    rows = api.call("GET", "/api/v1/audit", action="rollout.promote")
    assert rows[0]["actor"] == "admin:mia" and rows[0]["detail"]["forced"] is True


def test_elevate_form_queues_elevate_through_the_api_with_its_reason(sqlite_server):
    _, device_id = sqlite_server.device("web1")
    reader = signed_in(sqlite_server, "rita", "read-only")
    assert f"/devices/{device_id}/elevate" not in reader.get(f"/devices/{device_id}").text
    form = {"csrf": csrf_of(reader), "user": "alice", "duration": "2h", "reason": "INC-4711"}
    assert reader.post(f"/devices/{device_id}/elevate", data=form).status_code == 403
    assert commands_of(sqlite_server, device_id) == []

    manager = signed_in(sqlite_server, "mia", "manager")
    page = manager.get(f"/devices/{device_id}").text
    assert f'action="/devices/{device_id}/elevate"' in page and "Revoke admin now" in page
    csrf = csrf_of(manager)
    # no reason, or a duration that is none: refused, nothing queued, the refusal audited
    missing = manager.post(
        f"/devices/{device_id}/elevate",
        data={"csrf": csrf, "user": "alice", "duration": "2h", "reason": "  "},
    )
    assert missing.status_code == 422 and "Give a reason" in missing.text
    assert 'value="alice"' in missing.text  # the form comes back filled in
    bad = manager.post(
        f"/devices/{device_id}/elevate",
        data={"csrf": csrf, "user": "alice", "duration": "2 hours", "reason": "x"},
    )
    assert bad.status_code == 422 and "is not a duration" in bad.text
    too_long = manager.post(
        f"/devices/{device_id}/elevate",
        data={"csrf": csrf, "user": "alice", "duration": "400d", "reason": "x"},
    )
    assert too_long.status_code == 422
    assert commands_of(sqlite_server, device_id) == []
    refused = audit(sqlite_server, actor="admin:mia", outcome="refused", target=device_id)
    assert len(refused) == 3 and "Give a reason" in refused[-1]["detail"]["reason"]

    before = time.time()
    resp = manager.post(
        f"/devices/{device_id}/elevate",
        data={"csrf": csrf, "user": "alice", "duration": "1h30m", "reason": "INC-4711 driver"},
    )
    assert resp.status_code == 200 and resp.url.path == f"/devices/{device_id}"
    [made] = commands_of(sqlite_server, device_id)
    assert made["action"] == "elevate" and made["created_by"] == "admin:mia"
    assert f"Command {made['id']} queued." in resp.text
    granted = made["body"]["elevate"]
    assert granted["user"] == "alice" and granted["reason"] == "INC-4711 driver"
    assert granted["seconds"] == 5400
    import datetime

    until = datetime.datetime.fromisoformat(granted["until"]).timestamp()
    assert before + 5400 - 2 <= until <= time.time() + 5400 + 1
    rows = sqlite_server.admin().call("GET", "/api/v1/audit", action="command.elevate")
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert len(ok) == 1 and ok[0]["actor"] == "admin:mia" and ok[0]["target"] == device_id
    assert ok[0]["detail"]["reason"] == "INC-4711 driver" and ok[0]["detail"]["user"] == "alice"

    # revoke: no duration, no reason needed
    resp = manager.post(
        f"/devices/{device_id}/elevate", data={"csrf": csrf, "user": "alice", "revoke": "1"}
    )
    assert resp.status_code == 200
    revoke = commands_of(sqlite_server, device_id)[0]
    assert revoke["body"]["elevate"] == {"user": "alice", "revoke": True}
