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


# Commands run often on devices import only the module that defines them (an agent or an
# apply should not pay for the server's imports); anything else imports every module.
_FAST_PATH = {
    "validate": ["validate"],
    "plan": ["local"],
    "apply": ["local"],
    "verify": ["verify"],
    "agent": ["agent"],
}


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if words and words[0] in _FAST_PATH and not {"-h", "--help"} & set(argv or sys.argv):
        return _FAST_PATH[words[0]]
    return COMMAND_MODULES


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jcstate",
        description="Declarative device management: users, groups, SSH MFA, FileVault, commands.",
    )
    parser.add_argument("--version", action="version", version=f"jcstate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _modules_for(argv) if argv is not None else COMMAND_MODULES:
        try:
            module = importlib.import_module(f"jcstate.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"jcstate.cli.{name}":
                continue  # that part of the product is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
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
