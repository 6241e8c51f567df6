"""``jcstate schema --output DIR``: write the JSON Schemas shipped in the package to a folder.

Editors that validate YAML against a JSON Schema (VS Code's YAML extension, JetBrains IDEs)
need the schema as a file or a URL. The files written are the ones ``jcstate validate`` checks
against, byte for byte, so a policy repo can keep a copy beside its policies and refresh it with
the same command after an upgrade (a changed file is replaced; nothing else in DIR is touched).
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["register", "schema_files", "write_schemas"]


def register(sub: Any) -> None:
    helptext = "write the JSON Schemas of policy documents to a folder, for editors"
    p = sub.add_parser("schema", help=helptext, description=helptext)
    p.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="folder to write *.schema.json into"
    )
    p.set_defaults(handler=_run)


def schema_files() -> dict[str, bytes]:
    """Every schema shipped as ``jcstate.schemas``, by file name, as stored."""
    folder = resources.files("jcstate.schemas")
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".schema.json")
    }


def write_schemas(folder: str) -> list[str]:
    """Write every schema into ``folder`` (created if missing); returns the paths written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise JcstateError(f"{folder}: exists and is not a folder; give a folder with --output")
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, data in schema_files().items():
        path = os.path.join(folder, name)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # an editor never sees half a schema
        written.append(path)
    return written


def _run(args: argparse.Namespace) -> int:
    try:
        written = write_schemas(args.output)
    except OSError as exc:
        raise JcstateError(f"cannot write the schemas to {args.output}: {exc.strerror}") from exc
    for path in written:
        print(path)
    main = os.path.join(args.output, "policy.schema.json")
    print(
        f"{len(written)} schemas written; in a policy file: "
        f"# yaml-language-server: $schema=<relative path to {main}>"
    )
    return 0
