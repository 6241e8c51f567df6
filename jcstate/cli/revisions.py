"""``jcstate revisions`` and ``jcstate revision show|diff|rollback``: the history of pushes.

Every push is a revision (who, when, message, the git commit CI gave, the files and how many
devices' documents it changed). A rollback never rewrites history: it pushes an older
revision's files again as a new revision, after showing the blast radius (the same dry run as
``push --dry-run``) and asking for confirmation.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jcstate.cli.policies import blast_code, print_blast_radius
from jcstate.cli.remote import admin_parser, client, confirm, show, when

__all__ = ["register"]

REVISION_COLUMNS = [
    ("ID", "id"),
    ("WHEN", "createdAt"),
    ("WHO", "authorName"),
    ("COMMIT", "commit"),
    ("DEVICES", "devicesAffected"),
    ("FILES", "paths"),
    ("MESSAGE", "message"),
]


def revisions(args: argparse.Namespace) -> int:
    rows = client(args).call("GET", "/api/v1/revisions", limit=args.limit)
    if args.output != "json":
        rows = [{**r, "commit": (r.get("commit") or "")[:12] or None} for r in rows]
    show(args, rows, REVISION_COLUMNS)
    return 0


def revision_show(args: argparse.Namespace) -> int:
    data = client(args).call("GET", f"/api/v1/revisions/{args.id}")
    if args.output == "json":
        show(args, data)
        return 0
    print(f"revision:  {data['id']}")
    print(f"when:      {when(data['createdAt'])}")
    print(f"who:       {data['authorName']} ({data['author']})")
    print(f"message:   {data['message'] or '-'}")
    print(f"commit:    {data.get('commit') or '-'}")
    if data.get("rollbackOf") is not None:
        print(f"rollback:  of revision {data['rollbackOf']}")
    print(f"devices:   {'-' if data.get('devicesAffected') is None else data['devicesAffected']}")
    print("files:")
    for path in data["paths"]:
        print(f"  {path}")
    if args.files:
        for path in data["paths"]:
            print(f"--- {path}")
            sys.stdout.write(data["files"][path])
    return 0


def revision_diff(args: argparse.Namespace) -> int:
    """``revision diff A B``: from A to B; ``revision diff B``: from the revision before B."""
    older, newer = (None, args.a) if args.b is None else (args.a, args.b)
    params = {} if older is None else {"against": older}
    data = client(args).call("GET", f"/api/v1/revisions/{newer}/diff", **params)
    if args.output == "json":
        show(args, data)
    else:
        sys.stdout.write(data["diff"])
    return 1 if data["diff"] else 0


def revision_rollback(args: argparse.Namespace) -> int:
    api = client(args)
    body = {"message": args.message or ""}
    preview = api.call("POST", f"/api/v1/revisions/{args.id}/rollback", {**body, "dryRun": True})
    if args.dry_run:
        if args.output == "json":
            show(args, preview)
        else:
            print_blast_radius(preview)
        return blast_code(preview)
    if args.output != "json":
        print_blast_radius(preview)
    if not confirm(args, f"push the files of revision {args.id} again as a new revision?"):
        print("nothing pushed", file=sys.stderr)
        return 1
    answer = api.call("POST", f"/api/v1/revisions/{args.id}/rollback", body)
    if args.output == "json":
        show(args, answer)
    else:
        print(
            f"stored revision {answer['revision']} (the files of revision {args.id}; "
            f"{answer.get('devicesAffected')} devices)"
        )
    return 0


def register(sub: Any) -> None:
    p = admin_parser(sub, "revisions", "list pushed revisions, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=revisions)

    p = sub.add_parser("revision", help="show, diff or roll back a revision")
    rs = p.add_subparsers(dest="revision_command", metavar="ACTION")
    rs.required = True
    q = admin_parser(rs, "show", "a revision: who, when, message, commit, files")
    q.add_argument("id", type=int)
    q.add_argument("--files", action="store_true", help="also print every file")
    q.set_defaults(handler=revision_show)
    q = admin_parser(rs, "diff", "unified diff of the files from revision A to B")
    q.add_argument("a", type=int, metavar="A", help="the older revision (alone: the newer)")
    q.add_argument("b", type=int, metavar="B", nargs="?", help="the newer revision")
    q.set_defaults(handler=revision_diff)
    q = admin_parser(rs, "rollback", "push an older revision's files again, as a new revision")
    q.add_argument("id", type=int)
    q.add_argument("-m", "--message", help="message (default: rollback to revision ID)")
    q.add_argument("--dry-run", action="store_true", help="only the blast radius (exit 2 if any)")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(handler=revision_rollback)
