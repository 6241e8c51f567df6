"""Smoke test of the test-host machinery itself: isolation, testinfra, sshd, clean-up."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import testhost as th


def _account_name() -> str:
    # Unique per run so that a hit on the machine running the tests cannot be a leftover.
    return "jcsmoke" + secrets.token_hex(3)


def test_user_created_in_host_exists_only_there(testhost: th.TestHost, testinfra_host) -> None:
    import testinfra

    name = _account_name()
    subprocess.run(
        ["useradd", "--root", str(testhost.root), "--create-home", "--uid", "1777", name],
        check=True,
        capture_output=True,
    )

    user = testinfra_host.user(name)
    assert user.exists
    assert user.uid == 1777
    assert user.home == f"/home/{name}"
    assert testinfra_host.file(f"/home/{name}").is_directory
    # Seen from inside the host's namespaces too, not only through the chroot.
    assert testhost.run(["id", "-u", name]).stdout.strip() == "1777"
    # And not on the machine running the tests.
    assert not testinfra.get_host("local://").user(name).exists
    assert name not in Path("/etc/passwd").read_text()


def test_host_has_its_own_hostname_pid_namespace_and_mounts(testhost: th.TestHost) -> None:
    assert testhost.run(["hostname"]).stdout.strip() == testhost.hostname
    ps = testhost.run(["ps", "-eo", "pid,comm", "--no-headers"]).stdout.split("\n")
    pids = sorted(int(line.split()[0]) for line in ps if line.strip())
    assert pids[0] == 1 and len(pids) < 10  # only the init and ps itself, not the machine's
    # /proc and /dev are mounted inside the host's namespace only.
    assert testhost.run(["test", "-e", "/proc/self/status"]).returncode == 0
    assert not testhost.path("/proc/self").exists()
    assert th.mounts_under(testhost.root) == ([str(testhost.root)] if testhost.overlay else [])


def test_processes_lists_what_runs_inside_and_outlives_its_parent(testhost: th.TestHost) -> None:
    import os
    import signal
    import time

    assert testhost.processes() == {}  # only the init runs
    # A child that outlives its parent: adopted by the host's init, still listed.
    testhost.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 &"])
    found = testhost.processes()
    assert list(found.values()) == ["sleep 30"]
    (pid,) = found
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == testhost.pid  # its parent: the init
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while testhost.processes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert testhost.processes() == {}


def test_chroot_url_form() -> None:
    """Documents why testinfra_host does not use get_host("chroot://" + root)."""
    from testinfra.backend import parse_hostspec

    assert parse_hostspec("chroot:///srv/img")[0] == ""  # the path is lost
    assert parse_hostspec("/srv/img")[0] == "/srv/img"


def test_sshd_password_login_with_paramiko(testhost: th.TestHost) -> None:
    paramiko = pytest.importorskip("paramiko")
    password = secrets.token_urlsafe(12)
    testhost.set_password("root", password)
    port = testhost.start_sshd(options=["PermitRootLogin=yes", "PasswordAuthentication=yes"])

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=port,
            username="root",
            password=password,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        _, stdout, _ = client.exec_command("hostname; id -u")
        assert stdout.read().decode().split() == [testhost.hostname, "0"]
    finally:
        client.close()

    wrong = paramiko.SSHClient()
    wrong.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        wrong.connect(
            "127.0.0.1",
            port=port,
            username="root",
            password=password + "x",
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
    wrong.close()


def test_project_code_runs_inside_host(testhost: th.TestHost) -> None:
    testhost.install_jcstate()
    result = testhost.jcstate("--version", check=True)
    assert result.stdout.strip().startswith("jcstate ")
    # It runs with the host's own /etc: its os-release is the image's Debian.
    probe = testhost.run(
        [
            sys.executable,
            "-c",
            "import socket, jcstate; print(socket.gethostname(), jcstate.__file__)",
        ]
    )
    hostname, path = probe.stdout.split()
    assert hostname == testhost.hostname and path.endswith("jcstate/__init__.py")
    # The bind mounts are read-only.
    assert testhost.run(["touch", sys.prefix + "/x"], check=False).returncode != 0


def test_stop_removes_processes_mounts_and_files(testhost_image: Path) -> None:
    host = th.TestHost("th-stop", image=testhost_image).start()
    host.start_sshd()
    host.install_jcstate()
    pid, workdir, port = host.pid, host.workdir, host.sshd_port
    assert pid is not None and workdir is not None and port is not None
    host.stop()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not workdir.exists()
    assert th.mounts_under(workdir) == []
    with pytest.raises(ConnectionRefusedError):  # sshd died with the namespace
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    host.stop()  # a second stop is harmless
