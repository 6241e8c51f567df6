"""``jcstate server install --root DIR`` writes a hardened unit that systemd accepts, beside the
agent's (``jcstate agent install``); nothing is enabled or started on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt: systemd)"
)

HARDENING = [
    "User=jcstate-server",
    "ProtectSystem=strict",
    "ReadWritePaths=/var/lib/jcstate-server",
    "NoNewPrivileges=yes",
    "PrivateTmp=yes",
    "ProtectHome=yes",
    "PrivateDevices=yes",
    "CapabilityBoundingSet=\n",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
]


def jcstate(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "jcstate", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify; it exits 0 on mere warnings, so its output must be empty too."""
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )


def test_both_units_pass_systemd_analyze_verify(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    secrets = tmp_path / "etc-jcstate-server"
    secrets.mkdir()
    for name in ("server.pem", "server-key.pem", "database-url"):
        (secrets / name).write_text("x\n")
    out = jcstate(
        "server",
        "install",
        "--root",
        str(root),
        "--no-enable",
        "--listen",
        "127.0.0.1:8443",
        "--tls-cert",
        str(secrets / "server.pem"),
        "--tls-key",
        str(secrets / "server-key.pem"),
        "--database-file",
        str(secrets / "database-url"),
        "--trusted-proxy",
        "127.0.0.1/32",
    )
    jcstate(
        "agent",
        "install",
        "--root",
        str(root),
        "--no-enable",
        "--server",
        "https://jcstate.example:8443",
        "--connect-key",
        "k" * 20,
    )
    assert "ran " not in out  # --no-enable: nothing was run
    units = root / "etc/systemd/system"
    server = units / "jcstate-server.service"
    agent = units / "jcstate-agent.service"
    text = server.read_text()
    for line in HARDENING:
        assert line in text, line
    # secrets reach the process as credentials, never as arguments in the unit
    assert f"LoadCredential=tls-key:{secrets / 'server-key.pem'}" in text
    assert "--tls-key %d/tls-key" in text and "--database-file %d/database-url" in text
    assert "--trusted-proxy 127.0.0.1/32" in text
    assert "AmbientCapabilities" not in text  # port 8443 needs no capability
    sysusers = (root / "usr/lib/sysusers.d/jcstate-server.conf").read_text()
    assert sysusers.startswith("u jcstate-server - ")
    assert oct(server.stat().st_mode & 0o777) == "0o644"

    checked = verify(server, agent)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr
    )
    # the check can fail: a unit with a typo is complained about
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    assert "stricter" in verify(broken).stderr


def test_a_low_port_gets_only_the_bind_capability_and_the_exposure_is_low(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    cert = tmp_path / "cert.pem"
    cert.write_text("x\n")
    jcstate(
        "server",
        "install",
        "--root",
        str(root),
        "--no-enable",
        "--listen",
        "0.0.0.0:443",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(cert),
    )
    unit = root / "etc/systemd/system/jcstate-server.service"
    text = unit.read_text()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE\n" in text
    checked = verify(unit)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip()
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )
    line = [x for x in security.stdout.splitlines() if "Overall exposure level" in x]
    assert line, security.stdout + security.stderr
    exposure = float(line[0].split(":")[1].split()[0])
    assert exposure <= 2.0, line[0]  # systemd's scale: 0 (sealed) … 10 (exposed)


def test_plain_http_off_loopback_is_refused(tmp_path: Path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jcstate",
            "server",
            "install",
            "--root",
            str(tmp_path),
            "--no-enable",
            "--listen",
            "0.0.0.0:8443",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "without --tls-cert" in done.stderr
    assert not (tmp_path / "etc").exists()
