"""The example policy repo converges on a real Debian test host, and verify agrees."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from harness import jcstate_argv

REPO = Path(__file__).resolve().parents[2] / "examples" / "linux-workstations"


def _jcstate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JCSTATE_")}
    return subprocess.run(
        [*jcstate_argv(), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_linux_workstations_example(testhost: Any, testinfra_host: Any, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("totp:\n  alice: JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n")
    secrets.chmod(0o600)
    device = ["--root", str(testhost.root), "--label", "team=eng", "--hostname", "eng-ws-1"]

    first = _jcstate("apply", str(REPO), *device, "--secrets", str(secrets), "--output", "json")
    report = json.loads(first.stdout)
    assert first.returncode == 0, first.stdout + first.stderr
    assert {r["status"] for r in report["results"]} == {"ok"}

    # the engineering policy matched: its users, groups and MFA are there
    alice = testinfra_host.user("alice")
    assert alice.exists and alice.uid == 1501 and "developers" in alice.groups
    assert "sudo" in alice.groups  # admin: true on Debian
    assert testinfra_host.group("developers").exists
    assert set(testinfra_host.group("admins").members) == {"opsadmin"}
    assert testinfra_host.user("bob").gecos.startswith("Bob Example (eng-ws-1)")
    mfa = testinfra_host.file("/home/alice/.google_authenticator")
    assert mfa.exists and mfa.user == "alice" and mfa.mode & 0o077 == 0
    assert "JBSWY3DP" not in first.stdout + first.stderr

    again = _jcstate("plan", str(REPO), *device, "--secrets", str(secrets), "--output", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["changes"] == []

    verify = _jcstate(
        "verify",
        str(REPO),
        "--hosts",
        f"chroot://{testhost.root}",
        "--label",
        "team=eng",
        "--hostname",
        "eng-ws-1",
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "FAIL" not in verify.stdout and verify.stdout.count("PASS") >= 10
