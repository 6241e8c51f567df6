"""SSH MFA end to end: real sshd + PAM in a test host, real logins with paramiko and pyotp.

Every scenario applies a policy through the real CLI (``jcstate apply --root ROOT --secrets S``)
and then proves the result by logging in over SSH, and by testinfra checks on files, owners
and modes. Accounts are made inside the host (never on the machine running the tests).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pyotp
import pytest
import testhost as th
from harness import apply_policy, plan_policy

from jcstate.modules.ssh_mfa.verify import checks as ssh_mfa_checks

PAM_SSHD = "/etc/pam.d/sshd"
DROPIN = "/etc/ssh/sshd_config.d/00-jcstate-mfa.conf"
PASSWORDS = {"alice": "alice-pw-7f3c", "bob": "bob-pw-91ad"}


def policy(enabled: bool = True, users: tuple[str, ...] = ("alice",)) -> str:
    listed = ", ".join(users)
    return f"""\
apiVersion: jcstate/v1
kind: Policy
metadata:
  name: ssh-mfa-e2e
spec:
  users:
    - name: alice
    - name: bob
  sshMfa:
    enabled: {str(enabled).lower()}
    users: [{listed}]
"""


@dataclass
class MfaHost:
    """A running test host with alice and bob (passwords set) and sshd on 127.0.0.1:port."""

    host: th.TestHost
    port: int
    secrets_file: Path
    secret: str

    def read(self, path: str) -> bytes:
        return self.host.path(path).read_bytes()


@pytest.fixture
def secrets_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="jcstate-mfa-secrets-") as tmp:
        yield Path(tmp)


@pytest.fixture
def mfa_host(testhost: th.TestHost, secrets_dir: Path) -> MfaHost:
    for name, password in PASSWORDS.items():
        testhost.run(["useradd", "--create-home", "--shell", "/bin/sh", name])
        testhost.set_password(name, password)
    port = testhost.start_sshd()
    secret = pyotp.random_base32()
    path = secrets_dir / "secrets.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"totp:\n  alice: {secret}\n")
    return MfaHost(testhost, port, path, secret)


def _transport(port: int) -> paramiko.Transport:
    # sshd re-executes itself on the reload that follows an apply: its listening socket is
    # closed for that moment, so a refused connection is tried again (for up to 10 s)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=10)
    return transport


def login_interactive(port: int, user: str, password: str, code: str | None) -> bool:
    """Keyboard-interactive login answering "Password:" and "Verification code:" prompts.

    ``code=None`` answers the code prompt with nothing. True when sshd let us in.
    """
    transport = _transport(port)
    try:

        def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            replies = []
            for text, _echo in prompts:
                if "password" in text.lower():
                    replies.append(password)
                elif "code" in text.lower():
                    replies.append(code or "")
                else:
                    replies.append("")
            return replies

        try:
            transport.auth_interactive(user, answer)
        except paramiko.AuthenticationException:
            return False
        return transport.is_authenticated()
    finally:
        transport.close()


def login_password(port: int, user: str, password: str) -> bool:
    """Plain ``password`` method login (what most clients try first)."""
    transport = _transport(port)
    try:
        try:
            transport.auth_password(user, password)
        except paramiko.AuthenticationException:
            return False
        return transport.is_authenticated()
    finally:
        transport.close()


def wrong_code(secret: str) -> str:
    """A six-digit code that is valid in no window anywhere near now."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + 30 * k) for k in range(-4, 5)}
    return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def _apply(h: MfaHost, text: str) -> dict:
    result = apply_policy(h.host, text, "--secrets", str(h.secrets_file))
    return result.report | {"_exit": result.returncode, "_stderr": result.stderr}


def _statuses(report: dict) -> dict[tuple[str, str], str]:
    return {(r["kind"], r["name"]): r["status"] for r in report.get("results", [])}


