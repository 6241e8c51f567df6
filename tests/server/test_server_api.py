"""The server's API on SQLite and PostgreSQL: enrollment, signatures, push, long-poll, reports."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse

import pytest

from jcstate.agent import signing
from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.errors import AuthError, ServerError

BASE = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: base
vars:
  shell: /bin/bash
spec:
  users:
    - name: alice
      uid: 1501
      shell: "{{ vars.shell }}"
      fullName: "Alice on {{ device.hostname }}"
"""

MFA = """\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: mfa
selector:
  labels: {team: sec}
spec:
  sshMfa:
    enabled: true
    users: [alice]
"""


def push(server, files, **kw):
    return server.admin("manager").call("POST", "/api/v1/revisions", {"files": files, **kw})


def test_openapi_and_health_are_served(server):
    spec = json.loads(_raw(server, "GET", "/openapi.json", b"", {})[1])
    assert "/api/v1/device/work" in spec["paths"]
    assert json.loads(_raw(server, "GET", "/api/v1/health", b"", {})[1])["ok"] is True


def test_device_receives_its_rendered_document_not_templates(server):
    client, device_id = server.device("web1")
    assert client.work("", 0)["document"] is None  # nothing pushed yet
    push(server, {"base.yaml": BASE})
    work = client.work("", 0)
    user = work["document"]["spec"]["users"][0]
    assert user["shell"] == "/bin/bash"
    assert user["fullName"] == "Alice on web1"
    assert "{{" not in json.dumps(work["document"])
    assert work["commands"] == [] and work["revision"] >= 1


def test_long_poll_holds_then_ends_empty(server):
    client, _ = server.device()
    push(server, {"base.yaml": BASE})
    etag = client.work("", 0)["etag"]
    start = time.monotonic()
    again = client.work(etag, 1.0)
    assert 0.9 <= time.monotonic() - start < 3
    assert again["document"] is None and again["etag"] == etag


def test_long_poll_wakes_within_a_second_of_a_push(server):
    client, _ = server.device()
    push(server, {"base.yaml": BASE})
    etag = client.work("", 0)["etag"]
    got = {}

    def poll():
        got["work"] = client.work(etag, 30)
        got["at"] = time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # the poll is now held by the server
    pushed = time.monotonic()
    push(server, {"base.yaml": BASE.replace("/bin/bash", "/bin/zsh")})
    waiter.join(10)
    assert got["work"]["document"]["spec"]["users"][0]["shell"] == "/bin/zsh"
    assert got["at"] - pushed < 1.0


def test_replayed_request_is_refused(server):
    client, device_id = server.device()
    target = "/api/v1/device"
    headers = signing.sign_headers(client.identity.private_key, "GET", target, b"", device_id)
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(server.url).netloc)
    statuses = []
    for _ in range(2):
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    conn.close()
    assert statuses == [200, 401]


def _raw(server, method, target, body, headers):
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(server.url).netloc)
    if body:  # as the agent sends it
        headers = {"Content-Type": "application/json", **headers}
    conn.request(method, target, body=body, headers=headers)
    try:
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_signature_binds_body_path_and_date(server):
    client, device_id = server.device()
    key = client.identity.private_key
    body = json.dumps({"reportId": "r" * 16, "ok": True}).encode()
    target = "/api/v1/device/reports"
    good = signing.sign_headers(key, "POST", target, body, device_id)
    # another body under the same signature
    assert _raw(server, "POST", target, body.replace(b"true", b"false"), good)[0] == 401
    # another path
    moved = signing.sign_headers(key, "GET", "/api/v1/device", b"", device_id)
    assert _raw(server, "GET", "/api/v1/device/work?etag=&wait=0", b"", moved)[0] == 401
    # a date outside the allowed skew
    old = dict(signing.sign_headers(key, "GET", "/api/v1/device", b"", device_id))
    old[signing.DATE] = str(int(time.time()) - signing.MAX_SKEW - 60)
    assert _raw(server, "GET", "/api/v1/device", b"", old)[0] == 401
    # another device's key claiming this device's id
    other, _ = server.device()
    forged = signing.sign_headers(
        other.identity.private_key, "GET", "/api/v1/device", b"", device_id
    )
    assert _raw(server, "GET", "/api/v1/device", b"", forged)[0] == 401
    assert _raw(server, "POST", target, body, good)[0] == 200


