"""``jcstate server --log-format json``: every line on stderr is one JSON object (uvicorn's
own lines and the access log included), and no token is in them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import live


def test_the_server_logs_one_json_object_per_line(tmp_path: Path):
    port = live.free_port()
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "jcstate", "server", "--data", str(data)]
    argv += ["--listen", f"127.0.0.1:{port}", "--log-format", "json", "--log-level", "info"]
    proc = subprocess.Popen(
        [*argv, "--access-log"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/api/v1/health", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        token = (data / "admin-token").read_text().strip()
        assert httpx.get(url + "/api/v1/devices", headers={"Authorization": "Bearer " + token})
        httpx.get(url + "/api/v1/devices", headers={"Authorization": "Bearer wrong-token"})
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines, err
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any("/api/v1/devices" in m and "401" in m for m in access)
    assert token not in err and "wrong-token" not in err
