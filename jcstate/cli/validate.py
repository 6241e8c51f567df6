"""``jcstate validate PATH...``: check policy files against the schema and the semantic rules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "validate",
        help="check policy documents (schema and semantic rules)",
        description="Check policy files or folders (*.yaml, *.yml, recursive). Prints every "
        "problem as file:line:col: message and exits 1, or a one-line summary and exits 0.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="policy file or folder")
    parser.add_argument("--output", choices=["text", "json"], default="text")
    parser.add_argument(
        "--server",
        nargs="?",
        const="",
        metavar="URL",
        help="then ask the server (default URL: $JCSTATE_SERVER) what devices will certainly "
        "refuse, such as an MFA user with no enrolled TOTP secret (a manager token: "
        "--token or $JCSTATE_TOKEN); nothing is stored",
    )
    parser.add_argument("--token", help="admin token for --server (default: $JCSTATE_TOKEN)")
    parser.add_argument("--ca-file", help="the server's CA for --server")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from jcstate.document import validate_paths  # keeps `jcstate --help` fast

    repo, problems = validate_paths(args.paths)
    if repo is not None and args.server is not None:
        return _ask_server(args, repo)
    if args.output == "json":
        report = {
            "ok": repo is not None,
            "policies": len(repo.policies) if repo else 0,
            "files": len(repo.files) if repo else 0,
            "problems": [
                {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
                for p in problems
            ],
        }
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if repo is not None else 1
    if repo is None:
        for problem in problems:
            print(problem)
        count = len(problems)
        print(f"{count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    count, files = len(repo.policies), len(repo.files)
    print(f"{count} policies in {files} files: ok")  # the exact form scripts rely on
    return 0


def _ask_server(args: argparse.Namespace, repo: Any) -> int:
    """Valid here; now what the server says devices will certainly refuse (a dry-run push).

    Exit 0 when nothing will be refused, 1 otherwise (each refusal printed)."""
    from jcstate.cli.policies import _repo_files, print_refusals
    from jcstate.cli.remote import client

    args.server = args.server or None
    answer = client(args).call(
        "POST", "/api/v1/revisions", {"files": _repo_files(args.paths), "dryRun": True}
    )
    devices = answer.get("devices") or []
    if args.output == "json":
        refusals = [
            {"device": d["id"], "hostname": d["hostname"], **r}
            for d in devices
            for r in d.get("refusals") or []
        ]
        json.dump({"ok": not refusals, "refusals": refusals}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if not refusals else 1
    refused = 0
    for device in devices:
        if device.get("refusals") or device.get("error"):
            print(f"{device['hostname']} ({device['id']})")
        if device.get("error"):
            print(f"  ! {device['error']}")
            refused += 1
        refused += print_refusals(device)
    count, files = len(repo.policies), len(repo.files)
    if refused:
        print(f"{count} policies in {files} files: valid, but {refused} change(s) will be refused")
        return 1
    print(
        f"{count} policies in {files} files: ok; the server expects no refusal on {len(devices)}"
        " device(s)"
    )
    return 0
