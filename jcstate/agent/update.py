"""The agent updating itself: a release installed beside the running one, then a restart into it.

::

    INSTALL_DIR/
      releases/0.1.0/             pip install --target of a wheel (jcstate/ and its dist-info)
      releases/0.2.0/
      current -> releases/0.2.0   switched atomically (a new link renamed over the old one)
      version.txt                 the version current holds, written right after the switch
    STATE_DIR/update.json         the update waiting for its next attempt; held versions

An ``update`` command (version, sha256; queued by ``jcstate command update``) runs
:meth:`Updater.perform`: download the wheel by its digest (a signed request), check the
digest and the wheel, ``pip install --no-deps --no-index --target releases/VERSION`` (the
dependencies are the running agent's), run the release's own ``python -P -m jcstate.agent
--version`` with ``PYTHONPATH=releases/VERSION`` (it must print VERSION), switch ``current``,
write ``version.txt``. The runner journals ``succeeded``; then :meth:`Updater.finished`
re-executes the agent in the same process (``os.execve``) with ``PYTHONPATH=INSTALL_DIR/current``:
the new code starts, takes the lock, and sends the journaled result. The systemd unit written by
``jcstate agent install`` sets the same ``PYTHONPATH``, so any later start runs ``current`` too.

Nothing the running agent uses is touched before the switch: a failure anywhere leaves the old
release running and ``releases/VERSION`` removed. An attempt is counted in ``update.json``
before it starts (so one that kills the agent counts too); after a failure the command stays
``running`` and is tried again on a later poll, after :data:`RETRY_DELAYS`; the third failure
ends it ``failed`` and *holds* the version: a new update command for a held version fails at
once unless it carries ``retry`` (``jcstate command update DEVICE --version V --retry``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable

from jcstate import __version__
from jcstate.agent import logs
from jcstate.errors import JcstateError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

    from jcstate.agent.client import Client
    from jcstate.host import Host
    from jcstate.modules.commands import Command, UpdateSpec
    from jcstate.modules.commands.result import CommandResult, Outcome

# The agent builds an Updater at start and asks it about retries on every poll: this module
# imports little, and what an update needs (zipfile, pip, the wheel checks) only when one runs.

__all__ = [
    "MAX_ATTEMPTS",
    "RELEASE_ROUTE",
    "RETRY_DELAYS",
    "RETRY_ENV",
    "UpdateFailed",
    "Updater",
    "fetch_from",
    "reexec",
]

MAX_ATTEMPTS = 3
RETRY_DELAYS = (60.0, 300.0)  # seconds before the 2nd and the 3rd attempt
RETRY_ENV = "JCSTATE_UPDATE_RETRY_DELAYS"  # "60,300": other delays (tests, impatient admins)
RELEASE_ROUTE = "/api/v1/device/releases/{sha256}"
PIP_TIMEOUT = 600.0
SMOKE_TIMEOUT = 120.0

log = logs.getLogger("jcstate.agent")


class UpdateFailed(JcstateError):
    """One attempt to install a release failed; the message says where."""


def fetch_from(client: Client) -> Callable[[str], bytes]:
    """Download a release's wheel by its sha256 with the agent's signed client."""

    def fetch(sha256: str) -> bytes:
        return client.download(RELEASE_ROUTE.format(sha256=sha256))

    return fetch


def _delays_from_env() -> tuple[float, ...]:
    text = os.environ.get(RETRY_ENV, "").strip()
    if not text:
        return RETRY_DELAYS
    try:
        delays = tuple(max(0.0, float(part)) for part in text.split(","))
    except ValueError:
        log.warning("%s=%r is not a list of seconds; using %s", RETRY_ENV, text, RETRY_DELAYS)
        return RETRY_DELAYS
    return delays or RETRY_DELAYS


def reexec(install_dir: str) -> None:
    """Replace this process with the same agent command running ``INSTALL_DIR/current``.

    Same pid and arguments; the lock file descriptor is close-on-exec, so the new image takes
    the lock again. ``-P`` keeps the working directory off ``sys.path``: a ``jcstate``
    directory there must not shadow the release.
    """
    base = os.path.abspath(install_dir)
    current = os.path.join(base, "current")
    releases = os.path.join(base, "releases") + os.sep
    env = dict(os.environ)
    kept = [
        p
        for p in env.get("PYTHONPATH", "").split(os.pathsep)
        if p and p != current and not p.startswith(releases)
    ]
    env["PYTHONPATH"] = os.pathsep.join([current, *kept])
    argv = list(sys.orig_argv) or [sys.executable, "-m", "jcstate.agent", *sys.argv[1:]]
    if argv[1:2] != ["-P"]:
        argv.insert(1, "-P")
    logs.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(moment))


def _tail(text: str, lines: int = 5) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"


class Updater:
    """Installs releases of the agent into ``install_dir`` (the runner's ``SelfUpdate``)."""

    def __init__(
        self,
        install_dir: str,
        state_dir: str,
        fetch: Callable[[str], bytes],
        *,
        python: str = sys.executable,
        host: Host | None = None,
        retry_delays: tuple[float, ...] | None = None,
        clock: Callable[[], float] = time.time,
        restart: Callable[[], None] | None = None,
    ):
        """``fetch(sha256) -> bytes`` downloads a wheel; ``restart`` replaces the process
        (default :func:`reexec`; tests give a recorder)."""
        self.install_dir = os.path.abspath(install_dir)
        self.state_dir = state_dir
        self.state_path = os.path.join(state_dir, "update.json")
        self.fetch = fetch
        self.python = python
        self._host = host
        self.retry_delays = retry_delays if retry_delays is not None else _delays_from_env()
        self.clock = clock
        self.restart = restart or (lambda: reexec(self.install_dir))
        self._restart_for: str | None = None  # the command whose success switched `current`

    # -- where things are -------------------------------------------------------------------
    @property
    def host(self) -> Host:
        """Runs pip and the smoke test on this machine (never under the agent's --root)."""
        if self._host is None:
            logs.use_logging()  # jcstate.host logs with logging
            from jcstate.host import Host

            self._host = Host()
        return self._host

    @property
    def releases_dir(self) -> str:
        return os.path.join(self.install_dir, "releases")

    @property
    def current_link(self) -> str:
        return os.path.join(self.install_dir, "current")

    def installed(self) -> str:
        """The version in ``version.txt`` (the running code's when there is none)."""
        try:
            with open(os.path.join(self.install_dir, "version.txt")) as f:
                return f.read().strip() or __version__
        except OSError:
            return __version__

    def current(self) -> str | None:
        """The release ``current`` points to, or None without a link."""
        try:
            return os.path.basename(os.readlink(self.current_link).rstrip("/"))
        except OSError:
            return None

    def _runs(self, version: str) -> bool:
        if self.installed() != version:
            return False
        current = self.current()
        if current is not None:
            return current == version and os.path.isdir(os.path.join(self.releases_dir, version))
        return __version__ == version  # installed without releases (a package): this code

    # -- state (update.json) ------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as exc:
            log.warning("update state %s unreadable (%s): set aside", self.state_path, exc)
            with contextlib.suppress(OSError):
                os.replace(self.state_path, self.state_path + ".bad")
            state = {}
        if not isinstance(state, dict):
            state = {}
        state.setdefault("pending", None)
        state.setdefault("held", {})
        return state

    def _save(self, state: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.state_path), mode=0o700, exist_ok=True)
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def held(self) -> dict[str, Any]:
        """Held versions: version → {attempts, error, since, command}."""
        return dict(self._load()["held"])

    # -- the runner's interface (SelfUpdate) --------------------------------------------------
    def pending(self) -> str | None:
        pending = self._load()["pending"]
        return str(pending["id"]) if pending else None

    def due(self) -> dict[str, Any] | None:
        pending = self._load()["pending"]
        if pending and self.clock() >= float(pending.get("nextAttempt", 0)):
            return dict(pending["command"])
        return None

    def perform(self, command: Command) -> Outcome:
        """Start or continue ``command``: one attempt, a wait, or an answer without trying."""
        from jcstate.modules.commands.result import Outcome

        spec = command.update
        if spec is None:
            return Outcome(False, "update: the command names no release")
        state = self._load()
        now = self.clock()
        pending = state["pending"]
        if pending is not None and pending.get("id") != command.id:
            pending = None  # superseded: the runner has finished the older command
        if pending is None:
            refusal = self._first_look(spec, state)
            if refusal is not None:
                state["pending"] = None
                self._save(state)
                return refusal
            pending = {"id": command.id, "command": command.to_dict(), "attempts": 0}
        elif int(pending.get("attempts", 0)) >= MAX_ATTEMPTS:
            # the last attempt never came back: the agent died during it
            return self._hold(state, command.id, spec, int(pending["attempts"]), pending)
        elif now < float(pending.get("nextAttempt", 0)):
            return Outcome(
                False,
                f"attempt {pending['attempts']} of {MAX_ATTEMPTS} failed: "
                f"{pending.get('lastError')}; next attempt after {_when(pending['nextAttempt'])}",
                pending=True,
            )
        attempt = int(pending.get("attempts", 0)) + 1
        delay = self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)]
        pending.update(
            attempts=attempt,
            nextAttempt=now + delay,
            lastError=f"attempt {attempt} did not finish: the agent stopped during it",
        )
        state["pending"] = pending
        self._save(state)  # counted before it starts: an attempt that kills the agent counts
        previous = self.installed()
        log.info(
            "update %s: attempt %d of %d: installing jcstate %s (running %s)",
            command.id,
            attempt,
            MAX_ATTEMPTS,
            spec.version,
            previous,
        )
        try:
            where = self._install(spec)
        except (JcstateError, OSError) as exc:
            pending["lastError"] = str(exc)
            log.error("update %s: attempt %d failed: %s", command.id, attempt, exc)
            if attempt >= MAX_ATTEMPTS:
                return self._hold(state, command.id, spec, attempt, pending)
            self._save(state)
            return Outcome(
                False,
                f"attempt {attempt} of {MAX_ATTEMPTS} failed: {exc}; next attempt in {delay:g} s",
                pending=True,
            )
        state["pending"] = None
        state["switched"] = {
            "version": spec.version,
            "from": previous,
            "command": command.id,
            "at": now,
        }
        self._save(state)
        self._restart_for = command.id
        return Outcome(
            True,
            f"installed jcstate {spec.version} in {where} and switched {self.current_link} "
            f"to it (was {previous}); the agent restarts into it",
        )

    def _first_look(self, spec: UpdateSpec, state: dict[str, Any]) -> Outcome | None:
        """The answer to a new command that needs no attempt, or None to go ahead."""
        from jcstate.modules.commands.result import Outcome

        if self._runs(spec.version):
            state["held"].pop(spec.version, None)
            return Outcome(True, f"already on jcstate {spec.version}: nothing to do")
        refusal = self._trust(spec)
        if refusal is not None:
            log.error("update to %s refused: %s", spec.version, refusal)
            return Outcome(False, f"refused: {refusal}")
        hold = state["held"].get(spec.version)
        if hold and not spec.retry:
            return Outcome(
                False,
                f"not tried: jcstate {spec.version} is held after {hold.get('attempts')} failed "
                f"attempts (last: {hold.get('error')}); queue the update with --retry to try "
                "again",
            )
        if hold:
            log.info("update to %s: hold cleared by a retry", spec.version)
            state["held"].pop(spec.version, None)
        return None

    def _trust(self, spec: UpdateSpec) -> str | None:
        """Why this release must not be installed, or None: signed with the pinned release
        key, and newer than what runs (docs/updates.md, "Signed releases")."""
        from jcstate.agent import release_key

        try:
            key = release_key.pinned(self.state_dir)
        except release_key.ReleaseKeyError as exc:
            return str(exc)
        if key is None:
            return (
                "no release key is pinned on this device, so no release can be trusted; "
                "install the agent with --release-key (jcstate release keygen)"
            )
        if not spec.signature:
            return (
                f"jcstate {spec.version} is not signed (jcstate release sign WHEEL --key K, "
                "then push it with its .sig)"
            )
        if not release_key.verify(key, spec.version, spec.sha256, spec.signature):
            return (
                f"the signature of jcstate {spec.version} does not verify with the release key "
                "pinned on this device"
            )
        running = self.installed()
        try:
            newer = release_key.is_newer(spec.version, running)
        except release_key.ReleaseKeyError as exc:
            return str(exc)
        if not newer:
            return f"jcstate {spec.version} is not newer than the running {running}: no rollback"
        return None

    def _hold(
        self,
        state: dict[str, Any],
        command_id: str,
        spec: UpdateSpec,
        attempts: int,
        pending: dict[str, Any],
    ) -> Outcome:
        from jcstate.modules.commands.result import Outcome

        error = pending.get("lastError") or "unknown"
        state["pending"] = None
        state["held"][spec.version] = {
            "attempts": attempts,
            "error": error,
            "since": self.clock(),
            "command": command_id,
        }
        self._save(state)
        log.error("update to %s held after %d failed attempts: %s", spec.version, attempts, error)
        return Outcome(
            False,
            f"update to jcstate {spec.version} failed {attempts} times and is held until an "
            f"admin queues it again with --retry; still running {self.installed()}. "
            f"Last error: {error}",
        )

    def finished(self, result: CommandResult) -> None:
        state = self._load()
        if state["pending"] and state["pending"].get("id") == result.id:
            state["pending"] = None
            self._save(state)
        if self._restart_for != result.id or result.status != "succeeded":
            return
        self._restart_for = None
        log.info("restarting the agent into %s", self.current_link)
        try:
            self.restart()
        except OSError as exc:
            log.error(
                "could not restart into the new release (%s); it runs from the next start", exc
            )

    def recover(self) -> None:
        """After a restart: say whether the release switched to is the code running now."""
        state = self._load()
        switched = state.pop("switched", None)
        if not switched:
            return
        import jcstate

        where = os.path.dirname(os.path.dirname(os.path.realpath(jcstate.__file__)))
        if jcstate.__version__ == switched.get("version"):
            log.info(
                "running jcstate %s from %s (updated from %s by command %s)",
                jcstate.__version__,
                where,
                switched.get("from"),
                switched.get("command"),
            )
        else:
            log.warning(
                "switched to jcstate %s, but this agent runs %s from %s: does its service set "
                "PYTHONPATH=%s?",
                switched.get("version"),
                jcstate.__version__,
                where,
                self.current_link,
            )
        self._save(state)

    # -- one attempt ------------------------------------------------------------------------
    def _install(self, spec: UpdateSpec) -> str:
        """Download, check, install, smoke-test and switch to ``spec``; returns its directory."""
        import hashlib
        import tempfile

        from jcstate.agent.wheel import BadWheel, inspect_wheel

        try:
            data = self.fetch(spec.sha256)
        except (JcstateError, OSError) as exc:
            raise UpdateFailed(f"download failed: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise UpdateFailed(
                f"digest mismatch: the download has sha256 {digest}, the command names "
                f"{spec.sha256}; nothing installed"
            )
        try:
            wheel = inspect_wheel(data)
        except BadWheel as exc:
            raise UpdateFailed(f"not installable: {exc}") from None
        if wheel.version != spec.version:
            raise UpdateFailed(f"the wheel is jcstate {wheel.version}, not {spec.version}")
        target = os.path.join(self.releases_dir, spec.version)
        previous = self.current()
        if previous == spec.version and os.path.isdir(target):
            # switched already, version.txt not yet written (the agent stopped in between)
            self._smoke(target, spec.version)
        else:
            os.makedirs(self.releases_dir, mode=0o755, exist_ok=True)
            self._remove(target)  # a leftover of an earlier attempt, never what runs
            with tempfile.TemporaryDirectory(dir=self.releases_dir, prefix=".download-") as tmp:
                path = os.path.join(tmp, wheel.filename)
                with open(path, "wb") as f:
                    f.write(data)
                try:
                    self._pip(path, target)
                    self._smoke(target, spec.version)
                    self._switch(spec.version)
                except BaseException:
                    self._remove(target)  # never switched to
                    raise
        self._write_version(spec.version)
        self._prune(keep={spec.version, previous or ""})
        return target

    def _pip(self, wheel: str, target: str) -> None:
        import importlib.util

        if importlib.util.find_spec("pip") is None:
            self._unpack(wheel, target)  # a Python without pip: a wheel is a zip
            return
        argv = [
            self.python,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-deps",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--target",
            target,
            wheel,
        ]
        result = self.host.run(argv, check=False, timeout=PIP_TIMEOUT)
        if result.returncode != 0:
            raise UpdateFailed(
                f"pip install exited {result.returncode}: {_tail(result.stderr or result.stdout)}"
            )

    @staticmethod
    def _unpack(wheel: str, target: str) -> None:
        import zipfile

        os.makedirs(target, mode=0o755)
        with zipfile.ZipFile(wheel) as archive:  # paths were checked by inspect_wheel
            archive.extractall(target)

    def _smoke(self, target: str, version: str) -> None:
        """The release's own agent must start and say it is ``version``."""
        argv = [self.python, "-P", "-m", "jcstate.agent", "--version"]
        result = self.host.run(argv, check=False, timeout=SMOKE_TIMEOUT, env={"PYTHONPATH": target})
        said = result.stdout.split()
        if result.returncode != 0 or not said or said[-1] != version:
            raise UpdateFailed(
                f"smoke test failed: `python -m jcstate.agent --version` of the release exited "
                f"{result.returncode} saying {_tail(result.stdout + result.stderr)!r}, "
                f"expected {version}"
            )

    def _switch(self, version: str) -> None:
        link = self.current_link
        tmp = f"{link}.new-{os.getpid()}"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join("releases", version), tmp)  # relative: the dir may move
        os.replace(tmp, link)  # atomic: current is the old release or the new, never neither
        self._sync_dir()

    def _write_version(self, version: str) -> None:
        path = os.path.join(self.install_dir, "version.txt")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.install_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:  # the rename is done; only its durability is in question
            log.warning("fsync %s: %s", self.install_dir, exc)
        finally:
            os.close(fd)

    def _remove(self, path: str) -> None:
        if not os.path.lexists(path):
            return
        current = os.path.realpath(self.current_link)
        if os.path.exists(self.current_link) and os.path.realpath(path) == current:
            raise UpdateFailed(f"{path} is the running release: not removing it")
        import shutil

        shutil.rmtree(path)

    def _prune(self, keep: set[str]) -> None:
        """Keep the new release and the one before it (to switch back by hand)."""
        for name in os.listdir(self.releases_dir):
            if name in keep:
                continue
            try:
                self._remove(os.path.join(self.releases_dir, name))
            except (OSError, UpdateFailed) as exc:
                log.warning("could not remove old release %s: %s", name, exc)
