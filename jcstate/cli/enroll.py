"""``jcstate totp enroll USER``: a user's TOTP secret created and kept by the server.

It adds itself beside the standalone ``totp new`` (``jcstate/cli/totp.py``) under one ``totp``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client, subparsers_of

__all__ = ["register"]


def totp_enroll(args: argparse.Namespace) -> int:
    import urllib.parse

    data = client(args).call("POST", f"/api/v1/totp/{urllib.parse.quote(args.user, safe='')}")
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


def register(sub: Any) -> None:
    # `totp` may already exist (local `totp new`); add `enroll` beside it
    totp = sub.choices.get("totp") or sub.add_parser("totp", help="TOTP secrets for SSH MFA")
    q = admin_parser(
        subparsers_of(totp), "enroll", "create a user's TOTP secret on the server", listing=False
    )
    q.add_argument("user")
    q.add_argument("--issuer", default="jcstate")
    q.set_defaults(handler=totp_enroll)
