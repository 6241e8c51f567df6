"""``jcstate command ACTION DEVICE`` (lock, restart, shutdown, erase, run, update) and more."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.cli.remote import admin_parser, client, confirm, pair, show, when
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


# exit codes of --wait and `command show` (docs/cli.md)
EXIT_FAILED = 1  # failed, interrupted, cancelled, rejected or lapsed
EXIT_WAIT_TIMEOUT = 124  # still not final when --timeout ran out (as timeout(1))
FINAL = ("succeeded", "failed", "interrupted", "cancelled", "rejected", "lapsed")
AWAITING = "awaiting approval"  # a two-person erase (jcstate.server.commands.AWAITING)


def outcome_code(state: str) -> int:
    """0 for a command that succeeded, 1 for one that failed, was interrupted, cancelled,
    rejected or lapsed."""
    return 0 if state == "succeeded" else EXIT_FAILED


def command_issue(args: argparse.Namespace) -> int:
    """Queue lock/restart/shutdown/erase/run for one device; print the new command's id."""
    import urllib.parse

    api = client(args)
    if getattr(args, "saved", None) is not None:
        return _run_saved(api, args)
    if getattr(args, "where", None) or getattr(args, "os", None):
        if args.action in ("erase", "update"):
            raise JcstateError(f"{args.action} is one device at a time: --where is refused")
        typed = getattr(args, "device_typed", True)  # False: it is the program's first word
        if args.device is not None and (args.action != "run" or typed):
            raise JcstateError("give a device or --where, not both")
        return _command_batch(api, args)
    if args.device is None:
        raise JcstateError("give a device (id or hostname), or --where KEY=VALUE")
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
    if data["state"] == AWAITING:
        print(
            f"{data['action']} {data['id']} for {data['hostname']} awaits approval: another "
            f"administrator runs `jcstate command approve {data['id']}` (within 24 h); "
            "nothing is sent to the device before",
            file=sys.stderr,
        )
    if args.wait:
        print(f"queued {data['action']} {data['id']} for {data['hostname']}", file=sys.stderr)
        return _wait(api, args, data)
    if args.output == "json":
        show(args, data)
    else:
        print(data["id"])
        if data["state"] != AWAITING:
            print(
                f"queued {data['action']} for {data['hostname']} ({data['device']})",
                file=sys.stderr,
            )
    return 0


def _run_saved(api: Any, args: argparse.Namespace) -> int:
    """``run DEVICE --saved NAME``: the saved command's argv and timeout, nothing added."""
    import urllib.parse

    given = [
        flag
        for flag, value in (
            ("-- ARGV", args.argv),
            ("--command-line", args.command_line),
            ("--shell", args.shell),
            ("--user", args.user),
            ("--timeout", args.timeout),
            ("--where", args.where),
            ("--os", args.os),
        )
        if value
    ]
    if given:
        raise JcstateError(
            f"--saved runs the saved command as it is: {', '.join(given)} cannot go with it "
            "(one device at a time)"
        )
    if args.device is None:
        raise JcstateError("give a device: jcstate command run DEVICE --saved NAME")
    ref = urllib.parse.quote(args.device, safe="")
    body = {} if args.not_after is None else {"notAfter": args.not_after}
    name = urllib.parse.quote(args.saved, safe="")
    data = api.call("POST", f"/api/v1/devices/{ref}/commands/saved/{name}", body)
    if args.wait:
        print(f"queued {args.saved} {data['id']} for {data['hostname']}", file=sys.stderr)
        return _wait(api, args, data)
    if args.output == "json":
        show(args, data)
    else:
        print(data["id"])
        print(f"queued {args.saved} for {data['hostname']} ({data['device']})", file=sys.stderr)
    return 0


def _body(args: argparse.Namespace) -> dict[str, Any]:
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
    return body


def _command_batch(api: Any, args: argparse.Namespace) -> int:
    """One command per device matching --where/--os, as one batch, after a confirmation."""
    if args.action == "run" and args.device is not None:  # typed after --: the program's
        args.argv = [args.device, *(args.argv or [])]
        args.device = None
    where = dict(pair(p) for p in args.where)
    target = {"where": where, **({"os": args.os} if args.os else {})}
    body = {**target, **_body(args)}
    preview = api.call("POST", f"/api/v1/commands/batch/{args.action}", {**body, "dryRun": True})
    if not preview["count"]:
        raise JcstateError("no active device matches: nothing queued")
    names = [d["hostname"] for d in preview["devices"]]
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    print(f"{args.action} on {preview['count']} devices: {shown}", file=sys.stderr)
    if not confirm(args, f"queue {args.action} on {preview['count']} devices?"):
        print("nothing queued", file=sys.stderr)
        return 1
    data = api.call("POST", f"/api/v1/commands/batch/{args.action}", body)
    if args.wait:
        print(f"queued batch {data['batch']} ({data['count']} commands)", file=sys.stderr)
        return _wait_batch(api, args, data["batch"])
    if args.output == "json":
        show(args, data)
    else:
        print(data["batch"])
        follow = f"jcstate command show {data['batch']}"
        print(f"queued {args.action} on {data['count']} devices: {follow}", file=sys.stderr)
    return 0


