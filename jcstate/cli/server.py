"""``jcstate server`` and the admin commands that talk to it.

server [--data DIR] [--database URL] [--listen HOST:PORT] [--tls-cert F --tls-key F]
server make-cert --out DIR [--name HOST ...]
push REPO... [--dry-run] [-m MESSAGE]
devices | device show|approve|revoke REF | device labels REF KEY=VALUE...
device recovery-key REF [--volume V] [--all]
token create --role ROLE | token list | token revoke ID
connect-key create|list|revoke | audit | totp enroll USER | password set REF
command lock|restart|shutdown|erase DEVICE | command run DEVICE -- ARGV...
command update DEVICE --version V [--retry]
command show ID | command list [--device D] | command cancel ID
release push WHEEL | release list | release delete VERSION [--force]
release deploy VERSION (--all | --label KEY=VALUE... | DEVICE...) [--retry]

Admin commands find the server and token in ``--server URL --token T`` or ``JCSTATE_SERVER`` /
``JCSTATE_TOKEN`` (``--ca-file`` / ``JCSTATE_CA_FILE`` for a private CA). Listings take
``--output json``. Heavy imports (the web framework) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import ipaddress
import json
import os
import sys
from typing import Any

from jcstate.errors import JcstateError

__all__ = ["register"]


# -- server ----------------------------------------------------------------------------------
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
    first = bootstrap(database, data_dir)
    if first is not None:
        where = f" (also in {data_dir}/admin-token and {data_dir}/connect-key)" if data_dir else ""
        print(f"First start: created an administrator token and a connect key{where}.")
        print(f"admin token: {first.admin_token}")
        print(f"connect key: {first.connect_key}")
        print("The token is shown only once; keep it like a password.", flush=True)

    import uvicorn

    from jcstate.server.app import Settings, create_app

    _raise_open_files_limit()
    _log_to_stderr(args.log_level)
    app = create_app(Settings(database=database, secret_key=key, max_wait=args.max_wait))
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


# -- admin commands --------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Any:
    from jcstate.server.api_client import AdminClient

    server = args.server or os.environ.get("JCSTATE_SERVER")
    token = args.token or os.environ.get("JCSTATE_TOKEN")
    if not server or not token:
        raise JcstateError("give --server URL and --token T (or JCSTATE_SERVER / JCSTATE_TOKEN)")
    return AdminClient(server, token, ca_file=args.ca_file or os.environ.get("JCSTATE_CA_FILE"))


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print(
    args: argparse.Namespace,
    data: Any,
    columns: list[tuple[str, str]] | None = None,
    indent: str = "",
) -> None:
    if getattr(args, "output", "text") == "json" or columns is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = [[h for h, _ in columns]]
    for row in rows:
        cells = []
        for _, key in columns:
            value = row.get(key)
            if (
                key.endswith(("At", "Seen", "_at", "at"))
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                value = _when(value)
            cells.append("-" if value is None else str(value))
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _repo_files(paths: list[str]) -> dict[str, str]:
    """The repo's policy files as relative path → text (what the server parses)."""
    files: dict[str, str] = {}
    for path in paths:
        if os.path.isdir(path):
            for dirpath, dirnames, names in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(names):
                    if name.endswith((".yaml", ".yml")):
                        full = os.path.join(dirpath, name)
                        with open(full, encoding="utf-8") as f:
                            files[os.path.relpath(full, path)] = f.read()
        else:
            with open(path, encoding="utf-8") as f:
                files[os.path.basename(path)] = f.read()
    if not files:
        raise JcstateError(f"no .yaml files in {', '.join(paths)}")
    return files


def push(args: argparse.Namespace) -> int:
    answer = _client(args).call(
        "POST",
        "/api/v1/revisions",
        {"files": _repo_files(args.repo), "message": args.message or "", "dryRun": args.dry_run},
    )
    if args.output == "json":
        _print(args, answer)
        return 0
    if not args.dry_run:
        print(f"stored revision {answer['revision']}")
        return 0
    print("dry run: nothing stored. Per device, from its last reported facts:")
    for dev in answer["devices"]:
        print(f"{dev['hostname']} ({dev['id']})")
        if dev.get("error"):
            print(f"  ! {dev['error']}")
        for line in dev.get("changes") or ["  (no change)"]:
            print(f"  {line.strip()}" if line.strip() != "(no change)" else "  (no change)")
    return 0


