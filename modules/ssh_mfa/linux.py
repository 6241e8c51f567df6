"""SSH MFA on Linux: read what is there (facts), decide what to change (plan).

What jcstate manages on the machine, for the listed users only:

* the PAM TOTP module (the distribution's package, installed as a planned change when missing);
* sshd: keyboard-interactive through PAM, and only that, for those users (``sshd.py``);
* ``/etc/pam.d/sshd``: the code asked after the password, for those users (``pam.py``);
* each user's ``~/.google_authenticator`` (``totp_file.py``), owned by the user, mode 0400.

Order in a plan: package (phase 40), secret files (41), then sshd+PAM as one validated
transaction (42) that requires all of them — a user is never asked for a code before their
secret file is in place. Removals run the other way round: the transaction stops asking for
codes first, and only then are jcstate's secret files removed.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import HostError, PlanError, SecretError
from jcstate.host import Host
from jcstate.modules.accounts.facts import AccountFacts
from jcstate.modules.accounts.facts import gather as gather_accounts
from jcstate.modules.ssh_mfa import SshMfa, pam, sshd, totp_file
from jcstate.modules.ssh_mfa.steps import ApplySshConfig, ManagedFile, WriteSecretFile, module_path
from jcstate.plan import Change, FieldChange, RemoveFile, Run
from jcstate.resource import PlanContext
from jcstate.secret import Secret

__all__ = ["BACKEND", "FileState", "LinuxSshMfa", "MfaFacts", "SecretFileState"]

KIND = "sshMfa"
USERS_KIND = "users"  # the users resource's change kind: a new account comes first
PHASE_PACKAGE = 40
PHASE_SECRET = 41
PHASE_CONFIG = 42
CONFIG_NAME = "sshd+pam"  # '+' cannot be in a user name, so no clash with per-user changes

# os-release ID (or ID_LIKE) → the command that installs the PAM TOTP module
PACKAGE_COMMANDS = {
    "debian": ("apt-get", "install", "-y", "libpam-google-authenticator"),
    "ubuntu": ("apt-get", "install", "-y", "libpam-google-authenticator"),
    "fedora": ("dnf", "install", "-y", "google-authenticator"),
    "rhel": ("dnf", "install", "-y", "google-authenticator"),
    "suse": ("zypper", "--non-interactive", "install", "google-authenticator-libpam"),
    "arch": ("pacman", "-S", "--noconfirm", "libpam-google-authenticator"),
}


@dataclass(frozen=True)
class FileState:
    """A configuration file as found: ``text`` None means it does not exist."""

    path: str
    text: str | None = None
    mode: int = 0o644

    @property
    def digest(self) -> str | None:
        return (
            None
            if self.text is None
            else totp_file.digest(self.text.encode("utf-8", errors="surrogateescape"))
        )


@dataclass(frozen=True)
class SecretFileState:
    """A user's secret file as found, without its content (only a digest of it)."""

    path: str
    kind: str  # absent | file | symlink | other | error
    managed: bool = False
    digest: str | None = None
    mode: int | None = None
    uid: int | None = None
    error: str | None = None


