"""``jcstate server backup`` of a running server, ``server restore`` into a new data directory
(and a new PostgreSQL database): the device carries on without enrolling again, a command it
finished is not sent again, commands still waiting are still waiting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import live
import pytest

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.server.api_client import AdminClient

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""


def jcstate(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "jcstate", *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest):
    """(old database option, new database option): none for SQLite (it lives in --data)."""
    if request.param == "sqlite":
        yield [], []
        return
    reason = live.postgres_available()
    if reason:
        pytest.skip(reason)
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore missing (apt: postgresql-client)")
    with live.postgres_database() as old, live.postgres_database() as new:
        yield ["--database", old], ["--database", new]


def test_a_restored_server_carries_on_with_its_devices_and_commands(tmp_path: Path, databases):
    old_db, new_db = databases
    old_data, new_data = tmp_path / "old", tmp_path / "new"
    server = live.ServerProcess(["--data", str(old_data), *old_db], live.free_port()).start()
    identity = Identity(str(tmp_path / "device"))
    try:
        token = (old_data / "admin-token").read_text().strip()
        key = (old_data / "connect-key").read_text().strip()
        admin = AdminClient(server.url, token)
        admin.call("POST", "/api/v1/revisions", {"files": {"base.yaml": POLICY}})
        device = Client(server.url, identity)
        device_id = device.enroll(key, {"hostname": "laptop1", "os": "linux"})["id"]
        identity.save_device(device_id, server.url)
        done = admin.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
        sent = admin.call(
            "POST", f"/api/v1/devices/{device_id}/commands/run", {"run": {"argv": ["true"]}}
        )
        work = device.work("", 0, 0)
        assert [c["id"] for c in work["commands"]] == [done["id"], sent["id"]]
        result = {"id": done["id"], "action": "lock", "status": "succeeded"}
        device.command_results([result])
        waiting = admin.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
        device.close()

        backup = tmp_path / "backup.tar"
        out = jcstate("server", "backup", str(backup), "--data", str(old_data), *old_db).stdout
        assert "secret-key" in out
        assert oct(backup.stat().st_mode & 0o777) == "0o600"
        with tarfile.open(backup) as tar:
            names = set(tar.getnames())
        assert {"manifest.json", "secret-key", "admin-token"} <= names
        assert ("jcstate.pgdump" if old_db else "jcstate.db") in names
        admin.close()
    finally:
        server.kill()  # the old server is gone for good

    # a restore never writes over a server's state
    refused = jcstate("server", "restore", str(backup), "--data", str(old_data), check=False)
    assert refused.returncode != 0 and "exists" in refused.stderr

    jcstate("server", "restore", str(backup), "--data", str(new_data), *new_db)
    assert oct(os.stat(new_data).st_mode & 0o777) == "0o700"
    assert (new_data / "secret-key").read_bytes() == (old_data / "secret-key").read_bytes()
    server = live.ServerProcess(["--data", str(new_data), *new_db], live.free_port()).start()
    try:
        admin = AdminClient(server.url, token)  # the same administrator token still works
        listed = admin.call("GET", "/api/v1/commands")
        shown = {c["id"]: c["state"] for c in listed}
        # sent in a work answer but never acknowledged by the device: still queued, with the
        # time it was sent (docs/state-model.md)
        assert shown == {done["id"]: "succeeded", sent["id"]: "queued", waiting["id"]: "queued"}
        sent_at = {c["id"]: c["sentAt"] for c in listed}
        assert sent_at[sent["id"]] is not None and sent_at[waiting["id"]] is None
        # the device, with the identity it has, on the new server: no enrollment
        device = Client(server.url, identity)
        work = device.work("", 0, 0)
        assert work["document"]["spec"]["users"][0]["name"] == "alice"
        # the finished command is not sent again; the unfinished and the queued one are
        assert [c["id"] for c in work["commands"]] == [sent["id"], waiting["id"]]
        devices = admin.call("GET", "/api/v1/devices")
        assert [d["id"] for d in devices] == [device_id]
        device.close()
        admin.close()
    finally:
        server.kill()


def test_a_postgres_backup_without_pg_dump_says_what_to_do(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret-key").write_text("x\n")
    env = {**os.environ, "PATH": str(tmp_path)}  # no pg_dump on this PATH
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jcstate",
            "server",
            "backup",
            str(tmp_path / "b.tar"),
            "--data",
            str(tmp_path / "data"),
            "--database",
            "postgresql://jcstate@127.0.0.1/jcstate",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "pg_dump --format=custom" in done.stderr and "secret-key" in done.stderr
    assert not (tmp_path / "b.tar").exists()


def test_restoring_something_else_changes_nothing(tmp_path: Path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_text("not a backup\n")
    done = jcstate("server", "restore", str(garbage), "--data", str(tmp_path / "d"), check=False)
    assert done.returncode == 1 and "not a jcstate backup (not a tar file)" in done.stderr
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(garbage, arcname="../escape")
    done = jcstate("server", "restore", str(other), "--data", str(tmp_path / "d"), check=False)
    assert done.returncode == 1 and "unexpected member '../escape'" in done.stderr
    assert not (tmp_path / "d").exists()
