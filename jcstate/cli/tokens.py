"""``jcstate token create|list|revoke`` and ``jcstate connect-key create|list|revoke``.

``token create --owner ACCOUNT`` makes a token that belongs to a person (a console account):
the account's password (and its authenticator code with ``--totp``) is asked for at the prompt
or read from stdin (``--password-stdin``: the password, then the code, one a line), never an
argument, so no administrator mints a token in a colleague's name (two-person erase,
docs/security.md).
"""

from __future__ import annotations

import argparse
from typing import Any

from jcstate.cli.remote import admin_parser, client, pair, show
from jcstate.errors import JcstateError

__all__ = ["register"]

TOKEN_COLUMNS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("ROLE", "role"),
    ("OWNER", "owner"),
    ("STATE", "state"),
    ("CREATED", "createdAt"),
    ("LAST USED", "lastUsedAt"),
    ("EXPIRES", "expiresAt"),
    ("REVOKED", "revokedAt"),
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def expiry(text: str) -> str:
    """``30d``, ``12h``, ``2w`` (from now) or an RFC 3339 time → an RFC 3339 time."""
    import datetime as dt

    from jcstate.server.views import from_rfc3339, rfc3339

    number, unit = text[:-1], text[-1:].lower()
    if unit in _UNITS and number.isdigit():
        return rfc3339(dt.datetime.now(dt.UTC).timestamp() + int(number) * _UNITS[unit]) or ""
    try:
        return rfc3339(from_rfc3339(text)) or ""
    except ValueError:
        raise JcstateError(
            f"--expires {text}: give a duration (30d, 12h, 2w) or an RFC 3339 time"
        ) from None


def token_create(args: argparse.Namespace) -> int:
    body = {"role": args.role, "name": args.name or ""}
    if args.expires:
        body["expiresAt"] = expiry(args.expires)
    if args.owner:
        body.update(_owner_proof(args))
    elif args.password_stdin or args.totp:
        raise JcstateError("--password-stdin and --totp go with --owner ACCOUNT")
    data = client(args).call("POST", "/api/v1/tokens", body)
    if args.output == "json":
        show(args, data)
    else:
        until = f", expires {data['expiresAt']}" if data.get("expiresAt") else ""
        until += f", belongs to {data['owner']}" if data.get("owner") else ""
        print(f"token {data['id']} {data['name']} ({data['role']}{until}); shown only once:")
        print(data["token"])
    return 0


def _owner_proof(args: argparse.Namespace) -> dict[str, str]:
    """The owner's password (and TOTP code), from stdin or the terminal."""
    import getpass
    import sys

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        code = sys.stdin.readline().strip() if args.totp else ""
    else:
        password = getpass.getpass(f"Password of {args.owner}: ")
        code = getpass.getpass(f"Authenticator code of {args.owner}: ") if args.totp else ""
    if not password:
        raise JcstateError(f"no password for {args.owner}: no token was created")
    proof = {"owner": args.owner, "ownerPassword": password}
    if code:
        proof["ownerTotp"] = code
    return proof


def token_list(args: argparse.Namespace) -> int:
    show(args, client(args).call("GET", "/api/v1/tokens"), TOKEN_COLUMNS)
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    show(
        args,
        client(args).call("DELETE", f"/api/v1/tokens/{args.id}"),
        [("ID", "id"), ("REVOKED", "revoked")],
    )
    return 0


KEY_COLUMNS = [
    ("ID", "id"),
    ("KEY", "key"),
    ("NAME", "name"),
    ("AUTO-APPROVE", "autoApprove"),
    ("LABELS", "labels"),
    ("REVOKED", "revokedAt"),
]


def key_create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name or "",
        "autoApprove": not args.require_approval,
        "labels": dict(pair(p) for p in args.label),
    }
    show(args, client(args).call("POST", "/api/v1/connect-keys", body), KEY_COLUMNS)
    return 0


def key_list(args: argparse.Namespace) -> int:
    show(args, client(args).call("GET", "/api/v1/connect-keys"), KEY_COLUMNS)
    return 0


def key_revoke(args: argparse.Namespace) -> int:
    show(
        args,
        client(args).call("DELETE", f"/api/v1/connect-keys/{args.id}"),
        [("ID", "id"), ("REVOKED", "revoked")],
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="admin API tokens")
    ts = p.add_subparsers(dest="token_command", metavar="ACTION")
    ts.required = True
    q = admin_parser(ts, "create", "create a token (printed once)")
    q.add_argument(
        "--role",
        required=True,
        choices=["read-only", "manager", "administrator", "command-runner"],
        help="command-runner: runs only the saved commands assigned to it (docs/security.md)",
    )
    q.add_argument("--name", help="shown as the actor in the audit log (default: the role)")
    q.add_argument("--expires", metavar="WHEN", help="30d, 12h, 2w or an RFC 3339 time")
    q.add_argument(
        "--owner",
        metavar="ACCOUNT",
        help="the console account (person) the token belongs to; asks for its password",
    )
    q.add_argument(
        "--password-stdin",
        action="store_true",
        help="with --owner: read the password (then the --totp code) from stdin",
    )
    q.add_argument(
        "--totp", action="store_true", help="with --owner: the account has an authenticator app"
    )
    q.set_defaults(handler=token_create)
    admin_parser(ts, "list", "list tokens").set_defaults(handler=token_list)
    q = admin_parser(ts, "revoke", "revoke a token")
    q.add_argument("id")
    q.set_defaults(handler=token_revoke)

    p = sub.add_parser("connect-key", help="enrollment connect keys")
    ks = p.add_subparsers(dest="key_command", metavar="ACTION")
    ks.required = True
    q = admin_parser(ks, "create", "create a connect key")
    q.add_argument("--name")
    q.add_argument(
        "--require-approval",
        action="store_true",
        help="devices enrolled with it wait for `jcstate device approve`",
    )
    q.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label given to devices enrolled with this key",
    )
    q.set_defaults(handler=key_create)
    admin_parser(ks, "list", "list connect keys").set_defaults(handler=key_list)
    q = admin_parser(ks, "revoke", "revoke a connect key (stops new enrollments)")
    q.add_argument("id")
    q.set_defaults(handler=key_revoke)