def test_listed_user_needs_password_and_code_unlisted_user_does_not(mfa_host, testinfra_host):
    h = mfa_host
    # an open session before the change must survive the reload
    session = paramiko.SSHClient()
    session.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    session.connect(
        "127.0.0.1", h.port, "bob", PASSWORDS["bob"], look_for_keys=False, allow_agent=False
    )

    report = _apply(h, policy())
    assert report["_exit"] == 0, report

    totp = pyotp.TOTP(h.secret)
    assert login_interactive(h.port, "alice", PASSWORDS["alice"], totp.now())
    assert not login_interactive(h.port, "alice", PASSWORDS["alice"], wrong_code(h.secret))
    assert not login_interactive(h.port, "alice", PASSWORDS["alice"], None)
    assert not login_password(h.port, "alice", PASSWORDS["alice"])
    assert not login_interactive(h.port, "alice", "not-the-password", totp.now())
    # bob is not listed: password alone, exactly as before
    assert login_password(h.port, "bob", PASSWORDS["bob"])
    _, out, _ = session.exec_command("echo still-here")
    assert out.read().strip() == b"still-here"
    session.close()

    secret_file = testinfra_host.file("/home/alice/.google_authenticator")
    assert secret_file.is_file and not secret_file.is_symlink
    assert secret_file.user == "alice" and secret_file.group == "alice"
    assert secret_file.mode == 0o400
    assert secret_file.content_string.splitlines()[0] == h.secret
    assert not testinfra_host.file("/home/bob/.google_authenticator").exists
    dropin = testinfra_host.file(DROPIN)
    assert dropin.user == "root" and dropin.mode == 0o644
    assert dropin.contains("AuthenticationMethods keyboard-interactive")
    pam = testinfra_host.file(PAM_SSHD)
    assert pam.contains("pam_google_authenticator.so") and not pam.contains("nullok")
    # jcstate verify's checks agree, and fail on a host without MFA for alice
    for check in ssh_mfa_checks({"enabled": True, "users": ["alice"]}, "linux"):
        check.run(testinfra_host)
    with pytest.raises(AssertionError):
        for check in ssh_mfa_checks({"enabled": True, "users": ["alice", "bob"]}, "linux"):
            check.run(testinfra_host)
    # the secret never reaches the report
    assert h.secret not in str(report)

    second = plan_policy(h.host, policy(), "--secrets", str(h.secrets_file))
    assert second.returncode == 0, second.stdout
    assert second.report["changes"] == []


def test_disabling_restores_password_only_login(mfa_host, testinfra_host):
    h = mfa_host
    pam_before = h.read(PAM_SSHD)
    assert _apply(h, policy())["_exit"] == 0
    assert not login_password(h.port, "alice", PASSWORDS["alice"])

    report = _apply(h, policy(enabled=False))
    assert report["_exit"] == 0, report
    assert login_password(h.port, "alice", PASSWORDS["alice"])
    assert login_password(h.port, "bob", PASSWORDS["bob"])
    assert h.read(PAM_SSHD) == pam_before
    assert not testinfra_host.file(DROPIN).exists
    assert not testinfra_host.file("/home/alice/.google_authenticator").exists

    second = plan_policy(h.host, policy(enabled=False), "--secrets", str(h.secrets_file))
    assert second.returncode == 0 and second.report["changes"] == []


def test_removing_a_user_from_the_list_restores_their_password_login(mfa_host, secrets_dir):
    h = mfa_host
    bob_secret = pyotp.random_base32()
    h.secrets_file.write_text(f"totp:\n  alice: {h.secret}\n  bob: {bob_secret}\n")
    assert _apply(h, policy(users=("alice", "bob")))["_exit"] == 0
    assert not login_password(h.port, "bob", PASSWORDS["bob"])
    assert login_interactive(h.port, "bob", PASSWORDS["bob"], pyotp.TOTP(bob_secret).now())

    assert _apply(h, policy(users=("alice",)))["_exit"] == 0
    assert login_password(h.port, "bob", PASSWORDS["bob"])
    assert not login_password(h.port, "alice", PASSWORDS["alice"])
    assert not h.host.path("/home/bob/.google_authenticator").exists()


