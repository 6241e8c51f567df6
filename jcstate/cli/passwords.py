"""``jcstate password set REF``: a password held by the server (``password.secretRef``)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client
from jcstate.errors import JcstateError

__all__ = ["register"]


def password_set(args: argparse.Namespace) -> int:
    # read from stdin when piped, so the password never appears in argv or shell history
    value = (
        sys.stdin.readline().rstrip("\n")
        if not sys.stdin.isatty()
        else getpass.getpass(f"password for {args.ref}: ")
    )
    if not value:
        raise JcstateError("empty password")
    client(args).call("PUT", f"/api/v1/passwords/{args.ref}", {"password": value})
    print(f"stored password {args.ref}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("password", help="passwords held by the server (password.secretRef)")
    pw = p.add_subparsers(dest="password_command", metavar="ACTION")
    pw.required = True
    q = admin_parser(pw, "set", "store a password, read from stdin or prompted", listing=False)
    q.add_argument("ref")
    q.set_defaults(handler=password_set)
