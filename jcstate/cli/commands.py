"""``jcstate command ACTION DEVICE`` (lock, restart, shutdown, erase, run, update) and more."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client, show, when
from jcstate.errors import JcstateError

__all__ = ["COMMAND_COLUMNS", "last_line", "register"]

COMMAND_COLUMNS = [
    ("ID", "id"),
    ("DEVICE", "hostname"),
    ("ACTION", "action"),
    ("STATE", "state"),
    ("EXIT", "exitCode"),
    ("CREATED", "createdAt"),
    ("FINISHED", "finishedAt"),
]


def state_text(command: dict[str, Any]) -> str:
    """A command's state in words (docs/state-model.md): "queued" with "sent, awaiting device"
    once a work answer carried it, and "(cancel requested)" after a cancel the device had."""
    text = str(command.get("state"))
    if text == "queued" and command.get("sentAt"):
        text += " (sent, awaiting device)"
    if command.get("cancelRequested"):
        text += " (cancel requested)"
    return text


def last_line(command: dict[str, Any]) -> str | None:
    """The tail of a command's output in one short line (stdout, else stderr, else message)."""
    for key in ("stdout", "stderr", "message"):
        lines = [line for line in (command.get(key) or "").splitlines() if line.strip()]
        if lines:
            last = lines[-1].strip()
            return last if len(last) <= 60 else last[:57] + "..."
    return None


def command_issue(args: argparse.Namespace) -> int:
    """Queue lock/restart/shutdown/erase/run for one device; print the new command's id."""
    import urllib.parse

    api = client(args)
    ref = urllib.parse.quote(args.device, safe="")
    body: dict[str, Any] = {}
    for key, value in (
        ("delay", getattr(args, "delay", None)),
        ("message", getattr(args, "message", None)),
        ("notAfter", args.not_after),
    ):
        if value is not None:
            body[key] = value
    if args.action == "run":
        body["run"] = _run_spec(args)
    if args.action == "erase":
        body["confirm"] = args.confirm if args.confirm is not None else _typed_back(api, ref)
    if args.action == "update":
        body["version"] = args.version
        if args.retry:
            body["retry"] = True
    data = api.call("POST", f"/api/v1/devices/{ref}/commands/{args.action}", body)
    if args.output == "json":
        show(args, data)
    else:
        print(data["id"])
        print(f"queued {data['action']} for {data['hostname']} ({data['device']})", file=sys.stderr)
    return 0


def _program_argv(parsed: list[str]) -> list[str]:
    """The program's argv as typed after the first ``--``.

    Python 3.11's argparse drops *every* ``--`` from a ``nargs="*"`` positional, so
    ``-- grep -- -x f`` would lose one; the process's own argv still has it. It is used only
    when it agrees with what argparse parsed (``main([...])`` called from Python has another).
    """
    raw = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    return raw if raw and [a for a in raw if a != "--"] == parsed else parsed


def _run_spec(args: argparse.Namespace) -> dict[str, Any]:
    argv = _program_argv(list(args.argv or []))
    if bool(argv) == bool(args.command_line):
        raise JcstateError("give the program after --, or --command-line LINE (not both)")
    spec: dict[str, Any] = {"argv": argv} if argv else {"command": args.command_line}
    if args.shell:
        if argv:
            raise JcstateError("--shell goes with --command-line")
        spec["shell"] = args.shell
    if args.user:
        spec["user"] = args.user
    if args.timeout is not None:
        spec["timeout"] = args.timeout
    return spec


def _typed_back(api: Any, ref: str) -> str:
    """The portal's "yes, erase": the admin types the device's id back."""
    device = api.call("GET", f"/api/v1/devices/{ref}")
    print(
        f"This erases {device['hostname']} ({device['id']}): every disk, every account. "
        "It cannot be undone.",
        file=sys.stderr,
    )
    print(f"Type the device id ({device['id']}) to confirm: ", end="", file=sys.stderr, flush=True)
    typed = sys.stdin.readline().strip()
    if not typed:
        raise JcstateError("nothing typed: erase not sent")
    return typed  # the server compares it with the id, and audits a mismatch


