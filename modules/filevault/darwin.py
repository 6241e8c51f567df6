"""FileVault on macOS with ``fdesetup`` (fdesetup(8)).

Facts (``gather``): ``fdesetup status`` ("FileVault is On." / "FileVault is Off." / "Deferred
enablement appears to be active for user 'alice'."), ``fdesetup list`` (one ``shortname,UUID``
line per FileVault-enabled user), the deferral plist jcstate asked fdesetup to write, and the
escrow stamp. All read through the host.

Changes (phase 50: after users and memberships, before commands):

* **enable**: ``fdesetup enable -defer FILE -forceatlogin 0 -dontaskatlogout``. fdesetup then
  enables FileVault at the next login of a user who can (it prompts that user for their
  password, which jcstate never sees); ``-forceatlogin 0`` gives no way to cancel,
  ``-dontaskatlogout`` skips the logout prompt. fdesetup writes the personal recovery key and
  volume details to FILE, ``/var/db/jcstate/filevault/recovery.plist``, in a root-only 0700
  directory created first: that is the protected file.
* **escrow** (``escrowRecoveryKey: true``): once FILE holds a ``RecoveryKey``, a plan has an
  ``escrow`` change whose step hands the key (a :class:`~jcstate.secret.Secret`) and the volume's
  ``LVGUUID`` to ``ctx.escrow``, a callable the agent provides; then it writes a stamp (SHA-256
  of the key, never the key) so the next plan is empty. Without ``ctx.escrow`` (standalone
  ``jcstate apply``) the plan only warns that the key stays in FILE. The agent's callable posts
  the key to ``POST /api/v1/device/escrow``; the server seals it at rest and shows it only to
  administrators (``jcstate device recovery-key``), every read audited.
* **users** (once FileVault is on, ``users`` is authoritative): missing users are added with
  ``fdesetup add -inputplist``, whose property list on stdin carries ``Username``/``Password`` of
  a user who is already FileVault-enabled (fdesetup authenticates with it) and
  ``AdditionalUsers`` with each new user's ``Username``/``Password``. jcstate takes both
  passwords from the users resource's ``password.secretRef`` (the secret source): so adding a
  FileVault user needs, in the same policy, a secretRef password for that user and for one user
  who is already enabled. The plist is a Secret and only enters the pipe. Users no longer
  listed: ``fdesetup remove -user NAME`` (root needs no credential). A plan that would remove
  every FileVault user is refused.
* **disable** (``enabled: false``): ``fdesetup disable -inputplist`` authenticated the same way.

Not verified on a real Mac; see docs/platforms.md.
"""

from __future__ import annotations

import hashlib
import plistlib
import re
from dataclasses import dataclass, field
from typing import Any

from jcstate.errors import HostError
from jcstate.host import Host
from jcstate.modules.filevault import FileVault
from jcstate.plan import Change, FieldChange, MakeDir, Run, Step
from jcstate.resource import PlanContext
from jcstate.secret import Secret

__all__ = [
    "BACKEND",
    "DEFER_DIR",
    "DEFER_PLIST",
    "ESCROW_STAMP",
    "DarwinFileVault",
    "Escrow",
    "FileVaultFacts",
    "parse_list",
    "parse_status",
]

KIND = "fileVault"
PHASE = 50
DEFER_DIR = "/var/db/jcstate/filevault"
DEFER_PLIST = DEFER_DIR + "/recovery.plist"
ESCROW_STAMP = DEFER_DIR + "/escrowed"
ENABLE_ARGV = (
    "fdesetup",
    "enable",
    "-defer",
    DEFER_PLIST,
    "-forceatlogin",
    "0",
    "-dontaskatlogout",
)
_DEFERRED = re.compile(r"Deferred enablement appears to be active for user ['\"](.*?)['\"]")


