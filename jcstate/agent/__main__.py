"""``python -m jcstate.agent``: the agent alone, without loading every ``jcstate`` subcommand.

Same options as ``jcstate agent``; the systemd unit uses this entry point to keep the resident
agent small.
"""

from __future__ import annotations

import argparse
import sys

from jcstate.cli.agent import register
from jcstate.errors import JcstateError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jcstate.agent")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args) or 0)
    except JcstateError as exc:
        print(f"jcstate agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
