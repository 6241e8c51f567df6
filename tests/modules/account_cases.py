"""Fixture cases for the Linux users and groups backends, pyinfra style.

A case file ``tests/modules/<kind>/<case>.linux.json`` holds::

    {"description": "...",
     "desired": [...],              entries of spec.<kind>, exactly as in a document
     "users": [...], "groups": [...]   (optional) the other section of the same document
     "facts": {"passwd": "...", "shadow": "...", "group": "...", "gshadow": "...",
               "login.defs": "...", "useradd": "...",          (optional)
               "authorized_keys": {"alice": "text" | {"text"?, "mode"?, "uid"?, "gid"?,
                                                     "dir_mode"?, "error"?}},
               "homes_missing": ["bob"], "console": {"alice": "tty1"},
               "paths": {"/srv/bob": "dir"}},          (optional) what else is on disk
     "secrets": {"passwords": {...}},
     "root": "/",
     "expected": {"changes": [{"kind", "name", "action", "phase", "fields", "steps",
                               "requires"?, "error"?}]}}

Facts are built by parsing the given file texts with the backend's own parsers; a user without
an ``authorized_keys`` entry has a home but no key file. Every account's home is a directory on
disk unless listed in ``homes_missing``; ``paths`` adds other paths and what they are. An
expected ``error`` matches when it is a substring of the change's error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jcstate.host import Host
from jcstate.modules.accounts.facts import AccountFacts, KeyFile
from jcstate.modules.accounts.files import (
    parse_defaults,
    parse_group,
    parse_gshadow,
    parse_passwd,
    parse_shadow,
)
from jcstate.modules.groups import parse as parse_groups
from jcstate.modules.groups.linux import BACKEND as GROUPS
from jcstate.modules.users import parse as parse_users
from jcstate.modules.users.linux import BACKEND as USERS
from jcstate.plan import Change
from jcstate.resource import PlanContext
from jcstate.secrets import MappingSecrets

HERE = Path(__file__).parent
DEBIAN12 = HERE / "data" / "debian12"


def case_files(kind: str) -> list[Path]:
    return sorted((HERE / kind).glob("*.linux.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _key_file(value: Any, facts: AccountFacts, user: str) -> KeyFile:
    entry = facts.users[user]
    spec = {"text": value} if isinstance(value, str) else dict(value)
    octal = {k: int(spec[k], 8) for k in ("mode", "dir_mode") if k in spec}
    return KeyFile(
        text=spec.get("text"),
        mode=octal.get("mode", 0o600) if spec.get("text") is not None else None,
        uid=spec.get("uid", entry.uid) if spec.get("text") is not None else None,
        gid=spec.get("gid", entry.gid) if spec.get("text") is not None else None,
        dir_mode=octal.get("dir_mode", 0o700),
        dir_uid=spec.get("dir_uid", entry.uid),
        dir_gid=spec.get("dir_gid", entry.gid),
        error=spec.get("error"),
    )


def facts_from(given: dict[str, Any]) -> AccountFacts:
    """AccountFacts from file texts, parsed exactly as gather() parses the real files."""
    facts = AccountFacts(
        users=parse_passwd(given.get("passwd", "")),
        shadow=parse_shadow(given.get("shadow", "")),
        groups=parse_group(given.get("group", "")),
        gshadow=parse_gshadow(given.get("gshadow", "")),
        defaults=parse_defaults(given.get("login.defs"), given.get("useradd")),
        console=dict(given.get("console", {})),
    )
    keys = given.get("authorized_keys", {})
    missing = set(given.get("homes_missing", []))
    paths = {u.home: "dir" for n, u in facts.users.items() if n not in missing}
    facts.paths = {**paths, **given.get("paths", {})}
    for name in facts.users:
        if name in missing:
            facts.keys[name] = KeyFile(home_exists=False)
        elif name in keys:
            facts.keys[name] = _key_file(keys[name], facts, name)
        else:
            facts.keys[name] = KeyFile()
    return facts


def context(case: dict[str, Any], kind: str) -> PlanContext:
    facts = facts_from(case["facts"])
    ctx = PlanContext(host=Host(root=case.get("root", "/"), os_name="linux"))
    ctx.facts = {"users": facts, "groups": facts}
    other = "groups" if kind == "users" else "users"
    ctx.desired = {kind: case["desired"], other: case.get(other)}
    ctx.desired = {
        "users": parse_users(ctx.desired["users"]) if ctx.desired["users"] is not None else None,
        "groups": (
            parse_groups(ctx.desired["groups"]) if ctx.desired["groups"] is not None else None
        ),
    }
    ctx.desired = {k: v for k, v in ctx.desired.items() if v is not None}
    ctx.secrets = MappingSecrets(case.get("secrets") or {})
    return ctx


def plan(case: dict[str, Any], kind: str) -> list[Change]:
    ctx = context(case, kind)
    backend = USERS if kind == "users" else GROUPS
    return backend.plan(ctx.desired[kind], ctx)


def as_expected(change: Change, expected: dict[str, Any] | None) -> dict[str, Any]:
    """The change as a fixture states it (no source; an error matched by substring)."""
    out = change.to_dict()
    out.pop("source", None)
    out["phase"] = change.phase
    want_error = (expected or {}).get("error")
    if want_error and out.get("error") and want_error in out["error"]:
        out["error"] = want_error
    return out
