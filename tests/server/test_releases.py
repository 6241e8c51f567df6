"""Agent releases on the server: upload, list, delete, device download, update commands.

Runs on SQLite and, where it answers, PostgreSQL (the ``server`` fixture), so that several
server processes sharing one database share the releases too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from wheels import build_wheel, minimal_files, minimal_wheel

from jcstate.cli import main
from jcstate.errors import AuthError, ServerError


def _audit(server: Any, action: str) -> list[dict[str, Any]]:
    return [a for a in reversed(server.ctx.store.list_audit()) if a["action"] == action]


def test_upload_list_download_delete(server, tmp_path):
    admin = server.admin("administrator")
    data = minimal_wheel(tmp_path, "0.2.0")
    stored = admin.call("POST", "/api/v1/releases", data=data)
    digest = hashlib.sha256(data).hexdigest()
    assert (stored["version"], stored["sha256"], stored["size"]) == ("0.2.0", digest, len(data))
    assert stored["filename"] == "jcstate-0.2.0-py3-none-any.whl"
    assert stored["createdBy"].startswith("token:")
    listed = server.admin("read-only").call("GET", "/api/v1/releases")
    assert [(r["version"], r["sha256"]) for r in listed] == [("0.2.0", digest)]

    # any active device downloads the exact bytes, by digest; an unknown digest is 404
    device, _ = server.device("dl1")
    assert device.download(f"/api/v1/device/releases/{digest}") == data
    other, _ = server.device("dl2")
    assert other.download(f"/api/v1/device/releases/{digest}") == data  # cached copy
    with pytest.raises(ServerError, match="404"):
        device.download("/api/v1/device/releases/" + "0" * 64)
    with pytest.raises(ServerError, match="404"):
        device.download("/api/v1/device/releases/not-a-digest")

    assert admin.call("DELETE", "/api/v1/releases/0.2.0") == {"version": "0.2.0", "deleted": True}
    assert admin.call("GET", "/api/v1/releases") == []
    with pytest.raises(ServerError, match="404"):
        device.download(f"/api/v1/device/releases/{digest}")  # gone, even if still cached
    with pytest.raises(ServerError, match="404"):
        admin.call("DELETE", "/api/v1/releases/0.2.0")
    trail = [(a["outcome"], a["target"]) for a in _audit(server, "POST /api/v1/releases")]
    assert trail == [("ok", "0.2.0")]
    assert _audit(server, "DELETE /api/v1/releases/{version}")[0]["detail"]["sha256"] == digest


def test_upload_is_checked_and_refusals_are_audited(server, tmp_path):
    admin = server.admin("administrator")
    admin.call("POST", "/api/v1/releases", data=minimal_wheel(tmp_path, "1.0.0"))

    def refused(data: bytes, status: int, match: str) -> None:
        with pytest.raises(ServerError, match=match) as caught:
            admin.call("POST", "/api/v1/releases", data=data)
        assert f"HTTP {status}" in str(caught.value)

    refused(b"PK\x03\x04 not really", 422, "not a wheel")
    refused(b"", 422, "not a wheel")
    # the same version again, even with other bytes: delete first
    again = build_wheel(tmp_path / "b", "1.0.0", {**minimal_files("1.0.0"), "jcstate/x.py": b""})
    refused(again.read_bytes(), 409, "already stored")
    other = build_wheel(tmp_path / "c", "1.0.1", minimal_files("1.0.1"), name="notjcstate")
    refused(other.read_bytes(), 422, "not of jcstate")
    native = build_wheel(tmp_path / "d", "1.0.2", minimal_files("1.0.2"), purelib=False)
    refused(native.read_bytes(), 422, "not a pure-Python wheel")
    linux = build_wheel(
        tmp_path / "e", "1.0.3", minimal_files("1.0.3"), tag="py3-none-linux_x86_64"
    )
    refused(linux.read_bytes(), 422, "not \\*-any")
    drift = build_wheel(tmp_path / "f", "1.0.4", minimal_files("1.0.5"))  # __version__ differs
    refused(drift.read_bytes(), 422, "jcstate/__init__.py says 1.0.5")
    bare = build_wheel(tmp_path / "g", "1.0.6", {"jcstate/__init__.py": b""})
    refused(bare.read_bytes(), 422, "not an agent release")
    badver = build_wheel(tmp_path / "h", "latest", minimal_files("latest"))
    refused(badver.read_bytes(), 422, "cannot name a release")

    outcomes = [a["outcome"] for a in _audit(server, "POST /api/v1/releases")]
    assert outcomes == ["ok"] + ["refused"] * 9
    with pytest.raises(AuthError):
        server.admin("manager").call("POST", "/api/v1/releases", data=minimal_wheel(tmp_path, "2"))
    assert _audit(server, "POST /api/v1/releases")[-1]["outcome"] == "denied"
    assert [r["version"] for r in admin.call("GET", "/api/v1/releases")] == ["1.0.0"]


def test_update_command_needs_administrator_and_a_stored_release(server, tmp_path):
    admin, manager = server.admin("administrator"), server.admin("manager")
    data = minimal_wheel(tmp_path, "0.3.0")
    admin.call("POST", "/api/v1/releases", data=data)
    client, device_id = server.device("upd1")
    route = f"/api/v1/devices/{device_id}/commands/update"
    with pytest.raises(AuthError):
        manager.call("POST", route, {"version": "0.3.0"})
    with pytest.raises(ServerError, match="no release 9.9 on this server"):
        admin.call("POST", route, {"version": "9.9"})
    with pytest.raises(ServerError, match="needs the version"):
        admin.call("POST", route, {})
    with pytest.raises(ServerError, match="only for action update"):
        admin.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {"version": "0.3.0"})
    made = admin.call("POST", route, {"version": "0.3.0", "retry": True})
    sha = hashlib.sha256(data).hexdigest()
    assert made["action"] == "update" and made["state"] == "queued"
    assert made["update"] == {"version": "0.3.0", "sha256": sha, "retry": True}
    # the device gets the digest in its work answer, and the bytes by that digest
    [delivered] = client.work("", 0, 0)["commands"]
    assert delivered["update"] == {"version": "0.3.0", "sha256": sha, "retry": True}
    assert client.download(f"/api/v1/device/releases/{sha}") == data
    trail = _audit(server, "POST /api/v1/devices/{ref}/commands/update")
    assert [(a["outcome"], a["role"]) for a in trail] == [
        ("denied", "manager"),
        ("refused", "administrator"),
        ("refused", "administrator"),
        ("ok", "administrator"),
    ]
    assert trail[-1]["detail"]["version"] == "0.3.0"

    # a release with an unfinished update is not deleted by accident
    with pytest.raises(ServerError, match="HTTP 409.*not finished"):
        admin.call("DELETE", "/api/v1/releases/0.3.0")
    client.command_results([{"id": made["id"], "action": "update", "status": "succeeded"}])
    assert admin.call("DELETE", "/api/v1/releases/0.3.0")["deleted"] is True


def _jcstate(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_release_push_list_deploy_delete(sqlite_server, tmp_path, capsys, monkeypatch):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("administrator"))
    wheel = build_wheel(tmp_path, "0.4.0", minimal_files("0.4.0"))
    code, out, err = _jcstate(capsys, "release", "push", str(wheel))
    assert code == 0, err
    assert "stored release 0.4.0" in out
    code, out, _ = _jcstate(capsys, "release", "list", "--output", "json")
    assert [r["version"] for r in json.loads(out)] == ["0.4.0"]

    server.device("web1")
    server.device("web2")
    server.device("db1")
    server.ctx.store.set_device(server.ctx.store.devices_named("web1")[0]["id"], labels={"t": "w"})
    server.ctx.store.set_device(server.ctx.store.devices_named("web2")[0]["id"], labels={"t": "w"})
    code, out, err = _jcstate(capsys, "release", "deploy", "0.4.0", "--label", "t=w")
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 2 and "for 2 device(s)" in err
    shown = [server.admin("read-only").call("GET", f"/api/v1/commands/{i}") for i in ids]
    assert sorted(s["hostname"] for s in shown) == ["web1", "web2"]
    assert {s["update"]["version"] for s in shown} == {"0.4.0"}
    code, out, err = _jcstate(capsys, "command", "update", "db1", "--version", "0.4.0", "--retry")
    assert code == 0, err
    assert "queued update for db1" in err
    one = server.admin("read-only").call("GET", f"/api/v1/commands/{out.strip()}")
    assert one["update"]["retry"] is True

    code, _, err = _jcstate(capsys, "release", "delete", "0.4.0")
    assert code != 0 and "not finished" in err
    code, out, err = _jcstate(capsys, "release", "delete", "0.4.0", "--force")
    assert code == 0 and "deleted release 0.4.0" in out, err
    code, _, err = _jcstate(capsys, "release", "deploy", "0.4.0", "--all")
    assert code != 0 and "no release 0.4.0" in err


def test_release_is_shared_through_the_database(server, tmp_path: Path):
    """What one server process stored, another process's store (same database) serves."""
    from jcstate.server import db
    from jcstate.server.store import Store

    data = minimal_wheel(tmp_path, "5.0")
    server.admin("administrator").call("POST", "/api/v1/releases", data=data)
    url = server.ctx.store.engine.url.render_as_string(hide_password=False)
    engine = db.connect(url)
    try:
        other = Store(engine)
        digest = hashlib.sha256(data).hexdigest()
        assert other.release_data(digest) == ("jcstate-5.0-py3-none-any.whl", data)
        assert other.release("5.0")["sha256"] == digest
    finally:
        engine.dispose()