def test_revoked_connect_key_stops_enrollment_at_once(server, tmp_path):
    admin = server.admin()
    key = admin.call("POST", "/api/v1/connect-keys", {"name": "lab"})
    server.device(connect_key=key["key"])
    admin.call("DELETE", f"/api/v1/connect-keys/{key['id']}")
    with pytest.raises(AuthError):
        server.device(connect_key=key["key"])
    denied = [a for a in admin.call("GET", "/api/v1/audit") if a["action"] == "device.enroll"]
    assert denied[0]["outcome"] == "denied"


def test_second_enrollment_never_takes_over_a_device(server):
    first, first_id = server.device(hostname="laptop")
    second, second_id = server.device(hostname="laptop")
    assert first_id != second_id
    # the same key enrolling again gets its own record back, no new device
    again = first.enroll(server.connect_key, {"hostname": "laptop", "os": "linux"})
    assert again["id"] == first_id
    assert first.request("GET", "/api/v1/device")["id"] == first_id
    assert len(server.ctx.store.devices_named("laptop")) == 2
    with pytest.raises(ServerError, match="409|2 devices"):
        server.admin().call("GET", "/api/v1/devices/laptop")


def test_revoked_device_is_refused_and_its_poll_ends(server):
    client, device_id = server.device()
    push(server, {"base.yaml": BASE})
    etag = client.work("", 0)["etag"]
    result = {}

    def poll():
        try:
            client.work(etag, 30)
        except AuthError as exc:
            result["error"] = exc
        result["at"] = time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    revoked = time.monotonic()
    server.admin().call("POST", f"/api/v1/devices/{device_id}/revoke")
    waiter.join(10)
    assert isinstance(result["error"], AuthError) and result["at"] - revoked < 1.0
    with pytest.raises(AuthError):
        client.request("GET", "/api/v1/device/work?etag=&wait=0")


def test_device_awaits_approval_when_the_key_says_so(server):
    admin = server.admin()
    key = admin.call("POST", "/api/v1/connect-keys", {"autoApprove": False})
    client, device_id = server.device(connect_key=key["key"])
    assert client.request("GET", "/api/v1/device")["status"] == "pending"
    with pytest.raises(AuthError, match="approval"):
        client.work("", 0)
    admin.call("POST", f"/api/v1/devices/{device_id}/approve")
    assert "etag" in client.work("", 0)


def test_report_is_stored_once_and_updates_the_device(server):
    client, device_id = server.device()
    report = {
        "reportId": "a" * 32,
        "etag": "x",
        "ok": True,
        "changed": True,
        "report": {"counts": {"create": 1}},
        "facts": {"hostname": "h", "users": []},
    }
    assert client.report(report)["duplicate"] is False
    assert client.report(report)["duplicate"] is True
    assert server.ctx.store.count_reports(device_id) == 1
    shown = server.admin("read-only").call("GET", f"/api/v1/devices/{device_id}")
    assert shown["lastReportOk"] is True and shown["facts"]["hostname"] == "h"
    assert shown["online"] is True
    # every change applied: no drift (docs/state-model.md); but not of the current document
    assert shown["drift"] is False and shown["documentCurrent"] is False


def test_totp_secret_reaches_only_devices_whose_policy_lists_the_user(server):
    admin = server.admin()
    sec_key = admin.call("POST", "/api/v1/connect-keys", {"labels": {"team": "sec"}})
    sec, _ = server.device("sec1", connect_key=sec_key["key"])
    plain, _ = server.device("plain1")
    push(server, {"base.yaml": BASE, "mfa.yaml": MFA})
    secret = server.admin("manager").call("POST", "/api/v1/totp/alice")["secret"]
    assert sec.work("", 0)["secrets"] == {"totp": {"alice": secret}}
    assert plain.work("", 0)["secrets"] == {}
    # sealed at rest: the database never holds the plain secret
    sealed = server.ctx.store.sealed_secret("totp", "alice")
    assert secret not in sealed and sealed.startswith("v1:")
    listed = admin.call("GET", "/api/v1/totp")
    assert [r["user"] for r in listed] == ["alice"] and secret not in json.dumps(listed)


