"""The admin commands and `jcstate server` itself: first start, TLS, plain HTTP refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import live
import pytest

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.cli import main

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""


def jcstate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_admin_commands_round_trip(sqlite_server, tmp_path, capsys, monkeypatch):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.admin_token)
    repo = tmp_path / "repo"
    (repo / "teams").mkdir(parents=True)
    (repo / "teams" / "base.yaml").write_text(POLICY)
    client, device_id = server.device("web1")

    code, out, _ = jcstate(capsys, "push", str(repo), "--dry-run")
    assert code == 2 and "dry run" in out and "web1" in out  # web1 has no facts yet: unknown
    code, out, _ = jcstate(capsys, "push", str(repo), "-m", "first")
    assert code == 0 and "stored revision 1" in out
    assert client.work("", 0)["document"]["spec"]["users"][0]["name"] == "alice"

    code, out, _ = jcstate(capsys, "devices", "--output", "json")
    assert [d["hostname"] for d in json.loads(out)] == ["web1"]
    code, out, _ = jcstate(capsys, "device", "show", "web1")
    assert code == 0 and device_id in out and "online:" in out

    code, out, _ = jcstate(capsys, "token", "create", "--role", "read-only", "--output", "json")
    made = json.loads(out)
    code, out, err = jcstate(capsys, "push", str(repo), "--token", made["token"])
    assert code == 1 and "manager" in err
    code, out, _ = jcstate(capsys, "token", "revoke", made["id"])
    assert code == 0

    code, out, _ = jcstate(
        capsys, "connect-key", "create", "--label", "team=eng", "--output", "json"
    )
    key = json.loads(out)
    assert key["labels"] == {"team": "eng"}
    code, out, _ = jcstate(capsys, "connect-key", "revoke", key["id"])
    assert code == 0

    code, out, err = jcstate(capsys, "totp", "enroll", "alice")
    assert code == 1 and "no policy lists alice in sshMfa.users" in err
    code, out, _ = jcstate(capsys, "totp", "enroll", "alice", "--force")
    assert code == 0 and out.startswith("otpauth://totp/jcstate%3Aalice?secret=")
    code, out, _ = jcstate(capsys, "audit", "--output", "json")
    actions = [a["action"] for a in json.loads(out)]
    assert "totp.enroll" in actions and "policy.push" in actions
    secret = [line for line in out.splitlines() if "secret" in line.lower()]
    assert not any("otpauth" in s for s in secret)


def test_plain_http_is_refused_off_loopback(tmp_path, capsys):
    code, _, err = jcstate(capsys, "server", "--data", str(tmp_path), "--listen", "0.0.0.0:18999")
    assert code == 1 and "refusing plain HTTP" in err


def test_tls_server_with_a_made_certificate(tmp_path, capsys):
    code, out, _ = jcstate(capsys, "server", "make-cert", "--out", str(tmp_path / "tls"))
    assert (
        code == 0 and oct(os.stat(tmp_path / "tls" / "server-key.pem").st_mode & 0o777) == "0o600"
    )
    port = live.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jcstate",
            "server",
            "--data",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(tmp_path / "tls" / "server.pem"),
            "--tls-key",
            str(tmp_path / "tls" / "server-key.pem"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        key = _wait_file(tmp_path / "data" / "connect-key", proc)
        url = f"https://localhost:{port}"
        client = Client(
            url, Identity(str(tmp_path / "state")), ca_file=str(tmp_path / "tls" / "ca.pem")
        )
        try:
            for _ in range(100):
                try:
                    answer = client.enroll(key, {"hostname": "tls1", "os": "linux"})
                    break
                except Exception:
                    import time

                    time.sleep(0.1)
            assert answer["hostname"] == "tls1"
            # the work answer is written whole into the TLS transport (longpoll.direct_writer)
            client.identity.save_device(answer["id"], url)
            work = client.work("", 0)
            assert work["document"] is None and work["error"] is None and work["commands"] == []
            assert client.work(work["etag"], 0)["etag"] == work["etag"]  # same connection
        finally:
            client.close()
        untrusted = Client(url, Identity(str(tmp_path / "state2")))
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            untrusted.enroll(key, {"hostname": "tls2", "os": "linux"})
        untrusted.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def _wait_file(path: Path, proc: subprocess.Popen[str]) -> str:
    import time

    for _ in range(300):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(proc.communicate()[1])
        time.sleep(0.1)
    raise RuntimeError("server did not write its connect key")
