"""``jcstate verify FILE... --hosts URL``: check a host against the policies with testinfra."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.errors import DocumentError

__all__ = ["register"]

_HELP = "check that a host matches the policies (testinfra checks; exit 0: all pass, 1: not)"


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help=_HELP, description=_HELP)
    p.add_argument("files", nargs="+", metavar="FILE", help="policy files or folders")
    p.add_argument(
        "--hosts",
        default="local://",
        metavar="URL",
        help="target: local://, ssh://user@host[:port], paramiko://…, "
        "chroot:///path (default: local://)",
    )
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--hostname", help="hostname to match selectors against (default: the target's own)"
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a device label for policy selectors (repeatable)",
    )
    p.set_defaults(handler=_run)


def _labels(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"jcstate: --label takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _run(args: argparse.Namespace) -> int:
    from jcstate.verify import render_json, render_text, verify

    try:
        report = verify(args.files, args.hosts, hostname=args.hostname, labels=_labels(args.label))
    except DocumentError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"jcstate: {len(exc.problems)} problem(s); nothing was checked", file=sys.stderr)
        return 1
    if not report.policies:
        print(
            f"jcstate: no policy matches {report.target} (hostname "
            f"{report.device.get('hostname')}, os {report.device.get('os')}); nothing to check",
            file=sys.stderr,
        )
    print(render_json(report) if args.output == "json" else render_text(report))
    return 0 if report.ok else 1
