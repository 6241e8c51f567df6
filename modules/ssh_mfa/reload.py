"""Make the running sshd read its configuration again, keeping every open session.

SIGHUP makes sshd's listener re-execute itself with the new configuration; sessions are served
by their own processes and are not touched. With systemd that is ``systemctl reload``.

With ``--root DIR`` the sshd to signal is the one whose root is DIR. Its pid file holds its pid
*as seen inside its own PID namespace* (often 1), which names another process out here — maybe
this machine's init. So the pid is never used blindly: we look for the sshd process whose
namespace pid matches and whose root directory is DIR, and signal only that one.
"""

from __future__ import annotations

import logging

from jcstate.host import Host

__all__ = ["PID_FILES", "reload_sshd"]

log = logging.getLogger(__name__)

PID_FILES = ("/run/sshd.pid", "/var/run/sshd.pid")


def reload_sshd(host: Host) -> str:
    """Reload the sshd serving ``host``; returns what was done (for logs). Raises HostError."""
    if host.root == "/" and host.exists("/run/systemd/system"):
        unit = "ssh.service" if _debian_like(host) else "sshd.service"
        # try-: does nothing when the unit is not running, instead of failing
        host.run(["systemctl", "try-reload-or-restart", unit])
        return f"reloaded {unit}"
    pid = _pid_from_file(host)
    if pid is None:
        return "sshd is not running (no pid file): the new configuration applies when it starts"
    target = _local_pid(pid) if host.root == "/" else _outside_pid(host, pid)
    if target is None:
        return f"no running sshd with pid {pid} serves {host.root}: nothing to reload"
    host.run(["kill", "-HUP", str(target)])
    log.info("sent SIGHUP to sshd (pid %s) serving %s", target, host.root)
    return f"sent SIGHUP to sshd (pid {target})"


def _debian_like(host: Host) -> bool:
    release = host.os_release()
    return "debian" in {release.get("ID", ""), *release.get("ID_LIKE", "").split()}


def _pid_from_file(host: Host) -> int | None:
    for path in PID_FILES:
        text = host.read_text(path)
        if text is not None and text.strip().isdigit():
            return int(text.strip())
    return None


def _local_pid(pid: int) -> int | None:
    """``pid`` when it is an sshd process on this machine (a stale pid file names anything)."""
    comm = Host("/").read_text(f"/proc/{pid}/comm")
    return pid if comm is not None and comm.strip() == "sshd" else None


def _outside_pid(host: Host, ns_pid: int) -> int | None:
    """This machine's pid of the sshd rooted at ``host.root`` whose namespace pid is ``ns_pid``."""
    machine = Host("/")
    found = machine.run(["pgrep", "-x", "sshd"], check=False)
    root_id = _dir_id(machine, host.root)
    for word in found.stdout.split():
        status = machine.read_text(f"/proc/{word}/status") or ""
        nspids = next(
            (line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), []
        )
        if not nspids or nspids[-1] != str(ns_pid):
            continue
        if _dir_id(machine, f"/proc/{word}/root/") == root_id:
            return int(word)
    return None


def _dir_id(machine: Host, path: str) -> str | None:
    """device:inode of a directory, following links (``/proc/PID/root`` is a kernel link)."""
    result = machine.run(["stat", "-L", "-c", "%d:%i", path], check=False)
    return result.stdout.strip() if result.returncode == 0 else None
