"""``jcstate push REPO``: upload a policy repo as a new revision (or show its blast radius)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from jcstate.cli.remote import admin_parser, client, show
from jcstate.errors import JcstateError

__all__ = ["register"]


def _repo_files(paths: list[str]) -> dict[str, str]:
    """The repo's policy files as relative path → text (what the server parses)."""
    files: dict[str, str] = {}
    for path in paths:
        if os.path.isdir(path):
            for dirpath, dirnames, names in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(names):
                    if name.endswith((".yaml", ".yml")):
                        full = os.path.join(dirpath, name)
                        with open(full, encoding="utf-8") as f:
                            files[os.path.relpath(full, path)] = f.read()
        else:
            with open(path, encoding="utf-8") as f:
                files[os.path.basename(path)] = f.read()
    if not files:
        raise JcstateError(f"no .yaml files in {', '.join(paths)}")
    return files


EXIT_WOULD_CHANGE = 2  # push --dry-run, revision rollback --dry-run: like `jcstate plan`


def push(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "files": _repo_files(args.repo),
        "message": args.message or "",
        "dryRun": args.dry_run,
    }
    if args.commit:
        body["commit"] = args.commit
    if args.canary is not None:
        from jcstate.cli.rollout import duration

        wait = duration(args.wait) if args.wait is not None else 300.0
        body.update(canary=args.canary, waitSeconds=wait, haltOn=args.halt_on)
    elif args.wait is not None or args.halt_on != 1:
        raise JcstateError("--wait and --halt-on go with --canary (a staged rollout)")
    answer = client(args).call("POST", "/api/v1/revisions", body)
    if args.output == "json":
        show(args, answer)
        return blast_code(answer) if args.dry_run else 0
    if not args.dry_run:
        print(f"stored revision {answer['revision']} ({answer.get('devicesAffected')} devices)")
        if answer.get("rollout"):
            from jcstate.cli.rollout import rollout_summary

            print(rollout_summary(answer["rollout"]))
        return 0
    print_blast_radius(answer)
    return blast_code(answer)


def blast_code(answer: dict[str, Any]) -> int:
    """2 when some device would change (or could not be rendered), 0 when none would."""
    for dev in answer["devices"]:
        if dev.get("error") or [c for c in dev.get("changes") or [] if c.strip()]:
            return EXIT_WOULD_CHANGE
    return 0


def print_blast_radius(answer: dict[str, Any]) -> None:
    print("dry run: nothing stored. Per device, from its last reported facts:")
    staged = answer.get("rollout")
    wave = None
    for dev in answer["devices"]:
        if staged and dev.get("wave") != wave:
            wave = dev.get("wave")
            count = next(w["devices"] for w in staged["waves"] if w["name"] == wave)
            if wave == "canary":
                print(f"== wave 1, canary ({staged['canary']}): {count} devices, at once")
            else:
                print(
                    f"== wave 2, the rest: {count} devices, once every canary has converged ok "
                    f"for {staged['waitSeconds']:g}s (revision {staged['previous']} until then)"
                )
        print(f"{dev['hostname']} ({dev['id']})")
        if dev.get("error"):
            print(f"  ! {dev['error']}")
        for line in dev.get("changes") or ["  (no change)"]:
            print(f"  {line.strip()}" if line.strip() != "(no change)" else "  (no change)")
        print_refusals(dev)
    if staged and staged.get("refused"):
        print(f"! the push would be refused: {staged['refused']}")


def print_refusals(device: dict[str, Any]) -> int:
    """Warn about what the device will certainly refuse; how many."""
    refusals = device.get("refusals") or []
    for item in refusals:
        print(f"  ! will be refused: {item['change']}: {item['message']}")
    return len(refusals)


def register(sub: Any) -> None:
    p = admin_parser(sub, "push", "upload a policy repo as a new revision")
    p.add_argument("repo", nargs="+", help="repo directory or files")
    p.add_argument("--dry-run", action="store_true", help="show per-device changes, store nothing")
    p.add_argument("-m", "--message", help="revision message")
    p.add_argument("--commit", metavar="SHA", help="the git commit the files come from (CI)")
    p.add_argument(
        "--canary",
        metavar="WAVE",
        help="staged rollout: send it first to N%% of the devices (5%%) or to those with labels "
        "(label:ring=0); the rest follows once every canary converged ok",
    )
    p.add_argument(
        "--wait",
        metavar="DURATION",
        help="with --canary: how long every canary must stay converged ok (default 5m)",
    )
    p.add_argument(
        "--halt-on",
        type=int,
        default=1,
        metavar="N",
        help="with --canary: halt after N failed canaries (default 1)",
    )
    p.set_defaults(handler=push)