@dataclass
class FileVaultFacts:
    """What fdesetup and jcstate's own files say."""

    on: bool = False
    pending: bool = False  # "Off, but will be enabled after the next restart"
    deferred_user: str | None = None  # set (maybe "") while an enablement is deferred
    users: tuple[str, ...] = ()
    recovery_key: Secret | None = None
    volume: str | None = None  # LVGUUID from the deferral plist
    escrowed: str | None = None  # the stamp: SHA-256 of the key last escrowed

    def summary(self) -> dict[str, Any]:
        return {
            "enabled": self.on,
            "pending": self.pending,
            "deferredUser": self.deferred_user,
            "users": list(self.users),
            "recoveryKeyOnDisk": self.recovery_key is not None,
            "escrowed": self.escrowed is not None,
        }


def parse_status(text: str) -> tuple[bool, bool, str | None]:
    """``fdesetup status`` → (on, pending, deferred user)."""
    on = "FileVault is On" in text
    pending = "will be enabled after the next restart" in text
    match = _DEFERRED.search(text)
    return on, pending, match.group(1) if match else None


def parse_list(text: str) -> tuple[str, ...]:
    """``fdesetup list`` → short names (each line is ``shortname,UUID``)."""
    return tuple(
        sorted(line.split(",", 1)[0].strip() for line in text.splitlines() if line.strip())
    )


def _recovery(host: Host) -> tuple[Secret | None, str | None]:
    data = host.read_bytes(DEFER_PLIST)
    if data is None:
        return None, None
    try:
        info = plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError) as exc:
        raise HostError(f"{DEFER_PLIST}: not a property list") from exc
    key = info.get("RecoveryKey") if isinstance(info, dict) else None
    volume = info.get("LVGUUID") if isinstance(info, dict) else None
    return (Secret(str(key)) if key else None), (str(volume) if volume else None)


def stamp(key: Secret) -> str:
    return hashlib.sha256(key.reveal().encode()).hexdigest()


@dataclass(frozen=True)
class Escrow:
    """A plan step: hand the recovery key to the agent's escrow callable, then stamp it done."""

    escrow: Any  # callable(key: Secret, volume: str | None) -> None; raises on failure
    key: Secret = field(repr=False)
    volume: str | None = None

    def execute(self, host: Host) -> None:
        self.escrow(self.key, self.volume)
        host.write_file(ESCROW_STAMP, stamp(self.key) + "\n", mode=0o600)

    def to_dict(self) -> dict[str, Any]:
        return {"escrow": "recovery key", "key": "(secret)", "volume": self.volume}

    def __str__(self) -> str:
        return f"escrow recovery key (secret) of volume {self.volume or '?'} to the server"


class DarwinFileVault:
    """The ``fileVault`` resource on macOS."""

    os = "darwin"
    supports = frozenset({"enabled", "users", "escrowRecoveryKey"})

    def gather(self, host: Host) -> FileVaultFacts:
        status = host.run(("fdesetup", "status")).stdout
        on, pending, deferred = parse_status(status)
        # fdesetup list fails while FileVault is off: nobody is enabled then
        listed = host.run(("fdesetup", "list"), check=False) if on else None
        key, volume = _recovery(host)
        mark = host.read_text(ESCROW_STAMP)
        return FileVaultFacts(
            on=on,
            pending=pending,
            deferred_user=deferred,
            users=parse_list(listed.stdout) if listed and listed.returncode == 0 else (),
            recovery_key=key,
            volume=volume,
            escrowed=mark.strip() if mark else None,
        )

    def plan(self, desired: FileVault, ctx: PlanContext) -> list[Change]:
        facts: FileVaultFacts = ctx.facts[KIND]
        changes: list[Change] = []
        if desired.enabled and not facts.on:
            if facts.deferred_user is not None or facts.pending:
                who = facts.deferred_user or "the next login or restart"
                ctx.warnings.append(f"fileVault: enablement is deferred ({who}); nothing to do")
            else:
                changes.append(_enable(desired, ctx))
        elif desired.enabled:
            change = _users(desired, facts, ctx)
            if change is not None:
                changes.append(change)
        elif facts.on:
            changes.append(_disable(facts, ctx))
        if desired.escrow_recovery_key and facts.recovery_key is not None:
            if facts.escrowed != stamp(facts.recovery_key):
                escrow = getattr(ctx, "escrow", None)
                if escrow is None:
                    ctx.warnings.append(
                        f"fileVault: the recovery key in {DEFER_PLIST} is not escrowed: this run "
                        "has no server to send it to"
                    )
                else:
                    changes.append(
                        Change(
                            KIND,
                            "recoveryKey",
                            "update",
                            PHASE,
                            fields=[FieldChange("escrowed", False, True)],
                            steps=[Escrow(escrow, facts.recovery_key, facts.volume)],
                        )
                    )
        return changes


