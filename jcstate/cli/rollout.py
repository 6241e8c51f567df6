"""``jcstate rollout status|promote|abort``: a staged rollout, started by ``push --canary``.

The server moves a rollout on by itself (halts it when canaries fail, sends the revision to the
rest once every canary converged ok and the wait passed); these commands show where it stands
and end it by hand. See docs/server.md, "Staged rollout".
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client, confirm, show, when
from jcstate.errors import JcstateError

__all__ = ["duration", "register", "rollout_summary"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
WAVE_COLUMNS = [
    ("WAVE", "name"),
    ("REVISION", "revision"),
    ("DEVICES", "devices"),
    ("PENDING", "pending"),
    ("CONVERGED", "converged"),
    ("FAILED", "failed"),
    ("OFFLINE", "offline"),
]


def duration(text: str) -> float:
    """``10m`` → 600.0; ``90`` or ``90s`` → 90.0; also ``h`` and ``d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise JcstateError(f"--wait {text!r}: expected a duration such as 30s, 10m, 2h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _span(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def rollout_summary(rollout: dict[str, Any]) -> str:
    """One line for ``push --canary``: which wave got what, and what happens next."""
    return (
        f"staged rollout {rollout['id']}: the canary wave ({rollout['canary']}, "
        f"{rollout['canaryDevices']} devices) gets it now; the rest stays on revision "
        f"{rollout['previous']} until every canary has converged ok for "
        f"{_span(rollout['waitSeconds'])} (halts after {rollout['haltOn']} failed). "
        "`jcstate rollout status` shows where it stands"
    )


def _print_status(data: dict[str, Any]) -> None:
    print(f"rollout:   {data['id']} ({data['state']})")
    print(f"revision:  {data['revision']} (the rest stays on {data['previous']} meanwhile)")
    print(
        f"canary:    {data['canary']}, wait {_span(data['waitSeconds'])}, "
        f"halt after {data['haltOn']} failed"
    )
    print(f"started:   {when(data['createdAt'])} by {data['createdBy']}")
    if data.get("promotesAt"):
        print(f"promotes:  {when(data['promotesAt'])}")
    if data.get("endedAt"):
        print(f"ended:     {when(data['endedAt'])} by {data['endedBy']}")
    if data.get("reason"):
        print(f"reason:    {data['reason']}")
    print(f"waiting:   {data.get('waitingFor') or 'nothing (finished)'}")
    print()
    show(argparse.Namespace(output="text"), data["waves"], WAVE_COLUMNS)
    if data.get("canaries"):
        print("\ncanaries:")
        for c in data["canaries"]:
            print(f"  {c['hostname']} ({c['id']})  {c['state']}")


def status(args: argparse.Namespace) -> int:
    data = client(args).call("GET", "/api/v1/rollout")
    if args.output == "json":
        show(args, data)
    else:
        _print_status(data)
    return 1 if data["state"] == "halted" else 0


def promote(args: argparse.Namespace) -> int:
    api = client(args)
    data = api.call("GET", "/api/v1/rollout")
    if args.output != "json":
        _print_status(data)
    question = f"send revision {data['revision']} to every device now?"
    if not confirm(args, question):
        print("nothing changed", file=sys.stderr)
        return 1
    body = {"message": args.message or "", "force": args.force}
    answer = api.call("POST", "/api/v1/rollout/promote", body)
    if args.output == "json":
        show(args, answer)
    else:
        print(f"promoted: every device gets revision {answer['revision']}")
    return 0


def abort(args: argparse.Namespace) -> int:
    answer = client(args).call("POST", "/api/v1/rollout/abort", {"message": args.message or ""})
    if args.output == "json":
        show(args, answer)
    else:
        print(
            f"aborted: every device, canaries included, goes back to revision "
            f"{answer['previous']}; revision {answer['revision']} is not sent again"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("rollout", help="a staged rollout (push --canary): status, promote, abort")
    rs = p.add_subparsers(dest="rollout_command", metavar="ACTION")
    rs.required = True
    q = admin_parser(rs, "status", "the newest rollout: waves, counts, what it waits for")
    q.set_defaults(handler=status)
    q = admin_parser(rs, "promote", "send the rollout's revision to every device now")
    q.add_argument("--force", action="store_true", help="also when the rollout halted")
    q.add_argument("-m", "--message", help="why (kept in the rollout and the audit log)")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(handler=promote)
    q = admin_parser(rs, "abort", "send every device, canaries included, back to the old revision")
    q.add_argument("-m", "--message", help="why (kept in the rollout and the audit log)")
    q.set_defaults(handler=abort)
