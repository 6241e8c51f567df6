"""`jcstate verify` against real test hosts: apply a policy, verify it, break it, verify again."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import testhost as th
from harness import apply_policy, jcstate_argv, verify_policy

# A made-up sha512crypt-shaped hash (no login needs it): verify compares it as a string and
# must never print it.
HASH = (
    "$6$jcstatetest$0X9e8Z8Pd/7Eat0U5sTbHwQb9dG5e3n8XwQbU3o3nq8bH1xF0Cq3jJrcCv0xv"
    "QeW7tPYNq4l7sO3oNvM0sJxg/"
)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJcstateTestKeyOnlyForVerifyChecks000 alice@laptop"

POLICY = textwrap.dedent(f"""\
    apiVersion: jcstate/v1
    kind: Policy
    metadata:
      name: verify-e2e
    selector:
      os: [linux]
    spec:
      groups:
        - name: developers
          gid: 2001
          members: [alice]
        - name: ghosts
          state: absent
      users:
        - name: alice
          uid: 1501
          fullName: Alice Example
          shell: /bin/bash
          home: /home/alice
          groups: [developers]
          admin: true
          password:
            hash: "{HASH}"
          sshAuthorizedKeys: ["{KEY}"]
          expires: 2027-06-30
        - name: mallory
          state: absent
    """)


def _failures(report: dict) -> dict[tuple[str, str], str]:
    return {
        (c["name"], c["check"]): c.get("message", "")
        for c in report["checks"]
        if c["status"] != "pass"
    }


def test_apply_then_verify_passes_and_reapply_changes_nothing(testhost: th.TestHost) -> None:
    applied = apply_policy(testhost, POLICY)
    assert applied.returncode == 0, applied.stderr
    verified = verify_policy(testhost, POLICY)
    report = verified.report
    assert _failures(report) == {}
    assert verified.returncode == 0
    assert report["passed"] >= 15 and report["device"]["hostname"] == testhost.hostname
    assert HASH not in verified.stdout + verified.stderr

    again = apply_policy(testhost, POLICY)
    assert again.returncode == 0, again.stderr
    assert again.report["counts"]["create"] + again.report["counts"]["update"] == 0


def test_verify_reports_drift_without_showing_the_hash(testhost: th.TestHost) -> None:
    assert apply_policy(testhost, POLICY).returncode == 0
    root = str(testhost.root)
    subprocess.run(["usermod", "--root", root, "-u", "1600", "-s", "/bin/sh", "alice"], check=True)
    subprocess.run(["useradd", "--root", root, "mallory"], check=True)
    subprocess.run(
        ["gpasswd", "--root", root, "-d", "alice", "sudo"], check=True, capture_output=True
    )
    testhost.run(["chpasswd", "-e"], input="alice:$6$other$abc\n")
    testhost.run(["chmod", "0644", "/home/alice/.ssh/authorized_keys"])

    verified = verify_policy(testhost, POLICY)
    assert verified.returncode == 1
    failures = _failures(verified.report)
    assert failures == {
        ("alice", "uid is 1501"): "uid: expected 1501, got 1600",
        ("alice", "shell is /bin/bash"): "shell: expected '/bin/bash', got '/bin/sh'",
        ("alice", "is an administrator"): "admin: expected in group sudo, but is not in it",
        (
            "alice",
            "password hash is the policy's (secret)",
        ): "password hash: expected (secret), got a different hash",
        (
            "alice",
            "authorized_keys holds exactly the 1 given key(s), mode 0600, owned by the user",
        ): "authorized_keys mode: expected '0600', got '0644'",
        ("mallory", "does not exist"): "user mallory exists",
    }
    assert HASH not in verified.stdout + verified.stderr
    assert "$6$other$abc" not in verified.stdout + verified.stderr


def test_text_output_reads_like_pytest(testhost: th.TestHost, tmp_path) -> None:
    subprocess.run(
        ["groupadd", "--root", str(testhost.root), "-g", "2001", "developers"], check=True
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    proc = subprocess.run(
        [*jcstate_argv(), "verify", str(policy), "--hosts", f"chroot://{testhost.root}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "PASS group developers: gid is 2001" in lines
    assert "PASS user mallory: does not exist" in lines
    assert "FAIL user alice: exists: user alice does not exist" in lines
    assert (
        "FAIL group developers: members are exactly alice: members: expected ['alice'], "
        "got [] (missing alice)" in lines
    )
    assert lines[-1].startswith(f"{len(lines) - 1} check(s) on chroot://")


def test_verify_over_ssh_with_paramiko(testhost: th.TestHost) -> None:
    pytest.importorskip("paramiko")
    assert apply_policy(testhost, POLICY).returncode == 0
    testhost.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/id_test"])
    testhost.run(["install", "-d", "-m", "0700", "/root/.ssh"])
    testhost.run(["cp", "/root/id_test.pub", "/root/.ssh/authorized_keys"])
    port = testhost.start_sshd(options=["PermitRootLogin=prohibit-password"])
    key = testhost.path("/root/id_test")

    url = f"paramiko://root@127.0.0.1:{port}?ssh_identity_file={key}"
    result = verify_policy_url(POLICY, url)
    assert result["ok"], _failures(result)
    assert result["device"]["hostname"] == testhost.hostname


def verify_policy_url(policy: str, url: str) -> dict:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "p.yaml")
        path.write_text(policy)
        proc = subprocess.run(
            [*jcstate_argv(), "verify", str(path), "--hosts", url, "--output", "json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)
