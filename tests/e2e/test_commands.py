"""Security commands end to end, in test hosts, never on the machine running the tests.

``loginctl``, ``systemctl``, ``wall``, ``notify-send``, ``cryptsetup``, ``lsblk``, ``wipefs`` and
``blkdiscard`` are replaced inside the host by recording stand-ins in ``/usr/local/sbin``, which
comes first on jcstate's PATH: a restart, power-off or wipe is *recorded*, never done. Policies
go through the real CLI (``jcstate apply --root ROOT``), or, where the host's own /proc, /sys
and /dev matter, through the project's code run inside the host (``host.jcstate``).

One test erases a real LUKS2 volume on a loop device inside a test host (cryptsetup from an
image that has it); there ``lsblk`` is a wrapper that only ever lists that loop device.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testhost as th
from harness import apply_policy, jcstate_argv, plan_policy

JOURNAL = "/var/lib/jcstate/journal"
LOG = "/var/log/standins.log"
STANDINS = (
    "loginctl",
    "systemctl",
    "wall",
    "notify-send",
    "cryptsetup",
    "lsblk",
    "wipefs",
    "blkdiscard",
    "shutdown",
    "reboot",
    "poweroff",
)

# Each stand-in appends "name [arg] [arg]…" to the log; wall also keeps its stdin. loginctl
# answers from /etc/standin/*; lsblk from /etc/standin/lsblk.json. A stand-in named in
# /etc/standin/hang sleeps (once) so a test can kill jcstate in the middle of it.
STANDIN = r"""#!/bin/sh
name=$(basename "$0")
{ printf '%s' "$name"; for a in "$@"; do printf ' [%s]' "$a"; done; echo; } >> /var/log/standins.log
if [ "$name" = wall ]; then cat > /var/log/wall.stdin; fi
if grep -qx "$name" /etc/standin/hang 2>/dev/null && [ ! -e /run/standin-hung ]; then
  touch /run/standin-hung; echo $$ > /run/standin-hang.pid; exec sleep 60
fi
case "$name $1" in
  "loginctl list-sessions") cat /etc/standin/sessions 2>/dev/null ;;
  "loginctl show-session") cat /etc/standin/show 2>/dev/null ;;
  "lsblk -J") cat /etc/standin/lsblk.json ;;
