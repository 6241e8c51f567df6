"""Two server processes on one PostgreSQL share state, and a push through one wakes a device
long-polling the other (LISTEN/NOTIFY)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import live
import pytest

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.server.api_client import AdminClient

pytestmark = pytest.mark.postgres

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""


def _start(database: str, data: Path, key_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = live.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jcstate",
            "server",
            "--database",
            database,
            "--data",
            str(data),
            "--secret-key-file",
            str(key_file),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.communicate()[0].decode()[-2000:]}")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    reason = live.postgres_available()
    if reason:
        pytest.skip(reason)
    with live.postgres_database() as database:
        procs = []
        try:
            a, url_a = _start(database, tmp_path / "data", tmp_path / "secret-key")
            procs.append(a)
            b, url_b = _start(database, tmp_path / "data", tmp_path / "secret-key")
            procs.append(b)
            yield url_a, url_b, tmp_path
        finally:
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


def test_push_through_one_process_wakes_a_poll_held_by_another(two_servers):
    url_a, url_b, tmp = two_servers
    data = tmp / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    assert oct(os.stat(data / "admin-token").st_mode & 0o777) == "0o600"
    admin = AdminClient(url_a, token)
    on_a = Client(url_a, Identity(str(tmp / "dev")))
    device_id = on_a.enroll(key, {"hostname": "pg1", "os": "linux"})["id"]
    on_a.identity.save_device(device_id, url_a)
    on_b = Client(url_b, Identity(str(tmp / "dev")))  # same device, other server process
    try:
        etag = on_b.work("", 0)["etag"]
        got = {}

        def poll():
            got["work"] = on_b.work(etag, 30)
            got["at"] = time.monotonic()

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.7)
        pushed = time.monotonic()
        admin.call("POST", "/api/v1/revisions", {"files": {"base.yaml": POLICY}})
        waiter.join(10)
        assert got["work"]["document"]["spec"]["users"][0]["name"] == "alice"
        assert got["at"] - pushed < 1.0
        # a report through B is what A shows
        on_b.report({"reportId": "c" * 32, "etag": got["work"]["etag"], "ok": True})
        shown = AdminClient(url_b, token)
        try:
            assert shown.call("GET", f"/api/v1/devices/{device_id}")["lastReportOk"] is True
        finally:
            shown.close()
        assert admin.call("GET", "/api/v1/devices")[0]["lastReportOk"] is True
    finally:
        admin.close()
        on_a.close()
        on_b.close()
