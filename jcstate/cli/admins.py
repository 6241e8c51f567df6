"""``jcstate admin add|list|remove|passwd``: named accounts for the browser console.

Like the other admin commands these call the server's API with an administrator's token
(``--server URL --token T`` or ``JCSTATE_SERVER`` / ``JCSTATE_TOKEN``), so they work against
any server process, local or not, and every change is audited. A password is read from stdin
with ``--password-stdin`` (one line) or prompted for twice; it is never an argument, so it
never shows in a process list or shell history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["register"]

# jcstate.server.roles.ALL_ROLES, without its import
ROLES = ("read-only", "manager", "administrator", "command-runner")


def _client(args: argparse.Namespace) -> Any:
    from jcstate.server.api_client import AdminClient

    server = args.server or os.environ.get("JCSTATE_SERVER")
    token = args.token or os.environ.get("JCSTATE_TOKEN")
    if not server or not token:
        raise JcstateError("give --server URL and --token T (or JCSTATE_SERVER / JCSTATE_TOKEN)")
    return AdminClient(server, token, ca_file=args.ca_file or os.environ.get("JCSTATE_CA_FILE"))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise JcstateError("the two passwords differ; nothing was changed")
    if not password:
        raise JcstateError("empty password; nothing was changed")
    return password


def admin_add(args: argparse.Namespace) -> int:
    password = _password(args)
    row = _client(args).call(
        "POST", "/api/v1/admins", {"name": args.name, "role": args.role, "password": password}
    )
    print(f"added {row['name']} ({row['role']})")
    if row["role"] == "administrator":
        print("At the first sign-in the console asks them to set up an authenticator app.")
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def admin_list(args: argparse.Namespace) -> int:
    rows = _client(args).call("GET", "/api/v1/admins")
    if args.output == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    table = [["NAME", "ROLE", "TOTP", "CREATED", "BY"]]
    for r in rows:
        table.append(
            [
                r["name"],
                r["role"],
                "yes" if r["totpEnrolled"] else "no",
                _when(r["createdAt"]),
                r.get("createdBy") or "-",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def admin_remove(args: argparse.Namespace) -> int:
    _client(args).call("DELETE", f"/api/v1/admins/{args.name}")
    print(f"removed {args.name}; their sessions have ended")
    return 0


def admin_passwd(args: argparse.Namespace) -> int:
    password = _password(args)
    _client(args).call("PUT", f"/api/v1/admins/{args.name}/password", {"password": password})
    print(f"password of {args.name} changed; their sessions have ended")
    return 0


def register(sub: Any) -> None:
    from jcstate.cli import help_formatter

    parser = sub.add_parser(
        "admin",
        help="console accounts: add, list, remove, passwd",
        description="Named accounts that sign in to the browser console.",
        formatter_class=help_formatter,
    )
    actions = parser.add_subparsers(dest="admin_command", metavar="ACTION")
    actions.required = True

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--server", help="server URL (default: $JCSTATE_SERVER)")
        p.add_argument("--token", help="administrator token (default: $JCSTATE_TOKEN)")
        p.add_argument("--ca-file", help="CA certificate for a private server certificate")
        return p

    p = action("add", "add a console account")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=admin_add)

    p = action("list", "list console accounts")
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.set_defaults(handler=admin_list)

    p = action("remove", "remove a console account (its sessions end)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=admin_remove)

    p = action("passwd", "set a console account's password (its sessions end)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=admin_passwd)
