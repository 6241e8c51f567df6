"""The agent updates itself: releases side by side, a switched link, a restart, retries, holds.

A real wheel of this repository with a bumped version (tests/server/wheels.py), installed with
pip into a temporary install directory only. The first tests drive the updater through the
command runner and journal (a stand-in download, a fake clock); the last runs the real agent
as a process against a live server on 127.0.0.1 and lets it re-execute itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from recording_actions import RecordingActions, prepare_root
from wheels import build_wheel, minimal_files, source_files

from jcstate import __version__
from jcstate.agent import release_key
from jcstate.agent.update import Updater
from jcstate.errors import ServerError
from jcstate.host import Host
from jcstate.modules.commands.execution import CommandRunner
from jcstate.modules.commands.journal import Journal

NEW = __version__ + ".post1"  # the release built from this repository
BROKEN = __version__ + ".post2"  # installs, but its agent cannot start
TAMPERED = __version__ + ".post3"
FORGED = __version__ + ".post4"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("wheels")
    return build_wheel(out, NEW, source_files(NEW)).read_bytes()


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("broken")
    return build_wheel(out, BROKEN, minimal_files(BROKEN)).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ReleaseKey:
    """An offline release key pair, as ``jcstate release keygen`` makes one."""

    def __init__(self) -> None:
        self.private_text, self.public_text = release_key.keygen()
        self.secret = release_key.load_private(self.private_text)

    def sign(self, version: str, data_or_digest: bytes | str) -> str:
        digest = data_or_digest if isinstance(data_or_digest, str) else sha(data_or_digest)
        return release_key.sign(self.secret, version, digest)


KEY = ReleaseKey()  # the key the devices of these tests pin


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """An updater inside a command runner, with a stand-in download and a fake clock."""

    def __init__(self, tmp_path: Path, blobs: dict[str, bytes]):
        self.opt = tmp_path / "opt"
        self.blobs = blobs
        self.fetched: list[str] = []
        self.restarts = 0
        self.clock = Clock()
        self.root = prepare_root(str(tmp_path / "root"))
        self.state = str(tmp_path / "state")
        release_key.pin(self.state, KEY.public_text)
        self.runner = self.new_runner()

    def fetch(self, digest: str) -> bytes:
        self.fetched.append(digest)
        if digest not in self.blobs:
            raise ServerError("GET /api/v1/device/releases/…: HTTP 404: no release")
        return self.blobs[digest]

    def restart(self) -> None:
        self.restarts += 1

    def new_runner(self) -> CommandRunner:
        """What a (re)started agent builds."""
        self.updater = Updater(
            str(self.opt),
            self.state,
            self.fetch,
            retry_delays=(10.0, 20.0),
            clock=self.clock,
            restart=self.restart,
        )
        host = Host(root=self.root)
        return CommandRunner(host, Journal(host), actions=RecordingActions(), updater=self.updater)

    def update(
        self,
        cid: str,
        version: str,
        digest: str,
        retry: bool = False,
        signature: str | None = "sign",
    ) -> Any:
        """Deliver an update command; signed with KEY unless ``signature`` says otherwise."""
        spec: dict[str, Any] = {"version": version, "sha256": digest}
        if retry:
            spec["retry"] = True
        if signature == "sign":
            signature = KEY.sign(version, digest)
        if signature is not None:
            spec["signature"] = signature
        return self.runner.run({"id": cid, "action": "update", "update": spec})

    def journal(self, cid: str) -> Any:
        return self.runner.journal.get(cid)

    def current(self) -> str | None:
        link = self.opt / "current"
        return os.readlink(link) if link.is_symlink() else None

    def version_txt(self) -> str | None:
        path = self.opt / "version.txt"
        return path.read_text().strip() if path.exists() else None


def agent_version(pythonpath: Path) -> str:
    """What ``python -m jcstate.agent --version`` says with only that release on the path."""
    out = subprocess.run(
        [sys.executable, "-P", "-m", "jcstate.agent", "--version"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def test_update_installs_beside_switches_current_and_restarts(tmp_path, release):
    rig = Rig(tmp_path, {sha(release): release})
    result = rig.update("u1", NEW, sha(release))
    assert result.status == "succeeded", result.message
    assert f"installed jcstate {NEW}" in result.message
    assert rig.current() == f"releases/{NEW}" and rig.version_txt() == NEW
    assert (rig.opt / "releases" / NEW / f"jcstate-{NEW}.dist-info").is_dir()
    assert rig.journal("u1").state == "finished"  # journaled before the restart
    assert rig.restarts == 1
    assert agent_version(rig.opt / "current") == NEW  # the switched-to code runs

    # the restarted agent says what it runs; the same version again does nothing
    rig.runner = rig.new_runner()
    rig.runner.recover()
    again = rig.update("u2", NEW, sha(release))
    assert (again.status, again.message) == (
        "succeeded",
        f"already on jcstate {NEW}: nothing to do",
    )
    assert rig.fetched == [sha(release)] and rig.restarts == 1
    # a duplicate delivery of the first command returns its journaled result, nothing runs
    assert rig.update("u1", NEW, sha(release)).message == result.message


def test_digest_mismatch_is_retried_with_backoff_then_held(tmp_path, release):
    want = sha(release)
    rig = Rig(tmp_path, {want: release + b"tampered"})
    first = rig.update("m1", NEW, want)
    assert first.status == "running" and "attempt 1 of 3 failed: digest mismatch" in first.message
    assert rig.journal("m1").state == "started"  # not final: the server shows it running
    assert rig.runner.retry_due() == []  # the back-off has not passed
    rig.clock.now += 10
    [second] = rig.runner.retry_due()
    assert second.status == "running" and "attempt 2 of 3" in second.message
    rig.clock.now += 15
    assert rig.runner.retry_due() == []
    rig.clock.now += 5
    [third] = rig.runner.retry_due()
    assert third.status == "failed"
    assert "failed 3 times and is held" in third.message and "digest mismatch" in third.message
    assert rig.journal("m1").state == "finished" and rig.updater.due() is None
    assert rig.fetched == [want] * 3
    assert rig.current() is None and not (rig.opt / "releases" / NEW).exists()
    assert list(rig.updater.held()) == [NEW]

    # held: a new command for that version fails at once, without a download ...
    held = rig.update("m2", NEW, want)
    assert held.status == "failed" and "is held after 3 failed attempts" in held.message
    assert len(rig.fetched) == 3
    # ... until an admin asks again with retry: the hold is cleared and it tries once more
    rig.blobs[want] = release
    retried = rig.update("m3", NEW, want, retry=True)
    assert retried.status == "succeeded", retried.message
    assert rig.updater.held() == {} and rig.current() == f"releases/{NEW}"


def test_a_broken_release_is_never_switched_to_and_the_old_one_keeps_running(
    tmp_path, release, broken
):
    rig = Rig(tmp_path, {sha(release): release, sha(broken): broken})
    assert rig.update("good", NEW, sha(release)).status == "succeeded"
    results = [rig.update("bad", BROKEN, sha(broken))]
    for _ in range(2):
        rig.clock.now += 30
        results += rig.runner.retry_due()
    assert [r.status for r in results] == ["running", "running", "failed"]
    assert "smoke test failed" in results[0].message and "cannot start" in results[0].message
    assert "held" in results[-1].message and f"still running {NEW}" in results[-1].message
    assert rig.current() == f"releases/{NEW}" and rig.version_txt() == NEW
    assert sorted(os.listdir(rig.opt / "releases")) == [NEW]  # the broken one removed
    assert agent_version(rig.opt / "current") == NEW
    assert rig.restarts == 1  # only after the good one


def test_a_newer_update_supersedes_one_waiting_for_its_retry(tmp_path, release):
    rig = Rig(tmp_path, {sha(release): release})
    waiting = rig.update("old", BROKEN, "0" * 64)  # 404: waits for a retry
    assert waiting.status == "running" and "download failed" in waiting.message
    assert rig.update("new", NEW, sha(release)).status == "succeeded"
    old = rig.journal("old")
    assert old.state == "finished" and old.result.message == "superseded by update command new"
    rig.clock.now += 100
    assert rig.updater.due() is None and rig.runner.retry_due() == []


def test_an_attempt_the_agent_died_in_counts_and_resumes_after_restart(tmp_path, release):
    rig = Rig(tmp_path, {sha(release): release})

    def die(digest: str) -> bytes:
        raise SystemExit("killed during the download")

    rig.updater.fetch = die
    with pytest.raises(SystemExit):
        rig.update("k1", NEW, sha(release))
    assert rig.journal("k1").state == "started"
    # a new agent process: the journal resumes the update, which waits out its back-off
    rig.runner = rig.new_runner()
    [resumed] = rig.runner.recover()
    assert resumed.status == "running" and "did not finish" in resumed.message
    rig.clock.now += 10
    [done] = rig.runner.retry_due()
    assert done.status == "succeeded", done.message
    assert rig.current() == f"releases/{NEW}"


def test_only_a_release_signed_with_the_pinned_key_and_newer_is_installed(tmp_path, release):
    """Whoever controls the server must not control the devices: unsigned, forged, moved or
    older releases are refused at once, before any download, and nothing is held."""
    rig = Rig(tmp_path, {sha(release): release})
    digest = sha(release)
    forger = ReleaseKey()
    cases = {
        "unsigned": (NEW, digest, None, "is not signed"),
        "forged": (NEW, digest, forger.sign(NEW, digest), "does not verify"),
        "moved": (NEW, digest, KEY.sign(BROKEN, digest), "does not verify"),  # another version
        "garbage": (NEW, digest, "!!", "does not verify"),
        "rollback": ("0.0.1", "1" * 64, KEY.sign("0.0.1", "1" * 64), "no rollback"),
    }
    for cid, (version, dgst, signature, reason) in cases.items():
        result = rig.update(cid, version, dgst, signature=signature)
        assert result.status == "failed" and result.message.startswith("refused: "), cid
        assert reason in result.message, (cid, result.message)
    assert rig.fetched == [] and rig.current() is None and rig.updater.held() == {}
    assert rig.update("good", NEW, digest).status == "succeeded"

    # a device with no pinned key trusts no release at all
    bare = Rig(tmp_path / "bare", {digest: release})
    os.remove(os.path.join(bare.state, release_key.PINNED_FILE))
    result = bare.update("b1", NEW, digest)
    assert result.status == "failed" and "no release key is pinned" in result.message
    assert bare.fetched == []


def test_the_release_key_is_pinned_once(tmp_path):
    state = str(tmp_path / "state")
    key_file = tmp_path / "release-key.pub"
    key_file.write_text(KEY.public_text)
    assert release_key.pin(state, str(key_file)) is True  # from a file
    assert release_key.pin(state, KEY.public_text) is False  # the same key: nothing to do
    with pytest.raises(release_key.ReleaseKeyError, match="a different release key is pinned"):
        release_key.pin(state, ReleaseKey().public_text)
    with pytest.raises(release_key.ReleaseKeyError, match="reads 'jcstate-release-ed25519"):
        release_key.pin(str(tmp_path / "other"), "ssh-ed25519 AAAA")
    assert release_key.pinned(state) == release_key.parse_public(KEY.public_text)
    (tmp_path / "state" / release_key.PINNED_FILE).write_text("garbage")
    with pytest.raises(release_key.ReleaseKeyError, match="cannot read the pinned release key"):
        release_key.pinned(state)


def test_without_pip_the_wheel_is_unpacked(tmp_path, release):
    wheel = tmp_path / "jcstate.whl"
    wheel.write_bytes(release)
    Updater._unpack(str(wheel), str(tmp_path / "rel"))
    assert agent_version(tmp_path / "rel") == NEW


# -- the real agent, as a process ---------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def test_agent_updates_itself_restarts_into_the_release_and_holds_bad_ones(
    sqlite_server, tmp_path, release, broken
):
    server = sqlite_server
    admin = server.admin("administrator")
    for version, data in ((NEW, release), (BROKEN, broken)):
        admin.call("POST", "/api/v1/releases", data=data, signature=KEY.sign(version, data))
    key_file = tmp_path / "release-key.pub"
    key_file.write_text(KEY.public_text)
    opt, state, log = tmp_path / "opt", tmp_path / "state", tmp_path / "agent.log"
    argv = [
        sys.executable,
        "-m",
        "jcstate.agent",
        "--server",
        server.url,
        "--connect-key",
        server.connect_key,
        "--state-dir",
        str(state),
        "--install-dir",
        str(opt),
        "--log-file",
        str(log),
        "--root",
        prepare_root(str(tmp_path / "root")),
        "--wait",
        "1",
        "--max-backoff",
        "1",
        "--release-key",
        str(key_file),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JCSTATE_UPDATE_RETRY_DELAYS"] = "0.3,0.3"
    # enroll, then go away: the update is queued while the agent is offline
    subprocess.run([*argv, "--once"], cwd=tmp_path, env=env, check=True, timeout=120)
    device_id = json.loads((state / "device.json").read_text())["id"]
    route = f"/api/v1/devices/{device_id}/commands/update"
    reader = server.admin("read-only")

    def state_of(cid: str) -> str:
        return str(reader.call("GET", f"/api/v1/commands/{cid}")["state"])

    update = admin.call("POST", route, {"version": NEW})
    stderr = open(tmp_path / "agent.stderr", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=stderr)
    try:
        wait_for(lambda: state_of(update["id"]) == "succeeded", 120, "the update succeeded")
        assert os.readlink(opt / "current") == f"releases/{NEW}"
        assert (opt / "version.txt").read_text().strip() == NEW
        # the same process, re-executed: the new code says so in the log, and its environment
        # holds the current release first on the path
        running = f"running jcstate {NEW} from {opt}/releases/{NEW}"
        wait_for(lambda: running in log.read_text(), 60, "the new release logged its start")
        assert proc.poll() is None
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"PYTHONPATH={opt}/current".encode() in environ

        # a release that cannot start: three attempts, then held; the agent stays on NEW
        bad = admin.call("POST", route, {"version": BROKEN})
        wait_for(lambda: state_of(bad["id"]) == "failed", 120, "the broken update failed")
        shown = reader.call("GET", f"/api/v1/commands/{bad['id']}")
        assert "failed 3 times and is held" in shown["message"], shown["message"]
        assert "smoke test failed" in shown["message"]
        assert log.read_text().count(f"installing jcstate {BROKEN}") == 3

        # bytes that do not match their digest (corrupted in storage): held as well
        tampered = build_wheel(tmp_path / "t", TAMPERED, source_files(TAMPERED)).read_bytes()
        admin.call(
            "POST", "/api/v1/releases", data=tampered, signature=KEY.sign(TAMPERED, tampered)
        )
        with server.ctx.store.engine.begin() as conn:
            from jcstate.server import db

            conn.execute(
                db.releases.update()
                .where(db.releases.c.version == TAMPERED)
                .values(data=tampered[:-1] + b"x")
            )
        mismatch = admin.call("POST", route, {"version": TAMPERED})
        wait_for(lambda: state_of(mismatch["id"]) == "failed", 120, "the tampered update failed")
        message = reader.call("GET", f"/api/v1/commands/{mismatch['id']}")["message"]
        assert "digest mismatch" in message and "held" in message

        # held until an admin acts: without --retry the device refuses at once
        again = admin.call("POST", route, {"version": BROKEN})
        wait_for(lambda: state_of(again["id"]) == "failed", 60, "the held version was refused")
        message = reader.call("GET", f"/api/v1/commands/{again['id']}")["message"]
        assert message.startswith("not tried:") and "--retry" in message
        assert log.read_text().count(f"installing jcstate {BROKEN}") == 3

        # an administrator token uploads a release signed with another key (the server
        # cannot tell): the device refuses it before downloading, and the server shows why
        forged = build_wheel(tmp_path / "f", FORGED, minimal_files(FORGED)).read_bytes()
        admin.call(
            "POST", "/api/v1/releases", data=forged, signature=ReleaseKey().sign(FORGED, forged)
        )
        attempt = admin.call("POST", route, {"version": FORGED})
        wait_for(lambda: state_of(attempt["id"]) == "failed", 60, "the forged update failed")
        message = reader.call("GET", f"/api/v1/commands/{attempt['id']}")["message"]
        assert "does not verify with the release key pinned" in message, message
        assert f"installing jcstate {FORGED}" not in log.read_text()

        assert proc.poll() is None and os.readlink(opt / "current") == f"releases/{NEW}"
        assert sorted(os.listdir(opt / "releases")) == [NEW]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()


def test_version_option_and_the_units_pythonpath():
    from jcstate.agent.install import InstallPlan, unit_text

    for argv in (["-m", "jcstate", "agent", "--version"], ["-m", "jcstate.agent", "--version"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert (out.returncode, out.stdout) == (0, f"jcstate agent {__version__}\n"), out.stderr
    unit = unit_text(InstallPlan(server="https://s:8443", connect_key="k", install_dir="/opt/j c"))
    assert "Environment='PYTHONPATH=/opt/j c/current'\n" in unit
