"""Verify checks for ``spec.groups``: existence, gid and, when given, the exact member list.

``members`` given is authoritative, so the check is for exactly those supplementary members
(order does not matter); omitted, membership is not checked. Users whose *primary* group this
is are not members in ``/etc/group`` terms and are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jcstate.modules.groups import GroupSpec, parse
from jcstate.resource import Check

__all__ = ["checks"]

_KIND = "group"


def checks(section: list[Mapping[str, Any]] | None, os_name: str) -> list[Check]:
    """The checks for a rendered document's ``spec.groups`` on a target running ``os_name``."""
    out: list[Check] = []
    for group in parse(section):
        if group.state == "absent":
            out.append(_check(group, "does not exist", _absent(group.name)))
            continue
        out.append(_check(group, "exists", _exists(group.name)))
        if group.gid is not None:
            out.append(_check(group, f"gid is {group.gid}", _gid(group.name, group.gid)))
        if group.members is not None and os_name == "linux":
            shown = ", ".join(group.members) or "(none)"
            out.append(
                _check(
                    group,
                    f"members are exactly {shown}",
                    _members(group.name, tuple(group.members)),
                )
            )
    return out


def _check(group: GroupSpec, description: str, run: Callable[[Any], None]) -> Check:
    return Check(resource=_KIND, name=group.name, description=description, run=run)


def _group(host: Any, name: str) -> Any:
    group = host.group(name)
    if not group.exists:
        raise AssertionError(f"group {name} does not exist")
    return group


def _absent(name: str) -> Callable[[Any], None]:
    def run(host: Any) -> None:
        if host.group(name).exists:
            raise AssertionError(f"group {name} exists")

    return run


def _exists(name: str) -> Callable[[Any], None]:
    def run(host: Any) -> None:
        _group(host, name)

    return run


def _gid(name: str, gid: int) -> Callable[[Any], None]:
    def run(host: Any) -> None:
        actual = _group(host, name).gid
        if actual != gid:
            raise AssertionError(f"gid: expected {gid}, got {actual}")

    return run


def _members(name: str, members: tuple[str, ...]) -> Callable[[Any], None]:
    def run(host: Any) -> None:
        actual = sorted(m for m in _group(host, name).members if m)
        if actual != sorted(members):
            missing = sorted(set(members) - set(actual))
            extra = sorted(set(actual) - set(members))
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise AssertionError(f"members: expected {sorted(members)}, got {actual} ({detail})")

    return run