@dataclass
class MfaFacts:
    """Everything the plan needs, read once."""

    accounts: AccountFacts
    os_ids: tuple[str, ...] = ()
    module: str | None = None  # path of pam_google_authenticator.so, None: not installed
    sshd_main: FileState = field(default_factory=lambda: FileState(sshd.SSHD_CONFIG))
    dropin: FileState | None = None  # None: sshd has no drop-in directory (block mode)
    pam: FileState = field(default_factory=lambda: FileState(pam.PAM_SSHD))
    secret_files: dict[str, SecretFileState] = field(default_factory=dict)

    def mfa_users(self) -> tuple[str, ...]:
        """Users the machine's PAM file currently asks a code of (jcstate's block)."""
        try:
            return pam.block_users(self.pam.text)
        except PlanError:  # a damaged block is reported by the plan, not here
            return ()

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for reports: no secrets, not even their digests."""
        return {
            "users": list(self.mfa_users()),
            "pamModule": self.module,
            "sshdConfig": self.dropin.path if self.dropin else self.sshd_main.path,
            "secretFiles": {
                name: {"path": s.path, "kind": s.kind, "managed": s.managed}
                for name, s in sorted(self.secret_files.items())
            },
        }


def _read_file(host: Host, path: str) -> FileState:
    st = host.lstat(path)
    if st is None:
        return FileState(path)
    if not stat.S_ISREG(st.st_mode):
        raise HostError(f"{path} is not a regular file")
    return FileState(path, host.read_text(path), stat.S_IMODE(st.st_mode))


def _secret_file(host: Host, home: str) -> SecretFileState:
    path = totp_file.secret_path(home)
    try:
        st = host.lstat(path)
        if st is None:
            return SecretFileState(path, "absent")
        if stat.S_ISLNK(st.st_mode):
            return SecretFileState(path, "symlink", uid=st.st_uid)
        if not stat.S_ISREG(st.st_mode):
            return SecretFileState(path, "other", uid=st.st_uid)
        data = host.read_bytes(path) or b""
    except (HostError, OSError) as exc:
        return SecretFileState(path, "error", error=str(exc))
    return SecretFileState(
        path,
        "file",
        managed=totp_file.is_managed(data),
        digest=totp_file.digest(data),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
    )


def gather(host: Host) -> MfaFacts:
    """Read sshd's and PAM's files, the accounts and every account's secret file, once."""
    accounts = gather_accounts(host, keys=False)
    release = host.os_release()
    facts = MfaFacts(
        accounts=accounts,
        os_ids=(release.get("ID", ""), *release.get("ID_LIKE", "").split()),
        module=module_path(host, pam.MODULE),
        sshd_main=_read_file(host, sshd.SSHD_CONFIG),
        pam=_read_file(host, pam.PAM_SSHD),
    )
    dropin = sshd.dropin_path(facts.sshd_main.text)
    if dropin is not None and host.exists(dropin.rsplit("/", 1)[0]):
        facts.dropin = _read_file(host, dropin)
    for user in accounts.users.values():
        if user.home.startswith("/") and user.home.rstrip("/"):
            facts.secret_files[user.name] = _secret_file(host, user.home)
    return facts


@dataclass(frozen=True)
class _Account:
    home: str
    exists: bool  # False: a user the users resource creates in this run
    password_login: bool  # whether the password step of SSH can succeed


class LinuxSshMfa:
    """The Linux backend of ``sshMfa``."""

    os = "linux"
    supports = frozenset({"enabled", "users", "allowLockout"})

    def gather(self, host: Host) -> MfaFacts:
        return gather(host)

    def plan(self, desired: SshMfa, ctx: PlanContext) -> list[Change]:
        facts: MfaFacts = ctx.facts[KIND]
        want = desired.mfa_users
        source = ctx.source(KIND)
        changes: list[Change] = []
        if want and facts.module is None:
            changes.append(_package_change(facts))
        for user in want:
            change = _secret_change(user, desired, facts, ctx)
            if change is not None:
                changes.append(change)
                withdrawn = _withdrawn_secret(user, change, facts, ctx)
                if withdrawn is not None:
                    changes.append(withdrawn)
        config = _config_change(want, facts, ctx)
        if config is not None:
            config.requires = [c.key for c in changes]
            changes.append(config)
        for name, found in sorted(facts.secret_files.items()):
            if name not in want and found.kind == "file" and found.managed:
                changes.append(
                    Change(
                        KIND,
                        name,
                        "remove",
                        PHASE_SECRET,
                        fields=[FieldChange("totpSecret", Secret("(file)"), None)],
                        steps=[RemoveFile(found.path)],
                        # the code must no longer be asked before the secret goes
                        requires=[(KIND, CONFIG_NAME)] if config is not None else [],
                    )
                )
        for change in changes:
            change.source = change.source or source
        return changes


