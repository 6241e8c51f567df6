"""Fixture roots for the sshMfa backend: a Debian-like tree in a temp dir, and a Host that fakes
the few commands an apply runs (sshd -t / -T, the package install), recording them.

Facts come from real files read through the real :class:`~jcstate.host.Host`; only processes
are faked, so a case can be applied and planned again without sshd or root prefixes for tools.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jcstate.host import Host, RunResult
from jcstate.modules.ssh_mfa import pam, sshd, totp_file
from jcstate.secret import Secret

ROOTS = Path(__file__).parent / "roots"
MODULE_DIR = "/usr/lib/x86_64-linux-gnu/security"
UIDS = {"alice": 1000, "bob": 1001, "nopass": 1002}


class FakeSshdHost(Host):
    """A Host whose commands are answered, not run. ``sshd_t_error`` makes ``sshd -t`` fail."""

    def __init__(self, root: str, sshd_t_error: str | None = None):
        super().__init__(root, os_name="linux")
        self.sshd_t_error = sshd_t_error

    def run(self, argv: Sequence[str], **kwargs: Any) -> RunResult:
        argv = tuple(str(a) for a in argv)
        self.commands_run.append(argv)
        if argv[:2] == ("sshd", "-t") and self.sshd_t_error:
            return RunResult(argv, 255, "", self.sshd_t_error, 0.0)
        if argv[:2] == ("sshd", "-T"):
            user = argv[3].split(",")[0].removeprefix("user=")
            return RunResult(argv, 0, self._effective(user), "", 0.0)
        if argv[0] in ("apt-get", "dnf", "zypper", "pacman"):
            self.write_file(f"{MODULE_DIR}/{pam.MODULE}", b"", make_dirs=True)
        return RunResult(argv, 0, "", "", 0.0)

    def _effective(self, user: str) -> str:
        """What sshd -T would say, from jcstate's own drop-in or block (enough for these cases)."""
        text = (
            self.read_text(f"/etc/ssh/sshd_config.d/{sshd.DROPIN_NAME}")
            or self.read_text(sshd.SSHD_CONFIG)
            or ""
        )
        listed = user in sshd.managed_users(text)
        return (
            "usepam yes\n"
            f"kbdinteractiveauthentication {'yes' if listed else 'no'}\n"
            f"authenticationmethods {'keyboard-interactive' if listed else 'any'}\n"
        )


def build_root(tmp: Path, setup: Mapping[str, Any]) -> Path:
    """Copy the base tree and apply a case's ``setup`` to it."""
    root = tmp / "root"
    shutil.copytree(ROOTS / setup.get("base", "debian12"), root, symlinks=True)
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    for user, uid in UIDS.items():
        home = root / "home" / user
        home.mkdir(parents=True)
        os.chown(home, uid, uid)
    missing = set(setup.get("missingModules", []))
    modules = root / MODULE_DIR.lstrip("/")
    modules.mkdir(parents=True)
    named = (root / "etc/pam.d/sshd").read_text().splitlines()
    for line in [*named, f"x {pam.MODULE} pam_succeed_if.so"]:
        for word in line.split():
            if word.endswith(".so") and word not in missing:
                (modules / word).touch()
    if setup.get("noInclude"):
        main = root / "etc/ssh/sshd_config"
        main.write_text(
            "".join(
                line
                for line in main.read_text().splitlines(keepends=True)
                if not line.startswith("Include")
            )
        )
    configured = tuple(sorted(setup.get("mfaConfigured", [])))
    if configured:
        pam_file = root / "etc/pam.d/sshd"
        pam_file.write_text(pam.set_block(pam_file.read_text(), configured))
        (root / "etc/ssh/sshd_config.d" / sshd.DROPIN_NAME).write_text(
            sshd.render_dropin(configured) or ""
        )
    for user, secret in setup.get("managedSecrets", {}).items():
        _write(
            root,
            f"/home/{user}/{totp_file.FILE_NAME}",
            totp_file.render(Secret(secret)).reveal(),
            0o400,
            UIDS[user],
        )
    for path, spec in setup.get("files", {}).items():
        _write(root, path, spec["text"], int(spec.get("mode", "0644"), 8), spec.get("uid", 0))
    for path, spec in setup.get("symlinks", {}).items():
        link = root / path.lstrip("/")
        os.symlink(spec["target"], link)
        os.lchown(link, spec.get("uid", 0), spec.get("uid", 0))
    return root


def _write(root: Path, path: str, text: str, mode: int, uid: int) -> None:
    target = root / path.lstrip("/")
    target.write_text(text)
    os.chown(target, uid, uid)
    os.chmod(target, mode)
