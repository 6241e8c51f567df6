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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from jcstate.document import validate_paths  # keeps `jcstate --help` fast

    repo, problems = validate_paths(args.paths)
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
