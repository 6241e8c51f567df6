"""The sshd+PAM transaction and the secret-file step, on fixture roots (commands faked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakehost import FakeSshdHost, build_root

from jcstate.errors import HostError, UnsafePath
from jcstate.modules.ssh_mfa import pam, sshd
from jcstate.modules.ssh_mfa.steps import ApplySshConfig, ManagedFile, WriteSecretFile
from jcstate.modules.ssh_mfa.totp_file import digest, render
from jcstate.secret import Secret

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="fixture roots chown files to users")
DROPIN = f"/etc/ssh/sshd_config.d/{sshd.DROPIN_NAME}"


def _transaction(host: FakeSshdHost) -> ApplySshConfig:
    old_pam = host.read_text(pam.PAM_SSHD) or ""
    st = host.lstat(pam.PAM_SSHD)
    mode = 0o644 if st is None else st.st_mode & 0o7777  # the plan keeps the file's mode
    return ApplySshConfig(
        (
            ManagedFile(pam.PAM_SSHD, pam.set_block(old_pam, ("alice",)), mode, digest(old_pam)),
            ManagedFile(DROPIN, sshd.render_dropin(("alice",)), 0o644, None),
        ),
        ("alice",),
    )


def test_failed_validation_restores_every_file_byte_for_byte(tmp_path: Path) -> None:
    root = build_root(tmp_path, {})
    os.chmod(root / "etc/pam.d/sshd", 0o640)
    before = (root / "etc/pam.d/sshd").read_bytes()
    host = FakeSshdHost(str(root), sshd_t_error="line 1: Bad configuration option: Nope")
    with pytest.raises(HostError, match="sshd -t rejected.*Nope.*restored; sshd not reloaded"):
        _transaction(host).execute(host)
    assert (root / "etc/pam.d/sshd").read_bytes() == before
    assert oct(os.stat(root / "etc/pam.d/sshd").st_mode & 0o7777) == oct(0o640)
    assert not (root / DROPIN.lstrip("/")).exists()
    assert not any(a[0] in ("kill", "systemctl") for a in host.commands_run)


def test_successful_transaction_keeps_owner_and_mode_and_validates_each_user(tmp_path) -> None:
    root = build_root(tmp_path, {})
    os.chmod(root / "etc/pam.d/sshd", 0o640)
    os.chown(root / "etc/pam.d/sshd", 0, 4)
    host = FakeSshdHost(str(root))
    _transaction(host).execute(host)
    assert os.stat(root / "etc/pam.d/sshd").st_gid == 4
    assert pam.block_users((root / "etc/pam.d/sshd").read_text()) == ("alice",)
    assert oct(os.stat(root / "etc/pam.d/sshd").st_mode & 0o7777) == oct(0o640)
    assert ("sshd", "-t") in host.commands_run
    assert ("sshd", "-T", "-C", "user=alice,host=localhost,addr=127.0.0.1") in host.commands_run


def test_a_file_changed_since_the_plan_is_not_overwritten(tmp_path: Path) -> None:
    root = build_root(tmp_path, {})
    host = FakeSshdHost(str(root))
    step = _transaction(host)
    (root / "etc/pam.d/sshd").write_text("# edited by hand meanwhile\n")
    with pytest.raises(HostError, match="changed since the plan"):
        step.execute(host)
    assert (root / "etc/pam.d/sshd").read_text() == "# edited by hand meanwhile\n"


def test_secret_step_refuses_a_symlink_planted_after_the_plan(tmp_path: Path) -> None:
    root = build_root(tmp_path, {})
    target = root / "etc/target"
    target.write_text("keep me\n")
    link = root / "home/alice/.google_authenticator"
    os.symlink("/etc/target", link)
    os.lchown(link, 1000, 1000)
    step = WriteSecretFile(
        "/home/alice/.google_authenticator", render(Secret("JBSWY3DPEHPK3PXP")), "alice"
    )
    assert "(secret)" in str(step) and "JBSWY" not in str(step.to_dict())
    with pytest.raises(UnsafePath, match="symlink"):
        step.execute(FakeSshdHost(str(root)))
    assert target.read_text() == "keep me\n" and link.is_symlink()


def test_secret_step_writes_owner_and_mode(tmp_path: Path) -> None:
    root = build_root(tmp_path, {})
    WriteSecretFile(
        "/home/bob/.google_authenticator", render(Secret("JBSWY3DPEHPK3PXP")), "bob"
    ).execute(FakeSshdHost(str(root)))
    st = os.stat(root / "home/bob/.google_authenticator")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1001, 1001, 0o400)