def _enable(desired: FileVault, ctx: PlanContext) -> Change:
    users = {u.name for u in ctx.desired.get("users") or [] if u.state == "present"}
    steps: list[Step] = [
        MakeDir("/var/db/jcstate", mode=0o700, owner=0, group=0),
        MakeDir(DEFER_DIR, mode=0o700, owner=0, group=0),
        Run(ENABLE_ARGV),
    ]
    change = Change(
        KIND,
        "FileVault",
        "create",
        PHASE,
        fields=[FieldChange("enabled", False, True), FieldChange("users", [], list(desired.users))],
        steps=steps,
        requires=[("users", u) for u in desired.users if u in users],
    )
    if not desired.users:
        change.error = "fileVault.users is empty: list the users allowed to unlock the disk"
    return change


def _passwords(ctx: PlanContext) -> dict[str, Secret]:
    """Plaintext passwords the users resource's secretRefs give, by user name."""
    out: dict[str, Secret] = {}
    for spec in ctx.desired.get("users") or []:
        ref = getattr(spec, "password_ref", None)
        plain = ctx.secrets.password(ref) if ref and ctx.secrets is not None else None
        if plain is not None:
            out[spec.name] = plain
    return out


def _credential_plist(user: str, password: Secret, added: dict[str, Secret]) -> Secret:
    data: dict[str, Any] = {"Username": user, "Password": password.reveal()}
    if added:
        data["AdditionalUsers"] = [
            {"Username": name, "Password": pw.reveal()} for name, pw in added.items()
        ]
    return Secret(plistlib.dumps(data).decode())


def _users(desired: FileVault, facts: FileVaultFacts, ctx: PlanContext) -> Change | None:
    add = [u for u in desired.users if u not in facts.users]
    drop = [u for u in facts.users if u not in desired.users]
    if not add and not drop:
        return None
    passwords = _passwords(ctx)
    steps: list[Step] = []
    errors: list[str] = []
    if add:
        auth = next((u for u in facts.users if u in passwords), None)
        missing = [u for u in add if u not in passwords]
        if auth is None:
            errors.append(
                "fdesetup add needs the password of a user who is already FileVault-enabled "
                f"({', '.join(facts.users) or 'none'}): give one of them password.secretRef"
            )
        elif missing:
            errors.append(f"fdesetup add needs a password.secretRef for {', '.join(missing)}")
        else:
            plist = _credential_plist(auth, passwords[auth], {u: passwords[u] for u in add})
            steps.append(Run(("fdesetup", "add", "-inputplist"), stdin=plist))
    steps += [Run(("fdesetup", "remove", "-user", u)) for u in drop]
    if not desired.users:
        errors.append("this would remove every FileVault user: nobody could unlock the disk")
    present = {u.name for u in ctx.desired.get("users") or [] if u.state == "present"}
    return Change(
        KIND,
        "users",
        "update",
        PHASE,
        fields=[FieldChange("users", list(facts.users), list(desired.users))],
        steps=steps,
        requires=[("users", u) for u in add if u in present],
        error="; ".join(errors) or None,
    )


def _disable(facts: FileVaultFacts, ctx: PlanContext) -> Change:
    passwords = _passwords(ctx)
    auth = next((u for u in facts.users if u in passwords), None)
    change = Change(
        KIND, "FileVault", "update", PHASE, fields=[FieldChange("enabled", True, False)]
    )
    if auth is None:
        change.error = (
            "fdesetup disable needs the password of a FileVault-enabled user "
            f"({', '.join(facts.users) or 'none'}): give one of them password.secretRef"
        )
    else:
        change.steps = [
            Run(
                ("fdesetup", "disable", "-inputplist"),
                stdin=_credential_plist(auth, passwords[auth], {}),
            )
        ]
    return change


BACKEND = DarwinFileVault()