def test_broken_sshd_config_is_refused_and_files_restored(mfa_host):
    h = mfa_host
    # broken after sshd started: the running sshd is fine, a reload would kill it
    broken = h.host.path("/etc/ssh/sshd_config.d/10-broken.conf")
    broken.write_text("ThisIsNotAnSshdOption yes\n")
    watched = [PAM_SSHD, "/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/10-broken.conf"]
    before = {p: h.read(p) for p in watched}
    modes = {p: os.stat(h.host.path(p)).st_mode for p in watched}

    result = apply_policy(h.host, policy(), "--secrets", str(h.secrets_file))
    assert result.returncode != 0
    failed = [r for r in result.report["results"] if r["name"] == "sshd+pam"]
    assert failed and failed[0]["status"] == "failed"
    assert "sshd -t" in failed[0]["message"] and "restored" in failed[0]["message"]

    assert {p: h.read(p) for p in watched} == before
    assert {p: os.stat(h.host.path(p)).st_mode for p in watched} == modes
    assert not h.host.path(DROPIN).exists()
    # not reloaded: a reload with this configuration would have stopped sshd
    assert login_password(h.port, "bob", PASSWORDS["bob"])
    assert login_password(h.port, "alice", PASSWORDS["alice"])


def test_symlink_at_secret_path_is_refused_and_target_untouched(mfa_host, testinfra_host):
    h = mfa_host
    target = h.host.path("/etc/jcstate-target")
    target.write_text("precious\n")
    os.chmod(target, 0o644)
    link = h.host.path("/home/alice/.google_authenticator")
    os.symlink("/etc/jcstate-target", link)
    uid = testinfra_host.user("alice").uid
    os.lchown(link, uid, uid)  # planted by alice herself

    result = apply_policy(h.host, policy(), "--secrets", str(h.secrets_file))
    assert result.returncode != 0
    statuses = _statuses(result.report)
    assert statuses[("sshMfa", "alice")] in ("refused", "failed")
    assert statuses[("sshMfa", "sshd+pam")] == "skipped"
    assert target.read_text() == "precious\n"
    assert oct(os.stat(target).st_mode & 0o7777) == oct(0o644)
    assert os.stat(target).st_uid == 0
    assert testinfra_host.file("/home/alice/.google_authenticator").is_symlink
    assert h.secret not in result.stdout + result.stderr
    # nothing was switched on: alice still logs in as before
    assert login_password(h.port, "alice", PASSWORDS["alice"])


def test_withdrawn_secret_removes_the_file_and_fails_closed(mfa_host):
    """``jcstate totp remove bob`` while a policy still lists bob: the next run removes the
    secret file jcstate wrote, and bob's SSH login fails closed (the old code no longer works)
    with the missing secret as the reason in the report."""
    h = mfa_host
    bob_secret = pyotp.random_base32()
    h.secrets_file.write_text(f"totp:\n  alice: {h.secret}\n  bob: {bob_secret}\n")
    assert _apply(h, policy(users=("alice", "bob")))["_exit"] == 0
    assert login_interactive(h.port, "bob", PASSWORDS["bob"], pyotp.TOTP(bob_secret).now())

    h.secrets_file.write_text(f"totp:\n  alice: {h.secret}\n")  # bob's secret withdrawn
    report = _apply(h, policy(users=("alice", "bob")))
    assert report["_exit"] != 0
    statuses = _statuses(report)
    assert statuses[("sshMfa", "bob:withdrawn-secret")] == "ok", statuses
    assert statuses[("sshMfa", "bob")] == "refused"
    assert "no TOTP secret for bob" in str(report)
    assert not h.host.path("/home/bob/.google_authenticator").exists()
    assert not login_interactive(h.port, "bob", PASSWORDS["bob"], pyotp.TOTP(bob_secret).now())
    assert not login_password(h.port, "bob", PASSWORDS["bob"])
    assert login_interactive(h.port, "alice", PASSWORDS["alice"], pyotp.TOTP(h.secret).now())
