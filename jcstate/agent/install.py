"""``jcstate agent install``: version.txt in the install directory and a systemd unit, enabled.

Files are written through a :class:`~jcstate.host.Host`, so ``--root DIR`` installs into a
system image (``systemctl --root`` then enables the unit there without a running systemd).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from jcstate import __version__
from jcstate.host import Host

__all__ = ["UNIT_NAME", "InstallPlan", "install", "unit_text"]

UNIT_NAME = "jcstate-agent.service"


@dataclass(frozen=True)
class InstallPlan:
    server: str
    connect_key: str
    ca_file: str | None = None
    state_dir: str = "/var/lib/jcstate"
    log_file: str = "/var/log/jcstate.log"
    install_dir: str = "/opt/jcstate"
    python: str = sys.executable
    release_key: str | None = None  # pinned in state_dir at install (signed updates)

    def argv(self) -> list[str]:
        """The unit's ExecStart (bench/agent_rss.py measures exactly this process)."""
        # the agent alone: a smaller resident process than `jcstate agent`
        return [self.python, "-m", "jcstate.agent", *self.options()]

    def environment(self) -> dict[str, str]:
        """The unit's Environment: the release a self-update switched to comes first."""
        return {"PYTHONPATH": self.install_dir + "/current"}

    @property
    def connect_key_file(self) -> str:
        """Where the connect key is written (0600): the unit names the file, never the key."""
        return f"{self.state_dir}/connect-key"

    def options(self) -> list[str]:
        """The agent's options, as ``jcstate agent`` and ``python -m jcstate.agent`` take them."""
        argv = [
            "--server",
            self.server,
            "--connect-key-file",
            self.connect_key_file,
            "--state-dir",
            self.state_dir,
            "--log-file",
            self.log_file,
            "--install-dir",
            self.install_dir,
        ]
        if self.ca_file:
            argv += ["--ca-file", self.ca_file]
        return argv


def unit_text(plan: InstallPlan) -> str:
    # the connect key only admits a device, but the unit is world-readable and ExecStart is
    # the process's argv (ps): the unit names the 0600 file the key is in (install writes it)
    exec_start = " ".join(shlex.quote(a) for a in plan.argv())
    environment = "\n".join(
        "Environment=" + shlex.quote(f"{k}={v}") for k, v in plan.environment().items()
    )
    return f"""[Unit]
Description=jcstate agent (declarative device management)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
# a self-update installs releases beside each other and switches INSTALL_DIR/current
# (docs/updates.md): the agent runs whichever release that link points to
{environment}
ExecStart={exec_start}
Restart=always
RestartSec=5
# a killed agent loses nothing: reports wait in {plan.state_dir}/outbox until acknowledged
KillMode=process

[Install]
WantedBy=multi-user.target
"""


def install(plan: InstallPlan, host: Host, *, enable: bool = True) -> list[str]:
    """Write version.txt and the unit; enable and start it. Returns what was done."""
    done = []
    host.write_file(f"{plan.install_dir}/version.txt", __version__ + "\n", make_dirs=True)
    done.append(f"wrote {plan.install_dir}/version.txt ({__version__})")
    if plan.release_key:
        from jcstate.agent import release_key

        state_dir = os.path.join(host.root, plan.state_dir.lstrip("/"))
        release_key.pin(state_dir, plan.release_key)
        done.append(f"pinned the release key in {plan.state_dir}/{release_key.PINNED_FILE}")
    host.write_file(plan.connect_key_file, plan.connect_key + "\n", mode=0o600, make_dirs=True)
    done.append(f"wrote {plan.connect_key_file} (0600)")
    unit_path = f"/etc/systemd/system/{UNIT_NAME}"
    host.write_file(unit_path, unit_text(plan), mode=0o644, make_dirs=True)
    done.append(f"wrote {unit_path}")
    if enable:
        argv: Sequence[str]
        if host.root == "/":
            argv = ["systemctl", "enable", "--now", UNIT_NAME]
            host.run(["systemctl", "daemon-reload"])
        else:
            argv = ["systemctl", f"--root={host.root}", "enable", UNIT_NAME]
        host.run(argv)
        done.append("ran " + " ".join(argv))
    return done