def _deadline(args: argparse.Namespace) -> float | None:
    import time

    limit = getattr(args, "wait_timeout", None)
    return None if limit is None else time.monotonic() + limit


def _wait(api: Any, args: argparse.Namespace, data: dict[str, Any]) -> int:
    """Poll the command until it is final: exit 0 succeeded, 1 otherwise, 124 out of time."""
    import time

    deadline = _deadline(args)
    params = {"device": data["device"]}
    pause = 0.2
    while data["state"] not in FINAL:
        if deadline is not None and time.monotonic() >= deadline:
            print(
                f"jcstate: {data['id']} is still {data['state']} after {args.wait_timeout} s "
                f"(jcstate command show {data['id']})",
                file=sys.stderr,
            )
            return EXIT_WAIT_TIMEOUT
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)
        data = api.call("GET", f"/api/v1/commands/{data['id']}", **params)
    if args.output == "json":
        show(args, data)
    else:
        for stream, out in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            text = data.get(stream) or ""
            if text:
                out.write(text if text.endswith("\n") else text + "\n")
        code = "" if data.get("exitCode") is None else f" (exit {data['exitCode']})"
        message = f": {data['message']}" if data.get("message") else ""
        print(f"{data['id']} {data['state']}{code}{message}", file=sys.stderr)
    return outcome_code(data["state"])


def _wait_batch(api: Any, args: argparse.Namespace, batch: str) -> int:
    """Wait for every command of a batch: 0 when all succeeded, 1 otherwise, 124 out of time."""
    import time

    deadline = _deadline(args)
    pause = 0.2
    while True:
        data = api.call("GET", f"/api/v1/batches/{batch}")
        if data["done"]:
            break
        if deadline is not None and time.monotonic() >= deadline:
            print(f"jcstate: batch {batch} not done after {args.wait_timeout} s", file=sys.stderr)
            _print_batch(args, data)
            return EXIT_WAIT_TIMEOUT
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)
    _print_batch(args, data)
    return 0 if set(data["states"]) == {"succeeded"} else EXIT_FAILED