DEVICE_COLUMNS = [
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("OS", "os"),
    ("AGENT", "agentVersion"),
    ("STATUS", "status"),
    ("ACTIVITY", "activity"),
    ("ONLINE", "online"),
    ("LAST SEEN", "lastSeen"),
    ("LAST REPORT", "lastReportAt"),
    ("OK", "lastReportOk"),
    ("DRIFT", "drift"),
]


def devices(args: argparse.Namespace) -> int:
    _print(args, _client(args).call("GET", "/api/v1/devices"), DEVICE_COLUMNS)
    return 0


def device_show(args: argparse.Namespace) -> int:
    data = _client(args).call("GET", f"/api/v1/devices/{args.ref}")
    if args.output == "json":
        _print(args, data)
        return 0
    for key in (
        "id",
        "hostname",
        "os",
        "osVersion",
        "arch",
        "agentVersion",
        "status",
        "activity",
        "online",
        "labels",
        "drift",
    ):
        print(f"{key + ':':14}{data.get(key)}")
    for key in ("enrolledAt", "lastSeen", "lastReportAt"):
        print(f"{key + ':':14}{_when(data.get(key))}")
    last = data.get("lastReport") or {}
    if last:
        counts = (last.get("report") or {}).get("counts")
        print(
            f"{'last report:':14}ok={last.get('ok')} changed={last.get('changed')} {counts or ''}"
        )
        if last.get("error"):
            print(f"{'':14}error: {last['error']}")
    if data.get("commands"):
        print("commands (newest first):")
        columns = [c for c in COMMAND_COLUMNS if c[1] != "hostname"] + [("OUTPUT", "tail")]
        rows = [{**c, "tail": _last_line(c)} for c in data["commands"]]
        _print(args, rows, columns, indent="  ")
    return 0


def device_recovery_key(args: argparse.Namespace) -> int:
    """Print a device's escrowed FileVault recovery key (administrators; every read is audited)."""
    query = {k: v for k, v in (("volume", args.volume), ("all", args.all and "true")) if v}
    data = _client(args).call("GET", f"/api/v1/devices/{args.ref}/recovery-key", **query)
    columns = [("DEVICE", "device"), ("VOLUME", "volume"), ("ESCROWED", "escrowedAt")]
    _print(args, data, [*columns, ("RECOVERY KEY", "key")])
    return 0


def device_action(args: argparse.Namespace) -> int:
    data = _client(args).call("POST", f"/api/v1/devices/{args.ref}/{args.action}")
    _print(args, data, DEVICE_COLUMNS)
    return 0


def device_labels(args: argparse.Namespace) -> int:
    labels = dict(_pair(p) for p in args.labels)
    _print(
        args,
        _client(args).call("PUT", f"/api/v1/devices/{args.ref}/labels", {"labels": labels}),
        DEVICE_COLUMNS,
    )
    return 0


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise JcstateError(f"{text}: expected KEY=VALUE")
    return key, value


TOKEN_COLUMNS = [
    ("ID", "id"),
    ("NAME", "name"),
    ("ROLE", "role"),
    ("CREATED", "created_at"),
    ("REVOKED", "revoked_at"),
]


def token_create(args: argparse.Namespace) -> int:
    data = _client(args).call(
        "POST", "/api/v1/tokens", {"role": args.role, "name": args.name or ""}
    )
    if args.output == "json":
        _print(args, data)
    else:
        print(f"token {data['id']} ({data['role']}); shown only once:\n{data['token']}")
    return 0


def token_list(args: argparse.Namespace) -> int:
    _print(args, _client(args).call("GET", "/api/v1/tokens"), TOKEN_COLUMNS)
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    _print(
        args,
        _client(args).call("DELETE", f"/api/v1/tokens/{args.id}"),
        [("ID", "id"), ("REVOKED", "revoked")],
    )
    return 0


KEY_COLUMNS = [
    ("ID", "id"),
    ("KEY", "key"),
    ("NAME", "name"),
    ("AUTO-APPROVE", "auto_approve"),
    ("LABELS", "labels"),
    ("REVOKED", "revoked_at"),
]


def key_create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name or "",
        "autoApprove": not args.require_approval,
        "labels": dict(_pair(p) for p in args.label),
    }
    _print(args, _client(args).call("POST", "/api/v1/connect-keys", body), KEY_COLUMNS)
    return 0


def key_list(args: argparse.Namespace) -> int:
    _print(args, _client(args).call("GET", "/api/v1/connect-keys"), KEY_COLUMNS)
    return 0


