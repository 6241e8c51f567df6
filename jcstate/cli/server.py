"""``jcstate server``: run the server, and ``server make-cert`` for trying TLS out.

server [--data DIR] [--database URL] [--listen HOST:PORT] [--tls-cert F --tls-key F]
       [--trusted-proxy CIDR ...] [--metrics-token-file F] [--log-format text|json]
server make-cert --out DIR [--name HOST ...]
server install [--root DIR] [--no-enable] ...   (a hardened systemd unit; docs/deploy.md)
server backup FILE [--data DIR] [--database URL]
server restore FILE --data DIR [--database URL]

The admin commands that talk to a running server live beside this module, one per noun
(see ``jcstate/cli/remote.py``). Heavy imports (the web framework) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
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


def _log_to_stderr(level: str, log_format: str = "text") -> None:
    """The server's own messages (``jcstate.*``) at ``--log-level``, beside uvicorn's; with
    ``--log-format json`` uvicorn's lines too, one JSON object per line."""
    import logging

    handler = logging.StreamHandler()
    if log_format == "json":
        from jcstate.agent.logs import json_formatter

        handler.setFormatter(json_formatter(logging))
        uvicorn_logger = logging.getLogger("uvicorn")  # uvicorn.error and uvicorn.access
        uvicorn_logger.handlers = [handler]
        uvicorn_logger.setLevel(level.upper())
        uvicorn_logger.propagate = False
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("jcstate")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise JcstateError(f"{what} {path}: {exc.strerror}") from None
    if not value:
        raise JcstateError(f"{what} {path}: the file is empty")
    return value


def _database_url(args: argparse.Namespace) -> str | None:
    """--database, or the URL in --database-file (a password stays out of the arguments)."""
    if args.database and args.database_file:
        raise JcstateError("give --database or --database-file, not both")
    if args.database_file:
        return _read_secret_file(args.database_file, "--database-file")
    return str(args.database) if args.database else None


def run_server(args: argparse.Namespace) -> int:
    from jcstate.server.bootstrap import bootstrap, prepare_data_dir, secret_key
    from jcstate.server.peer import TrustedProxies

    os.umask(0o077)  # the database holds token hashes and sealed secrets
    args.database = _database_url(args)
    TrustedProxies(args.trusted_proxy or ())  # a bad CIDR is refused before anything starts
    metrics_token = None
    if args.metrics_token_file:
        metrics_token = _read_secret_file(args.metrics_token_file, "--metrics-token-file")

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

    from jcstate.server.app import DrainingServer, Settings, create_app

    _raise_open_files_limit()
    _log_to_stderr(args.log_level, args.log_format)
    settings = Settings(
        database=database,
        secret_key=key,
        max_wait=args.max_wait,
        trusted_proxies=tuple(args.trusted_proxy or ()),
        metrics_token=metrics_token,
        max_body=args.max_body,
        max_in_flight=args.max_in_flight,
        enroll_per_address=args.enroll_per_address,
        enroll_per_key=args.enroll_per_key,
        enroll_burst=args.enroll_burst,
        erase_approvals=args.erase_approvals,
    )
    app = create_app(settings)
    scheme = "https" if tls else "http"
    print(f"jcstate server listening on {scheme}://{host}:{port}", flush=True)
    # json: uvicorn's loggers were given the JSON handler above, so no logging config of its own
    from uvicorn.config import LOGGING_CONFIG

    log_config = None if args.log_format == "json" else LOGGING_CONFIG
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        log_level=args.log_level,
        timeout_keep_alive=90,  # agents reuse their connection between long polls
        timeout_graceful_shutdown=5,  # held polls are answered at once; other requests get 5 s
        backlog=16384,
        access_log=args.access_log,
        server_header=False,  # no "server: uvicorn" to advertise (the direct write omits it too)
        # X-Forwarded-* are read by jcstate.server.peer, only from --trusted-proxy networks
        proxy_headers=False,
        log_config=log_config,
    )
    # SIGTERM drains: held polls answered, requests in flight finished (DrainingServer)
    server = DrainingServer(config)
    server.run()
    if not server.started:
        raise JcstateError(f"the server could not start on {host}:{port} (see above)")
    return 0


def make_cert(args: argparse.Namespace) -> int:
    from jcstate.server.certs import make_cert as make

    paths = make(args.out, args.name or ["localhost", "127.0.0.1"])
    print(f"CA (give to agents as --ca-file): {paths['ca']}")
    print(f"server certificate: --tls-cert {paths['cert']} --tls-key {paths['key']}")
    return 0


