"""Local groups: the model (``GroupSpec``) and the resource's registration.

``members`` given = authoritative (exactly these supplementary members); omitted (None) = the
group's membership is not managed. A user's own ``groups`` list is additive and lives on users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jcstate.resource import Resource

__all__ = ["GroupSpec", "RESOURCE", "parse"]


@dataclass(frozen=True)
class GroupSpec:
    """One entry of ``spec.groups``."""

    name: str
    gid: int | None = None
    members: tuple[str, ...] | None = None
    state: Literal["present", "absent"] = "present"
    allow_lockout: bool = False


def _one(entry: Mapping[str, Any]) -> GroupSpec:
    members = entry.get("members")
    return GroupSpec(
        name=str(entry["name"]),
        gid=None if entry.get("gid") is None else int(entry["gid"]),
        members=None if members is None else tuple(str(m) for m in members),
        state=entry.get("state") or "present",
        allow_lockout=bool(entry.get("allowLockout", False)),
    )


def parse(section: list[Mapping[str, Any]] | None) -> list[GroupSpec]:
    """``spec.groups`` (schema-validated plain data) → models, in document order."""
    return [_one(entry) for entry in section or []]


RESOURCE = Resource(
    key="groups",
    parse=parse,
    backends={
        "linux": "jcstate.modules.groups.linux:BACKEND",
        "darwin": "jcstate.modules.groups.darwin:BACKEND",
        "windows": "jcstate.modules.groups.windows:BACKEND",
    },
    checks="jcstate.modules.groups.verify:checks",
)
