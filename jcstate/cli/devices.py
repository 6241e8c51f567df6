"""``jcstate devices`` (filtered, sorted, paged by the server) and ``jcstate device
show|approve|revoke|label|recovery-key REF``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.cli.commands import COMMAND_COLUMNS, last_line, state_text
from jcstate.cli.remote import admin_parser, cell, client, confirm, pair, show, when
from jcstate.errors import JcstateError

__all__ = ["DEVICE_COLUMNS", "register"]

DEVICE_COLUMNS = [
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("OS", "os"),
    ("AGENT", "agentVersion"),
    ("STATUS", "status"),
    ("LABELS", "labels"),
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
    params: dict[str, Any] = {"sort": args.sort}
    for key in ("os", "status", "search", "limit"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.label:
        params["label"] = args.label
    if args.page != 1:
        if args.limit is None:
            raise JcstateError("--page needs --limit (the page size)")
        params["page"] = args.page
    rows = client(args).call("GET", "/api/v1/devices", **params)
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
        print(f"{key + ':':14}{cell(key, data.get(key)) if key == 'labels' else data.get(key)}")
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
    """The old ``device labels REF K=V…``: kept working, as ``device label REF set``."""
    print(
        "jcstate: `device labels` is deprecated: use `device label REF set K=V…` "
        "(or add/remove to keep the other labels)",
        file=sys.stderr,
    )
    labels = dict(pair(p) for p in args.labels)
    show(
        args,
        client(args).call("PUT", f"/api/v1/devices/{args.ref}/labels", {"labels": labels}),
        DEVICE_COLUMNS,
    )
    return 0


def device_label(args: argparse.Namespace) -> int:
    """``device label REF|--where K=V add K=V…|remove K…|set K=V…``."""
    import urllib.parse

    words = list(args.words)
    if args.where or args.os:
        if words and words[0] not in ("add", "remove", "set"):
            raise JcstateError(f"with --where, give add or remove, not a device ({words[0]})")
        ref = None
    else:
        if not words:
            raise JcstateError("give a device (id or hostname), or --where KEY=VALUE")
        ref = words.pop(0)
    if not words or words[0] not in ("add", "remove", "set"):
        raise JcstateError("give add KEY=VALUE…, remove KEY… or set KEY=VALUE…")
    verb, items = words[0], words[1:]
    if not items and verb != "set":
        raise JcstateError(f"{verb}: give at least one label")
    add = dict(pair(p) for p in items) if verb in ("add", "set") else {}
    remove = items if verb == "remove" else []
    api = client(args)
    if ref is not None:
        path = f"/api/v1/devices/{urllib.parse.quote(ref, safe='')}/labels"
        if verb == "set":
            data = api.call("PUT", path, {"labels": add})
        else:
            data = api.call("PATCH", path, {"add": add, "remove": remove})
        show(args, data, DEVICE_COLUMNS)
        return 0
    if verb == "set":
        raise JcstateError("set replaces every label: one device at a time (use add/remove)")
    where = dict(pair(p) for p in args.where)
    preview = api.call("GET", "/api/v1/devices", label=args.where, **_os(args))
    names = ", ".join(d["hostname"] for d in preview[:5]) + (" …" if len(preview) > 5 else "")
    if not preview:
        raise JcstateError("no device matches: nothing changed")
    change = " ".join(items)
    if not confirm(args, f"{verb} {change} on {len(preview)} devices ({names})?"):
        print("nothing changed", file=sys.stderr)
        return 1
    body = {"where": where, "add": add, "remove": remove, **_os(args)}
    data = api.call("PATCH", "/api/v1/labels", body)
    if args.output == "json":
        show(args, data)
    else:
        print(f"{verb} {change}: {data['matched']} devices")
    return 0


def _os(args: argparse.Namespace) -> dict[str, str]:
    return {"os": args.os} if args.os else {}


def register(sub: Any) -> None:
    p = admin_parser(sub, "devices", "list devices (filtered and sorted by the server)")
    p.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="repeat for AND"
    )
    p.add_argument("--os", help="linux, darwin or windows")
    p.add_argument(
        "--status",
        choices=["online", "offline", "failed", "drift", "pending", "active", "revoked"],
    )
    p.add_argument("--search", metavar="TEXT", help="hostname or id prefix")
    p.add_argument(
        "--sort",
        default="hostname",
        help="hostname, id, os, status, agentVersion, enrolledAt, lastSeen, lastReportAt; "
        "--sort=-FIELD for descending",
    )
    p.add_argument("--limit", type=int, help="page size")
    p.add_argument("--page", type=int, default=1, help="page number (with --limit)")
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
    q = admin_parser(ds, "labels", "deprecated: replace a device's labels (use label REF set)")
    q.add_argument("ref")
    q.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    q.set_defaults(handler=device_labels)
    q = admin_parser(
        ds,
        "label",
        "add, remove or set a device's labels; --where changes many devices at once",
    )
    q.add_argument(
        "words",
        nargs="+",
        metavar="[DEVICE] add|remove|set ITEM",
        help="DEVICE add KEY=VALUE… | DEVICE remove KEY… | DEVICE set KEY=VALUE… (replaces all)",
    )
    q.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="every device with these labels (repeat for AND) instead of one device",
    )
    q.add_argument("--os", help="with --where: only devices of this OS")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(handler=device_label)
