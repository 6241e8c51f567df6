"""What every admin command shares: finding the server and token, the common options, printing.

Admin commands find the server and token in ``--server URL --token T`` or ``JCSTATE_SERVER`` /
``JCSTATE_TOKEN`` (``--ca-file`` / ``JCSTATE_CA_FILE`` for a private CA). Listings take
``--output json``. Each noun's commands live in their own module beside this one
(``devices``, ``commands``, ``policies``, ``tokens``, ``audit``, ``releases``, …) and import
the web client only inside their handlers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["admin_parser", "cell", "client", "confirm", "pair", "show", "subparsers_of", "when"]


def client(args: argparse.Namespace) -> Any:
    from jcstate.server.api_client import AdminClient

    server = args.server or os.environ.get("JCSTATE_SERVER")
    token = args.token or os.environ.get("JCSTATE_TOKEN")
    if not server or not token:
        raise JcstateError("give --server URL and --token T (or JCSTATE_SERVER / JCSTATE_TOKEN)")
    return AdminClient(server, token, ca_file=args.ca_file or os.environ.get("JCSTATE_CA_FILE"))


def when(ts: float | str | None) -> str:
    """A time from the API (RFC 3339, or POSIX seconds) as ``2026-12-06 04:30:24Z``."""
    if ts is None:
        return "never"
    if isinstance(ts, str):
        try:
            ts = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return ts
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cell(key: str, value: Any) -> str:
    """One value in a text table: times readable, labels as ``k=v,k2=v2``, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return str(value)
    if key.endswith(("At", "Seen", "_at")) or key in ("at", "lastSeen", "lastUsed"):
        return when(value)
    return str(value)


def confirm(args: argparse.Namespace, question: str) -> bool:
    """True with ``--yes``; else ask on the terminal (no terminal: refuse, say how)."""
    import sys

    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        raise JcstateError(f"{question} — not confirmed: no terminal to ask on; add --yes")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def show(
    args: argparse.Namespace,
    data: Any,
    columns: list[tuple[str, str]] | None = None,
    indent: str = "",
) -> None:
    if getattr(args, "output", "text") == "json" or columns is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = [[h for h, _ in columns]]
    for row in rows:
        table.append([cell(key, row.get(key)) for _, key in columns])
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise JcstateError(f"{text}: expected KEY=VALUE")
    return key, value


def admin_parser(
    sub: Any, name: str, help_text: str, *, listing: bool = True
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--server", help="server URL (default: $JCSTATE_SERVER)")
    p.add_argument("--token", help="admin token (default: $JCSTATE_TOKEN)")
    p.add_argument("--ca-file", help="CA certificate for a private server certificate")
    if listing:
        p.add_argument("--output", choices=["text", "json"], default="text")
    return p


def subparsers_of(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:  # argparse offers no public way to reach them
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="totp_command", metavar="ACTION")
