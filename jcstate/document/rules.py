"""Step 2b: the semantic rules of SPEC 2, over every schema-valid policy of a repo at once.

Each rule is a function ``(policies) -> problems``; :data:`RULES` lists them and
:func:`check_rules` runs them all, so one run reports every problem. Rules compare only
literal values: a templated value is checked after rendering, for a device.

"Two policies can match the same device" is :meth:`Selector.can_overlap`: yes unless their OS
sets are disjoint, their labels give different values for one key, their device lists are
disjoint, or their hostnames are literal names the other side's globs miss. A policy always
overlaps itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from jcstate.document.loader import Path
from jcstate.document.merge import (
    KEYS,
    Conflict,
    conflict_problem,
    declared_fields,
    entry_key,
    resource_label,
)
from jcstate.document.model import Policy
from jcstate.document.names import name_problem
from jcstate.document.oneline import quote
from jcstate.document.render import is_template, template_problems
from jcstate.errors import Problem

__all__ = ["RULES", "check_rules", "overlap"]

Rule = Callable[[list[Policy]], list[Problem]]
_SINGLETONS = ("sshMfa", "fileVault")


def overlap(a: Policy, b: Policy) -> bool:
    """Whether some device could get both policies."""
    return a is b or a.matcher.can_overlap(b.matcher)


def _entries(policy: Policy, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, entry in enumerate(policy.spec.get(kind) or []):
        if isinstance(entry, dict):
            yield i, entry


def _present(entry: dict[str, Any]) -> bool:
    return entry.get("state", "present") != "absent"


def duplicate_policy_names(policies: list[Policy]) -> list[Problem]:
    """A policy name is unique across the repo."""
    first: dict[str, Policy] = {}
    problems = []
    for policy in policies:
        if policy.name in first:
            problems.append(
                policy.positions.problem(
                    ("metadata", "name"),
                    f"policy name {quote(policy.name)} is already used at "
                    f"{first[policy.name].where}",
                )
            )
        else:
            first[policy.name] = policy
    return problems


def duplicate_entries(policies: list[Policy]) -> list[Problem]:
    """A user or group name, or a command id, appears once per policy."""
    problems = []
    for policy in policies:
        for kind, key in KEYS.items():
            seen: dict[str, int] = {}
            for i, entry in _entries(policy, kind):
                name = entry.get(key)
                if not isinstance(name, str) or is_template(name):
                    continue
                if name in seen:
                    line = policy.positions.of(("spec", kind, seen[name], key))[0]
                    word = "command id" if kind == "commands" else kind[:-1]
                    problems.append(
                        policy.positions.problem(
                            ("spec", kind, i, key),
                            f"{word} {quote(name)} is declared twice in this policy "
                            f"(first at line {line})",
                        )
                    )
                else:
                    seen[name] = i
    return problems


def duplicate_ids(policies: list[Policy]) -> list[Problem]:
    """A uid (gid) belongs to one user (group) on any device."""
    problems = []
    for kind, field in (("users", "uid"), ("groups", "gid")):
        by_id: dict[int, list[tuple[Policy, int, str]]] = defaultdict(list)
        for policy in policies:
            for i, entry in _entries(policy, kind):
                number, name = entry.get(field), entry.get("name")
                if type(number) is int and isinstance(name, str) and not is_template(name):
                    by_id[number].append((policy, i, name))
        for number, users in by_id.items():
            if len({name for _, _, name in users}) < 2:
                continue
            for j, (policy, i, name) in enumerate(users):
                clash = next((o for o in users[:j] if o[2] != name and overlap(o[0], policy)), None)
                if clash:
                    there = clash[0].positions.where(("spec", kind, clash[1], field))
                    problems.append(
                        policy.positions.problem(
                            ("spec", kind, i, field),
                            f"{field} {number} of {kind[:-1]} {quote(name)} is already used by "
                            f"{quote(clash[2])} ({there}) in a policy that can match the same "
                            "device",
                        )
                    )
    return problems


def groups_against_members(policies: list[Policy]) -> list[Problem]:
    """A user's ``groups`` cannot name a group whose authoritative ``members`` omit the user."""
    members: dict[str, list[tuple[Policy, int, set[str]]]] = defaultdict(list)
    for policy in policies:
        for i, entry in _entries(policy, "groups"):
            listed = entry.get("members")
            if isinstance(listed, list) and _present(entry) and not any(map(is_template, listed)):
                members[str(entry.get("name"))].append((policy, i, set(listed)))
    problems = []
    for policy in policies:
        for i, user in _entries(policy, "users"):
            name = user.get("name")
            if not _present(user) or not isinstance(name, str) or is_template(name):
                continue
            for k, group in enumerate(user.get("groups") or []):
                for other, g, listed in members.get(group, ()):
                    if name not in listed and overlap(policy, other):
                        there = other.positions.where(("spec", "groups", g, "members"))
                        problems.append(
                            policy.positions.problem(
                                ("spec", "users", i, "groups", k),
                                f"user {quote(name)} is put in group {quote(group)}, but that "
                                f"group's authoritative members ({there}) omit {quote(name)}; "
                                "add the user there or drop the group here",
                            )
                        )
                        break
    return problems