def key_revoke(args: argparse.Namespace) -> int:
    _print(
        args,
        _client(args).call("DELETE", f"/api/v1/connect-keys/{args.id}"),
        [("ID", "id"), ("REVOKED", "revoked")],
    )
    return 0


def audit(args: argparse.Namespace) -> int:
    rows = _client(args).call("GET", "/api/v1/audit", limit=args.limit)
    _print(
        args,
        rows,
        [
            ("AT", "at"),
            ("ACTOR", "actor"),
            ("ROLE", "role"),
            ("ACTION", "action"),
            ("TARGET", "target"),
            ("OUTCOME", "outcome"),
        ],
    )
    return 0


def totp_enroll(args: argparse.Namespace) -> int:
    import urllib.parse

    data = _client(args).call("POST", f"/api/v1/totp/{urllib.parse.quote(args.user, safe='')}")
    label = urllib.parse.quote(f"{args.issuer}:{args.user}")
    uri = (
        f"otpauth://totp/{label}?secret={data['secret']}"
        f"&issuer={urllib.parse.quote(args.issuer)}&algorithm=SHA1&digits=6&period=30"
    )
    print(uri)
    try:
        import qrcode
    except ImportError:
        return 0
    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    qr.print_ascii(out=sys.stdout, invert=True)
    return 0


def password_set(args: argparse.Namespace) -> int:
    # read from stdin when piped, so the password never appears in argv or shell history
    value = (
        sys.stdin.readline().rstrip("\n")
        if not sys.stdin.isatty()
        else getpass.getpass(f"password for {args.ref}: ")
    )
    if not value:
        raise JcstateError("empty password")
    _client(args).call("PUT", f"/api/v1/passwords/{args.ref}", {"password": value})
    print(f"stored password {args.ref}")
    return 0


# -- security commands -----------------------------------------------------------------------
COMMAND_COLUMNS = [
    ("ID", "id"),
    ("DEVICE", "hostname"),
    ("ACTION", "action"),
    ("STATE", "state"),
    ("EXIT", "exitCode"),
    ("CREATED", "createdAt"),
    ("FINISHED", "finishedAt"),
]


def _last_line(command: dict[str, Any]) -> str | None:
    """The tail of a command's output in one short line (stdout, else stderr, else message)."""
    for key in ("stdout", "stderr", "message"):
        lines = [line for line in (command.get(key) or "").splitlines() if line.strip()]
        if lines:
            last = lines[-1].strip()
            return last if len(last) <= 60 else last[:57] + "..."
    return None


def command_issue(args: argparse.Namespace) -> int:
    """Queue lock/restart/shutdown/erase/run for one device; print the new command's id."""
    import urllib.parse

    client = _client(args)
    ref = urllib.parse.quote(args.device, safe="")
    body: dict[str, Any] = {}
    for key, value in (
        ("delay", getattr(args, "delay", None)),
        ("message", getattr(args, "message", None)),
        ("notAfter", args.not_after),
    ):
        if value is not None:
            body[key] = value
    if args.action == "run":
        body["run"] = _run_spec(args)
    if args.action == "erase":
        body["confirm"] = args.confirm if args.confirm is not None else _typed_back(client, ref)
    if args.action == "update":
        body["version"] = args.version
        if args.retry:
            body["retry"] = True
    data = client.call("POST", f"/api/v1/devices/{ref}/commands/{args.action}", body)
    if args.output == "json":
        _print(args, data)
    else:
        print(data["id"])
        print(f"queued {data['action']} for {data['hostname']} ({data['device']})", file=sys.stderr)
    return 0


def _program_argv(parsed: list[str]) -> list[str]:
    """The program's argv as typed after the first ``--``.

    Python 3.11's argparse drops *every* ``--`` from a ``nargs="*"`` positional, so
    ``-- grep -- -x f`` would lose one; the process's own argv still has it. It is used only
    when it agrees with what argparse parsed (``main([...])`` called from Python has another).
    """
    raw = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    return raw if raw and [a for a in raw if a != "--"] == parsed else parsed


def _run_spec(args: argparse.Namespace) -> dict[str, Any]:
    argv = _program_argv(list(args.argv or []))
    if bool(argv) == bool(args.command_line):
        raise JcstateError("give the program after --, or --command-line LINE (not both)")
    spec: dict[str, Any] = {"argv": argv} if argv else {"command": args.command_line}
    if args.shell:
        if argv:
            raise JcstateError("--shell goes with --command-line")
        spec["shell"] = args.shell
    if args.user:
        spec["user"] = args.user
    if args.timeout is not None:
        spec["timeout"] = args.timeout
    return spec


