"""``jcstate totp new USER``: make a user's TOTP secret for SSH MFA, standalone (no server).

The secret is 160 random bits from :mod:`secrets`, base32-encoded as authenticator apps expect.
It is stored in the secrets file that ``jcstate apply --secrets FILE`` reads (created mode 0600,
written atomically; an existing file readable by group or others is refused) and shown once as
an ``otpauth://`` URI and a QR code for the user's app (and as a PNG with ``--png``).

The server's ``jcstate totp enroll USER`` (jcstate/cli/enroll.py) adds itself beside ``new``
under the same ``totp`` command, and may reuse :func:`otpauth_uri` and :func:`print_qr`.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import secrets
import sys
import urllib.parse
from typing import Any, TextIO

import yaml

from jcstate.errors import JcstateError, SecretError
from jcstate.host import Host
from jcstate.secret import Secret
from jcstate.secrets import FileSecrets, MappingSecrets

__all__ = ["new_secret", "otpauth_uri", "print_qr", "register"]

DEFAULT_SECRETS = "jcstate-secrets.yaml"


def new_secret() -> Secret:
    """160 random bits in base32 (RFC 4226 recommends 160; 32 characters, no padding)."""
    return Secret(base64.b32encode(secrets.token_bytes(20)).decode("ascii"))


def otpauth_uri(user: str, secret: Secret, issuer: str = "jcstate") -> str:
    """The Key URI authenticator apps import (SHA1, 6 digits, 30 s: what the PAM module uses)."""
    label = urllib.parse.quote(f"{issuer}:{user}")
    query = urllib.parse.urlencode(
        {
            "secret": secret.reveal(),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": 6,
            "period": 30,
        }
    )
    return f"otpauth://totp/{label}?{query}"


def print_qr(uri: str, out: TextIO) -> bool:
    """Draw ``uri`` as a QR code in the terminal; False when the ``qrcode`` package is missing."""
    try:
        import qrcode
    except ImportError:
        return False
    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    qr.print_ascii(out=out, invert=True)
    return True


def png_bytes(uri: str) -> bytes:
    """``uri`` as a PNG image, with qrcode's pure-Python writer (pypng; no Pillow needed)."""
    try:
        import qrcode
        from qrcode.image.pure import PyPNGImage
    except ImportError as exc:
        raise JcstateError("--png needs the totp extra: pip install 'jcstate[totp]'") from exc
    buf = io.BytesIO()
    qrcode.make(uri, image_factory=PyPNGImage).save(buf)
    return buf.getvalue()


def _load(path: str) -> MappingSecrets:
    if os.path.lexists(path):
        return FileSecrets(path)  # refuses a file others can read, or not ours
    return MappingSecrets()


def totp_new(args: argparse.Namespace) -> int:
    from jcstate.modules.ssh_mfa import parse  # the same user-name rule as sshMfa.users

    parse({"enabled": True, "users": [args.user]})
    path = os.path.abspath(args.secrets)
    store = _load(path)
    if store.totp(args.user) is not None and not args.force:
        raise SecretError(
            f"{args.user} already has a TOTP secret in {path}; --force replaces it (the user "
            "must then scan the new code, and the next apply changes it on every device)"
        )
    secret = new_secret()
    store.set_totp(args.user, secret)
    machine = Host("/")  # this machine: atomic 0600 writes that never follow a symlink
    machine.write_file(path, yaml.safe_dump(store.to_plain(), sort_keys=True), mode=0o600)
    uri = otpauth_uri(args.user, secret, args.issuer)
    print(f"TOTP secret for {args.user} stored in {path}")
    print("Scan this with the user's authenticator app, or enter the URI:")
    print(uri)
    if not print_qr(uri, sys.stdout):
        print(
            "(install the totp extra to see a QR code: pip install 'jcstate[totp]')",
            file=sys.stderr,
        )
    if args.png:
        # the image holds the secret: same mode as the secrets file
        machine.write_file(os.path.abspath(args.png), png_bytes(uri), mode=0o600)
        print(f"QR code written to {args.png}")
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "totp", help="TOTP secrets for SSH MFA", description="TOTP secrets for SSH MFA."
    )
    actions = parser.add_subparsers(dest="totp_command", metavar="ACTION")
    actions.required = True
    p = actions.add_parser(
        "new",
        help="make a TOTP secret for USER in a local secrets file",
        description="Generate a TOTP secret for USER, store it in the secrets file that "
        "`jcstate apply --secrets FILE` reads, and print its otpauth:// URI and QR "
        "code.",
    )
    p.add_argument("user", metavar="USER")
    p.add_argument(
        "--secrets",
        metavar="FILE",
        default=os.environ.get("JCSTATE_SECRETS", DEFAULT_SECRETS),
        help=f"secrets file, created mode 0600 (default: $JCSTATE_SECRETS or ./{DEFAULT_SECRETS})",
    )
    p.add_argument("--png", metavar="PATH", help="also write the QR code as a PNG (mode 0600)")
    p.add_argument("--issuer", default="jcstate", help="name shown in the app (default jcstate)")
    p.add_argument("--force", action="store_true", help="replace the user's existing secret")
    p.set_defaults(handler=totp_new)