esac
exit 0
"""


def policy(*commands: dict[str, Any], name: str = "commands-e2e") -> str:
    return json.dumps(
        {
            "apiVersion": "jcstate/v1",
            "kind": "Policy",
            "metadata": {"name": name},
            "spec": {"commands": list(commands)},
        }
    )


def install_standins(host: th.TestHost, names: tuple[str, ...] = STANDINS) -> None:
    host.path("/etc/standin").mkdir(exist_ok=True)
    log = host.path(LOG)
    log.touch()
    log.chmod(0o666)  # notify-send's stand-in runs as the desktop user
    for name in names:
        path = host.path(f"/usr/local/sbin/{name}")
        path.write_text(STANDIN)
        path.chmod(0o755)


def recorded(host: th.TestHost) -> list[str]:
    path = host.path(LOG)
    return path.read_text().splitlines() if path.exists() else []


def journal(host: th.TestHost, command_id: str) -> dict[str, Any]:
    return json.loads(host.path(f"{JOURNAL}/{command_id}.json").read_text())


def sessions(host: th.TestHost, *, graphical: bool) -> None:
    kind = "x11" if graphical else "tty"
    host.run(["useradd", "--uid", "1000", "alice"])  # inside the host only
    host.path("/etc/standin/sessions").write_text("      2 1000 alice seat0 tty2\n")
    host.path("/etc/standin/show").write_text(
        f"Id=2\nName=alice\nUser=1000\nType={kind}\nClass=user\n"
    )


def set_boot_time(host: th.TestHost, btime: int) -> None:
    # Seen only from outside (--root): inside the host, the real /proc is mounted over it.
    host.path("/proc/stat").write_text(f"cpu  1 2 3 4\nbtime {btime}\n")


# Policy erases need selector.devices with the device id, and standalone apply has no device
# id: erase goes through the runner the agent uses for queued commands, the same code path.
_RUN = (
    "import json, sys\n"
    "from jcstate.host import Host\n"
    "from jcstate.modules.commands.execution import CommandRunner\n"
    "runner = CommandRunner(Host(sys.argv[1]))\n"
    "if sys.argv[2] == 'recover':\n"
    "    done = runner.recover()\n"
    "else:\n"
    "    done = [runner.run(json.loads(sys.argv[2]))]\n"
    "print(json.dumps([r.to_dict() for r in done]))\n"
)


def runner_argv(root: str, command: dict[str, Any] | str) -> list[str]:
    """Run (or, with "recover", recover) through CommandRunner, as the agent does."""
    arg = command if isinstance(command, str) else json.dumps(command)
    return [sys.executable, "-c", _RUN, root, arg]


def run_command(host: th.TestHost, command: dict[str, Any] | str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        runner_argv(str(host.root), command),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- lock ---------------------------------------------------------------------------------------
def test_lock_without_a_desktop_says_so(testhost: th.TestHost) -> None:
    install_standins(testhost)
    sessions(testhost, graphical=False)
    doc = policy({"id": "incident-42-lock", "action": "lock"})
    shown = plan_policy(testhost, doc)
    assert shown.returncode == 2
    [change] = shown.report["changes"]
    assert (change["kind"], change["name"], change["action"]) == (
        "commands",
        "incident-42-lock",
        "run",
    )
    out = apply_policy(testhost, doc)
    assert out.returncode == 1, out.stdout
    [result] = out.report["results"]
    assert result["status"] == "failed"
    assert "no graphical session to lock" in result["message"]
    assert not any(line.startswith("loginctl [lock-sessions]") for line in recorded(testhost))
    assert journal(testhost, "incident-42-lock")["result"]["status"] == "failed"
    assert plan_policy(testhost, doc).returncode == 0  # at most once, even when it failed


def test_lock_with_a_desktop_locks_it_once(testhost: th.TestHost) -> None:
    install_standins(testhost)
    sessions(testhost, graphical=True)
    doc = policy({"id": "incident-42-lock", "action": "lock"})
    out = apply_policy(testhost, doc)
    assert out.returncode == 0, out.stdout + out.stderr
    assert recorded(testhost).count("loginctl [lock-sessions]") == 1
    again = apply_policy(testhost, doc)
    assert again.returncode == 0 and again.report["results"] == []
    assert recorded(testhost).count("loginctl [lock-sessions]") == 1


def test_plan_text_shows_the_command(testhost: th.TestHost) -> None:
    install_standins(testhost)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(policy({"id": "incident-42-lock", "action": "lock"}))
        f.flush()
        proc = subprocess.run(
            [*jcstate_argv(), "plan", "--root", str(testhost.root), f.name],
            capture_output=True,
            text=True,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert "> command incident-42-lock" in proc.stdout
    assert "action: lock" in proc.stdout


# -- restart / shutdown -------------------------------------------------------------------------
def test_restart_warns_then_reboots_and_is_done_after_the_boot_time_changes(
    testhost: th.TestHost,
) -> None:
    install_standins(testhost)
    sessions(testhost, graphical=True)
    set_boot_time(testhost, 1_700_000_000)
    doc = policy({"id": "reboot-1", "action": "restart", "delay": 0, "message": "Patch day"})
    out = apply_policy(testhost, doc)
    assert out.returncode == 0, out.stdout + out.stderr
    log = recorded(testhost)
    assert log[0] == "wall"
    assert "Patch day" in testhost.path("/var/log/wall.stdin").read_text()
    assert any(line.startswith("notify-send [--urgency=critical]") for line in log)
    assert log[-1] == "systemctl [reboot]"
    assert journal(testhost, "reboot-1")["state"] == "awaiting-reboot"
    waiting = plan_policy(testhost, doc)
    assert waiting.returncode == 0 and waiting.report["changes"] == []
    assert any("waiting for the device to restart" in w for w in waiting.report["warnings"])
    # The device comes back: new boot time. The next runner settles the restart as done.
    set_boot_time(testhost, 1_700_000_900)
    assert plan_policy(testhost, doc).report["warnings"] == []
    apply_policy(
        testhost,
        policy({"id": "after-boot", "action": "run", "run": {"argv": ["true"]}}, name="next"),
    )
    record = journal(testhost, "reboot-1")
    assert (record["state"], record["result"]["status"]) == ("finished", "succeeded")
    assert recorded(testhost).count("systemctl [reboot]") == 1


def test_shutdown_powers_off_after_wall(testhost: th.TestHost) -> None:
    install_standins(testhost)
    out = apply_policy(testhost, policy({"id": "off-1", "action": "shutdown", "delay": 1}))
    assert out.returncode == 0, out.stdout + out.stderr
    log = recorded(testhost)
    assert log[0] == "wall" and log[-1] == "systemctl [poweroff]"
    assert out.report["results"][0]["duration"] >= 1  # the delay was waited
    assert journal(testhost, "off-1")["result"]["status"] == "succeeded"


# -- erase (recorded) ----------------------------------------------------------------------------
LSBLK_LUKS = {
    "blockdevices": [{"name": "vdb", "type": "disk", "fstype": "crypto_LUKS", "path": "/dev/vdb"}]
}


def test_erase_destroys_luks_keys_then_powers_off(testhost: th.TestHost) -> None:
    install_standins(testhost)
    testhost.path("/etc/standin/lsblk.json").write_text(json.dumps(LSBLK_LUKS))
    command = {"id": "erase-1", "action": "erase", "confirm": "erase"}
    [result] = run_command(testhost, command)
    assert result["status"] == "succeeded", result
    assert recorded(testhost) == [
        "lsblk [-J] [-o] [NAME,TYPE,FSTYPE,PATH]",
        "cryptsetup [erase] [--batch-mode] [/dev/vdb]",
        "systemctl [poweroff]",
    ]
    [again] = run_command(testhost, command)  # a duplicate delivery runs nothing
    assert again == result and len(recorded(testhost)) == 3


# -- run ---------------------------------------------------------------------------------------
def test_run_as_a_user_inside_the_host(testhost: th.TestHost) -> None:
    testhost.run(["useradd", "--create-home", "alice"])  # inside the host only
    doc = policy(
        {
            "id": "whoami-1",
            "action": "run",
            "run": {"command": "id -un; echo $HOME; echo oops >&2", "user": "alice"},
        }
    )
    out = apply_policy(testhost, doc)
    assert out.returncode == 0, out.stdout + out.stderr
    result = journal(testhost, "whoami-1")["result"]
    assert result["stdout"] == "alice\n/home/alice\n"
    assert result["stderr"] == "oops\n"
    assert result["exitCode"] == 0 and result["duration"] > 0
    assert not result["truncated"]


def test_run_timeout_kills_the_group_and_caps_output(testhost: th.TestHost) -> None:
    doc = policy(
        {
            "id": "hang-1",
            "action": "run",
            "run": {
                "command": "seq 1 100000; sleep 300 & echo $! > /tmp/child.pid; wait",
                "timeout": 2,
            },
        }
    )
    started = time.monotonic()
    out = apply_policy(testhost, doc)
    assert out.returncode == 1
    assert time.monotonic() - started < 30
    result = journal(testhost, "hang-1")["result"]
    assert (result["exitCode"], result["timedOut"], result["truncated"]) == (124, True, True)
    assert len(result["stdout"].encode()) == 64 * 1024
    assert result["stdout"].endswith("99999\n100000\n")
    child = int(testhost.path("/tmp/child.pid").read_text())  # our pid namespace (chroot)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_run_inside_the_host_with_the_projects_own_code(testhost: th.TestHost) -> None:
    testhost.install_jcstate()
    testhost.path("/root/policy.yaml").write_text(
        policy({"id": "inside-1", "action": "run", "run": {"argv": ["hostname"]}})
    )
    out = testhost.jcstate("apply", "/root/policy.yaml", "--output", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = journal(testhost, "inside-1")["result"]
    assert result["stdout"].strip() == testhost.hostname
    again = testhost.jcstate("plan", "/root/policy.yaml", "--output", "json")
    assert again.returncode == 0, again.stdout


# -- crashes -----------------------------------------------------------------------------------
def _apply_in_background(host: th.TestHost, doc: str, tmp: Path) -> subprocess.Popen[str]:
    path = tmp / "policy.json"
    path.write_text(doc)
    return subprocess.Popen(
        [*jcstate_argv(), "apply", "--root", str(host.root), str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "jcstate ended before reaching the command"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="jcstate-cmd-") as tmp:
        yield Path(tmp)


def test_sigkill_mid_run_reports_interrupted_and_never_reruns(
    testhost: th.TestHost, workdir: Path
) -> None:
    doc = policy(
        {
            "id": "slow-1",
            "action": "run",
            "run": {"command": "echo ran >> /root/count; echo $$ > /root/pid; exec sleep 60"},
        }
    )
    proc = _apply_in_background(testhost, doc, workdir)
    _wait_for(testhost.path("/root/pid"), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    os.kill(int(testhost.path("/root/pid").read_text()), signal.SIGKILL)  # our own orphan
    assert journal(testhost, "slow-1")["state"] == "started"
    shown = plan_policy(testhost, doc)
    assert shown.returncode == 0 and shown.report["changes"] == []
    assert any("interrupted earlier" in w for w in shown.report["warnings"])
    apply_policy(testhost, doc)
    assert testhost.path("/root/count").read_text() == "ran\n"


def test_sigkill_mid_erase_resumes_until_done(testhost: th.TestHost) -> None:
    install_standins(testhost)
    testhost.path("/etc/standin/lsblk.json").write_text(json.dumps(LSBLK_LUKS))
    testhost.path("/etc/standin/hang").write_text("cryptsetup\n")
    command = {"id": "erase-2", "action": "erase", "confirm": "erase"}
    proc = subprocess.Popen(
        runner_argv(str(testhost.root), command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _wait_for(testhost.path("/run/standin-hang.pid"), proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    os.kill(int(testhost.path("/run/standin-hang.pid").read_text()), signal.SIGKILL)
    assert "systemctl [poweroff]" not in recorded(testhost)
    assert journal(testhost, "erase-2")["state"] == "started"
    [resumed] = run_command(testhost, "recover")  # the agent's start-up
    assert resumed["status"] == "succeeded", resumed
    log = recorded(testhost)
    assert log.count("cryptsetup [erase] [--batch-mode] [/dev/vdb]") == 2
    assert log.count("systemctl [poweroff]") == 1
    record = journal(testhost, "erase-2")
    assert (record["state"], record["attempts"]) == ("finished", 2)
    assert run_command(testhost, "recover") == []  # done: nothing more to resume


# -- erase for real: LUKS2 on a loop device --------------------------------------------------------
@pytest.fixture
def loop_device(workdir: Path) -> Iterator[str]:
    """A 32 MiB loop device backed by a file in a temp dir; always detached afterwards."""
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices on this kernel (/dev/loop-control missing)")
    backing = workdir / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    proc = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"losetup not permitted here: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)


@pytest.mark.testhost
def test_erase_destroys_the_key_slots_of_a_real_luks_volume(
    testhost_image: Path, loop_device: str
) -> None:
    image = th.ensure_image((*th.IMAGE_PACKAGES, "cryptsetup-bin"))
    with th.running_host("th-luks-erase", image=image) as host:
        host.run(["mount", "-t", "sysfs", "sysfs", "/sys"])  # lsblk needs it (host's ns only)
        host.path("/root/key").write_bytes(os.urandom(64))
        host.run(
            [
                "cryptsetup",
                "luksFormat",
                "--batch-mode",
                "--type",
                "luks2",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                "/root/key",
                loop_device,
            ]
        )
        before = host.run(["cryptsetup", "luksDump", loop_device]).stdout
        assert re.search(r"^\s+0: luks2", before, re.M), before
        # lsblk, inside this host, can only ever show the loop device; power-off is recorded.
        # What udevd would have recorded (this machine runs no udevd; lsblk reads FSTYPE there).
        rdev = os.stat(loop_device).st_rdev
        host.path("/run/udev/data").mkdir(parents=True, exist_ok=True)
        host.path(f"/run/udev/data/b{os.major(rdev)}:{os.minor(rdev)}").write_text(
            "E:ID_FS_TYPE=crypto_LUKS\nE:ID_FS_USAGE=crypto\n"
        )
        lsblk = host.path("/usr/local/sbin/lsblk")
        lsblk.write_text(f'#!/bin/sh\nexec /bin/lsblk "$@" {loop_device}\n')
        lsblk.chmod(0o755)
        install_standins(host, ("systemctl", "wall"))
        listed = json.loads(host.run(["lsblk", "-J", "-o", "NAME,TYPE,FSTYPE,PATH"]).stdout)
        assert [d["path"] for d in listed["blockdevices"]] == [loop_device]
        assert listed["blockdevices"][0]["fstype"] == "crypto_LUKS"
        host.install_jcstate()  # the agent's code, run inside the host on its own /dev
        out = host.run(
            runner_argv("/", {"id": "erase-real", "action": "erase", "confirm": "erase"}),
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)[0]["status"] == "succeeded", out.stdout
        after = host.run(["cryptsetup", "luksDump", loop_device]).stdout
        assert not re.search(r"^\s+\d+: luks2", after, re.M), after
        opened = host.run(
            ["cryptsetup", "open", "--test-passphrase", "--key-file", "/root/key", loop_device],
            check=False,
        )
        assert opened.returncode != 0
        assert recorded(host) == ["systemctl [poweroff]"]
        record = json.loads(host.path(f"{JOURNAL}/erase-real.json").read_text())
        assert record["result"]["message"].startswith(f"LUKS key slots destroyed on {loop_device}")
