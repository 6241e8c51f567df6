"""``jcstate release keygen|sign|push|list|delete|deploy``: signed agent releases.

``keygen`` and ``sign`` run offline, where the release key lives (never on the server);
``push`` uploads a wheel with the signature ``sign`` wrote beside it (``WHEEL.sig``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client, pair, show
from jcstate.errors import JcstateError

__all__ = ["register"]

RELEASE_COLUMNS = [
    ("VERSION", "version"),
    ("SHA256", "sha256"),
    ("SIZE", "size"),
    ("UPLOADED", "createdAt"),
    ("BY", "createdBy"),
    ("SIGNED", "signed"),
]


def _write_new(path: str, text: str, mode: int) -> None:
    """Create ``path`` with ``mode``; an existing file is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise JcstateError(f"{path} exists: not replaced (move it away first)") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def release_keygen(args: argparse.Namespace) -> int:
    """Make the release key pair: keep the private key offline, give the public one to agents."""
    from jcstate.agent import release_key

    os.makedirs(args.out, mode=0o700, exist_ok=True)
    private, public = release_key.keygen()
    private_path = os.path.join(args.out, "release-key")
    public_path = os.path.join(args.out, "release-key.pub")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise JcstateError(f"{path} exists: not replaced (move it away first)")
    _write_new(private_path, private, 0o600)
    _write_new(public_path, public, 0o644)
    print(f"private key (keep offline, mode 0600): {private_path}")
    print(f"public key (give to agents as --release-key): {public_path}")
    print(public.strip())
    return 0


def _wheel(path: str) -> tuple[bytes, str, str]:
    """A wheel's bytes, version and sha256, checked as the server and the agent check it."""
    from jcstate.agent.wheel import BadWheel, inspect_wheel

    with open(path, "rb") as f:
        data = f.read()
    try:
        wheel = inspect_wheel(data)
    except BadWheel as exc:
        raise JcstateError(f"{path}: not a release: {exc}") from None
    return data, wheel.version, hashlib.sha256(data).hexdigest()


def release_sign(args: argparse.Namespace) -> int:
    """Sign a wheel's version and digest with the release key; write WHEEL.sig."""
    from jcstate.agent import release_key

    with open(args.key, encoding="ascii") as f:
        secret = release_key.load_private(f.read())
    _, version, sha256 = _wheel(args.wheel)
    signature = release_key.sign(secret, version, sha256)
    out = args.out or args.wheel + ".sig"
    _write_new(out, signature + "\n", 0o644)
    print(f"signed jcstate {version} (sha256 {sha256}): {out}")
    return 0


def release_push(args: argparse.Namespace) -> int:
    """Upload a wheel of jcstate, with its signature, as a release devices can update to."""
    data, _, _ = _wheel(args.wheel)
    sig_path = args.signature or args.wheel + ".sig"
    params: dict[str, str] = {}
    if os.path.exists(sig_path):
        with open(sig_path, encoding="ascii") as f:
            params["signature"] = f.read().strip()
    elif args.signature:
        raise JcstateError(f"{sig_path}: no such signature file")
    else:
        print(
            f"warning: no {sig_path}: the release is stored unsigned, and agents with a "
            "pinned release key will refuse it (jcstate release sign)",
            file=sys.stderr,
        )
    answer = client(args).call("POST", "/api/v1/releases", data=data, **params)
    if args.output == "json":
        show(args, answer)
    else:
        signed = "signed" if answer.get("signed") else "UNSIGNED"
        print(f"stored release {answer['version']} ({signed}): {answer['size']} bytes")
        print(f"sha256 {answer['sha256']}")
    return 0


def release_list(args: argparse.Namespace) -> int:
    show(args, client(args).call("GET", "/api/v1/releases"), RELEASE_COLUMNS)
    return 0


def release_delete(args: argparse.Namespace) -> int:
    params = {"force": "true"} if args.force else {}
    client(args).call("DELETE", f"/api/v1/releases/{args.version}", **params)
    print(f"deleted release {args.version}")
    return 0


def release_deploy(args: argparse.Namespace) -> int:
    """Queue one update command per chosen device; print each command's id."""
    import urllib.parse

    if bool(args.all) + bool(args.label) + bool(args.devices) != 1:
        raise JcstateError("choose the devices: --all, --label KEY=VALUE..., or device names")
    api = client(args)
    if args.devices:
        refs = list(args.devices)
    else:
        wanted = dict(pair(text) for text in args.label)
        refs = [
            d["id"]
            for d in api.call("GET", "/api/v1/devices")
            if d["status"] == "active"
            and all((d.get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
    if not refs:
        raise JcstateError("no active device matches")
    body: dict[str, Any] = {"version": args.version}
    if args.retry:
        body["retry"] = True
    queued = []
    for ref in refs:
        path = f"/api/v1/devices/{urllib.parse.quote(ref, safe='')}/commands/update"
        queued.append(api.call("POST", path, body))
    if args.output == "json":
        show(args, queued)
        return 0
    for row in queued:
        print(row["id"])
    print(f"queued update to {args.version} for {len(queued)} device(s)", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("release", help="agent releases: keygen, sign, push, list, delete, deploy")
    rs = p.add_subparsers(dest="release_command", metavar="ACTION")
    rs.required = True
    q = rs.add_parser(
        "keygen",
        help="make the offline release key pair",
        description="Write release-key (private, 0600: keep it offline, never on the server) "
        "and release-key.pub (give it to every agent: jcstate agent --release-key FILE).",
    )
    q.add_argument("--out", required=True, help="directory for release-key and release-key.pub")
    q.set_defaults(handler=release_keygen)
    q = rs.add_parser(
        "sign",
        help="sign a wheel with the release key (writes WHEEL.sig)",
        description="Sign a wheel's version and SHA-256 with the release key, offline.",
    )
    q.add_argument("wheel", help="e.g. dist/jcstate-0.2.0-py3-none-any.whl")
    q.add_argument("--key", required=True, help="the private release key file")
    q.add_argument("--out", help="signature file (default WHEEL.sig)")
    q.set_defaults(handler=release_sign)
    q = admin_parser(rs, "push", "upload a signed wheel of jcstate as a release (administrator)")
    q.add_argument("wheel", help="e.g. dist/jcstate-0.2.0-py3-none-any.whl")
    q.add_argument("--signature", help="signature file (default WHEEL.sig, when it exists)")
    q.set_defaults(handler=release_push)
    admin_parser(rs, "list", "releases on the server").set_defaults(handler=release_list)
    q = admin_parser(rs, "delete", "delete a release (administrator)", listing=False)
    q.add_argument("version")
    q.add_argument("--force", action="store_true", help="even with unfinished updates to it")
    q.set_defaults(handler=release_delete)
    q = admin_parser(rs, "deploy", "queue an update to a release on many devices")
    q.add_argument("version")
    q.add_argument("devices", nargs="*", metavar="DEVICE", help="device ids or hostnames")
    q.add_argument("--all", action="store_true", help="every active device")
    q.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="active devices with it"
    )
    q.add_argument("--retry", action="store_true", help="also where the version is held")
    q.set_defaults(handler=release_deploy)
