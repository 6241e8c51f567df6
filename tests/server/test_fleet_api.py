"""Fleet operations through the API (issue 12), on SQLite and PostgreSQL: targeting, labels,
batches, revisions and rollback, audit, tokens, TOTP lifecycle and the one JSON style."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

import pytest

from jcstate.errors import AuthError, ServerError

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

BASE = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""
ENG = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: eng}
selector:
  labels: {team: eng}
spec:
  sshMfa: {enabled: true, users: [alice]}
"""


def _fleet(server: Any) -> dict[str, str]:
    """Five devices: web1/web2 (team=eng, site=paris|lyon), db1 (team=ops), mac1 (darwin,
    team=eng), lab1 (no labels)."""
    admin = server.admin()
    ids = {}
    for name, labels, os_name in (
        ("web1", {"team": "eng", "site": "paris"}, "linux"),
        ("web2", {"team": "eng", "site": "lyon"}, "linux"),
        ("db1", {"team": "ops", "site": "paris"}, "linux"),
        ("mac1", {"team": "eng"}, "darwin"),
        ("lab1", {}, "linux"),
    ):
        client, ids[name] = server.device(name, os_name=os_name)
        client.work("", 0)  # seen once
        if labels:
            admin.call("PUT", f"/api/v1/devices/{ids[name]}/labels", {"labels": labels})
    return ids


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [r["hostname"] for r in rows]


def _get(server: Any, path: str) -> tuple[dict[str, str], bytes]:
    req = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    with urllib.request.urlopen(req) as resp:
        return dict(resp.headers), resp.read()


def test_devices_filter_sort_and_page_in_the_database(server):
    ids = _fleet(server)
    api = server.admin("read-only")
    get = lambda **q: _names(api.call("GET", "/api/v1/devices", **q))  # noqa: E731
    assert get() == ["db1", "lab1", "mac1", "web1", "web2"]
    assert get(label="team=eng") == ["mac1", "web1", "web2"]
    assert get(label=["team=eng", "site=paris"]) == ["web1"]  # repeated: AND
    assert get(label="team=eng", os="linux") == ["web1", "web2"]
    assert get(os="darwin") == ["mac1"]
    assert get(search="WE") == ["web1", "web2"]  # hostname prefix, any case
    assert get(search=ids["db1"][:6]) == ["db1"]  # id prefix
    assert get(search="%") == []  # LIKE wildcards are literal
    assert get(sort="-hostname") == ["web2", "web1", "mac1", "lab1", "db1"]
    assert get(sort="hostname", limit=2, page=2) == ["mac1", "web1"]
    headers, _ = _get(server, "/api/v1/devices?limit=2&label=team%3Deng")
    assert headers["x-total-count"] == "3"
    with pytest.raises(ServerError, match="422.*sort"):  # refused by the schema
        api.call("GET", "/api/v1/devices", sort="colour")
    with pytest.raises(ServerError, match="KEY=VALUE"):
        api.call("GET", "/api/v1/devices", label="team")


def test_status_filters_online_offline_failed_drift(server):
    ids = _fleet(server)
    api = server.admin("read-only")
    store = server.ctx.store
    long_ago = time.time() - 3600
    store.flush_seen()
    with store.transaction() as conn:
        from jcstate.server import db

        conn.execute(
            db.devices.update().where(db.devices.c.id == ids["lab1"]).values(last_seen=long_ago)
        )
    store._seen.pop(ids["lab1"], None)
    assert _names(api.call("GET", "/api/v1/devices", status="online")) == [
        "db1",
        "mac1",
        "web1",
        "web2",
    ]
    assert _names(api.call("GET", "/api/v1/devices", status="offline")) == ["lab1"]
    assert api.call("GET", "/api/v1/devices", status="failed") == []
    # a device's report, acknowledged by it: failed, and drift (it did not converge)
    client = server.opened[[i for i, c in enumerate(server.opened) if hasattr(c, "work")][0]]
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": {"base.yaml": BASE}})
    answer = client.work("", 0)
    # drift is what the device's last plan left unapplied (docs/state-model.md)
    failed = {"results": [{"kind": "user", "name": "alice", "status": "failed", "message": "x"}]}
    applied = {"results": [{"kind": "user", "name": "alice", "status": "ok", "message": ""}]}
    client.report(
        {"reportId": "report-1", "etag": answer["etag"], "ok": False, "changed": False}
        | {"report": failed}
    )
    assert _names(api.call("GET", "/api/v1/devices", status="failed")) == ["web1"]
    assert _names(api.call("GET", "/api/v1/devices", status="drift")) == ["web1"]
    client.report(
        {"reportId": "report-2", "etag": answer["etag"], "ok": True, "changed": True}
        | {"report": applied}
    )
    assert api.call("GET", "/api/v1/devices", status="drift") == []
    with pytest.raises(ServerError, match="422"):
        api.call("GET", "/api/v1/devices", status="sleepy")