def test_new_totp_secret_wakes_the_device_that_needs_it(server):
    sec_key = server.admin().call("POST", "/api/v1/connect-keys", {"labels": {"team": "sec"}})
    sec, _ = server.device("sec1", connect_key=sec_key["key"])
    push(server, {"base.yaml": BASE, "mfa.yaml": MFA})
    etag = sec.work("", 0)["etag"]
    threading.Timer(0.3, lambda: server.admin("manager").call("POST", "/api/v1/totp/alice")).start()
    start = time.monotonic()
    work = sec.work(etag, 20)
    assert time.monotonic() - start < 2 and "alice" in work["secrets"]["totp"]


def test_invalid_push_is_refused_with_positions_and_dry_run_stores_nothing(server):
    with pytest.raises(ServerError, match=r"bad\.yaml:\d+:\d+"):
        push(server, {"bad.yaml": "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: X_}\n"})
    client, _ = server.device("web1")
    client.report(
        {
            "reportId": "b" * 32,
            "ok": True,
            "facts": {"users": {"users": [{"name": "root", "uid": 0}], "groups": []}},
        }
    )
    answer = push(server, {"base.yaml": BASE}, dryRun=True)
    assert answer["revision"] is None
    assert answer["devices"][0]["changes"] == ["+ user alice"]
    assert server.ctx.store.latest_revision_id() is None


def test_roles_are_enforced_and_denials_audited(server):
    reader = server.admin("read-only")
    with pytest.raises(AuthError):
        reader.call("POST", "/api/v1/revisions", {"files": {"base.yaml": BASE}})
    manager = server.admin("manager")
    with pytest.raises(AuthError):
        manager.call("POST", "/api/v1/tokens", {"role": "administrator"})
    admin = server.admin()
    made = admin.call("POST", "/api/v1/tokens", {"role": "read-only", "name": "ci"})
    from jcstate.server.api_client import AdminClient

    ci = AdminClient(server.url, made["token"])
    server.opened.append(ci)
    assert ci.call("GET", "/api/v1/whoami")["role"] == "read-only"
    admin.call("DELETE", f"/api/v1/tokens/{made['id']}")
    with pytest.raises(AuthError):
        ci.call("GET", "/api/v1/whoami")
    log = admin.call("GET", "/api/v1/audit")
    denied = {(a["action"], a["role"]) for a in log if a["outcome"] == "denied"}
    assert ("policy.push", "read-only") in denied
    assert ("token.create", "manager") in denied
    assert any(a["action"] == "token.revoke" and a["outcome"] == "ok" for a in log)
    # the revoked token's attempt is recorded as that token, by name, with the reason
    [after] = [a for a in log if a["actor"] == f"token:{made['id']}"]
    assert (after["actorName"], after["outcome"], after["reason"]) == ("ci", "denied", "revoked")
    assert all(made["token"] not in json.dumps(a) for a in log)
    # only hashes are stored
    assert made["token"] not in json.dumps(server.ctx.store.list_tokens())


def test_unsigned_and_unknown_device_requests_are_refused(server, tmp_path):
    stranger = Client(server.url, Identity(str(tmp_path / "stranger")))
    server.opened.append(stranger)
    with pytest.raises(AuthError):
        stranger.request("GET", "/api/v1/device/work?etag=&wait=0", device_id="nosuchdevice")
    assert _raw(server, "GET", "/api/v1/device", b"", {})[0] == 401


def test_a_conflict_for_one_device_is_an_error_not_a_silent_winner(server):
    client, _ = server.device("web1")
    other = BASE.replace("name: base", "name: other").replace("/bin/bash", "/bin/zsh")
    other = other.replace("metadata:", "selector:\n  hostnames: [web1]\nmetadata:")
    try:
        push(server, {"base.yaml": BASE, "other.yaml": other})
    except ServerError:
        pytest.skip("the repo validator already refuses this conflict at push time")
    work = client.work("", 0)
    assert work["document"] is None and "alice" in work["error"]
