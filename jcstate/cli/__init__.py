"""The ``jcstate`` command: a thin shell around the engine, the server and the agent.

Each subcommand group lives in its own module here and exposes ``register(subparsers)``; the
module list below is the only place that names them. Modules are imported when the command
line is parsed, so each keeps heavy imports (server framework, testinfra) inside its handlers.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from jcstate import __version__
from jcstate.errors import JcstateError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["help_formatter", "main"]

# module name under jcstate.cli → registers one or more subcommands
COMMAND_MODULES = [
    "validate",  # validate
    "local",  # plan, apply
    "verify",  # verify
    "totp",  # totp new
    "server",  # server, server make-cert
    "policies",  # push
    "revisions",  # revisions, revision show|diff|rollback
    "rollout",  # rollout status|promote|abort (push --canary starts one)
    "devices",  # devices, device show|approve|revoke|labels|recovery-key
    "commands",  # command lock|restart|shutdown|erase|run|update|show|list|cancel
    "elevate",  # elevate (just-in-time admin)
    "tokens",  # token, connect-key
    "audit",  # audit
    "enroll",  # totp enroll (beside totp new)
    "passwords",  # password set
    "releases",  # release push|list|delete|deploy
    "agent",  # agent, agent install
    "admins",  # admin add|list|remove|passwd (console accounts)
    "completion",  # completion bash|zsh
    "init",  # init (scaffold a policy repo)
    "schema",  # schema --output DIR
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


def _columns() -> int:
    """The terminal's width, as ``shutil.get_terminal_size().columns`` tells it."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help formatter, given the terminal's width: asking it itself, argparse
    imports ``shutil`` (with ``zlib``, ``bz2`` and ``lzma``: 0.5 MB in the resident agent)."""
    import argparse

    return argparse.HelpFormatter(prog, width=_columns() - 2)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    import argparse

    class Parser(argparse.ArgumentParser):
        # Subcommands' parsers too (add_subparsers makes them of this class): argparse's own
        # formatter, which every add_argument builds, imports shutil to ask the width.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", help_formatter)
            super().__init__(*args, **kwargs)

    parser = Parser(
        prog="jcstate",
        description="Declarative device management: users, groups, SSH MFA, FileVault, commands.",
        formatter_class=help_formatter,
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
    from jcstate.cli.examples import add_examples

    add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = None
    if words[:1] == ["agent"]:  # the resident agent: its plain options without argparse
        from jcstate.cli.agent import parse_run

        args = parse_run(words[1:])
    if args is None:
        parser = build_parser(words)
        args, extra = parser.parse_known_args(words)
        if extra:
            # `command run DEVICE --wait -- PROGRAM…`: argparse fills the program's nargs="*"
            # with nothing at DEVICE, before reaching the options, and leaves the program over
            if extra[0] == "--" and getattr(args, "argv", None) == []:
                args.argv = extra[1:]
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if "--" in words and getattr(args, "device", None) is not None:
            # `command run --where K=V -- PROGRAM`: argparse takes the program for the device
            args.device_typed = args.device in words[: words.index("--")]
    args.stderr_level = 30 - 10 * min(args.verbose, 2)  # logging.WARNING, INFO, DEBUG
    # The agent does without logging's 1 MB; plan and apply set it up only for -v (a record
    # of WARNING or above is then printed bare by logging's last-resort handler).
    lazy = getattr(args, "lazy_logging", False) and args.verbose == 0
    if not getattr(args, "own_logging", False) and not lazy:
        import logging

        logging.basicConfig(
            level=args.stderr_level,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a reader gone before the last buffered lines: caught here too
        return code
    except JcstateError as exc:
        print(f"jcstate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jcstate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """``jcstate command list | head``: the reader left. Exit quietly, as ``cat`` does, and
    keep Python from complaining again when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (tests capture it)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a killed writer


if __name__ == "__main__":
    sys.exit(main())
