"""``jcstate agent`` (enroll once, then long-poll and converge) and ``jcstate agent install``."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["register"]


def run_agent(args: argparse.Namespace) -> int:
    from jcstate.agent import logs
    from jcstate.agent.loop import Agent, AgentConfig, setup_logging

    if not args.server:
        raise SystemExit("jcstate agent: --server is required")
    # ``jcstate agent`` also prints the log on stderr, at the jcstate command's level
    echo = getattr(args, "stderr_level", None)
    if args.log_format not in ("text", "json"):
        raise SystemExit(f"jcstate agent: --log-format {args.log_format}: give text or json")
    setup_logging(
        args.log_file or None,
        logs.DEBUG if args.verbose else logs.INFO,
        echo=echo,
        json_lines=args.log_format == "json",
    )
    config = AgentConfig(
        server=args.server,
        connect_key=connect_key(args),
        ca_file=args.ca_file,
        state_dir=args.state_dir,
        log_file=args.log_file,
        install_dir=args.install_dir,
        root=args.root,
        wait=args.wait,
        max_backoff=args.max_backoff,
        reconverge=args.reconverge,
        replan=args.replan,
        once=args.once,
        worker_timeout=args.worker_timeout,
        release_key=args.release_key,
    )
    return Agent(config).run()


def connect_key(args: argparse.Namespace) -> str:
    """The connect key from ``--connect-key-file`` (kept out of ``ps``) or ``--connect-key``."""
    if args.connect_key and args.connect_key_file:
        raise SystemExit("jcstate agent: give --connect-key or --connect-key-file, not both")
    if not args.connect_key_file:
        return str(args.connect_key or "")
    try:
        with open(args.connect_key_file, encoding="utf-8") as f:
            key = f.read().strip()
    except FileNotFoundError:
        return ""  # an enrolled agent needs no key (the file may be gone); enrolling says so
    except OSError as exc:
        raise SystemExit(
            f"jcstate agent: --connect-key-file {args.connect_key_file}: {exc.strerror}; "
            "give the file the connect key was written to (one line)"
        ) from None
    if not key or any(c.isspace() for c in key):
        raise SystemExit(
            f"jcstate agent: --connect-key-file {args.connect_key_file}: not one connect key "
            "(expected a single line such as jck_…)"
        )
    return key


def install_agent(args: argparse.Namespace) -> int:
    from jcstate.agent.install import InstallPlan, install
    from jcstate.host import Host

    key = connect_key(args)
    if not args.server or not key:
        raise SystemExit(
            "jcstate agent install: --server and --connect-key (or --connect-key-file) are required"
        )
    plan = InstallPlan(
        server=args.server,
        connect_key=key,
        ca_file=args.ca_file,
        state_dir=args.state_dir,
        log_file=args.log_file,
        install_dir=args.install_dir,
        release_key=args.release_key,
    )
    for line in install(plan, Host(root=args.root), enable=not args.no_enable):
        print(line)
    return 0


def _version_action() -> Any:
    import argparse

    class Version(argparse.Action):
        """``--version``: the version of the code that would run. It imports the agent first,
        so a broken installation fails here (the self-update's smoke test of a new release)."""

        def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
            super().__init__(option_strings, dest, nargs=0, help="print the agent's version, exit")

        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            import jcstate
            import jcstate.agent.loop  # noqa: F401  (what the agent needs to start)

            print(f"jcstate agent {jcstate.__version__}")
            parser.exit()

    return Version


# (option, default, type, help): float, str, or bool for a flag
COMMON_OPTIONS: tuple[tuple[str, Any, type, str | None], ...] = (
    ("--server", None, str, "server URL, e.g. https://jcstate.example:8443"),
    ("--connect-key", None, str, "admits this device once (shows in ps: prefer the file)"),
    ("--connect-key-file", None, str, "read the connect key from this file (0600)"),
    ("--ca-file", None, str, "CA certificate for a private server certificate"),
    ("--state-dir", "/var/lib/jcstate", str, "credential and outbox"),
    ("--log-file", "/var/log/jcstate.log", str, "'' logs nowhere"),
    ("--install-dir", "/opt/jcstate", str, "holds version.txt"),
    ("--root", "/", str, "manage the system mounted here"),
    (
        "--release-key",
        None,
        str,
        "pin this release public key (its file or its line); updates must be signed by it",
    ),
)
RUN_OPTIONS: tuple[tuple[str, Any, type, str | None], ...] = (
    ("--wait", 55.0, float, "long-poll length, seconds"),
    ("--max-backoff", 300.0, float, None),
    ("--reconverge", 1800.0, float, "re-apply the current document this often, seconds"),
    ("--replan", 300.0, float, "between converges, plan this often and report drift, seconds"),
    (
        "--worker-timeout",
        1800.0,
        float,
        "kill a converge worker still running after this many seconds",
    ),
    ("--once", False, bool, "converge once and exit"),
    ("--log-format", "text", str, "text, or json: one JSON object per line of the log file"),
)


def _add(p: Any, options: tuple[tuple[str, Any, type, str | None], ...]) -> None:
    for option, default, kind, text in options:
        if kind is bool:
            p.add_argument(option, action="store_true", help=text)
        else:
            converter = float if kind is float else None
            p.add_argument(option, default=default, type=converter, help=text)


def register(sub: Any) -> None:
    from jcstate.cli import help_formatter

    p = sub.add_parser(
        "agent",
        help="run the device agent",
        description="Enroll once, then long-poll the server and converge.",
        formatter_class=help_formatter,
    )
    _add(p, COMMON_OPTIONS)
    p.add_argument("--version", action=_version_action())
    _add(p, RUN_OPTIONS)
    # the agent logs without importing logging (jcstate/agent/logs.py): no basicConfig for it
    p.set_defaults(handler=run_agent, own_logging=True)
    s = p.add_subparsers(dest="agent_command", metavar="ACTION")
    q = s.add_parser(
        "install",
        help="write version.txt and a systemd unit, enable it",
        formatter_class=help_formatter,
    )
    _add(q, COMMON_OPTIONS)
    q.add_argument("--no-enable", action="store_true", help="write files only")
    q.set_defaults(handler=install_agent, own_logging=False)


def parse_run(words: list[str]) -> Any:
    """The options of ``jcstate agent`` (running it) as argparse parses them, without argparse.

    argparse, with the ``shutil``, ``zlib``, ``bz2`` and ``lzma`` its help formatter imports,
    costs the resident agent about 0.9 MB. This reads the plain forms only -- ``--option
    value``, ``--option=value``, ``--once`` -- into the namespace argparse would give
    (``tests/agent/test_agent_cli.py`` compares them); anything else (``--help``,
    ``--version``, an abbreviation, ``install``, a value that starts with ``-``, a number that
    is not one) gives None, and argparse, with its help and its errors, reads the words instead.
    """
    from types import SimpleNamespace

    options = {o[0]: o for o in (*COMMON_OPTIONS, *RUN_OPTIONS)}
    values = {o[0][2:].replace("-", "_"): o[1] for o in options.values()}
    i = 0
    while i < len(words):
        option, eq, value = words[i].partition("=")
        if option not in options:
            return None
        kind = options[option][2]
        dest = option[2:].replace("-", "_")
        if kind is bool:
            if eq:
                return None
            values[dest] = True
            i += 1
            continue
        if not eq:
            if i + 1 == len(words):
                return None
            value = words[i + 1]
        i += 1 if eq else 2
        if value.startswith("-"):
            return None
        if kind is float:
            try:
                values[dest] = float(value)
            except ValueError:
                return None
        else:
            values[dest] = value
    return SimpleNamespace(
        verbose=0,
        command="agent",
        version=None,
        **values,
        agent_command=None,
        handler=run_agent,
        own_logging=True,
    )