def _typed_back(client: Any, ref: str) -> str:
    """The portal's "yes, erase": the admin types the device's id back."""
    device = client.call("GET", f"/api/v1/devices/{ref}")
    print(
        f"This erases {device['hostname']} ({device['id']}): every disk, every account. "
        "It cannot be undone.",
        file=sys.stderr,
    )
    print(f"Type the device id ({device['id']}) to confirm: ", end="", file=sys.stderr, flush=True)
    typed = sys.stdin.readline().strip()
    if not typed:
        raise JcstateError("nothing typed: erase not sent")
    return typed  # the server compares it with the id, and audits a mismatch


def command_show(args: argparse.Namespace) -> int:
    params = {"device": args.device} if args.device else {}
    data = _client(args).call("GET", f"/api/v1/commands/{args.id}", **params)
    if args.output == "json":
        _print(args, data)
        return 0
    what = data["action"]
    run = data.get("run") or {}
    if run:
        what += ": " + (" ".join(run["argv"]) if run.get("argv") else run.get("command", ""))
    lines = [
        ("id", data["id"]),
        ("device", f"{data['device']} ({data.get('hostname') or '?'})"),
        ("source", data["source"]),
        ("action", what),
        ("state", data["state"] + (" (cancel requested)" if data["cancelRequested"] else "")),
        ("exit code", data["exitCode"]),
        ("created", f"{_when(data['createdAt'])} by {data['createdBy']}"),
        ("delivered", _when(data["deliveredAt"])),
        ("running", _when(data["runningAt"])),
        ("finished", _when(data["finishedAt"])),
        ("duration", None if data["duration"] is None else f"{data['duration']} s"),
        ("message", data["message"] or None),
    ]
    for key, value in lines:
        print(f"{key + ':':11}{'-' if value is None else value}")
    for stream in ("stdout", "stderr"):
        text = data.get(stream) or ""
        if text:
            tail = text.splitlines()[-20:]
            cut = " (truncated on the device)" if data.get("truncated") else ""
            print(f"{stream} (last {len(tail)} lines){cut}:")
            for line in tail:
                print(f"  {line}")
    return 0


def command_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.device:
        params["device"] = args.device
    if args.state:
        params["state"] = args.state
    _print(args, _client(args).call("GET", "/api/v1/commands", **params), COMMAND_COLUMNS)
    return 0


def command_cancel(args: argparse.Namespace) -> int:
    params = {"device": args.device} if args.device else {}
    data = _client(args).call("POST", f"/api/v1/commands/{args.id}/cancel", **params)
    if args.output == "json":
        _print(args, data)
    else:
        print(f"{data['id']}: {data['cancel']}")
    return 0


def _register_commands(sub: Any) -> None:
    p = sub.add_parser("command", help="security commands: lock, restart, shutdown, erase, run")
    cs = p.add_subparsers(dest="command_action", metavar="ACTION")
    cs.required = True
    texts = {
        "lock": "lock the device's graphical sessions",
        "restart": "warn users, wait, restart (done when the device is back)",
        "shutdown": "warn users, wait, power off",
        "erase": "erase the device (administrator; the device id typed back)",
        "run": "run a program: jcstate command run [OPTIONS] DEVICE -- ARGV...",
        "update": "install a release of the agent (administrator; docs/updates.md)",
    }
    for action, text in texts.items():
        q = _admin_parser(cs, action, text)
        q.add_argument("device", help="device id or hostname")
        q.add_argument("--not-after", help="RFC 3339 time after which it is not delivered")
        if action in ("restart", "shutdown"):
            q.add_argument("--delay", type=int, help="seconds between warning and action (60)")
            q.add_argument("--message", help="added to the warning users see")
        if action == "erase":
            q.add_argument("--confirm", metavar="ID", help="the device id, instead of typing it")
        if action == "update":
            q.add_argument("--version", required=True, help="a release on the server")
            q.add_argument(
                "--retry", action="store_true", help="try a version the device holds again"
            )
        if action == "run":
            q.add_argument("argv", nargs="*", help="the program and its arguments, after --")
            q.add_argument("--command-line", help="a command line for --shell instead of argv")
            q.add_argument("--shell", help="shell for --command-line (default /bin/sh)")
            q.add_argument("--user", help="run as this user (default root)")
            q.add_argument("--timeout", type=int, help="seconds before it is killed (300)")
        q.set_defaults(handler=command_issue, action=action)
    q = _admin_parser(cs, "show", "a command's state, exit code, output and times")
    q.add_argument("id")
    q.add_argument("--device", help="for a policy's command id, which device")
    q.set_defaults(handler=command_show)
    q = _admin_parser(cs, "list", "commands, newest first")
    q.add_argument("--device", help="only this device (id or hostname)")
    q.add_argument("--state", help="only this state (queued, delivered, running, …)")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(handler=command_list)
    q = _admin_parser(cs, "cancel", "cancel a command (queued: never delivered)")
    q.add_argument("id")
    q.add_argument("--device", help="for a policy's command id, which device")
    q.set_defaults(handler=command_cancel)


