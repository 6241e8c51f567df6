"""FileVault recovery-key escrow: a device sends its key, an administrator reads it back.

The key is sealed by the vault before it reaches the database, never lands in the audit log,
and storing it touches neither the secrets generation (every device's etag) nor anyone's poll.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from jcstate.cli import main
from jcstate.errors import AuthError, ServerError
from jcstate.secret import Secret
from jcstate.server import db

KEY = "ABCD-EFGH-IJKL-MNOP-QRST-UVWX"
NEW_KEY = "ZZZZ-YYYY-XXXX-WWWW-VVVV-UUUU"
VOLUME = "5F1D3F0A-8C2B-4E1F-9A77-0123456789AB"
READ_ROUTE = "GET /api/v1/devices/{ref}/recovery-key"


def _audit_text(server: Any) -> str:
    return json.dumps(server.ctx.store.list_audit(10000), default=str)


def _rows(server: Any) -> list[dict[str, Any]]:
    with server.ctx.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(db.recovery_keys.select())]


def test_device_escrows_and_administrator_reads_back(server):
    client, device_id = server.device("mac1", os_name="darwin")
    generation = server.ctx.store.generation()

    answer = client.escrow(VOLUME, Secret(KEY))
    assert (answer["device"], answer["volume"]) == (device_id, VOLUME)

    got = server.admin().call("GET", f"/api/v1/devices/{device_id}/recovery-key")
    assert (got["device"], got["volume"], got["key"]) == (device_id, VOLUME, KEY)
    assert got["escrowedAt"] == answer["escrowedAt"]
    by_name = server.admin().call("GET", "/api/v1/devices/mac1/recovery-key")
    assert by_name["key"] == KEY
    # no device's document depends on a recovery key: the etag generation did not move
    assert server.ctx.store.generation() == generation

    [row] = _rows(server)
    assert (row["device_id"], row["volume"]) == (device_id, VOLUME)
    assert KEY not in row["ciphertext"] and row["ciphertext"].startswith("v1:")
    # sealed for this device and volume: the row cannot be opened as another's
    opened = server.ctx.vault.open("recovery", f"{device_id}/{VOLUME}", row["ciphertext"])
    assert opened.reveal() == KEY
    with pytest.raises(Exception, match="cannot decrypt"):
        server.ctx.vault.open("recovery", f"other/{VOLUME}", row["ciphertext"])

    trail = [
        (a["action"], a["actor"], a["outcome"])
        for a in reversed(server.ctx.store.list_audit())
        if "escrow" in a["action"] or "recovery-key" in a["action"]
    ]
    assert trail == [
        ("POST /api/v1/device/escrow", f"device:{device_id}", "ok"),
        (READ_ROUTE, trail[1][1], "ok"),
        (READ_ROUTE, trail[2][1], "ok"),
    ]
    assert KEY not in _audit_text(server)


def test_storing_twice_replaces_and_volumes_are_kept_apart(server):
    client, device_id = server.device("mac2", os_name="darwin")
    client.escrow(VOLUME, Secret(KEY))
    client.escrow(VOLUME, Secret(NEW_KEY))
    assert len(_rows(server)) == 1
    admin = server.admin()
    assert admin.call("GET", f"/api/v1/devices/{device_id}/recovery-key")["key"] == NEW_KEY

    client.escrow(None, Secret(KEY))  # volume unknown: stored under ""
    newest = admin.call("GET", f"/api/v1/devices/{device_id}/recovery-key")
    assert (newest["volume"], newest["key"]) == ("", KEY)
    every = admin.call("GET", f"/api/v1/devices/{device_id}/recovery-key", all="true")
    assert [(k["volume"], k["key"]) for k in every] == [("", KEY), (VOLUME, NEW_KEY)]
    one = admin.call("GET", f"/api/v1/devices/{device_id}/recovery-key", volume=VOLUME)
    assert one["key"] == NEW_KEY
    assert not any(KEY in r["ciphertext"] or NEW_KEY in r["ciphertext"] for r in _rows(server))
    assert KEY not in _audit_text(server) and NEW_KEY not in _audit_text(server)


def test_only_administrators_read_keys_and_refusals_are_audited(sqlite_server):
    server = sqlite_server
    client, device_id = server.device("mac3", os_name="darwin")
    client.escrow(VOLUME, Secret(KEY))
    for role in ("read-only", "manager"):
        with pytest.raises(AuthError):
            server.admin(role).call("GET", f"/api/v1/devices/{device_id}/recovery-key")
    refused = [
        (a["role"], a["outcome"], a["target"])
        for a in reversed(server.ctx.store.list_audit())
        if a["action"] == READ_ROUTE
    ]
    assert refused == [("read-only", "denied", device_id), ("manager", "denied", device_id)]
    assert KEY not in _audit_text(server)


def test_another_device_can_neither_read_nor_overwrite_the_key(sqlite_server):
    server = sqlite_server
    client, device_id = server.device("mac4", os_name="darwin")
    other, other_id = server.device("mac5", os_name="darwin")
    client.escrow(VOLUME, Secret(KEY))
    # devices have no read route: the admin route refuses a device's signature
    with pytest.raises(AuthError):
        other.request("GET", f"/api/v1/devices/{device_id}/recovery-key")
    # claiming the first device's id with the other's key is refused
    with pytest.raises(AuthError):
        other.request(
            "POST",
            "/api/v1/device/escrow",
            {"volume": VOLUME, "key": NEW_KEY},
            device_id=device_id,
        )
    # its own escrow lands under its own id, whatever volume it names
    other.escrow(VOLUME, Secret(NEW_KEY))
    admin = server.admin()
    assert admin.call("GET", f"/api/v1/devices/{device_id}/recovery-key")["key"] == KEY
    assert admin.call("GET", f"/api/v1/devices/{other_id}/recovery-key")["key"] == NEW_KEY


def test_no_key_escrowed_is_404_and_audited(sqlite_server):
    server = sqlite_server
    _, device_id = server.device("mac6", os_name="darwin")
    with pytest.raises(ServerError, match="404"):
        server.admin().call("GET", f"/api/v1/devices/{device_id}/recovery-key")
    [entry] = [a for a in server.ctx.store.list_audit() if a["action"] == READ_ROUTE]
    assert (entry["outcome"], entry["target"]) == ("failed", device_id)


def test_a_bad_escrow_body_is_refused_without_echoing_the_key(sqlite_server):
    client, _ = sqlite_server.device("mac7", os_name="darwin")
    with pytest.raises(ServerError, match="422") as caught:
        client.request("POST", "/api/v1/device/escrow", {"volume": 7, "key": KEY})
    assert KEY not in str(caught.value)


def test_recovery_keys_table_exists_after_migration(server):
    names = sa.inspect(server.ctx.store.engine).get_table_names()
    assert "recovery_keys" in names


def test_cli_prints_the_key_as_text_and_json(sqlite_server, capsys, monkeypatch):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("administrator"))
    client, device_id = server.device("mac8", os_name="darwin")
    client.escrow(VOLUME, Secret(KEY))

    assert main(["device", "recovery-key", "mac8"]) == 0
    out = capsys.readouterr().out
    assert "RECOVERY KEY" in out and KEY in out and VOLUME in out
    assert main(["device", "recovery-key", device_id, "--all", "--output", "json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert (entry["device"], entry["key"]) == (device_id, KEY)
