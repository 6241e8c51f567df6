"""``python -m jcstate.agent``: the agent alone, without loading every ``jcstate`` subcommand.

Same options as ``jcstate agent``; the systemd unit uses this entry point to keep the resident
agent small. Plain options are read without argparse (:func:`jcstate.cli.agent.parse_run`);
anything else -- ``--help``, ``--version``, ``install``, a mistake -- goes to argparse.
"""

from __future__ import annotations

import sys

from jcstate.cli.agent import parse_run
from jcstate.errors import JcstateError


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = parse_run(words)
    if args is None:
        import argparse

        from jcstate.cli import help_formatter
        from jcstate.cli.agent import register

        parser = argparse.ArgumentParser(
            prog="python -m jcstate.agent", formatter_class=help_formatter
        )
        parser.add_argument("-v", "--verbose", action="count", default=0)
        register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["agent", *words])
    try:
        return int(args.handler(args) or 0)
    except JcstateError as exc:
        print(f"jcstate agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