def mfa_users_present(policies: list[Policy]) -> list[Problem]:
    """Users of sshMfa and fileVault must be made present by a policy for the same devices."""
    present: dict[str, list[Policy]] = defaultdict(list)
    for policy in policies:
        for _, user in _entries(policy, "users"):
            if _present(user) and isinstance(user.get("name"), str):
                present[user["name"]].append(policy)
    problems = []
    for policy in policies:
        for kind in _SINGLETONS:
            block = policy.spec.get(kind)
            if not isinstance(block, dict):
                continue
            for k, name in enumerate(block.get("users") or []):
                if is_template(name) or any(overlap(policy, o) for o in present.get(name, ())):
                    continue
                problems.append(
                    policy.positions.problem(
                        ("spec", kind, "users", k),
                        f"{kind}.users lists {quote(name)}, but no policy for these devices "
                        "makes that user present; declare it under users",
                    )
                )
    return problems


def password_hash_os(policies: list[Policy]) -> list[Problem]:
    """A password hash alone works on Linux only."""
    problems = []
    for policy in policies:
        others = sorted(policy.matcher.os - {"linux"})
        if not others:
            continue
        for i, user in _entries(policy, "users"):
            password = user.get("password")
            if isinstance(password, dict) and "hash" in password and "secretRef" not in password:
                problems.append(
                    policy.positions.problem(
                        ("spec", "users", i, "password", "hash"),
                        f"password.hash works on Linux only, but this policy's selector admits "
                        f"{', '.join(others)}; set selector.os: [linux] or add password.secretRef",
                    )
                )
    return problems


# each OS's admin group (the backends' ADMIN_GROUP and Linux's sudo-or-wheel)
_ADMIN_GROUPS = ("sudo", "wheel", "admin", "administrators")


def timebound_admin_groups(policies: list[Policy]) -> list[Problem]:
    """``admin: {until: T}`` with the admin group in ``groups``: the membership would keep the
    right after T (groups are additive and never taken back by the expiry)."""
    problems = []
    for policy in policies:
        for i, user in _entries(policy, "users"):
            if not isinstance(user.get("admin"), dict):
                continue
            for j, group in enumerate(user.get("groups") or []):
                if isinstance(group, str) and group.lower() in _ADMIN_GROUPS:
                    problems.append(
                        policy.positions.problem(
                            ("spec", "users", i, "groups", j),
                            f"groups lists {quote(group)}, an admin group, but admin is "
                            "time-bound: the membership would outlast admin.until; remove it "
                            "from groups (admin: {until: …} grants it)",
                        )
                    )
    return problems


def names_per_os(policies: list[Policy]) -> list[Problem]:
    """User and group names, declared or referred to, follow each admitted OS's rules."""
    problems = []
    for policy in policies:
        oses = sorted(policy.matcher.os)
        for path, name in _names(policy):
            if is_template(name):
                continue
            reasons = [f"on {os}: {why}" for os in oses if (why := _name_problem(os, name))]
            if reasons:
                problems.append(
                    policy.positions.problem(path, f"name {quote(name)} " + "; ".join(reasons))
                )
    return problems


_name_cache: dict[tuple[str, str], str | None] = {}


def _name_problem(os_name: str, name: str) -> str | None:
    key = (os_name, name)
    if key not in _name_cache:
        _name_cache[key] = name_problem(os_name, name)
    return _name_cache[key]


def _names(policy: Policy) -> Iterator[tuple[Path, str]]:
    spec = policy.spec
    for kind in ("users", "groups"):
        for i, entry in _entries(policy, kind):
            if isinstance(entry.get("name"), str):
                yield ("spec", kind, i, "name"), entry["name"]
            for field in ("groups", "members"):
                for k, ref in enumerate(entry.get(field) or []):
                    yield ("spec", kind, i, field, k), ref
            if isinstance(entry.get("primaryGroup"), str):
                yield ("spec", kind, i, "primaryGroup"), entry["primaryGroup"]
    for kind in _SINGLETONS:
        block = spec.get(kind)
        if isinstance(block, dict):
            for k, ref in enumerate(block.get("users") or []):
                yield ("spec", kind, "users", k), ref


