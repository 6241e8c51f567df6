"""``sshAuthorizedKeys`` on Linux: the exact content of ``~/.ssh/authorized_keys``.

The directory is 0700 and the file 0600, both owned by the user and their primary group. Owners
are given by *name* and resolved when the step runs, so keys work for a user created earlier in
the same run. Writes go through the host, which never follows a user-owned symlink: a planted
``~/.ssh`` link fails that user's change instead of writing somewhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jcstate.modules.accounts.facts import KeyFile
from jcstate.plan import FieldChange, MakeDir, Step, WriteFile

__all__ = ["KeyPlan", "content", "plan_keys"]

DIR_MODE = 0o700
FILE_MODE = 0o600
HOME_MODE = 0o755  # what Debian's useradd -m makes with UMASK 022


@dataclass
class KeyPlan:
    """What the keys need: report fields, steps, or why they cannot be managed."""

    fields: list[FieldChange] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    error: str | None = None


def content(keys: tuple[str, ...]) -> str:
    """The file's text: one key per line; an empty list gives an empty file."""
    return "".join(key.strip() + "\n" for key in keys if key.strip())


def _lines(text: str | None) -> list[str] | None:
    return None if text is None else [ln for ln in text.splitlines() if ln.strip()]


def plan_keys(
    user: str,
    group: str | int,
    keys: tuple[str, ...],
    home: str,
    current: KeyFile | None,
    ids: tuple[int, int] | None,
) -> KeyPlan:
    """Compare the desired keys with ``current`` (None: unknown, e.g. a new user or home).

    ``ids`` is the (uid, gid) the user will have, when known, to check ownership.
    """
    if any("\n" in key or "\r" in key for key in keys):
        return KeyPlan(error="sshAuthorizedKeys: a key must not contain a newline")
    if current is not None and current.error:
        return KeyPlan(error=f"sshAuthorizedKeys: {current.error}")
    want = content(keys)
    ssh_dir = home.rstrip("/") + "/.ssh"
    path = ssh_dir + "/authorized_keys"
    plan = KeyPlan()
    known = current is not None and current.home_exists
    if current is not None and current.text == want:
        owned = ids is not None and (current.uid, current.gid) == ids
        if current.mode != FILE_MODE or not owned:
            plan.fields.append(
                FieldChange(
                    "sshAuthorizedKeys.file",
                    f"{current.uid}:{current.gid} {_octal(current.mode)}",
                    f"{user}:{group} {FILE_MODE:04o}",
                )
            )
    else:
        before = None if current is None else _lines(current.text)
        plan.fields.append(FieldChange("sshAuthorizedKeys", before, _lines(want)))
    dir_ok = (
        known
        and current is not None
        and current.dir_mode == DIR_MODE
        and ids is not None
        and (current.dir_uid, current.dir_gid) == ids
    )
    if not plan.fields and dir_ok:
        return plan
    if current is not None and not current.home_exists:
        plan.steps.append(MakeDir(home, HOME_MODE, user, group))
    plan.steps.append(MakeDir(ssh_dir, DIR_MODE, user, group))
    plan.steps.append(WriteFile(path, want, FILE_MODE, user, group))
    if not plan.fields:
        plan.fields.append(
            FieldChange(
                "sshAuthorizedKeys.dir",
                None
                if current is None
                else f"{current.dir_uid}:{current.dir_gid} {_octal(current.dir_mode)}",
                f"{user}:{group} {DIR_MODE:04o}",
            )
        )
    return plan


def _octal(mode: int | None) -> str:
    return "none" if mode is None else f"{mode:04o}"
