"""``jcstate audit``: the server's audit log."""

from __future__ import annotations

import argparse
from typing import Any

from jcstate.cli.remote import admin_parser, client, show

__all__ = ["register"]


def audit(args: argparse.Namespace) -> int:
    rows = client(args).call("GET", "/api/v1/audit", limit=args.limit)
    show(
        args,
        rows,
        [
            ("AT", "at"),
            ("ACTOR", "actor"),
            ("ROLE", "role"),
            ("ACTION", "action"),
            ("TARGET", "target"),
            ("OUTCOME", "outcome"),
        ],
    )
    return 0


def register(sub: Any) -> None:
    p = admin_parser(sub, "audit", "show the audit log")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(handler=audit)