def commands(policies: list[Policy]) -> list[Problem]:
    """Erase needs explicit devices and ``confirm: erase``; ``run`` belongs to action run."""
    problems = []
    for policy in policies:
        for i, command in _entries(policy, "commands"):
            action = command.get("action")
            if action == "erase":
                missing = []
                if not policy.matcher.devices:
                    missing.append("a non-empty selector.devices list")
                if command.get("confirm") != "erase":
                    missing.append("confirm: erase on the command")
                if missing:
                    problems.append(
                        policy.positions.problem(
                            ("spec", "commands", i, "action"),
                            "erase needs " + " and ".join(missing) + " (erase cannot be undone)",
                        )
                    )
            elif "confirm" in command:
                problems.append(
                    policy.positions.problem(
                        ("spec", "commands", i, "confirm"),
                        "confirm is only used with action erase",
                    )
                )
            if "run" in command and action != "run":
                problems.append(
                    policy.positions.problem(
                        ("spec", "commands", i, "run"),
                        f"run is only used with action run, not {action}",
                    )
                )
    return problems


def templates(policies: list[Policy]) -> list[Problem]:
    """Templates parse; the selector (used before rendering) holds none."""
    problems = []
    for policy in policies:
        problems += template_problems(policy.spec, policy.positions)
        for path, value in _leaves(policy.selector, ("selector",)):
            if is_template(value):
                problems.append(
                    policy.positions.problem(
                        path,
                        "selectors are matched before rendering: templates are not allowed here",
                    )
                )
    return problems


def _leaves(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def conflicts(policies: list[Policy]) -> list[Problem]:
    """Two policies that can match one device must not disagree on a resource's field."""
    # (resource, field) → comparison key → declarations with that value. Only fields with
    # two or more distinct values need an overlap check, so 1,000 policies sharing a
    # resource cost one pass, not a million pairwise comparisons.
    declared: dict[str, list[tuple[Policy, str, Path, Any]]] = defaultdict(list)
    for policy in policies:
        for label, kind, path, entry in _declarations(policy):
            declared[label].append((policy, kind, path, entry))
    values: dict[tuple[str, tuple[str, ...]], dict[Any, list[_Declared]]] = defaultdict(dict)
    for label, declarations in declared.items():
        if len(declarations) < 2:
            continue  # declared once: nothing to disagree with
        for policy, kind, path, entry in declarations:
            for field, value, key in declared_fields(kind, entry):
                values[(label, field)].setdefault(key, []).append((policy, path, value))

    problems = []
    for (label, field), by_value in values.items():
        if len(by_value) < 2:
            continue
        groups = list(by_value.values())
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                pair = _overlapping_pair(groups[a], groups[b])
                if pair is not None:
                    first, second = pair
                    conflict = Conflict(field, first[2], second[2])
                    problems.append(
                        conflict_problem(
                            label, conflict, (first[0], first[1]), (second[0], second[1])
                        )
                    )
    return problems


_Declared = tuple[Policy, Path, Any]  # policy, path of the declaration, the field's value


def _declarations(policy: Policy) -> Iterator[tuple[str, str, Path, Any]]:
    """(label, kind, path, entry) of every resource the policy declares by a literal name."""
    for kind in KEYS:
        for i, entry in _entries(policy, kind):
            name = entry_key(kind, entry)
            if name is not None and not is_template(name):
                if kind == "users" and policy.on_removal is not None and isinstance(entry, dict):
                    entry = {**entry, "onRemoval": policy.on_removal}  # as merging stamps it
                yield resource_label(kind, name), kind, ("spec", kind, i), entry
    for kind in _SINGLETONS:
        if isinstance(policy.spec.get(kind), dict):
            yield kind, kind, ("spec", kind), policy.spec[kind]


def _overlapping_pair(
    xs: list[_Declared], ys: list[_Declared]
) -> tuple[_Declared, _Declared] | None:
    """The first two declarations, one per variant, in different policies that can overlap."""
    for x in xs:
        for y in ys:
            if x[0] is not y[0] and overlap(x[0], y[0]):
                return (x, y) if _order(x[0]) <= _order(y[0]) else (y, x)
    return None


def _order(policy: Policy) -> tuple[str, int]:
    return policy.file, policy.line


RULES: list[Rule] = [
    duplicate_policy_names,
    duplicate_entries,
    duplicate_ids,
    groups_against_members,
    mfa_users_present,
    password_hash_os,
    names_per_os,
    commands,
    templates,
    conflicts,
    timebound_admin_groups,
]


def check_rules(policies: list[Policy]) -> list[Problem]:
    """Every problem every rule finds."""
    problems: list[Problem] = []
    for rule in RULES:
        problems += rule(policies)
    return problems
