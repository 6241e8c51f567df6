"""The blast radius of a push: per device, what the new document would change.

Computed from each device's *last reported facts* (no device is contacted), so it is an
estimate: it covers the accounts the facts describe (users and groups) and says which devices'
documents change at all, plus what the device's ownership ledger would undo (the agent
reports the ledger's names with its facts). The agent's own plan on the device remains the
authority.
"""

from __future__ import annotations

from typing import Any

__all__ = ["account_changes", "undo_changes"]

_USER_FIELDS = ("uid", "home", "shell")
_GROUP_FIELDS = ("gid",)


def _named(facts: dict[str, Any], key: str) -> dict[str, dict[str, Any]] | None:
    """``facts[key]`` as name → entry; reports nest it as {"users": [...], "groups": [...]}."""
    value = facts.get(key)
    if isinstance(value, dict) and "error" not in value:
        value = value.get(key, value)
    if isinstance(value, dict):
        value = [dict(v, name=k) for k, v in value.items() if isinstance(v, dict)]
    if not isinstance(value, list):
        for other in facts.values():  # users and groups may share one summary
            if isinstance(other, dict) and isinstance(other.get(key), list):
                value = other[key]
                break
        else:
            return None
    return {e["name"]: e for e in value if isinstance(e, dict) and "name" in e}


def account_changes(spec: dict[str, Any], facts: dict[str, Any] | None) -> list[str]:
    """Terraform-style lines (``+ user alice``, ``~ user bob: shell a → b``, ``- group x``)."""
    if not facts:
        return ["? no facts reported yet"]
    lines: list[str] = []
    for key, kind, fields in (("groups", "group", _GROUP_FIELDS), ("users", "user", _USER_FIELDS)):
        current = _named(facts, key)
        if current is None:
            continue
        for want in spec.get(key) or []:
            name = want.get("name")
            have = current.get(name)
            state = want.get("state", "present")
            if state == "absent":
                if have is not None:
                    lines.append(f"- {kind} {name}")
                continue
            if have is None:
                lines.append(f"+ {kind} {name}")
                continue
            for field in fields:
                if want.get(field) is not None and want[field] != have.get(field):
                    lines.append(f"~ {kind} {name}: {field} {have.get(field)} → {want[field]}")
            if kind == "group" and want.get("members") is not None:
                if sorted(want["members"]) != sorted(have.get("members") or []):
                    lines.append(
                        f"~ group {name}: members {sorted(have.get('members') or [])} → "
                        f"{sorted(want['members'])}"
                    )
            if kind == "user" and want.get("groups"):
                missing = sorted(set(want["groups"]) - set(have.get("groups") or []))
                if missing:
                    lines.append(f"~ user {name}: groups + {', '.join(missing)}")
            if kind == "user" and state == "locked" and not have.get("passwordLocked"):
                lines.append(f"~ user {name}: locked")
    return lines + undo_changes(spec, facts)


_UNDO = "(no longer in any policy)"
_ON_REMOVAL = {"lock": "~ user {} {}: locked", "delete": "- user {} {}", "keep": ""}


def undo_changes(spec: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """What the device's ownership ledger (``facts["ledger"]``, names only) would undo.

    The same rule as the agent's (jcstate/undo.py), from the names the device last reported:
    a user jcstate created and no policy lists follows its ``onRemoval``; memberships and
    admin rights jcstate granted and no policy gives any more go; MFA and FileVault users go
    with their section.
    """
    ledger = facts.get("ledger")
    if not isinstance(ledger, dict) or "error" in ledger:
        return []
    users = {u.get("name"): u for u in spec.get("users") or [] if isinstance(u, dict)}
    listed: dict[str, set[str]] = {}
    for group in spec.get("groups") or []:
        for member in group.get("members") or []:
            listed.setdefault(member, set()).add(group.get("name"))
    lines: list[str] = []
    for name, owned in sorted((ledger.get("users") or {}).items()):
        want = users.get(name)
        if want is not None and want.get("state") == "absent":
            continue
        if want is None and owned.get("retired"):
            continue  # undone already
        if want is None:
            choice = owned.get("onRemoval", "lock") if owned.get("created") else "keep"
            line = _ON_REMOVAL.get(choice, "").format(name, _UNDO)
            if line:
                lines.append(line)
        leave = sorted(
            set(owned.get("groups") or [])
            - set((want or {}).get("groups") or [])
            - listed.get(name, set())
        )
        if leave and not (want is None and owned.get("created") and choice == "delete"):
            lines.append(f"~ user {name}: groups - {', '.join(leave)} {_UNDO}")
        if owned.get("admin") and (want is None or want.get("admin") is None):
            if not (want is None and owned.get("created") and choice == "delete"):
                lines.append(f"~ user {name}: admin restored {_UNDO}")
    if ledger.get("sshMfa") or ledger.get("totpFiles"):
        if "sshMfa" not in spec:
            lines.append(f"- sshMfa sshd+pam {_UNDO}")
            lines += [f"- sshMfa {u} (TOTP file) {_UNDO}" for u in ledger.get("totpFiles") or []]
    if ledger.get("fileVaultUsers") and "fileVault" not in spec:
        lines.append(f"~ fileVault users - {', '.join(ledger['fileVaultUsers'])} {_UNDO}")
    return lines
