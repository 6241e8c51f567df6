"""``jcstate server``: run the server, and ``server make-cert`` for trying TLS out.

server [--data DIR] [--database URL] [--listen HOST:PORT] [--tls-cert F --tls-key F]
server make-cert --out DIR [--name HOST ...]

The admin commands that talk to a running server live beside this module, one per noun
(see ``jcstate/cli/remote.py``). Heavy imports (the web framework) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["register"]


def _default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/jcstate-server"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "jcstate-server")


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port)
    except ValueError:
        raise JcstateError(f"--listen {listen}: expected HOST:PORT") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_open_files_limit() -> None:
    """Each held long-poll is a socket: let one process hold tens of thousands."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _log_to_stderr(level: str) -> None:
    """The server's own messages (``jcstate.*``) at ``--log-level``, beside uvicorn's."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("jcstate")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def run_server(args: argparse.Namespace) -> int:
    from jcstate.server.bootstrap import bootstrap, prepare_data_dir, secret_key

    os.umask(0o077)  # the database holds token hashes and sealed secrets

    host, port = _split_listen(args.listen)
    tls = bool(args.tls_cert and args.tls_key)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise JcstateError("give both --tls-cert and --tls-key")
    if not tls and not _is_loopback(host):
        raise JcstateError(
            f"refusing plain HTTP on {host}: devices would send credentials in clear text; "
            "give --tls-cert/--tls-key (jcstate server make-cert creates a test pair)"
        )
    data_dir = args.data
    if data_dir is None and args.database is None:
        data_dir = _default_data_dir()
    if data_dir is not None:
        data_dir = prepare_data_dir(data_dir)
    from jcstate.server import db

    database = args.database or db.sqlite_url(data_dir)
    key = secret_key(data_dir, args.secret_key_file)
    # without --data (PostgreSQL), the first token's file goes beside the secret key's
    first = bootstrap(database, data_dir or os.path.dirname(os.path.abspath(args.secret_key_file)))
    if first is not None:
        # never the secrets themselves: stdout ends in journals and log collectors
        print("First start: created an administrator token and a connect key (files 0600):")
        print(f"admin token: {first.token_file}")
        print(f"connect key: {first.connect_key_file}")
        print("Keep the token like a password; delete the file once it is stored.", flush=True)

    import uvicorn

    from jcstate.server.app import Settings, create_app

    _raise_open_files_limit()
    _log_to_stderr(args.log_level)
    app = create_app(
        Settings(
            database=database,
            secret_key=key,
            max_wait=args.max_wait,
            max_body=args.max_body,
            max_in_flight=args.max_in_flight,
            enroll_per_address=args.enroll_per_address,
            enroll_per_key=args.enroll_per_key,
            enroll_burst=args.enroll_burst,
        )
    )
    scheme = "https" if tls else "http"
    print(f"jcstate server listening on {scheme}://{host}:{port}", flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level=args.log_level,
        timeout_keep_alive=90,  # agents reuse their connection between long polls
        timeout_graceful_shutdown=5,  # held long polls would otherwise delay a stop by 60 s
        backlog=16384,
        access_log=args.access_log,
        server_header=False,  # no "server: uvicorn" to advertise (the direct write omits it too)
        proxy_headers=False,  # nothing reads the client's address; don't trust forwarded ones
    )
    return 0


def make_cert(args: argparse.Namespace) -> int:
    from jcstate.server.certs import make_cert as make

    paths = make(args.out, args.name or ["localhost", "127.0.0.1"])
    print(f"CA (give to agents as --ca-file): {paths['ca']}")
    print(f"server certificate: --tls-cert {paths['cert']} --tls-key {paths['key']}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "server",
        help="run the jcstate server",
        description="Run the server (SQLite in --data by default).",
    )
    p.add_argument("--data", help="data directory: SQLite database, secret key, first token")
    p.add_argument("--database", help="database URL, e.g. postgresql://user@host/db")
    p.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT (default 127.0.0.1:8443)")
    p.add_argument("--tls-cert", help="server certificate (PEM, chain)")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument(
        "--secret-key-file", help="key sealing secrets at rest (default DATA/secret-key)"
    )
    p.add_argument("--max-wait", type=float, default=60.0, help="longest long-poll, seconds")
    p.add_argument(
        "--max-body",
        type=int,
        default=4 * 1024 * 1024,
        help="largest request body in bytes, else 413 (default 4 MiB; releases: 64 MiB)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="requests answered at once, held long polls apart; more get 503 (0: no cap)",
    )
    p.add_argument(
        "--enroll-per-address",
        type=float,
        default=120.0,
        help="enrollments a minute from one address, else 429 (0: no limit; default 120)",
    )
    p.add_argument(
        "--enroll-per-key",
        type=float,
        default=600.0,
        help="enrollments a minute with one connect key, else 429 (0: no limit; default 600)",
    )
    p.add_argument(
        "--enroll-burst", type=int, default=1000, help="enrollments allowed at once (default 1000)"
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=run_server)
    ps = p.add_subparsers(dest="server_command", metavar="ACTION")
    mc = ps.add_parser("make-cert", help="create a self-signed CA and server certificate")
    mc.add_argument("--out", required=True, help="directory for ca.pem, server.pem, server-key.pem")
    mc.add_argument("--name", action="append", help="host name or IP (repeat; default localhost)")
    mc.set_defaults(handler=make_cert)
