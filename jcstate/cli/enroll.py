"""``jcstate totp enroll|list|remove USER``: users' TOTP secrets created and kept by the server.

They add themselves beside the standalone ``totp new`` (``jcstate/cli/totp.py``) under one
``totp``. ``enroll`` refuses a user who already has a secret (``--rotate`` replaces it and says
which devices get the new one) and a user no policy lists in ``sshMfa.users`` (``--force``).
``list`` shows who is enrolled and which devices hold the current secret, never the secret.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client, show, subparsers_of

__all__ = ["register"]


def totp_enroll(args: argparse.Namespace) -> int:
    import urllib.parse

    params = {k: "true" for k in ("rotate", "force") if getattr(args, k)}
    data = client(args).call(
        "POST", f"/api/v1/totp/{urllib.parse.quote(args.user, safe='')}", **params
    )
    hosts = ", ".join(d["hostname"] for d in data.get("devices") or []) or "none yet"
    what = "rotated: the user must scan the new code" if data.get("rotated") else "enrolled"
    print(f"{args.user} {what}; devices that get this secret: {hosts}", file=sys.stderr)
    label = urllib.parse.quote(f"{args.issuer}:{args.user}")
    uri = (
        f"otpauth://totp/{label}?secret={data['secret']}"
        f"&issuer={urllib.parse.quote(args.issuer)}&algorithm=SHA1&digits=6&period=30"
    )
    print(uri)
    try:
        import qrcode
    except ImportError:
        return 0
    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    qr.print_ascii(out=sys.stdout, invert=True)
    return 0


def _names(devices: list[dict[str, Any]]) -> str:
    return ",".join(d["hostname"] for d in devices) or "-"


def totp_list(args: argparse.Namespace) -> int:
    rows = client(args).call("GET", "/api/v1/totp")
    if args.output != "json":
        rows = [
            {**r, "holding": _names(r["devices"]), "waiting": _names(r["pending"])} for r in rows
        ]
    columns = [("USER", "user"), ("ENROLLED", "enrolledAt"), ("DEVICES", "holding")]
    show(args, rows, [*columns, ("PENDING", "waiting")])
    return 0


def totp_remove(args: argparse.Namespace) -> int:
    import urllib.parse

    data = client(args).call("DELETE", f"/api/v1/totp/{urllib.parse.quote(args.user, safe='')}")
    if args.output == "json":
        show(args, data)
        return 0
    print(f"removed {args.user}'s TOTP secret from the server")
    if data["devices"]:
        print(
            f"{_names(data['devices'])} still list {args.user} in sshMfa.users: their next run "
            "removes the secret file and fails that user's MFA (fail closed) until the user "
            "is enrolled again or removed from the policy"
        )
    return 0


def register(sub: Any) -> None:
    # `totp` may already exist (local `totp new`); add `enroll` beside it
    totp = sub.choices.get("totp") or sub.add_parser("totp", help="TOTP secrets for SSH MFA")
    q = admin_parser(
        subparsers_of(totp), "enroll", "create a user's TOTP secret on the server", listing=False
    )
    q.add_argument("user")
    q.add_argument("--issuer", default="jcstate")
    q.add_argument("--rotate", action="store_true", help="replace the user's existing secret")
    q.add_argument(
        "--force", action="store_true", help="enroll a user no policy lists in sshMfa.users"
    )
    q.set_defaults(handler=totp_enroll)
    q = admin_parser(
        subparsers_of(totp), "list", "users with a TOTP secret on the server, and their devices"
    )
    q.set_defaults(handler=totp_list)
    q = admin_parser(subparsers_of(totp), "remove", "delete a user's TOTP secret on the server")
    q.add_argument("user")
    q.set_defaults(handler=totp_remove)