def test_labels_add_remove_and_bulk_where(server):
    ids = _fleet(server)
    manager = server.admin("manager")
    shown = manager.call(
        "PATCH", "/api/v1/devices/web1/labels", {"add": {"ring": "canary"}, "remove": ["site"]}
    )
    assert shown["labels"] == {"team": "eng", "ring": "canary"}
    answer = manager.call("PATCH", "/api/v1/labels", {"where": {"team": "eng"}, "add": {"x": "1"}})
    assert answer["matched"] == 3 and sorted(_names(answer["devices"])) == ["mac1", "web1", "web2"]
    assert server.ctx.store.device(ids["db1"])["labels"] == {"team": "ops", "site": "paris"}
    assert server.ctx.store.device(ids["web2"])["labels"]["x"] == "1"
    answer = manager.call(
        "PATCH", "/api/v1/labels", {"where": {"x": "1"}, "os": "darwin", "remove": ["x"]}
    )
    assert _names(answer["devices"]) == ["mac1"]
    assert "x" not in server.ctx.store.device(ids["mac1"])["labels"]
    with pytest.raises(ServerError, match="give where"):
        manager.call("PATCH", "/api/v1/labels", {"add": {"a": "b"}})
    log = server.admin().call("GET", "/api/v1/audit", action="device.label")
    assert {a["action"] for a in log} == {"device.label"} and len(log) >= 3


def test_batch_queues_one_command_per_matching_device(server):
    ids = _fleet(server)
    manager = server.admin("manager")
    body = {"where": {"team": "eng"}, "os": "linux", "run": {"argv": ["uptime"]}}
    preview = manager.call("POST", "/api/v1/commands/batch/run", {**body, "dryRun": True})
    assert preview["batch"] is None and sorted(_names(preview["devices"])) == ["web1", "web2"]
    assert manager.call("GET", "/api/v1/commands") == []  # a dry run queues nothing
    made = manager.call("POST", "/api/v1/commands/batch/run", body)
    batch = made["batch"]
    assert made["count"] == 2 and batch.startswith("b-")
    assert {c["device"] for c in made["commands"]} == {ids["web1"], ids["web2"]}
    listed = manager.call("GET", "/api/v1/commands", batch=batch)
    assert len(listed) == 2 and all(c["batch"] == batch for c in listed)
    assert len({c["id"] for c in listed}) == 2  # each device journal keys on its own id
    shown = manager.call("GET", f"/api/v1/batches/{batch}")
    assert shown["states"] == {"queued": 2} and shown["done"] is False
    with pytest.raises(ServerError, match="no active device"):
        manager.call("POST", "/api/v1/commands/batch/lock", {"where": {"team": "nobody"}})
    with pytest.raises(ServerError, match="give where"):
        manager.call("POST", "/api/v1/commands/batch/lock", {})
    with pytest.raises(ServerError, match="404"):  # erase is never bulk: there is no route
        manager.call("POST", "/api/v1/commands/batch/erase", {"where": {"team": "eng"}})
    audit = server.admin().call("GET", "/api/v1/audit", action="command.run")
    assert audit[0]["target"] == batch and audit[0]["detail"]["count"] == 2
    # command list filters
    assert len(manager.call("GET", "/api/v1/commands", action="run")) == 2
    assert manager.call("GET", "/api/v1/commands", action="lock") == []
    assert len(manager.call("GET", "/api/v1/commands", device="web1")) == 1
    assert manager.call("GET", "/api/v1/commands", since="2999-01-01") == []
    assert len(manager.call("GET", "/api/v1/commands", since="2000-01-01T00:00:00Z")) == 2