def _package_change(facts: MfaFacts) -> Change:
    command = next((PACKAGE_COMMANDS[i] for i in facts.os_ids if i in PACKAGE_COMMANDS), None)
    name = f"package:{command[-1] if command else 'pam-google-authenticator'}"
    if command is None:
        return Change(
            KIND,
            name,
            "create",
            PHASE_PACKAGE,
            error=(
                f"{pam.MODULE} is not installed and jcstate does not know this distribution's "
                f"package for it ({'/'.join(i for i in facts.os_ids if i) or 'unknown OS'}); "
                "install it first"
            ),
        )
    return Change(
        KIND,
        name,
        "create",
        PHASE_PACKAGE,
        fields=[FieldChange("package", None, command[-1])],
        # no root prefix for package managers: run inside the managed root
        steps=[Run(command, chroot=True)],
    )


def _account(user: str, facts: MfaFacts, ctx: PlanContext) -> _Account | None:
    """Home and password status of ``user``, now or as the users resource will create it."""
    wanted = next((u for u in ctx.desired.get(USERS_KIND) or [] if u.name == user), None)
    if wanted is not None and wanted.state == "absent":
        return None
    entry = facts.accounts.users.get(user)
    wanted_password = wanted is not None and (
        wanted.password_hash is not None or wanted.password_ref is not None
    )
    if entry is not None:
        shadow = facts.accounts.shadow.get(user)
        hashed = shadow.password.reveal() if shadow is not None else ""
        usable = bool(hashed) and not hashed.startswith(("!", "*"))
        if wanted is not None and wanted.state == "locked":
            usable = False
        return _Account(entry.home, True, usable or wanted_password)
    if wanted is None:
        return None
    home = wanted.home or f"{facts.accounts.defaults.home_base.rstrip('/')}/{user}"
    return _Account(home, False, wanted_password and wanted.state != "locked")


def _withdrawn_secret(
    user: str, refused: Change, facts: MfaFacts, ctx: PlanContext
) -> Change | None:
    """A listed user whose secret was withdrawn (``jcstate totp remove``, a lost phone): the
    old secret file jcstate wrote must not keep working. It is removed, and the user's MFA
    fails closed (PAM asks for a code no file can answer) while the refusal says why."""
    if not refused.error or (ctx.secrets is not None and ctx.secrets.totp(user) is not None):
        return None
    found = facts.secret_files.get(user)
    if found is None or found.kind != "file" or not found.managed:
        return None
    return Change(
        KIND,
        f"{user}:withdrawn-secret",
        "remove",
        PHASE_SECRET,
        fields=[FieldChange("totpSecret", Secret("(file)"), None)],
        steps=[RemoveFile(found.path)],
    )


