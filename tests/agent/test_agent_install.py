"""``jcstate agent install`` writes version.txt and a systemd unit (into an image root here)."""

from __future__ import annotations

import subprocess
import sys

from jcstate import __version__
from jcstate.agent.install import InstallPlan, install, unit_text
from jcstate.host import Host


def test_install_writes_version_and_unit_under_the_root(tmp_path):
    plan = InstallPlan(
        server="https://jcstate.example:8443", connect_key="jck_abc", ca_file="/etc/jcstate/ca.pem"
    )
    done = install(plan, Host(root=str(tmp_path)), enable=False)
    assert (tmp_path / "opt/jcstate/version.txt").read_text() == __version__ + "\n"
    unit = (tmp_path / "etc/systemd/system/jcstate-agent.service").read_text()
    # the unit (0644) and the agent's argv (ps) name the key's file, never the key
    assert "jck_abc" not in unit
    assert "--connect-key-file /var/lib/jcstate/connect-key" in unit
    assert "--ca-file /etc/jcstate/ca.pem" in unit
    key_file = tmp_path / "var/lib/jcstate/connect-key"
    assert key_file.read_text() == "jck_abc\n" and key_file.stat().st_mode & 0o077 == 0
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    assert len(done) == 3


def test_unit_quotes_arguments():
    plan = InstallPlan(server="http://127.0.0.1:8443", connect_key="k", state_dir="/var/lib/my dir")
    assert "'/var/lib/my dir'" in unit_text(plan)


def test_cli_install_no_enable(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jcstate",
            "agent",
            "install",
            "--server",
            "http://127.0.0.1:1",
            "--connect-key",
            "k",
            "--root",
            str(tmp_path),
            "--no-enable",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "etc/systemd/system/jcstate-agent.service").exists()


def test_the_unit_runs_exactly_the_agent_the_bench_measures():
    """bench/agent_rss.py launches ``plan.argv()`` with ``plan.environment()``: the unit's
    ExecStart and Environment must be exactly those."""
    plan = InstallPlan(
        server="https://jcstate.example:8443",
        connect_key="jck_abc",
        ca_file="/etc/jcstate/ca.pem",
        python="/opt/venv/bin/python3",
    )
    unit = unit_text(plan).splitlines()
    assert plan.argv() == ["/opt/venv/bin/python3", "-m", "jcstate.agent", *plan.options()]
    assert "ExecStart=" + " ".join(plan.argv()) in unit
    assert (
        "ExecStart=/opt/venv/bin/python3 -m jcstate.agent --server https://jcstate.example:8443"
        " --connect-key-file /var/lib/jcstate/connect-key --state-dir /var/lib/jcstate"
        " --log-file /var/log/jcstate.log"
        " --install-dir /opt/jcstate --ca-file /etc/jcstate/ca.pem"
    ) in unit
    assert plan.environment() == {"PYTHONPATH": "/opt/jcstate/current"}
    assert "Environment=PYTHONPATH=/opt/jcstate/current" in unit
    assert sum(line.startswith(("ExecStart=", "Environment=")) for line in unit) == 2
