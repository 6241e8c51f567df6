"""Two server processes on one PostgreSQL: a command issued through one reaches, within a
second, a device long-polling the other (LISTEN/NOTIFY), and its result is seen by both."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import live
import pytest
from test_server_postgres import _start

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.server.api_client import AdminClient

pytestmark = pytest.mark.postgres


def test_a_command_issued_on_one_process_reaches_a_poll_held_by_another(tmp_path):
    reason = live.postgres_available()
    if reason:
        pytest.skip(reason)
    with live.postgres_database() as database:
        procs: list[subprocess.Popen[bytes]] = []
        clients: list[Any] = []
        try:
            a, url_a = _start(database, tmp_path / "data", tmp_path / "secret-key")
            procs.append(a)
            b, url_b = _start(database, tmp_path / "data", tmp_path / "secret-key")
            procs.append(b)
            token = (tmp_path / "data" / "admin-token").read_text().strip()
            key = (tmp_path / "data" / "connect-key").read_text().strip()
            admin_a, admin_b = AdminClient(url_a, token), AdminClient(url_b, token)
            device = Client(url_b, Identity(str(tmp_path / "dev")))
            clients += [admin_a, admin_b, device]
            device_id = device.enroll(key, {"hostname": "pg-cmd", "os": "linux"})["id"]
            device.identity.save_device(device_id, url_b)
            etag = device.work("", 0, 0)["etag"]
            got: dict[str, Any] = {}

            def poll() -> None:
                got["work"] = device.work(etag, 30, 0)
                got["at"] = time.monotonic()

            waiter = threading.Thread(target=poll)
            waiter.start()
            time.sleep(0.7)
            sent = time.monotonic()
            cmd = admin_a.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
            waiter.join(10)
            assert [c["id"] for c in got["work"]["commands"]] == [cmd["id"]]
            assert got["at"] - sent < 1.0, f"delivered after {got['at'] - sent:.2f} s"
            device.command_results([{"id": cmd["id"], "action": "lock", "status": "succeeded"}])
            assert admin_a.call("GET", f"/api/v1/commands/{cmd['id']}")["state"] == "succeeded"
            assert admin_b.call("GET", "/api/v1/commands")[0]["state"] == "succeeded"
        finally:
            for client in clients:
                client.close()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if proc.stdout:
                    proc.stdout.close()