def test_revisions_history_diff_and_rollback(server):
    _fleet(server)
    manager = server.admin("manager")
    first = manager.call(
        "POST",
        "/api/v1/revisions",
        {"files": {"base.yaml": BASE}, "message": "users", "commit": "a1b2c3d4e5f6"},
    )
    assert first["devicesAffected"] == 5  # every active device matches base
    second = manager.call(
        "POST", "/api/v1/revisions", {"files": {"base.yaml": BASE, "eng.yaml": ENG}}
    )
    assert second["devicesAffected"] == 3  # only the team=eng devices change
    listed = manager.call("GET", "/api/v1/revisions")
    assert [r["id"] for r in listed] == [2, 1]
    assert listed[1]["commit"] == "a1b2c3d4e5f6" and listed[1]["message"] == "users"
    assert listed[0]["paths"] == ["base.yaml", "eng.yaml"] and "files" not in listed[0]
    assert listed[0]["authorName"] == "test manager"
    assert RFC3339.match(listed[0]["createdAt"])
    shown = manager.call("GET", "/api/v1/revisions/1")
    assert shown["files"] == {"base.yaml": BASE}
    diff = manager.call("GET", "/api/v1/revisions/2/diff", against=1)
    assert diff["paths"] == ["eng.yaml"] and "+++ 2/eng.yaml" in diff["diff"]
    assert "+  sshMfa: {enabled: true, users: [alice]}" in diff["diff"]
    assert manager.call("GET", "/api/v1/revisions/2/diff")["from"] == 1  # default: the one before
    dry = manager.call("POST", "/api/v1/revisions/1/rollback", {"dryRun": True})
    assert dry["revision"] is None and len(dry["devices"]) == 5
    assert manager.call("GET", "/api/v1/revisions")[0]["id"] == 2  # nothing stored
    back = manager.call("POST", "/api/v1/revisions/1/rollback", {})
    assert back["revision"] == 3 and back["devicesAffected"] == 3
    third = manager.call("GET", "/api/v1/revisions/3")
    assert third["files"] == {"base.yaml": BASE} and third["rollbackOf"] == 1
    assert third["message"] == "rollback to revision 1" and third["commit"] == "a1b2c3d4e5f6"
    with pytest.raises(ServerError, match="404"):
        manager.call("POST", "/api/v1/revisions/99/rollback", {})
    with pytest.raises(ServerError, match="422"):
        manager.call("POST", "/api/v1/revisions", {"files": {"b.yaml": BASE}, "commit": "zz"})
    pushes = server.admin().call("GET", "/api/v1/audit", action="policy")
    assert [a["action"] for a in pushes][:1] == ["policy.rollback"]


def test_tokens_expire_and_refusals_say_why_and_who(server):
    admin = server.admin()
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    made = admin.call(
        "POST", "/api/v1/tokens", {"role": "read-only", "name": "grafana", "expiresAt": soon}
    )
    from jcstate.server.api_client import AdminClient

    grafana = AdminClient(server.url, made["token"])
    server.opened.append(grafana)
    grafana.call("GET", "/api/v1/devices")
    listed = {t["name"]: t for t in admin.call("GET", "/api/v1/tokens")}
    assert listed["grafana"]["state"] == "live" and RFC3339.match(listed["grafana"]["lastUsedAt"])
    assert RFC3339.match(listed["grafana"]["expiresAt"]) and "created_at" not in listed["grafana"]
    time.sleep(2.2)
    with pytest.raises(AuthError, match="grafana.*expired at"):
        grafana.call("GET", "/api/v1/devices")
    assert {t["name"]: t for t in admin.call("GET", "/api/v1/tokens")}["grafana"]["state"] == (
        "expired"
    )
    ci = admin.call("POST", "/api/v1/tokens", {"role": "manager", "name": "ci"})
    admin.call("DELETE", f"/api/v1/tokens/{ci['id']}")
    revoked = AdminClient(server.url, ci["token"])
    server.opened.append(revoked)
    with pytest.raises(AuthError, match="ci.*was revoked at"):
        revoked.call("POST", "/api/v1/revisions", {"files": {"b.yaml": BASE}})
    [entry] = admin.call("GET", "/api/v1/audit", actor="ci", outcome="denied")
    assert (entry["actorName"], entry["action"]) == ("ci", "policy.push")
    assert entry["reason"] == "revoked"
    assert admin.call("GET", "/api/v1/audit", actor="grafana", outcome="denied")[0]["reason"] == (
        "expired"
    )
    with pytest.raises(ServerError, match="in the past"):
        admin.call("POST", "/api/v1/tokens", {"role": "read-only", "expiresAt": "2001-01-01"})


