"""``jcstate release push|list|delete|deploy``: agent releases kept by the server."""

from __future__ import annotations

import argparse
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
]


def release_push(args: argparse.Namespace) -> int:
    """Upload a wheel of jcstate as a release devices can be updated to."""
    with open(args.wheel, "rb") as f:
        data = f.read()
    answer = client(args).call("POST", "/api/v1/releases", data=data)
    if args.output == "json":
        show(args, answer)
    else:
        print(f"stored release {answer['version']}: {answer['size']} bytes")
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
    p = sub.add_parser("release", help="agent releases: push, list, delete, deploy")
    rs = p.add_subparsers(dest="release_command", metavar="ACTION")
    rs.required = True
    q = admin_parser(rs, "push", "upload a wheel of jcstate as a release (administrator)")
    q.add_argument("wheel", help="e.g. dist/jcstate-0.2.0-py3-none-any.whl")
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
