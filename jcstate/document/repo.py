"""A repo of policies: load and validate it (load → schema → rules), then serve devices from it
(select → render → merge).

:func:`validate_paths` never raises for document problems and reports all of them at once;
:func:`load_repo` raises :class:`~jcstate.errors.DocumentError` carrying the same list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jcstate.document.loader import discover, load_file
from jcstate.document.merge import merge
from jcstate.document.model import Device, Document, Policy
from jcstate.document.names import name_problem
from jcstate.document.oneline import quote
from jcstate.document.render import is_template, render_spec
from jcstate.document.rules import check_rules
from jcstate.document.schema import check_schema
from jcstate.errors import DocumentError, Problem

__all__ = ["Repo", "load_repo", "validate_paths"]


@dataclass
class Repo:
    """Every policy of a validated repo, in file order."""

    policies: list[Policy]
    files: list[str] = field(default_factory=list)

    def select(self, device: Device) -> list[Policy]:
        """The policies whose selector matches ``device``, in repo order."""
        return [p for p in self.policies if p.matches(device)]

    def document_for(self, device: Device, facts: dict[str, Any] | None = None) -> Document:
        """The merged, rendered document for one device (raises DocumentError on problems)."""
        policies = self.select(device)
        context_base = {"device": device.to_dict(), "facts": facts or {}}
        parts: list[tuple[Policy, dict[str, Any]]] = []
        problems: list[Problem] = []
        for policy in policies:
            rendered, found = render_spec(
                policy.spec, policy.positions, {**context_base, "vars": policy.vars}
            )
            problems += found
            if not found:
                problems += _rendered_names(policy, rendered, device.os)
            parts.append((policy, _with_on_removal(policy, rendered)))
        problems += _rendered_ids(parts)
        spec, sources, conflicts = merge(parts)
        problems += conflicts
        if problems:
            raise DocumentError(problems)
        return Document(spec=spec, sources=sources, policies=[p.name for p in policies])


def validate_paths(paths: Sequence[str]) -> tuple[Repo | None, list[Problem]]:
    """Load and check every policy under ``paths``; the Repo only when there is no problem."""
    files, problems = discover(paths)
    for path in paths:
        if os.path.isdir(path) and not any(_under(f, path) for f in files):
            problems.append(Problem(path, 1, 1, "no *.yaml or *.yml files in this folder"))
    policies: list[Policy] = []
    for file in files:
        loaded, found = load_file(file)
        problems += found
        for doc in loaded:
            found, bad_paths = check_schema(doc)
            problems += found
            if not found:
                policies.append(Policy.from_data(doc.data, doc.positions))
            elif _set_aside(doc.data, bad_paths):
                # Still run the rules on the valid rest, so one run reports everything;
                # such a policy never reaches a Repo (there are problems).
                policies.append(Policy.from_data(doc.data, doc.positions))
    problems += check_rules(policies)
    if problems:
        return None, sorted(set(problems))
    return Repo(policies, files), []


def load_repo(paths: Sequence[str]) -> Repo:
    """Like :func:`validate_paths`, raising DocumentError listing all problems."""
    repo, problems = validate_paths(paths)
    if repo is None:
        raise DocumentError(problems)
    return repo


def _set_aside(data: Any, paths: list[tuple[str | int, ...]]) -> bool:
    """Remove the values that broke the schema; False when the document is unusable.

    A bad field of a user, group or command is removed (an unknown field, a wrong type);
    an entry that is itself broken (not a mapping, no name) becomes None, which rules skip,
    so list positions stay true. Errors outside spec (apiVersion, metadata, selector, vars)
    leave nothing the rules could trust.
    """
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        return False
    spec = data["spec"]
    for path in paths:
        if len(path) < 2 or path[0] != "spec":
            return False
        kind, rest = path[1], path[2:]
        value = spec.get(kind)
        if isinstance(value, list) and rest and isinstance(rest[0], int):
            entry = value[rest[0]] if rest[0] < len(value) else None
            if len(rest) >= 2 and isinstance(entry, dict):
                entry.pop(rest[1], None)
            else:
                value[rest[0]] = None
        elif isinstance(value, dict) and rest:
            value.pop(rest[0], None)
        else:
            spec[kind] = None
    data["spec"] = {k: v for k, v in spec.items() if v is not None}
    return True


def _under(file: str, folder: str) -> bool:
    return os.path.commonpath([os.path.abspath(file), os.path.abspath(folder)]) == os.path.abspath(
        folder
    )


def _rendered_names(policy: Policy, spec: dict[str, Any], os_name: str) -> list[Problem]:
    """Names that came out of templates follow the device's OS rules too."""
    problems = []
    for kind in ("users", "groups"):
        for i, entry in enumerate(spec.get(kind) or []):
            raw = policy.spec[kind][i]
            if isinstance(entry, dict) and is_template(raw.get("name")):
                why = name_problem(os_name, str(entry.get("name")))
                if why:
                    problems.append(
                        policy.positions.problem(
                            ("spec", kind, i, "name"), f"rendered name {quote(entry['name'])} {why}"
                        )
                    )
    return problems


def _rendered_ids(parts: list[tuple[Policy, dict[str, Any]]]) -> list[Problem]:
    """A uid/gid that came out of a template must not collide on this device either."""
    problems = []
    for kind, id_field in (("users", "uid"), ("groups", "gid")):
        owners: dict[int, tuple[str, str]] = {}  # id → (name, where)
        for policy, spec in parts:
            for i, entry in enumerate(spec.get(kind) or []):
                if not isinstance(entry, dict) or type(entry.get(id_field)) is not int:
                    continue
                number, name = entry[id_field], str(entry.get("name"))
                path = ("spec", kind, i, id_field)
                if number in owners and owners[number][0] != name:
                    problems.append(
                        policy.positions.problem(
                            path,
                            f"{id_field} {number} of {quote(name)} is already used by "
                            f"{quote(owners[number][0])} ({owners[number][1]}) on this device",
                        )
                    )
                owners.setdefault(number, (name, policy.positions.where(path)))
    return problems


def _with_on_removal(policy: Policy, rendered: dict[str, Any]) -> dict[str, Any]:
    """The policy's ``onRemoval`` on each of its users, so the device's ledger can keep it.

    Two policies that list the same user with different choices then conflict like any other
    field (an omitted choice agrees with every other).
    """
    if policy.on_removal is None or not isinstance(rendered.get("users"), list):
        return rendered
    users = [
        dict(u, onRemoval=policy.on_removal) if isinstance(u, dict) else u
        for u in rendered["users"]
    ]
    return {**rendered, "users": users}
