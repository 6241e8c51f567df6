"""First start: the secrets go to 0600 files, never to stdout; the data directory is private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import live


def _start(data: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jcstate", "server", "--data", str(data)]
        + ["--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_first_start_prints_the_paths_of_private_files_not_the_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = live.free_port()
    proc = _start(data, port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    assert token.startswith("jcs_") and key.startswith("jck_")
    assert token not in out + err and key not in out + err
    assert str(data / "admin-token") in out and str(data / "connect-key") in out
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in ("admin-token", "connect-key", "secret-key"):
        assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name


def test_a_data_directory_others_may_enter_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    proc = _start(data, live.free_port())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "mode 0755" in err and "chmod 700" in err, err
    assert list(data.iterdir()) == []  # nothing was created in it
