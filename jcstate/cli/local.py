"""``jcstate plan`` and ``jcstate apply``: the engine on one machine, without a server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from jcstate.errors import DocumentError, LedgerError

__all__ = ["register"]


def register(sub: Any) -> None:
    for name, helptext in (
        ("plan", "show what would change on this machine (exit 0: none, 2: changes, 1: errors)"),
        ("apply", "make this machine match the policies and report what changed"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("files", nargs="+", metavar="FILE", help="policy files or folders")
        p.add_argument(
            "--root",
            default="/",
            metavar="DIR",
            help="act on the system image mounted at DIR instead of /",
        )
        p.add_argument("--output", choices=("text", "json"), default="text")
        p.add_argument(
            "--secrets", metavar="FILE", help="secrets file (TOTP secrets, passwords), mode 0600"
        )
        p.add_argument(
            "--label",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a device label for policy selectors (repeatable)",
        )
        p.add_argument("--hostname", help="hostname to match selectors against")
        p.add_argument(
            "--device-id",
            help="device id to match selector.devices against (default: /etc/machine-id)",
        )
        p.add_argument(
            "--show-commands", action="store_true", help="print the exact commands each change runs"
        )
        p.add_argument(
            "--state",
            metavar="FILE",
            help="the ownership ledger: what jcstate created or changed here, so that what "
            "leaves every policy is undone (default: /var/lib/jcstate/ledger.json inside "
            "--root; plan only reads it)",
        )
        if name == "apply":
            p.add_argument(
                "--check",
                action="store_true",
                help="plan only and print the report; change nothing",
            )
        p.set_defaults(handler=_run, apply=(name == "apply"))


def _labels(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"jcstate: --label takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _ledger(args: argparse.Namespace, host: Any) -> Any:
    """The run's ownership ledger: ``--state FILE`` on this machine, else the default path
    inside the managed root (the ledger travels with the system it describes)."""
    from jcstate.host import Host
    from jcstate.ledger import DEFAULT_PATH, Ledger

    if args.state:
        return Ledger.load(Host(), os.path.abspath(args.state))
    return Ledger.load(host, DEFAULT_PATH)


def _run(args: argparse.Namespace) -> int:
    from jcstate import engine
    from jcstate.document import Device, load_repo
    from jcstate.host import Host
    from jcstate.report import render_json, render_text
    from jcstate.secrets import FileSecrets

    host = Host(root=args.root)
    try:
        repo = load_repo(args.files)
    except DocumentError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"jcstate: {len(exc.problems)} problem(s); nothing was changed", file=sys.stderr)
        return 1
    device = Device.local(host)
    if args.hostname:
        device.hostname = args.hostname
    if args.device_id:
        device.id = args.device_id
    device.labels.update(_labels(args.label))
    secrets = FileSecrets(args.secrets) if args.secrets else None
    try:
        document = repo.document_for(device, facts=engine.device_facts(host))
    except DocumentError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        ledger = _ledger(args, host)
    except LedgerError as exc:
        print(f"jcstate: {exc}", file=sys.stderr)
        return 1
    if not document.policies:
        print(
            f"jcstate: no policy matches this device (hostname {device.hostname}, "
            f"os {device.os}); nothing to do",
            file=sys.stderr,
        )
    try:
        if args.apply and not args.check:
            report = engine.apply(document, host, secrets, device=device, ledger=ledger)
        else:
            report = engine.apply(document, host, secrets, check=True, device=device, ledger=ledger)
    except LedgerError as exc:
        print(f"jcstate: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(render_json(report))
    else:
        print(render_text(report, show_steps=args.show_commands, color=sys.stdout.isatty()))
    if not report.ok:
        return 1
    if args.apply and not args.check:
        return 0
    return 2 if report.plan.changes else 0