def test_audit_filters(server):
    ids = _fleet(server)
    admin = server.admin()
    manager = server.admin("manager")
    manager.call("POST", f"/api/v1/devices/{ids['web1']}/commands/lock", {})
    reader = server.admin("read-only")
    with pytest.raises(AuthError):
        reader.call("POST", f"/api/v1/devices/{ids['db1']}/commands/lock", {})
    assert [a["action"] for a in admin.call("GET", "/api/v1/audit", device="web1")][:1] == [
        "command.lock"
    ]
    denied = admin.call("GET", "/api/v1/audit", device="db1", outcome="denied")
    assert [(a["action"], a["role"]) for a in denied] == [("command.lock", "read-only")]
    assert admin.call("GET", "/api/v1/audit", since="2999-01-01") == []
    every = admin.call("GET", "/api/v1/audit", until="2999-01-01")
    assert len(every) == len(admin.call("GET", "/api/v1/audit"))
    with pytest.raises(ServerError, match="RFC 3339"):
        admin.call("GET", "/api/v1/audit", since="yesterday")


def test_totp_lifecycle(server):
    ids = _fleet(server)
    manager = server.admin("manager")
    with pytest.raises(ServerError, match="no policy lists alice"):
        manager.call("POST", "/api/v1/totp/alice")
    manager.call("POST", "/api/v1/revisions", {"files": {"base.yaml": BASE, "eng.yaml": ENG}})
    made = manager.call("POST", "/api/v1/totp/alice")
    assert sorted(_names(made["devices"])) == ["mac1", "web1", "web2"]
    with pytest.raises(ServerError, match="already has a TOTP secret"):
        manager.call("POST", "/api/v1/totp/alice")
    rotated = manager.call("POST", "/api/v1/totp/alice", rotate="true")
    assert rotated["rotated"] is True and rotated["secret"] != made["secret"]
    # holding = acknowledged: web1 fetched its document and reported it applied
    client = next(c for c in server.opened if hasattr(c, "work"))
    answer = client.work("", 0)
    assert answer["secrets"] == {"totp": {"alice": rotated["secret"]}}
    client.report({"reportId": "report-t1", "etag": answer["etag"], "ok": True, "changed": True})
    [row] = manager.call("GET", "/api/v1/totp")
    assert row["user"] == "alice" and RFC3339.match(row["enrolledAt"])
    assert _names(row["devices"]) == ["web1"]
    assert sorted(_names(row["pending"])) == ["mac1", "web2"]
    assert rotated["secret"] not in str(row)
    forced = manager.call("POST", "/api/v1/totp/bob", force="true")
    assert forced["devices"] == []
    removed = manager.call("DELETE", "/api/v1/totp/alice")
    assert sorted(_names(removed["devices"])) == ["mac1", "web1", "web2"]
    assert client.work("", 0)["secrets"] == {}
    assert ids  # the fleet stays enrolled


def test_one_json_style_everywhere(server):
    """camelCase keys and RFC 3339 times in every admin listing."""
    ids = _fleet(server)
    admin = server.admin()
    admin.call("POST", "/api/v1/revisions", {"files": {"base.yaml": BASE}})
    admin.call("POST", f"/api/v1/devices/{ids['web1']}/commands/lock", {})
    views = [
        *admin.call("GET", "/api/v1/devices"),
        admin.call("GET", f"/api/v1/devices/{ids['web1']}"),
        *admin.call("GET", "/api/v1/tokens"),
        *admin.call("GET", "/api/v1/connect-keys"),
        *admin.call("GET", "/api/v1/revisions"),
        *admin.call("GET", "/api/v1/commands"),
        *admin.call("GET", "/api/v1/audit"),
    ]
    times = 0
    for view in views:
        for key, value in view.items():
            assert "_" not in key, (key, view)
            if key.endswith("At") or key in ("at", "lastSeen"):
                assert value is None or (isinstance(value, str) and RFC3339.match(value)), key
                times += value is not None
    assert times > 20