def test_signature_is_stored_and_forwarded_to_the_device(server, tmp_path):
    """The server keeps the release key's signature and puts it in update commands; it cannot
    check it (it never holds the key), so a malformed one is all it refuses."""
    from jcstate.agent import release_key

    private, public = release_key.keygen()
    admin = server.admin("administrator")
    data = minimal_wheel(tmp_path, "0.5.0")
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(ServerError, match="HTTP 422.*64-byte Ed25519 signature"):
        admin.call("POST", "/api/v1/releases", data=data, signature="not-base64")
    signature = release_key.sign(release_key.load_private(private), "0.5.0", sha)
    stored = admin.call("POST", "/api/v1/releases", data=data, signature=signature)
    assert stored["signed"] is True
    unsigned = admin.call("POST", "/api/v1/releases", data=minimal_wheel(tmp_path, "0.6.0"))
    assert unsigned["signed"] is False
    client, device_id = server.device("sig1")
    made = admin.call("POST", f"/api/v1/devices/{device_id}/commands/update", {"version": "0.5.0"})
    assert made["update"] == {"version": "0.5.0", "sha256": sha, "signature": signature}
    [delivered] = client.work("", 0, 0)["commands"]
    assert delivered["update"]["signature"] == signature
    key = release_key.parse_public(public)
    assert release_key.verify(key, "0.5.0", sha, delivered["update"]["signature"])
    trail = [
        (a["outcome"], a["detail"].get("signed")) for a in _audit(server, "POST /api/v1/releases")
    ]
    assert trail == [("refused", None), ("ok", True), ("ok", False)]