def _print_batch(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.output == "json":
        show(args, data)
        return
    states = ", ".join(f"{n} {s}" for s, n in sorted(data["states"].items()))
    print(f"batch:     {data['batch']}")
    print(f"action:    {data['action']}")
    print(f"created:   {when(data['createdAt'])} by {data['createdBy']}")
    print(f"commands:  {data['count']} ({states})")
    rows = [{**c, "tail": last_line(c)} for c in data["commands"]]
    show(args, rows, [*COMMAND_COLUMNS, ("OUTPUT", "tail")], indent="  ")


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
    """One command, or a batch (``b-…``); exits 1 when it failed, was interrupted or
    cancelled (a batch: when any of its commands did), 0 otherwise."""
    if args.id.startswith("b-") and not args.device:
        data = client(args).call("GET", f"/api/v1/batches/{args.id}")
        _print_batch(args, data)
        return EXIT_FAILED if set(data["states"]) & {"failed", "interrupted", "cancelled"} else 0
    params = {"device": args.device} if args.device else {}
    data = client(args).call("GET", f"/api/v1/commands/{args.id}", **params)
    if args.output == "json":
        show(args, data)
        return outcome_code(data["state"]) if data["state"] in FINAL else 0
    what = data["action"]
    run = data.get("run") or {}
    if run:
        what += ": " + (" ".join(run["argv"]) if run.get("argv") else run.get("command", ""))
    if data.get("saved"):
        what += f" (saved command {data['saved']['name']}, version {data['saved']['version']})"
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
    approval = data.get("approval")
    if approval:
        lines.insert(5, ("asked by", approval.get("requestedBy")))
        if approval.get("decision") in ("approved", "rejected"):
            who = approval.get("decidedBy") or approval.get("decidedByActor")
            decided = f"{approval['decision']} by {who} at {when(approval.get('decidedAt'))}"
            if approval.get("reason"):
                decided += f": {approval['reason']}"
            lines.insert(6, ("decision", decided))
        elif approval.get("decision") == "lapsed":
            lines.insert(6, ("decision", f"lapsed at {when(approval.get('decidedAt'))}"))
        else:
            lines.insert(6, ("deadline", when(approval.get("deadline"))))
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
    return outcome_code(data["state"]) if data["state"] in FINAL else 0


def command_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.device:
        params["device"] = args.device
    for key in ("state", "action", "batch", "since"):
        if getattr(args, key):
            params[key] = getattr(args, key)
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


def command_approve(args: argparse.Namespace) -> int:
    """Approve an erase awaiting approval (another person than the one who asked)."""
    params = {"device": args.device} if args.device else {}
    data = client(args).call("POST", f"/api/v1/commands/{args.id}/approve", **params)
    if args.output == "json":
        show(args, data)
    else:
        print(f"{data['id']}: approved; {data['action']} queued for {data.get('hostname')}")
    return 0


def command_reject(args: argparse.Namespace) -> int:
    """Reject an erase awaiting approval: it is never sent."""
    params = {"device": args.device} if args.device else {}
    body = {"reason": args.reason} if args.reason else {}
    data = client(args).call("POST", f"/api/v1/commands/{args.id}/reject", body, **params)
    if args.output == "json":
        show(args, data)
    else:
        print(f"{data['id']}: rejected; nothing was sent to {data.get('hostname')}")
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
        "run": "run a program: jcstate command run [OPTIONS] DEVICE -- ARGV... "
        "(or DEVICE --saved NAME)",
        "update": "install a release of the agent (administrator; docs/updates.md)",
    }
    for action, text in texts.items():
        q = admin_parser(cs, action, text)
        q.add_argument("device", nargs="?", help="device id or hostname (or --where)")
        q.add_argument("--not-after", help="RFC 3339 time after which it is not delivered")
        q.add_argument(
            "--where",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="every active device with these labels (repeat for AND), as one batch"
            + ("; refused: erase is one device at a time" if action == "erase" else ""),
        )
        q.add_argument("--os", help="with --where, or alone: only devices of this OS")
        q.add_argument("--yes", action="store_true", help="bulk: do not ask for confirmation")
        q.add_argument(
            "--wait", action="store_true", help="wait for the final state; exit with its outcome"
        )
        q.add_argument(
            "--wait-timeout",
            type=float,
            metavar="S",
            help="with --wait: give up after S seconds (exit 124)"
            + ("" if action == "run" else "; also --timeout"),
        )
        if action != "run":
            q.add_argument("--timeout", dest="wait_timeout", type=float, help=argparse.SUPPRESS)
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
            q.add_argument(
                "--saved",
                metavar="NAME",
                help="run a saved command (jcstate command saved list) instead of ARGV",
            )
        q.set_defaults(handler=command_issue, action=action)
    from jcstate.cli import saved

    saved.register(cs)
    q = admin_parser(cs, "show", "a command's state, exit code, output and times")
    q.add_argument("id")
    q.add_argument("--device", help="for a policy's command id, which device")
    q.set_defaults(handler=command_show)
    q = admin_parser(cs, "list", "commands, newest first")
    q.add_argument("--device", help="only this device (id or hostname)")
    q.add_argument(
        "--state", help="only this state (queued, delivered, running, 'awaiting approval', …)"
    )
    q.add_argument("--action", help="only this action (lock, restart, run, …)")
    q.add_argument("--batch", help="only the commands of this batch (b-…)")
    q.add_argument("--since", metavar="TIME", help="created at or after (RFC 3339 or a date)")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=command_list)
    q = admin_parser(cs, "cancel", "cancel a command (queued: never delivered)")
    q.add_argument("id")
    q.add_argument("--device", help="for a policy's command id, which device")
    q.set_defaults(handler=command_cancel)
    q = admin_parser(
        cs, "approve", "approve an erase awaiting approval (another administrator than its asker)"
    )
    q.add_argument("id")
    q.add_argument("--device", help="for a command id used on several devices, which device")
    q.set_defaults(handler=command_approve)
    q = admin_parser(cs, "reject", "reject an erase awaiting approval (it is never sent)")
    q.add_argument("id")
    q.add_argument("--reason", help="why (kept in the command and the audit log)")
    q.add_argument("--device", help="for a command id used on several devices, which device")
    q.set_defaults(handler=command_reject)
