"""``jcstate server install``: a hardened systemd unit for the server, and its system user.

The unit runs the server as a dedicated system user (declared in ``/etc/sysusers.d``, created by
``systemd-sysusers`` -- nothing here calls ``useradd``) in a sandbox: the whole file system
read-only (``ProtectSystem=strict``) but the data directory, no home directories, a private
``/tmp`` and ``/dev``, no new privileges, no capabilities (unless the port is below 1024), only
the address families and system calls a web server uses. The TLS key and the database URL are
handed over as systemd credentials (``LoadCredential=``): they stay root-only files in
``/etc/jcstate-server`` and appear neither in the unit nor in the process's arguments.

``MemoryDenyWriteExecute`` is left out on purpose: cffi callbacks (``cryptography``) and the
interpreter's own trampolines may need writable executable pages on some builds.

Files are written through a :class:`~jcstate.host.Host`, so ``--root DIR`` installs into a
system image (and tests write into a temporary directory); ``systemd-analyze verify`` checks
what it writes (``tests/server/test_server_install.py``).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from jcstate.host import Host

__all__ = ["SYSUSERS_PATH", "UNIT_NAME", "ServerInstall", "install", "sysusers_text", "unit_text"]

UNIT_NAME = "jcstate-server.service"
SYSUSERS_PATH = "/usr/lib/sysusers.d/jcstate-server.conf"
DEFAULT_DATA = "/var/lib/jcstate-server"


@dataclass(frozen=True)
class ServerInstall:
    """What the unit runs: ``jcstate server`` with these options, as ``user``."""

    listen: str = "0.0.0.0:8443"
    data_dir: str = DEFAULT_DATA
    user: str = "jcstate-server"
    tls_cert: str | None = None  # files on the host, loaded as credentials
    tls_key: str | None = None
    database_file: str | None = None  # a file holding the PostgreSQL URL (it may hold a password)
    trusted_proxies: tuple[str, ...] = ()
    metrics_token_file: str | None = None
    log_format: str = "json"
    python: str = sys.executable
    extra: tuple[str, ...] = field(default=())

    def credentials(self) -> dict[str, str]:
        """Credential name → file on the host (``LoadCredential=``)."""
        files = {
            "tls-cert": self.tls_cert,
            "tls-key": self.tls_key,
            "database-url": self.database_file,
            "metrics-token": self.metrics_token_file,
        }
        return {name: path for name, path in files.items() if path}

    def argv(self) -> list[str]:
        argv = [self.python, "-m", "jcstate", "server", "--data", self.data_dir]
        argv += ["--listen", self.listen, "--log-format", self.log_format]
        creds = self.credentials()
        # %d is the unit's credentials directory (systemd expands it in ExecStart=)
        if "tls-cert" in creds and "tls-key" in creds:
            argv += ["--tls-cert", "%d/tls-cert", "--tls-key", "%d/tls-key"]
        if "database-url" in creds:
            argv += ["--database-file", "%d/database-url"]
        if "metrics-token" in creds:
            argv += ["--metrics-token-file", "%d/metrics-token"]
        for cidr in self.trusted_proxies:
            argv += ["--trusted-proxy", cidr]
        return argv + list(self.extra)

    def port(self) -> int:
        try:
            return int(self.listen.rpartition(":")[2])
        except ValueError:
            return 0


def _exec_line(argv: list[str]) -> str:
    # shlex.quote would quote the "%d/..." specifiers too; they hold no shell metacharacters
    return " ".join(a if a.startswith("%d/") else shlex.quote(a) for a in argv)


def unit_text(plan: ServerInstall) -> str:
    credentials = "".join(
        f"LoadCredential={name}:{path}\n" for name, path in plan.credentials().items()
    )
    low_port = 0 < plan.port() < 1024
    capabilities = (
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"
        if low_port
        else "CapabilityBoundingSet=\n"
    )
    state_directory = ""
    if plan.data_dir.startswith("/var/lib/"):
        # systemd creates it, owned by the service's user, mode 0700
        state_directory = (
            f"StateDirectory={plan.data_dir[len('/var/lib/') :]}\nStateDirectoryMode=0700\n"
        )
    return f"""[Unit]
Description=jcstate server (declarative device management)
Wants=network-online.target
After=network-online.target postgresql.service

[Service]
Type=simple
User={plan.user}
Group={plan.user}
ExecStart={_exec_line(plan.argv())}
Restart=on-failure
RestartSec=2
# held long polls are answered or dropped within this; agents retry at once
TimeoutStopSec=15
LimitNOFILE=65536
UMask=0077
{state_directory}{credentials}
# sandbox: everything read-only but the data directory
ProtectSystem=strict
ReadWritePaths={plan.data_dir}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
{capabilities}ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources

[Install]
WantedBy=multi-user.target
"""


def sysusers_text(plan: ServerInstall) -> str:
    """The system user, for ``systemd-sysusers`` (no login shell, home = the data directory)."""
    return f'u {plan.user} - "jcstate server" {plan.data_dir} /usr/sbin/nologin\n'


def install(plan: ServerInstall, host: Host, *, enable: bool = True) -> list[str]:
    """Write the sysusers entry and the unit; with ``enable`` (only on a running system,
    ``--root /``) create the user and enable and start the unit. Returns what was done."""
    done = []
    host.write_file(SYSUSERS_PATH, sysusers_text(plan), mode=0o644, make_dirs=True)
    done.append(f"wrote {SYSUSERS_PATH}")
    unit_path = f"/etc/systemd/system/{UNIT_NAME}"
    host.write_file(unit_path, unit_text(plan), mode=0o644, make_dirs=True)
    done.append(f"wrote {unit_path}")
    if enable:
        if host.root == "/":
            steps = [
                ["systemd-sysusers", SYSUSERS_PATH],
                ["systemctl", "daemon-reload"],
                ["systemctl", "enable", "--now", UNIT_NAME],
            ]
        else:
            steps = [["systemctl", f"--root={host.root}", "enable", UNIT_NAME]]
        for argv in steps:
            host.run(argv)
            done.append("ran " + " ".join(argv))
    return done