def test_cli_release_keygen_sign_push(sqlite_server, tmp_path, capsys, monkeypatch):
    keys = tmp_path / "keys"
    code, out, err = _jcstate(capsys, "release", "keygen", "--out", str(keys))
    assert code == 0, err
    assert (keys / "release-key").stat().st_mode & 0o777 == 0o600
    assert (keys / "release-key.pub").read_text().startswith("jcstate-release-ed25519 ")
    code, _, err = _jcstate(capsys, "release", "keygen", "--out", str(keys))
    assert code == 1 and "exists: not replaced" in err  # a key is never overwritten

    wheel = build_wheel(tmp_path, "0.7.0", minimal_files("0.7.0"))
    code, out, err = _jcstate(
        capsys, "release", "sign", str(wheel), "--key", str(keys / "release-key")
    )
    assert code == 0 and f"{wheel}.sig" in out, err
    monkeypatch.setenv("JCSTATE_SERVER", sqlite_server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", sqlite_server.token("administrator"))
    code, out, err = _jcstate(capsys, "release", "push", str(wheel))
    assert code == 0 and "stored release 0.7.0 (signed)" in out, err
    other = build_wheel(tmp_path / "o", "0.8.0", minimal_files("0.8.0"))
    code, out, err = _jcstate(capsys, "release", "push", str(other))
    assert code == 0 and "(UNSIGNED)" in out and "agents with a pinned release key" in err
    code, out, _ = _jcstate(capsys, "release", "list", "--output", "json")
    assert {r["version"]: r["signed"] for r in json.loads(out)} == {"0.7.0": True, "0.8.0": False}

    from jcstate.agent import release_key

    public = release_key.parse_public((keys / "release-key.pub").read_text())
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    signature = Path(f"{wheel}.sig").read_text().strip()
    assert release_key.verify(public, "0.7.0", sha, signature)