# -- agent releases --------------------------------------------------------------------------
RELEASE_COLUMNS = [
    ("VERSION", "version"),
    ("SHA256", "sha256"),
    ("SIZE", "size"),
    ("UPLOADED", "createdAt"),
    ("BY", "createdBy"),
]


def release_push(args: argparse.Namespace) -> int:
    """Upload a wheel of jcstate as a release devices can be updated to."""
    with open(args.wheel, "rb") as f:
        data = f.read()
    answer = _client(args).call("POST", "/api/v1/releases", data=data)
    if args.output == "json":
        _print(args, answer)
    else:
        print(f"stored release {answer['version']}: {answer['size']} bytes")
        print(f"sha256 {answer['sha256']}")
    return 0


def release_list(args: argparse.Namespace) -> int:
    _print(args, _client(args).call("GET", "/api/v1/releases"), RELEASE_COLUMNS)
    return 0


def release_delete(args: argparse.Namespace) -> int:
    params = {"force": "true"} if args.force else {}
    _client(args).call("DELETE", f"/api/v1/releases/{args.version}", **params)
    print(f"deleted release {args.version}")
    return 0


def release_deploy(args: argparse.Namespace) -> int:
    """Queue one update command per chosen device; print each command's id."""
    import urllib.parse

    if bool(args.all) + bool(args.label) + bool(args.devices) != 1:
        raise JcstateError("choose the devices: --all, --label KEY=VALUE..., or device names")
    client = _client(args)
    if args.devices:
        refs = list(args.devices)
    else:
        wanted = dict(_pair(text) for text in args.label)
        refs = [
            d["id"]
            for d in client.call("GET", "/api/v1/devices")
            if d["status"] == "active"
            and all((d.get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
    if not refs:
        raise JcstateError("no active device matches")
    body: dict[str, Any] = {"version": args.version}
    if args.retry:
        body["retry"] = True
    queued = []
    for ref in refs:
        path = f"/api/v1/devices/{urllib.parse.quote(ref, safe='')}/commands/update"
        queued.append(client.call("POST", path, body))
    if args.output == "json":
        _print(args, queued)
        return 0
    for row in queued:
        print(row["id"])
    print(f"queued update to {args.version} for {len(queued)} device(s)", file=sys.stderr)
    return 0


def _register_releases(sub: Any) -> None:
    p = sub.add_parser("release", help="agent releases: push, list, delete, deploy")
    rs = p.add_subparsers(dest="release_command", metavar="ACTION")
    rs.required = True
    q = _admin_parser(rs, "push", "upload a wheel of jcstate as a release (administrator)")
    q.add_argument("wheel", help="e.g. dist/jcstate-0.2.0-py3-none-any.whl")
    q.set_defaults(handler=release_push)
    _admin_parser(rs, "list", "releases on the server").set_defaults(handler=release_list)
    q = _admin_parser(rs, "delete", "delete a release (administrator)", listing=False)
    q.add_argument("version")
    q.add_argument("--force", action="store_true", help="even with unfinished updates to it")
    q.set_defaults(handler=release_delete)
    q = _admin_parser(rs, "deploy", "queue an update to a release on many devices")
    q.add_argument("version")
    q.add_argument("devices", nargs="*", metavar="DEVICE", help="device ids or hostnames")
    q.add_argument("--all", action="store_true", help="every active device")
    q.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="active devices with it"
    )
    q.add_argument("--retry", action="store_true", help="also where the version is held")
    q.set_defaults(handler=release_deploy)


# -- argument parsing ------------------------------------------------------------------------
def _admin_parser(
    sub: Any, name: str, help_text: str, *, listing: bool = True
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--server", help="server URL (default: $JCSTATE_SERVER)")
    p.add_argument("--token", help="admin token (default: $JCSTATE_TOKEN)")
    p.add_argument("--ca-file", help="CA certificate for a private server certificate")
    if listing:
        p.add_argument("--output", choices=["text", "json"], default="text")
    return p


def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:  # argparse offers no public way to reach them
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="totp_command", metavar="ACTION")


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
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=run_server)
    ps = p.add_subparsers(dest="server_command", metavar="ACTION")
    mc = ps.add_parser("make-cert", help="create a self-signed CA and server certificate")
    mc.add_argument("--out", required=True, help="directory for ca.pem, server.pem, server-key.pem")
    mc.add_argument("--name", action="append", help="host name or IP (repeat; default localhost)")
    mc.set_defaults(handler=make_cert)

    p = _admin_parser(sub, "push", "upload a policy repo as a new revision")
    p.add_argument("repo", nargs="+", help="repo directory or files")
    p.add_argument("--dry-run", action="store_true", help="show per-device changes, store nothing")
    p.add_argument("-m", "--message", help="revision message")
    p.set_defaults(handler=push)

    p = _admin_parser(sub, "devices", "list devices")
    p.set_defaults(handler=devices)

    p = sub.add_parser("device", help="show or manage one device")
    ds = p.add_subparsers(dest="device_command", metavar="ACTION")
    ds.required = True
    q = _admin_parser(ds, "show", "show a device by id or hostname")
    q.add_argument("ref")
    q.set_defaults(handler=device_show)
    for action, text in (
        ("approve", "let a pending device receive work"),
        ("revoke", "refuse a device's credential from now on"),
    ):
        q = _admin_parser(ds, action, text)
        q.add_argument("ref")
        q.set_defaults(handler=device_action, action=action)
    q = _admin_parser(ds, "recovery-key", "show a device's escrowed FileVault recovery key")
    q.add_argument("ref")
    q.add_argument("--volume", help="the volume (LVGUUID) whose key to show")
    q.add_argument("--all", action="store_true", help="the key of every volume")
    q.set_defaults(handler=device_recovery_key)
    q = _admin_parser(ds, "labels", "replace a device's labels")
    q.add_argument("ref")
    q.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    q.set_defaults(handler=device_labels)

    p = sub.add_parser("token", help="admin API tokens")
    ts = p.add_subparsers(dest="token_command", metavar="ACTION")
    ts.required = True
    q = _admin_parser(ts, "create", "create a token (printed once)")
    q.add_argument("--role", required=True, choices=["read-only", "manager", "administrator"])
    q.add_argument("--name")
    q.set_defaults(handler=token_create)
    _admin_parser(ts, "list", "list tokens").set_defaults(handler=token_list)
    q = _admin_parser(ts, "revoke", "revoke a token")
    q.add_argument("id")
    q.set_defaults(handler=token_revoke)

    p = sub.add_parser("connect-key", help="enrollment connect keys")
    ks = p.add_subparsers(dest="key_command", metavar="ACTION")
    ks.required = True
    q = _admin_parser(ks, "create", "create a connect key")
    q.add_argument("--name")
    q.add_argument(
        "--require-approval",
        action="store_true",
        help="devices enrolled with it wait for `jcstate device approve`",
    )
    q.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label given to devices enrolled with this key",
    )
    q.set_defaults(handler=key_create)
    _admin_parser(ks, "list", "list connect keys").set_defaults(handler=key_list)
    q = _admin_parser(ks, "revoke", "revoke a connect key (stops new enrollments)")
    q.add_argument("id")
    q.set_defaults(handler=key_revoke)

    p = _admin_parser(sub, "audit", "show the audit log")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(handler=audit)

    # `totp` may already exist (local `totp new`); add `enroll` beside it
    totp = sub.choices.get("totp") or sub.add_parser("totp", help="TOTP secrets for SSH MFA")
    q = _admin_parser(
        _subparsers_of(totp), "enroll", "create a user's TOTP secret on the server", listing=False
    )
    q.add_argument("user")
    q.add_argument("--issuer", default="jcstate")
    q.set_defaults(handler=totp_enroll)

    _register_commands(sub)
    _register_releases(sub)

    p = sub.add_parser("password", help="passwords held by the server (password.secretRef)")
    pw = p.add_subparsers(dest="password_command", metavar="ACTION")
    pw.required = True
    q = _admin_parser(pw, "set", "store a password, read from stdin or prompted", listing=False)
    q.add_argument("ref")
    q.set_defaults(handler=password_set)