def command_show(args: argparse.Namespace) -> int:
    params = {"device": args.device} if args.device else {}
    data = client(args).call("GET", f"/api/v1/commands/{args.id}", **params)
    if args.output == "json":
        show(args, data)
        return 0
    what = data["action"]
    run = data.get("run") or {}
    if run:
        what += ": " + (" ".join(run["argv"]) if run.get("argv") else run.get("command", ""))
    lines = [
        ("id", data["id"]),
        ("device", f"{data['device']} ({data.get('hostname') or '?'})"),
        ("source", data["source"]),
        ("action", what),
        ("state", state_text(data)),
        ("exit code", data["exitCode"]),
        ("created", f"{when(data['createdAt'])} by {data['createdBy']}"),
        ("sent", when(data.get("sentAt"))),
        ("delivered", when(data["deliveredAt"])),
        ("running", when(data["runningAt"])),
        ("finished", when(data["finishedAt"])),
        ("duration", None if data["duration"] is None else f"{data['duration']} s"),
        ("message", data["message"] or None),
    ]
    for key, value in lines:
        print(f"{key + ':':11}{'-' if value is None else value}")
    for stream in ("stdout", "stderr"):
        text = data.get(stream) or ""
        if text:
            tail = text.splitlines()[-20:]
            cut = " (truncated on the device)" if data.get("truncated") else ""
            print(f"{stream} (last {len(tail)} lines){cut}:")
            for line in tail:
                print(f"  {line}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.device:
        params["device"] = args.device
    if args.state:
        params["state"] = args.state
    rows = client(args).call("GET", "/api/v1/commands", **params)
    if args.output != "json":
        rows = [{**r, "state": state_text(r)} for r in rows]
    show(args, rows, COMMAND_COLUMNS)
    return 0


def command_cancel(args: argparse.Namespace) -> int:
    params = {"device": args.device} if args.device else {}
    data = client(args).call("POST", f"/api/v1/commands/{args.id}/cancel", **params)
    if args.output == "json":
        show(args, data)
    else:
        print(f"{data['id']}: {data['cancel']}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("command", help="security commands: lock, restart, shutdown, erase, run")
    cs = p.add_subparsers(dest="command_action", metavar="ACTION")
    cs.required = True
    texts = {
        "lock": "lock the device's graphical sessions",
        "restart": "warn users, wait, restart (done when the device is back)",
        "shutdown": "warn users, wait, power off",
        "erase": "erase the device (administrator; the device id typed back)",
        "run": "run a program: jcstate command run [OPTIONS] DEVICE -- ARGV...",
        "update": "install a release of the agent (administrator; docs/updates.md)",
    }
    for action, text in texts.items():
        q = admin_parser(cs, action, text)
        q.add_argument("device", help="device id or hostname")
        q.add_argument("--not-after", help="RFC 3339 time after which it is not delivered")
        if action in ("restart", "shutdown"):
            q.add_argument("--delay", type=int, help="seconds between warning and action (60)")
            q.add_argument("--message", help="added to the warning users see")
        if action == "erase":
            q.add_argument("--confirm", metavar="ID", help="the device id, instead of typing it")
        if action == "update":
            q.add_argument("--version", required=True, help="a release on the server")
            q.add_argument(
                "--retry", action="store_true", help="try a version the device holds again"
            )
        if action == "run":
            q.add_argument("argv", nargs="*", help="the program and its arguments, after --")
            q.add_argument("--command-line", help="a command line for --shell instead of argv")
            q.add_argument("--shell", help="shell for --command-line (default /bin/sh)")
            q.add_argument("--user", help="run as this user (default root)")
            q.add_argument("--timeout", type=int, help="seconds before it is killed (300)")
        q.set_defaults(handler=command_issue, action=action)
    q = admin_parser(cs, "show", "a command's state, exit code, output and times")
    q.add_argument("id")
    q.add_argument("--device", help="for a policy's command id, which device")
    q.set_defaults(handler=command_show)
    q = admin_parser(cs, "list", "commands, newest first")
    q.add_argument("--device", help="only this device (id or hostname)")
    q.add_argument("--state", help="only this state (queued, delivered, running, …)")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=command_list)
    q = admin_parser(cs, "cancel", "cancel a command (queued: never delivered)")
    q.add_argument("id")
    q.add_argument("--device", help="for a policy's command id, which device")
    q.set_defaults(handler=command_cancel)
