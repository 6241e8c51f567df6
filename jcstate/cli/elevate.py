"""``jcstate elevate DEVICE USER --for 2h --reason TEXT``: just-in-time admin, through the queue.

The server queues an ``elevate`` command (manager or above; the reason is audited); the agent
keeps the elevation in its state directory and takes the right away itself at the end, offline
too (docs/security.md#time-bound-admin). ``--revoke`` ends it now.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from typing import Any

from jcstate.cli.remote import admin_parser, client, show
from jcstate.errors import JcstateError

__all__ = ["duration", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


def duration(text: str) -> int:
    """``90s``, ``45m``, ``2h``, ``1d``, or combined (``1h30m``) → whole seconds."""
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not parts or "".join(n + u for n, u in parts) != spec:
        raise JcstateError(f"--for {text}: give a duration such as 30m, 2h, 1h30m or 1d")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise JcstateError(f"--for {text}: the duration must be at least one second")
    return seconds


def elevate(args: argparse.Namespace) -> int:
    from jcstate.cli.commands import _wait

    body: dict[str, Any] = {"user": args.user}
    if args.revoke:
        if args.duration is not None:
            raise JcstateError("--revoke ends an elevation now: it takes no --for")
        body["revoke"] = True
        if args.reason:
            body["reason"] = args.reason
    else:
        if args.duration is None or not (args.reason or "").strip():
            raise JcstateError("give --for DURATION and --reason TEXT (or --revoke)")
        body["seconds"] = duration(args.duration)
        body["reason"] = args.reason
    api = client(args)
    ref = urllib.parse.quote(args.device, safe="")
    data = api.call("POST", f"/api/v1/devices/{ref}/commands/elevate", body)
    if args.wait:
        print(f"queued elevate {data['id']} for {data['hostname']}", file=sys.stderr)
        return _wait(api, args, data)
    if args.output == "json":
        show(args, data)
        return 0
    print(data["id"])
    grant = data.get("elevate") or {}
    what = (
        f"revoke {args.user}'s elevation"
        if args.revoke
        else f"{args.user} admin until {grant.get('until', '?')}"
    )
    print(f"queued: {what} on {data['hostname']} ({data['device']})", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    q = admin_parser(sub, "elevate", "admin for a user on one device, for a while (or --revoke)")
    q.add_argument("device", help="device id or hostname")
    q.add_argument("user", help="a user a policy lists present on that device")
    q.add_argument("--for", dest="duration", metavar="DURATION", help="30m, 2h, 1h30m, 1d")
    q.add_argument("--reason", help="why (required to grant; kept in the audit log)")
    q.add_argument("--revoke", action="store_true", help="end the user's elevation now")
    q.add_argument("--wait", action="store_true", help="wait for the device's answer; exit with it")
    q.add_argument(
        "--wait-timeout",
        "--timeout",
        dest="wait_timeout",
        type=float,
        metavar="S",
        help="with --wait: give up after S seconds (exit 124)",
    )
    q.set_defaults(handler=elevate)
