"""``jcstate devices`` and ``jcstate device show|approve|revoke|labels|recovery-key REF``."""

from __future__ import annotations

import argparse
from typing import Any

from jcstate.cli.commands import COMMAND_COLUMNS, last_line, state_text
from jcstate.cli.remote import admin_parser, client, pair, show, when

__all__ = ["DEVICE_COLUMNS", "register"]

DEVICE_COLUMNS = [
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("OS", "os"),
    ("AGENT", "agentVersion"),
    ("STATUS", "status"),
    ("ACTIVITY", "activity"),
    ("ONLINE", "online"),
    ("LAST SEEN", "lastSeen"),
    ("LAST REPORT", "lastReportAt"),
    ("OK", "lastReportOk"),
    ("DRIFT", "drift"),
    ("WHY", "why"),
]


def why(device: dict[str, Any]) -> str | None:
    """The first reason the device's last plan did not apply, and how many more."""
    failures = device.get("failures") or []
    if not failures:
        return None
    first = failures[0]
    text = f"{first['change']}: {first['message']}" if first.get("change") else first["message"]
    text = text if len(text) <= 70 else text[:67] + "..."
    return text + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")


def devices(args: argparse.Namespace) -> int:
    rows = client(args).call("GET", "/api/v1/devices")
    if args.output != "json":
        rows = [{**d, "why": why(d)} for d in rows]
    show(args, rows, DEVICE_COLUMNS)
    return 0


def device_show(args: argparse.Namespace) -> int:
    data = client(args).call("GET", f"/api/v1/devices/{args.ref}")
    if args.output == "json":
        show(args, data)
        return 0
    for key in (
        "id",
        "hostname",
        "os",
        "osVersion",
        "arch",
        "agentVersion",
        "status",
        "activity",
        "online",
        "labels",
        "drift",
        "documentCurrent",
    ):
        print(f"{key + ':':14}{data.get(key)}")
    for key in ("enrolledAt", "lastSeen", "lastReportAt", "lastPlanAt"):
        print(f"{key + ':':14}{when(data.get(key))}")
    failures = data.get("failures") or []
    if failures:
        print("failures (why the last plan did not apply):")
        for item in failures:
            change = f"{item['change']}: " if item.get("change") else ""
            print(f"  {item['status']:8} {change}{item['message']}")
    planned = (data.get("lastPlan") or {}).get("changes") or []
    pending = [c for c in planned if c["status"] == "pending"]
    if pending:
        print("drift (found by a plan between converges, not applied yet):")
        for item in pending:
            print(f"  {item['change']}")
    last = data.get("lastReport") or {}
    if last:
        counts = (last.get("report") or {}).get("counts")
        print(
            f"{'last report:':14}ok={last.get('ok')} changed={last.get('changed')} {counts or ''}"
        )
        if last.get("error"):
            print(f"{'':14}error: {last['error']}")
    if data.get("commands"):
        print("commands (newest first):")
        columns = [c for c in COMMAND_COLUMNS if c[1] != "hostname"] + [("OUTPUT", "tail")]
        rows = [{**c, "tail": last_line(c), "state": state_text(c)} for c in data["commands"]]
        show(args, rows, columns, indent="  ")
    return 0


def device_recovery_key(args: argparse.Namespace) -> int:
    """Print a device's escrowed FileVault recovery key (administrators; every read is audited)."""
    query = {k: v for k, v in (("volume", args.volume), ("all", args.all and "true")) if v}
    data = client(args).call("GET", f"/api/v1/devices/{args.ref}/recovery-key", **query)
    columns = [("DEVICE", "device"), ("VOLUME", "volume"), ("ESCROWED", "escrowedAt")]
    show(args, data, [*columns, ("RECOVERY KEY", "key")])
    return 0


def device_action(args: argparse.Namespace) -> int:
    data = client(args).call("POST", f"/api/v1/devices/{args.ref}/{args.action}")
    show(args, data, DEVICE_COLUMNS)
    return 0


def device_converge(args: argparse.Namespace) -> int:
    """Queue a "converge now" for the device; print the command id (``jcstate command show``)."""
    data = client(args).call("POST", f"/api/v1/devices/{args.ref}/commands/converge", {})
    if args.output == "json":
        show(args, data)
    else:
        print(data["id"])
    return 0


def device_labels(args: argparse.Namespace) -> int:
    labels = dict(pair(p) for p in args.labels)
    show(
        args,
        client(args).call("PUT", f"/api/v1/devices/{args.ref}/labels", {"labels": labels}),
        DEVICE_COLUMNS,
    )
    return 0


def register(sub: Any) -> None:
    p = admin_parser(sub, "devices", "list devices")
    p.set_defaults(handler=devices)

    p = sub.add_parser("device", help="show or manage one device")
    ds = p.add_subparsers(dest="device_command", metavar="ACTION")
    ds.required = True
    q = admin_parser(ds, "show", "show a device by id or hostname")
    q.add_argument("ref")
    q.set_defaults(handler=device_show)
    for action, text in (
        ("approve", "let a pending device receive work"),
        ("revoke", "refuse a device's credential from now on"),
    ):
        q = admin_parser(ds, action, text)
        q.add_argument("ref")
        q.set_defaults(handler=device_action, action=action)
    q = admin_parser(ds, "recovery-key", "show a device's escrowed FileVault recovery key")
    q.add_argument("ref")
    q.add_argument("--volume", help="the volume (LVGUUID) whose key to show")
    q.add_argument("--all", action="store_true", help="the key of every volume")
    q.set_defaults(handler=device_recovery_key)
    q = admin_parser(ds, "converge", "have the device plan and apply its policies now (a command)")
    q.add_argument("ref")
    q.set_defaults(handler=device_converge)
    q = admin_parser(ds, "labels", "replace a device's labels")
    q.add_argument("ref")
    q.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    q.set_defaults(handler=device_labels)
