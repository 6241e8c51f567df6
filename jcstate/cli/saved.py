"""``jcstate command saved add|edit|list|remove|assign|unassign``: commands kept on the server
that command runners may run (``jcstate command run DEVICE --saved NAME``).

Only administrators change them; ``list`` shows a command runner the ones assigned to it.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from jcstate.cli.remote import admin_parser, client, show
from jcstate.errors import JcstateError

__all__ = ["register"]

COLUMNS = [
    ("NAME", "name"),
    ("VERSION", "version"),
    ("TIMEOUT", "timeout"),
    ("ARGV", "argvText"),
    ("ASSIGNED TO", "assignedText"),
    ("DESCRIPTION", "description"),
]


def _name(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _argv(args: argparse.Namespace) -> list[str]:
    from jcstate.cli.commands import _program_argv

    return _program_argv(list(args.argv or []))


def saved_add(args: argparse.Namespace) -> int:
    argv = _argv(args)
    if not argv:
        raise JcstateError(f"give the program after --: jcstate command saved add {args.name} -- …")
    body: dict[str, Any] = {"name": args.name, "argv": argv}
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.description is not None:
        body["description"] = args.description
    data = client(args).call("POST", "/api/v1/saved-commands", body)
    if args.output == "json":
        show(args, data)
    else:
        print(f"saved {data['name']} (version {data['version']}): {_text(data['argv'])}")
    return 0


def saved_edit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    argv = _argv(args)
    if argv:
        body["argv"] = argv
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.description is not None:
        body["description"] = args.description
    if not body:
        raise JcstateError("nothing to change: give -- ARGV…, --timeout or --description")
    data = client(args).call("PATCH", f"/api/v1/saved-commands/{_name(args.name)}", body)
    if args.output == "json":
        show(args, data)
    else:
        kept = len(data.get("assignedTo") or [])
        print(f"{data['name']} is now version {data['version']}: {_text(data['argv'])}")
        if kept and "argv" in body:
            print(f"  still assigned to {kept}: they may run the new argv")
    return 0


def _text(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def saved_list(args: argparse.Namespace) -> int:
    rows = client(args).call("GET", "/api/v1/saved-commands")
    if args.output != "json":
        rows = [
            {
                **r,
                "argvText": _text(r["argv"]),
                "assignedText": ", ".join(f"{a['kind']}:{a['id']}" for a in r["assignedTo"])
                if "assignedTo" in r
                else None,
            }
            for r in rows
        ]
    show(args, rows, COLUMNS)
    return 0


def saved_remove(args: argparse.Namespace) -> int:
    client(args).call("DELETE", f"/api/v1/saved-commands/{_name(args.name)}")
    print(f"removed {args.name} and its assignments")
    return 0


def _who(args: argparse.Namespace) -> str:
    if bool(args.to_token) == bool(args.admin):
        raise JcstateError("give --token-id TOKEN_ID or --admin ACCOUNT_NAME (one of them)")
    return f"token/{_name(args.to_token)}" if args.to_token else f"admin/{_name(args.admin)}"


def saved_assign(args: argparse.Namespace) -> int:
    who = _who(args)
    data = client(args).call("PUT", f"/api/v1/saved-commands/{_name(args.name)}/assignments/{who}")
    already = "" if data["created"] else " (it already was)"
    print(f"{args.name} assigned to {data['kind']} {data['id']}{already}")
    return 0


def saved_unassign(args: argparse.Namespace) -> int:
    who = _who(args)
    client(args).call("DELETE", f"/api/v1/saved-commands/{_name(args.name)}/assignments/{who}")
    print(f"{args.name} no longer assigned to {who.replace('/', ' ', 1)}")
    return 0


def register(cs: Any) -> None:
    """``saved`` under ``jcstate command``."""
    p = cs.add_parser("saved", help="saved commands that command runners may run")
    ss = p.add_subparsers(dest="saved_action", metavar="ACTION")
    ss.required = True
    q = admin_parser(ss, "add", "store a command (administrator): NAME -- ARGV…")
    q.add_argument("name")
    q.add_argument("argv", nargs="*", help="the program and its arguments, after --")
    q.add_argument("--timeout", type=int, help="seconds before it is killed (300)")
    q.add_argument("--description", help="what it is for, shown in the list")
    q.set_defaults(handler=saved_add)
    q = admin_parser(ss, "edit", "change a saved command (administrator); assignments are kept")
    q.add_argument("name")
    q.add_argument("argv", nargs="*", help="a new program and arguments, after --")
    q.add_argument("--timeout", type=int, help="seconds before it is killed")
    q.add_argument("--description")
    q.set_defaults(handler=saved_edit)
    q = admin_parser(ss, "list", "saved commands (a command runner: those assigned to it)")
    q.set_defaults(handler=saved_list)
    q = admin_parser(ss, "remove", "remove a saved command and its assignments", listing=False)
    q.add_argument("name")
    q.set_defaults(handler=saved_remove)
    for action, text, handler in (
        ("assign", "let a command runner run it (administrator)", saved_assign),
        ("unassign", "take it away from a command runner (administrator)", saved_unassign),
    ):
        q = admin_parser(ss, action, text, listing=False)
        q.add_argument("name")
        # --token is the caller's own admin token (admin_parser); the assignee is --token-id
        q.add_argument("--token-id", dest="to_token", metavar="TOKEN_ID", help="a token's id")
        q.add_argument("--admin", metavar="ACCOUNT", help="a console account's name")
        q.set_defaults(handler=handler)
