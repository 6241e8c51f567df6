"""``fileVault``: macOS full-disk encryption, who may unlock the disk, recovery-key escrow.

The model is what the policy says::

    fileVault:
      enabled: true
      users: [alice]            # FileVault-enabled users, authoritative once FileVault is on
      escrowRecoveryKey: true   # the personal recovery key goes to the server, never to a log

How the Mac is changed is ``darwin.py``'s business; there is no backend for Linux or Windows
(the engine reports "fileVault: not supported on linux"). See docs/resources/filevault.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jcstate.errors import PlanError
from jcstate.resource import Resource

__all__ = ["RESOURCE", "FileVault", "parse"]


@dataclass(frozen=True)
class FileVault:
    """The desired FileVault state. ``users`` is sorted and without duplicates."""

    enabled: bool
    users: tuple[str, ...] = ()
    escrow_recovery_key: bool = False


def parse(section: Any) -> FileVault:
    """Turn the plain ``spec.fileVault`` mapping into a :class:`FileVault` (raises PlanError)."""
    if not isinstance(section, dict):
        raise PlanError("fileVault: expected a mapping with 'enabled' and 'users'")
    unknown = set(section) - {"enabled", "users", "escrowRecoveryKey"}
    if unknown:
        raise PlanError(f"fileVault: unknown field(s): {', '.join(sorted(unknown))}")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PlanError("fileVault.enabled: expected true or false")
    users = section.get("users") or []
    if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
        raise PlanError("fileVault.users: expected a list of user names")
    escrow = section.get("escrowRecoveryKey", False)
    if not isinstance(escrow, bool):
        raise PlanError("fileVault.escrowRecoveryKey: expected true or false")
    return FileVault(
        enabled=enabled,
        users=tuple(sorted(set(users))),
        escrow_recovery_key=escrow,
    )


RESOURCE = Resource(
    key="fileVault",
    parse=parse,
    backends={"darwin": "jcstate.modules.filevault.darwin:BACKEND"},
)
