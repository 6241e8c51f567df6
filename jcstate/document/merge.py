"""Step 4: merge the rendered specs of every policy that selects a device into one spec.

Entries merge per resource name (``users``/``groups`` by ``name``, ``commands`` by ``id``;
``sshMfa`` and ``fileVault`` are single objects):

- a scalar field set by both must be equal, else it is a conflict naming both places;
- ``state`` must agree, an omitted state counting as ``present``;
- a user's ``groups`` and ``sshAuthorizedKeys``, and ``sshMfa.users`` / ``fileVault.users``,
  are unions (first policy's order, then new items appended);
- a group's ``members`` is authoritative: when both set it, the sets must be equal;
- a command id in two policies must be the identical command;
- nested mappings (``password``, ``run``) merge field by field with the same rules.

The same comparison serves validation (:func:`entry_conflicts` with ``literal_only``: templated
values cannot be compared before rendering) and serving (:func:`merge`, on rendered data).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jcstate.document.model import Policy
from jcstate.document.oneline import quote
from jcstate.errors import Problem

__all__ = [
    "KEYS",
    "Conflict",
    "conflict_problem",
    "declared_fields",
    "entry_conflicts",
    "entry_key",
    "merge",
    "resource_label",
]

KEYS = {"groups": "name", "users": "name", "commands": "id"}  # list resources: key field
UNIONS = {
    ("users", "groups"),
    ("users", "sshAuthorizedKeys"),
    ("sshMfa", "users"),
    ("fileVault", "users"),
}
SETS = {("groups", "members")}  # authoritative lists: compared as sets
DEFAULTS = {("users", "state"): "present", ("groups", "state"): "present"}
WHOLE = {"commands"}  # an entry that must be identical everywhere it appears
SECRET_FIELDS = {"hash"}  # never shown in a conflict message

_TEMPLATE = re.compile(r"\{[{%]")


@dataclass(frozen=True)
class Conflict:
    """Two declarations of one resource disagree on one field."""

    field: tuple[str, ...]  # ("password", "hash") or ("state",)
    first: Any
    second: Any


def entry_key(kind: str, entry: Any) -> str | None:
    """The name an entry of ``spec[kind]`` merges on, or None when it has none."""
    if not isinstance(entry, dict):
        return None
    value = entry.get(KEYS.get(kind, "name"))
    return value if isinstance(value, str) else None


def resource_label(kind: str, name: str | None) -> str:
    """``users/alice`` or ``sshMfa``: how Document.sources names a resource."""
    return kind if name is None else f"{kind}/{name}"


def entry_conflicts(
    kind: str, first: Any, second: Any, *, literal_only: bool = False
) -> list[Conflict]:
    """Where two declarations of the same resource disagree (unions never do)."""
    if kind in WHOLE:
        if literal_only and (_templated(first) or _templated(second)):
            return []
        return [] if first == second else [Conflict((), first, second)]
    if not (isinstance(first, dict) and isinstance(second, dict)):
        if literal_only and (_templated(first) or _templated(second)):
            return []
        return [] if first == second else [Conflict((), first, second)]
    return _dict_conflicts(kind, first, second, (), literal_only)


def _dict_conflicts(
    kind: str, a: dict[str, Any], b: dict[str, Any], prefix: tuple[str, ...], literal_only: bool
) -> list[Conflict]:
    out: list[Conflict] = []
    for name in _ordered_union(a, b):
        here = (*prefix, name)
        rule = (kind, name) if not prefix else None
        default = DEFAULTS.get(rule) if rule else None
        if name not in a or name not in b:
            if default is None:
                continue  # one side does not manage this field
        va, vb = a.get(name, default), b.get(name, default)
        if rule in UNIONS:
            continue
        if literal_only and (_templated(va) or _templated(vb)):
            continue
        if rule in SETS and isinstance(va, list) and isinstance(vb, list):
            if set(map(_hashable, va)) != set(map(_hashable, vb)):
                out.append(Conflict(here, va, vb))
        elif isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_dict_conflicts(kind, va, vb, here, literal_only))
        elif va != vb or type(va) is not type(vb):
            out.append(Conflict(here, va, vb))
    return out


def declared_fields(kind: str, entry: Any) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """The literal fields of one declaration that another declaration must agree with.

    Yields (field path, value, comparison key): equal keys mean "agree". Union fields and
    templated values are left out, an omitted ``state`` counts as its default, authoritative
    lists compare as sets, and a command is one field (it must be identical everywhere).
    """
    if kind in WHOLE or not isinstance(entry, dict):
        if not _templated(entry):
            yield (), entry, _canonical(entry)
        return
    for name, default in ((n, d) for (k, n), d in DEFAULTS.items() if k == kind):
        if name not in entry:
            yield (name,), default, _canonical(default)
    yield from _fields(kind, entry, ())


def _fields(
    kind: str, entry: dict[str, Any], prefix: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    for name, value in entry.items():
        rule = (kind, name) if not prefix else None
        if rule in UNIONS or _templated(value):
            continue
        if isinstance(value, dict):
            yield from _fields(kind, value, (*prefix, name))
        elif rule in SETS and isinstance(value, list):
            yield (*prefix, name), value, _canonical(sorted(set(map(_hashable, value)), key=repr))
        else:
            yield (*prefix, name), value, _canonical(value)


def _canonical(value: Any) -> Any:
    """A hashable key equal for equal JSON values (true and 1 differ, as in JSON)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return (type(value).__name__, value)
    return json.dumps(value, sort_keys=True, default=str)


