"""``jcstate agent`` (enroll once, then long-poll and converge) and ``jcstate agent install``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

__all__ = ["register"]


def run_agent(args: argparse.Namespace) -> int:
    from jcstate.agent.loop import Agent, AgentConfig, setup_logging

    if not args.server:
        raise SystemExit("jcstate agent: --server is required")
    setup_logging(args.log_file or None, logging.DEBUG if args.verbose else logging.INFO)
    config = AgentConfig(
        server=args.server,
        connect_key=args.connect_key or "",
        ca_file=args.ca_file,
        state_dir=args.state_dir,
        log_file=args.log_file,
        install_dir=args.install_dir,
        root=args.root,
        wait=args.wait,
        max_backoff=args.max_backoff,
        reconverge=args.reconverge,
        once=args.once,
        worker_timeout=args.worker_timeout,
    )
    return Agent(config).run()


def install_agent(args: argparse.Namespace) -> int:
    from jcstate.agent.install import InstallPlan, install
    from jcstate.host import Host

    if not args.server or not args.connect_key:
        raise SystemExit("jcstate agent install: --server and --connect-key are required")
    plan = InstallPlan(
        server=args.server,
        connect_key=args.connect_key,
        ca_file=args.ca_file,
        state_dir=args.state_dir,
        log_file=args.log_file,
        install_dir=args.install_dir,
    )
    for line in install(plan, Host(root=args.root), enable=not args.no_enable):
        print(line)
    return 0


class _Version(argparse.Action):
    """``--version``: the version of the code that would run. It imports the agent first, so
    a broken installation fails here (the self-update's smoke test of a new release)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, help="print the agent's version, exit")

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        import jcstate
        import jcstate.agent.loop  # noqa: F401  (what the agent needs to start)

        print(f"jcstate agent {jcstate.__version__}")
        parser.exit()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="server URL, e.g. https://jcstate.example:8443")
    p.add_argument("--connect-key", help="admits this device once (not a secret)")
    p.add_argument("--ca-file", help="CA certificate for a private server certificate")
    p.add_argument("--state-dir", default="/var/lib/jcstate", help="credential and outbox")
    p.add_argument("--log-file", default="/var/log/jcstate.log", help="'' logs nowhere")
    p.add_argument("--install-dir", default="/opt/jcstate", help="holds version.txt")
    p.add_argument("--root", default="/", help="manage the system mounted here")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run the device agent",
        description="Enroll once, then long-poll the server and converge.",
    )
    _common(p)
    p.add_argument("--version", action=_Version)
    p.add_argument("--wait", type=float, default=55.0, help="long-poll length, seconds")
    p.add_argument("--max-backoff", type=float, default=300.0)
    p.add_argument(
        "--reconverge",
        type=float,
        default=1800.0,
        help="re-apply the current document this often, seconds",
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=1800.0,
        help="kill a converge worker still running after this many seconds",
    )
    p.add_argument("--once", action="store_true", help="converge once and exit")
    p.set_defaults(handler=run_agent)
    s = p.add_subparsers(dest="agent_command", metavar="ACTION")
    q = s.add_parser("install", help="write version.txt and a systemd unit, enable it")
    _common(q)
    q.add_argument("--no-enable", action="store_true", help="write files only")
    q.set_defaults(handler=install_agent)