def _secret_change(user: str, desired: SshMfa, facts: MfaFacts, ctx: PlanContext) -> Change | None:
    """The change that puts ``user``'s secret file in place (None when it already is)."""
    account = _account(user, facts, ctx)
    if account is None:
        return Change(
            KIND,
            user,
            "create",
            PHASE_SECRET,
            error=(
                f"{user} is listed in sshMfa.users but no such user exists and no policy makes "
                "it present"
            ),
        )
    if not account.password_login and not desired.allow_lockout:
        return Change(
            KIND,
            user,
            "create",
            PHASE_SECRET,
            error=(
                f"{user} has no usable password: SSH would ask for the password and then the "
                f"code, so {user} could not log in over SSH (set sshMfa.allowLockout: true to "
                "apply anyway)"
            ),
        )
    secret = ctx.secrets.totp(user) if ctx.secrets is not None else None
    if secret is None:
        return Change(
            KIND,
            user,
            "create",
            PHASE_SECRET,
            error=(
                f"no TOTP secret for {user}: create one with `jcstate totp new {user} --secrets "
                "FILE` and apply with --secrets FILE (or enroll the user on the server)"
            ),
        )
    try:
        content = totp_file.render(secret)
    except SecretError as exc:
        return Change(KIND, user, "create", PHASE_SECRET, error=f"{user}: {exc}")
    path = totp_file.secret_path(account.home)
    found = facts.secret_files.get(user) if account.exists else None
    if found is not None and found.path != path:
        found = None  # the home moves in this run: the old file is not ours to judge
    if found is not None and found.kind in ("symlink", "other", "error"):
        what = {"symlink": "a symlink", "other": "not a regular file"}.get(
            found.kind, f"unreadable ({found.error})"
        )
        return Change(
            KIND,
            user,
            "update",
            PHASE_SECRET,
            error=(f"refusing to write {path}: it is {what}; remove it and plan again"),
        )
    requires = [] if account.exists else [(USERS_KIND, user)]
    fields = []
    if found is None or found.kind == "absent":
        action = "create"
        fields.append(FieldChange("totpSecret", None, Secret("(file)")))
    else:
        action = "update"
        if found.digest != totp_file.digest(content.reveal()):
            fields.append(FieldChange("totpSecret", Secret("(old)"), Secret("(new)")))
        if found.mode != totp_file.MODE:
            fields.append(FieldChange("mode", _octal(found.mode), _octal(totp_file.MODE)))
        uid = facts.accounts.users[user].uid
        if found.uid != uid:
            fields.append(FieldChange("owner", found.uid, uid))
        if not fields:
            return None
    return Change(
        KIND,
        user,
        action,
        PHASE_SECRET,
        fields=fields,
        requires=requires,
        steps=[WriteSecretFile(path, content, user, totp_file.MODE)],
        source=ctx.source(KIND, user),
    )


def _octal(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def _config_change(want: tuple[str, ...], facts: MfaFacts, ctx: PlanContext) -> Change | None:
    """The sshd+PAM transaction that makes exactly ``want`` need a code (None: already so)."""
    have = facts.mfa_users()
    files: list[ManagedFile] = []
    try:
        if facts.pam.text is None:
            if not want:
                return None
            raise HostError(f"{pam.PAM_SSHD} does not exist: is openssh-server installed?")
        if facts.sshd_main.text is None:
            if not want:
                return None
            raise HostError(f"{sshd.SSHD_CONFIG} does not exist: is openssh-server installed?")
        new_pam = pam.set_block(facts.pam.text, want)
        if new_pam != facts.pam.text:
            files.append(ManagedFile(pam.PAM_SSHD, new_pam, facts.pam.mode, facts.pam.digest))
        # the main file loses any old block when a drop-in takes over, and the other way round
        main_users = want if facts.dropin is None else ()
        new_main = sshd.set_block(facts.sshd_main.text, main_users)
        if new_main != facts.sshd_main.text:
            files.append(
                ManagedFile(
                    sshd.SSHD_CONFIG, new_main, facts.sshd_main.mode, facts.sshd_main.digest
                )
            )
        if facts.dropin is not None:
            new_dropin = sshd.render_dropin(want)
            if new_dropin != facts.dropin.text:
                files.append(ManagedFile(facts.dropin.path, new_dropin, 0o644, facts.dropin.digest))
    except (HostError, PlanError) as exc:
        return Change(KIND, CONFIG_NAME, "update", PHASE_CONFIG, error=str(exc))
    if not files:
        return None
    action = "create" if not have and want else ("remove" if not want else "update")
    return Change(
        KIND,
        CONFIG_NAME,
        action,
        PHASE_CONFIG,
        fields=[FieldChange("users", list(have), list(want))]
        + [
            FieldChange(f.path, "(current)", "(removed)" if f.content is None else "(managed)")
            for f in files
        ],
        steps=[ApplySshConfig(tuple(files), want)],
        source=ctx.source(KIND),
    )


BACKEND = LinuxSshMfa()
