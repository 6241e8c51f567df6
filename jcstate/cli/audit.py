"""``jcstate audit``: the server's audit log, filtered for an investigation.

Actions are in words (``command.erase``, ``policy.push``, ``token.revoke``), actors by name
(the token's ``--name``), with the target, the outcome and its reason (``denied (revoked)``).
"""

from __future__ import annotations

import argparse
from typing import Any

from jcstate.cli.remote import admin_parser, client, show

__all__ = ["register"]

AUDIT_COLUMNS = [
    ("AT", "at"),
    ("ACTOR", "actorName"),
    ("ROLE", "role"),
    ("ACTION", "action"),
    ("TARGET", "target"),
    ("OUTCOME", "result"),
]


def audit(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("actor", "action", "device", "outcome", "since", "until"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    rows = client(args).call("GET", "/api/v1/audit", **params)
    if args.output != "json":
        rows = [
            {**r, "result": r["outcome"] + (f" ({r['reason']})" if r.get("reason") else "")}
            for r in rows
        ]
    show(args, rows, AUDIT_COLUMNS)
    return 0


def register(sub: Any) -> None:
    p = admin_parser(sub, "audit", "show the audit log, newest first")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--actor", help="a token's name or id")
    p.add_argument("--action", help="command.erase, policy.push, … or a family: command")
    p.add_argument("--device", help="entries aimed at this device (id or hostname)")
    p.add_argument("--outcome", help="ok, denied, refused or failed")
    p.add_argument("--since", metavar="TIME", help="RFC 3339 time or date")
    p.add_argument("--until", metavar="TIME", help="RFC 3339 time or date")
    p.set_defaults(handler=audit)