def merge(
    parts: Sequence[tuple[Policy, dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, str], list[Problem]]:
    """Merge rendered specs, in order; return (spec, sources, conflicts as problems)."""
    spec: dict[str, Any] = {}
    sources: dict[str, list[str]] = {}
    owners: dict[str, tuple[Policy, tuple[str | int, ...]]] = {}  # first declaration
    index: dict[tuple[str, str], int] = {}  # (kind, name) → position in spec[kind]
    problems: list[Problem] = []

    for policy, rendered in parts:
        for kind, value in rendered.items():
            if isinstance(value, list) and kind in KEYS:
                merged_list = spec.setdefault(kind, [])
                for i, entry in enumerate(value):
                    name = entry_key(kind, entry)
                    path = ("spec", kind, i)
                    label = resource_label(kind, name)
                    sources.setdefault(label, []).append(policy.positions.where(path))
                    if name is None or (kind, name) not in index:
                        if name is not None:
                            index[(kind, name)] = len(merged_list)
                            owners[label] = (policy, path)
                        merged_list.append(copy.deepcopy(entry))
                        continue
                    target = merged_list[index[(kind, name)]]
                    problems += _combine(kind, label, target, entry, owners[label], (policy, path))
            else:
                path = ("spec", kind)
                sources.setdefault(kind, []).append(policy.positions.where(path))
                if kind not in spec:
                    spec[kind] = copy.deepcopy(value)
                    owners[kind] = (policy, path)
                    continue
                if isinstance(spec[kind], dict) and isinstance(value, dict):
                    problems += _combine(
                        kind, kind, spec[kind], value, owners[kind], (policy, path)
                    )
                elif spec[kind] != value:
                    conflict = Conflict((), spec[kind], value)
                    problems.append(conflict_problem(kind, conflict, owners[kind], (policy, path)))
    return spec, {k: ", ".join(_unique(v)) for k, v in sources.items()}, problems


def _combine(
    kind: str,
    label: str,
    target: dict[str, Any],
    entry: dict[str, Any],
    owner: tuple[Policy, tuple[str | int, ...]],
    here: tuple[Policy, tuple[str | int, ...]],
) -> list[Problem]:
    conflicts = entry_conflicts(kind, target, entry)
    if conflicts:
        return [conflict_problem(label, c, owner, here) for c in conflicts]
    for name, value in entry.items():
        if (kind, name) in UNIONS and isinstance(value, list):
            have = target.setdefault(name, [])
            have.extend(v for v in value if v not in have)
        elif isinstance(value, dict) and isinstance(target.get(name), dict):
            _fill(target[name], value)
        elif name not in target:
            target[name] = copy.deepcopy(value)
    return []


def _fill(target: dict[str, Any], value: dict[str, Any]) -> None:
    for name, item in value.items():
        if isinstance(item, dict) and isinstance(target.get(name), dict):
            _fill(target[name], item)
        elif name not in target:
            target[name] = copy.deepcopy(item)


def conflict_problem(
    label: str,
    conflict: Conflict,
    first: tuple[Policy, tuple[str | int, ...]],
    second: tuple[Policy, tuple[str | int, ...]],
) -> Problem:
    """A conflict reported at the second declaration, naming the first one's place."""
    field_path = tuple(conflict.field)
    first_policy, first_path = first
    policy, path = second
    there = (
        f"policy '{first_policy.name}' ({first_policy.positions.where((*first_path, *field_path))})"
    )
    what = ".".join(field_path)
    if not field_path:
        detail = f"{label} is declared differently in {there}"
    elif field_path[-1] in SECRET_FIELDS:
        detail = f"{label} field '{what}' differs from {there}"  # values are secrets
    else:
        detail = (
            f"{label} field '{what}' is {_show(conflict.second)} here "
            f"but {_show(conflict.first)} in {there}"
        )
    message = f"conflict: {detail}; policies that can match the same device must agree"
    return policy.positions.problem((*path, *field_path), message)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return _TEMPLATE.search(value) is not None
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    return False


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _ordered_union(a: dict[str, Any], b: dict[str, Any]) -> Iterable[str]:
    yield from a
    yield from (k for k in b if k not in a)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
