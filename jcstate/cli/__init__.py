"""The ``jcstate`` command: a thin shell around the engine, the server and the agent.

Each subcommand group lives in its own module here and exposes ``register(subparsers)``; the
module list below is the only place that names them. Modules are imported when the command
line is parsed, so each keeps heavy imports (server framework, testinfra) inside its handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from jcstate import __version__
from jcstate.errors import JcstateError

__all__ = ["main"]

# module name under jcstate.cli → registers one or more subcommands
COMMAND_MODULES = [
    "validate",  # validate
    "local",  # plan, apply
    "verify",  # verify
    "totp",  # totp new / totp enroll
    "server",  # server, push, devices, device, command, token, connect-key, audit
    "agent",  # agent, agent install
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jcstate",
        description="Declarative device management: users, groups, SSH MFA, FileVault, commands.",
    )
    parser.add_argument("--version", action="version", version=f"jcstate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"jcstate.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"jcstate.cli.{name}":
                continue  # that part of the product is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except JcstateError as exc:
        print(f"jcstate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