def install_server(args: argparse.Namespace) -> int:
    from jcstate.host import Host
    from jcstate.server.install import ServerInstall, install
    from jcstate.server.peer import TrustedProxies

    TrustedProxies(args.trusted_proxy or ())
    if bool(args.tls_cert) != bool(args.tls_key):
        raise JcstateError("give both --tls-cert and --tls-key")
    if not os.path.isdir(args.root):
        raise JcstateError(f"--root {args.root}: no such directory")
    plan = ServerInstall(
        listen=args.listen,
        data_dir=args.data,
        user=args.user,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        database_file=args.database_file,
        trusted_proxies=tuple(args.trusted_proxy or ()),
        metrics_token_file=args.metrics_token_file,
        log_format=args.log_format,
        python=args.python,
    )
    if not plan.tls_cert and not _is_loopback(_split_listen(plan.listen)[0]):
        raise JcstateError(
            f"--listen {plan.listen} without --tls-cert/--tls-key: the server refuses plain "
            "HTTP off loopback; listen on 127.0.0.1 behind a proxy, or give the certificate"
        )
    for line in install(plan, Host(root=args.root), enable=not args.no_enable):
        print(line)
    return 0


def backup_server(args: argparse.Namespace) -> int:
    from jcstate.server import db
    from jcstate.server.backup import backup

    database = _database_url(args)
    data_dir = args.data
    if data_dir is None and database is None:
        data_dir = _default_data_dir()
    if database is None:
        database = db.sqlite_url(data_dir)
    names = backup(
        args.file, database=database, data_dir=data_dir, secret_key_file=args.secret_key_file
    )
    print(f"wrote {args.file} ({', '.join(names)}); keep it as secret as the server's keys")
    return 0


def restore_server(args: argparse.Namespace) -> int:
    from jcstate.server.backup import restore

    os.umask(0o077)
    done = restore(
        args.file,
        data_dir=args.data,
        database=_database_url(args),
        secret_key_file=args.secret_key_file,
    )
    for line in done:
        print(f"restored {line}")
    print("start the server on it as before; devices carry on without enrolling again")
    return 0


def _database_options(p: Any) -> None:
    p.add_argument("--database", help="database URL, e.g. postgresql://user@host/db")
    p.add_argument(
        "--database-file", help="a file holding the database URL (keeps a password out of ps)"
    )
    p.add_argument(
        "--secret-key-file", help="key sealing secrets at rest (default DATA/secret-key)"
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "server",
        help="run the jcstate server",
        description="Run the server (SQLite in --data by default).",
    )
    p.add_argument("--data", help="data directory: SQLite database, secret key, first token")
    _database_options(p)
    p.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT (default 127.0.0.1:8443)")
    p.add_argument("--tls-cert", help="server certificate (PEM, chain)")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="CIDR",
        help="believe X-Forwarded-For/-Proto from peers in this network (repeat)",
    )
    p.add_argument(
        "--metrics-token-file",
        help="bearer token for GET /metrics from off loopback (loopback needs none)",
    )
    p.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object a line"
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
        "--erase-approvals",
        type=int,
        default=1,
        choices=[1, 2],
        help="2: an erase waits until a second administrator (another person) approves it "
        "(jcstate command approve ID); default 1",
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

    si = ps.add_parser(
        "install",
        help="write a hardened systemd unit for the server (and its system user), enable it",
    )
    si.add_argument("--root", default="/", help="install into the system mounted here")
    si.add_argument("--no-enable", action="store_true", help="write files only")
    si.add_argument("--data", default="/var/lib/jcstate-server", help="data directory")
    si.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT (default 127.0.0.1:8443)")
    si.add_argument("--user", default="jcstate-server", help="system user the server runs as")
    si.add_argument("--tls-cert", help="certificate file, loaded as a systemd credential")
    si.add_argument("--tls-key", help="key file (root-only is fine: loaded as a credential)")
    si.add_argument("--database-file", help="file holding a PostgreSQL URL (a credential)")
    si.add_argument("--metrics-token-file", help="file holding the metrics token (a credential)")
    si.add_argument("--trusted-proxy", action="append", metavar="CIDR", help="(repeat)")
    si.add_argument("--log-format", default="json", choices=["text", "json"])
    si.add_argument("--python", default=sys.executable, help="interpreter with jcstate installed")
    si.set_defaults(handler=install_server)

    sb = ps.add_parser("backup", help="write the database and the keys into one file")
    sb.add_argument("file", help="the backup file to write (0600)")
    sb.add_argument("--data", help="data directory (its SQLite database and keys)")
    _database_options(sb)
    sb.set_defaults(handler=backup_server)

    sr = ps.add_parser("restore", help="restore a backup into an empty data directory")
    sr.add_argument("file", help="a file written by `jcstate server backup`")
    sr.add_argument("--data", required=True, help="the new, empty data directory")
    _database_options(sr)
    sr.set_defaults(handler=restore_server)
