"""Apply steps of SSH MFA that plain file writes cannot express.

:class:`ApplySshConfig` changes sshd's configuration and the PAM stack as one transaction:
write every file, validate the whole effective result, and only then reload sshd; on any
failure put every file back byte for byte (content, mode, owner), reload nothing and raise
:class:`~jcstate.errors.HostError`. A wrong sshd or PAM file is how admins lock themselves out,
so nothing is ever left half-applied.

:class:`WriteSecretFile` writes a user's TOTP secret file, refusing a symlink or anything but a
regular file at that path (a user could plant ``~/.google_authenticator → /etc/shadow``).

Both have the shape of :mod:`jcstate.plan` steps: ``execute(host)``, ``to_dict()``, ``__str__``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Any

from jcstate.errors import HostError, JcstateError, UnsafePath
from jcstate.host import Host
from jcstate.modules.accounts.files import parse_passwd
from jcstate.modules.ssh_mfa import pam, sshd
from jcstate.modules.ssh_mfa.reload import reload_sshd
from jcstate.modules.ssh_mfa.totp_file import digest
from jcstate.secret import Secret, redact

__all__ = ["ApplySshConfig", "ManagedFile", "WriteSecretFile"]


@dataclass(frozen=True)
class ManagedFile:
    """One file of the transaction: its new content (None: remove it) and what it held at plan."""

    path: str
    content: str | None
    mode: int
    before_digest: str | None  # sha256 of the content the plan was made from; None: absent


@dataclass(frozen=True)
class _Saved:
    data: bytes | None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class ApplySshConfig:
    """Write sshd/PAM files, validate, reload sshd — or restore everything and raise."""

    files: tuple[ManagedFile, ...]
    mfa_users: tuple[str, ...]

    def execute(self, host: Host) -> None:
        saved = {f.path: _save(host, f.path) for f in self.files}
        for f in self.files:
            now = saved[f.path].data
            if (None if now is None else digest(now)) != f.before_digest:
                raise HostError(f"{f.path} changed since the plan was made; plan again")
        try:
            for f in self.files:
                if f.content is None:
                    host.remove_file(f.path)
                else:
                    old = saved[f.path]
                    owner = (old.uid, old.gid) if old.data is not None else (0, 0)
                    host.write_file(f.path, f.content, mode=f.mode, owner=owner[0], group=owner[1])
            validate(host, self.mfa_users)
        except (JcstateError, OSError) as exc:
            _restore(host, saved)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise HostError(
                f"sshd/PAM change refused: {reason}. Previous files restored; sshd not reloaded"
            ) from exc
        try:
            reload_sshd(host)
        except JcstateError as exc:
            raise HostError(
                f"sshd/PAM files are written and valid, but sshd could not be reloaded: {exc}"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "sshdPamTransaction": [
                {"write" if f.content is not None else "remove": f.path} for f in self.files
            ],
            "validate": ["sshd -t"]
            + [f"sshd -T -C user={u}" for u in self.mfa_users]
            + ["pam stack"],
            "then": "reload sshd",
        }

    def __str__(self) -> str:
        parts = [("write " if f.content is not None else "remove ") + f.path for f in self.files]
        return "; ".join(parts) + "; validate (sshd -t, sshd -T, PAM); reload sshd"


def validate(host: Host, mfa_users: tuple[str, ...]) -> None:
    """Refuse (HostError) unless sshd accepts its configuration and it asks listed users a code."""
    # sshd -t insists on its privilege-separation directory; a stopped image may lack it.
    if not host.exists("/run/sshd"):
        host.make_dir("/run/sshd", mode=0o755)
    result = host.run(["sshd", "-t"], chroot=True, check=False)
    if result.returncode != 0:
        raise HostError(f"sshd -t rejected the configuration: {result.stderr.strip()}")
    for user in mfa_users:
        spec = f"user={user},host=localhost,addr=127.0.0.1"
        result = host.run(["sshd", "-T", "-C", spec], chroot=True, check=False)
        if result.returncode != 0:
            raise HostError(f"sshd -T -C {spec} failed: {result.stderr.strip()}")
        problem = sshd.check_effective(user, sshd.parse_effective(result.stdout))
        if problem:
            raise HostError(problem)
    text = host.read_text(pam.PAM_SSHD) or ""
    pam.check_stack(
        text,
        mfa_users,
        module_exists=lambda name: module_path(host, name) is not None,
        include_exists=lambda name: host.exists(
            name if name.startswith("/") else f"/etc/pam.d/{name}"
        ),
    )


def module_path(host: Host, name: str) -> str | None:
    """Where PAM module ``name`` is installed on ``host``, or None."""
    candidates = [name] if name.startswith("/") else [f"{d}/{name}" for d in pam.MODULE_DIRS]
    for path in candidates:
        try:
            if host.exists(path):
                return path
        except HostError:
            continue
    return None


def _save(host: Host, path: str) -> _Saved:
    st = host.lstat(path)
    if st is None:
        return _Saved(None)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{path}: not a regular file; refusing to replace it")
    data = host.read_bytes(path)
    return _Saved(data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def _restore(host: Host, saved: dict[str, _Saved]) -> None:
    for path, old in saved.items():
        if old.data is None:
            host.remove_file(path)
        else:
            host.write_file(path, old.data, mode=old.mode, owner=old.uid, group=old.gid)


@dataclass(frozen=True)
class WriteSecretFile:
    """Write ``content`` to a user's secret file, owned by that user, never through a link."""

    path: str
    content: Secret
    user: str
    mode: int = 0o400

    def execute(self, host: Host) -> None:
        st = host.lstat(self.path)
        if st is not None and not stat.S_ISREG(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise UnsafePath(f"{self.path} is {kind}; refusing to write the TOTP secret there")
        entry = parse_passwd(host.read_text("/etc/passwd")).get(self.user)
        if entry is None:
            raise HostError(f"{self.user}: no such user in /etc/passwd")
        try:
            host.write_file(
                self.path, self.content, mode=self.mode, owner=entry.uid, group=entry.gid
            )
        except FileNotFoundError as exc:
            raise HostError(f"{self.path}: the home directory does not exist") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "write": self.path,
            "mode": f"{self.mode:04o}",
            "owner": self.user,
            "content": redact(self.content),
        }

    def __str__(self) -> str:
        return f"write {self.path} ({self.mode:04o} {self.user}) (secret)"
