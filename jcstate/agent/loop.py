"""The agent loop: lock → enroll once → settle commands → (send results → poll → converge →
run commands → report)*.

On a new document the agent plans and applies it with the engine, puts the report (plan,
results, facts) in the durable outbox, and sends the outbox before polling again. Security
commands the server queued for this device come in the same poll and run after the converge,
in order, each at most once (:mod:`jcstate.agent.commands`); their results are sent from the
command journal until the server acknowledges them. When the server is unreachable it backs
off exponentially with full jitter (honouring ``Retry-After``), keeping every report for later.
Only one agent runs per state directory (a lock file).
A long poll that ends empty re-converges the last document every ``reconverge`` seconds, so
drift made by hand is corrected even when no admin pushes anything.
A policy with ``fileVault.escrowRecoveryKey`` has its recovery key sent to the server during the
converge (:meth:`Agent._escrow`); when that fails, the next converge tries again.
"""

from __future__ import annotations

import fcntl
import logging
import logging.handlers
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from jcstate import __version__
from jcstate.agent.client import Client, Unreachable
from jcstate.agent.commands import QueuedCommands
from jcstate.agent.identity import Identity
from jcstate.agent.outbox import Outbox
from jcstate.errors import AuthError, JcstateError, ServerError
from jcstate.secret import Secret

__all__ = ["Agent", "AgentConfig", "backoff_delay", "setup_logging"]

RESULTS_PER_REQUEST = 100

log = logging.getLogger("jcstate.agent")


@dataclass
class AgentConfig:
    server: str
    connect_key: str = ""
    ca_file: str | None = None
    state_dir: str = "/var/lib/jcstate"
    log_file: str | None = "/var/log/jcstate.log"
    install_dir: str = "/opt/jcstate"
    root: str = "/"
    wait: float = 55.0  # long-poll length asked of the server
    max_backoff: float = 300.0
    reconverge: float = 1800.0
    once: bool = False  # converge once and exit (tests, cron)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)], but never before Retry-After."""
    delay = random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))
    return max(delay, retry_after or 0.0)


def setup_logging(log_file: str | None, level: int = logging.INFO) -> None:
    """Log to a file that logrotate may move away: WatchedFileHandler reopens it."""
    if not log_file:
        return
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(log_file)
    os.chmod(log_file, 0o640)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("jcstate")
    root.addHandler(handler)
    root.setLevel(level)


class AlreadyRunning(JcstateError):
    """Another agent holds the lock on this state directory."""


class Agent:
    """One device's agent."""

    def __init__(self, config: AgentConfig, *, actions: Any = None):
        """``actions``: the OS's security commands (tests give a recording stand-in)."""
        self.config = config
        self.identity = Identity(config.state_dir)
        self.outbox = Outbox(os.path.join(config.state_dir, "outbox"))
        self.client = Client(config.server, self.identity, ca_file=config.ca_file)
        self._lock_fd: int | None = None
        self._document: dict[str, Any] | None = None
        self._secrets: dict[str, Any] = {}
        self._etag = ""
        self._last_converge = 0.0
        self._failures = 0
        self._server_error: str | None = None  # the server could not render our document
        from jcstate.host import Host

        self.commands = QueuedCommands(Host(root=config.root), actions=actions)
        self._recovered = False  # commands settled after the last start (crash, reboot)

    # -- single instance ---------------------------------------------------------------------
    def lock(self) -> None:
        path = os.path.join(self.config.state_dir, "agent.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(
                f"another agent is running on {self.config.state_dir} (pid {holder or '?'})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock and the connection (the loop's end, or a test's)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.client.close()

    # -- enrollment --------------------------------------------------------------------------
    def version(self) -> str:
        try:
            with open(os.path.join(self.config.install_dir, "version.txt")) as f:
                return f.read().strip() or __version__
        except OSError:
            return __version__

    def enroll(self) -> str:
        """The device id, enrolling with the connect key the first time."""
        device = self.identity.device()
        if device is not None:
            return str(device["id"])
        if not self.config.connect_key:
            raise JcstateError("not enrolled yet: give --connect-key")
        facts = self._facts()
        info = {
            "hostname": str(facts.get("hostname") or ""),
            "os": str(facts.get("os") or ""),
            "osVersion": str(facts.get("osVersion") or ""),
            "arch": str(facts.get("arch") or ""),
            "agentVersion": self.version(),
        }
        answer = self.client.enroll(self.config.connect_key, info)
        self.identity.save_device(answer["id"], self.client.server)
        log.info("enrolled as device %s (%s)", answer["id"], answer.get("status"))
        return str(answer["id"])

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        self.lock()
        try:
            return self._loop()
        finally:
            self.close()

    def _loop(self) -> int:
        log.info("jcstate agent %s starting; server %s", self.version(), self.config.server)
        while True:
            try:
                self.enroll()
                if not self._recovered:
                    self.commands.recover()  # before any poll: a restart is done, or not
                    self._recovered = True
                self.flush()
                self.step()
                self._failures = 0
                if self.config.once:
                    return 0
            except AuthError as exc:
                # a revoked or pending device: keep trying slowly, an admin may approve it
                log.error("%s", exc)
                if self.config.once:
                    return 1
                self._sleep(retry_after=60)
            except (Unreachable, ServerError) as exc:
                log.warning("server unreachable: %s", exc)
                if self.config.once:
                    return 1
                self._sleep(retry_after=getattr(exc, "retry_after", None))

    def _sleep(self, retry_after: float | None = None) -> None:
        delay = backoff_delay(self._failures, 1.0, self.config.max_backoff, retry_after)
        self._failures += 1
        log.info("retrying in %.1f s", delay)
        time.sleep(delay)

    def step(self) -> None:
        """One poll, and a converge when there is a new document (or reconverge is due)."""
        wait = 0.0 if self.config.once else self.config.wait
        work = self.client.work(self._etag, wait, self.commands.cursor)
        if work.get("error"):
            log.error("the server cannot render this device's document: %s", work["error"])
        if work.get("document") is not None or work.get("error"):
            self._document = work.get("document")
            self._server_error = work.get("error")
            self._secrets = work.get("secrets") or {}
            self._etag = str(work.get("etag") or "")
            self.converge()
        elif work.get("etag") and not self._etag:
            self._etag = str(work["etag"])  # no policy yet: nothing to do until one arrives
        elif (
            self._document is not None
            and time.monotonic() - self._last_converge > self.config.reconverge
        ):
            self.converge()
        if work.get("commands"):
            self.run_commands(work["commands"])

    def run_commands(self, delivered: list[dict[str, Any]]) -> None:
        """Run queued commands in order, each at most once; send their results."""
        results = self.commands.run(delivered, starting=self._running)
        for result in results:
            if result.status == "running":  # a restart handed to the OS
                self._running(result.to_dict())
        self.flush()

    def _running(self, command: dict[str, Any]) -> None:
        """Tell the server a command is under way; best effort (the final result is durable)."""
        note = {"id": command["id"], "action": command.get("action"), "status": "running"}
        try:
            self.client.command_results([note], timeout=5)
        except ServerError as exc:
            log.info("could not tell the server %s is running: %s", command["id"], exc)

    def converge(self) -> None:
        """Plan and apply the current document; queue the report; send the queue."""
        payload: dict[str, Any] = {"reportId": uuid.uuid4().hex, "etag": self._etag}
        try:
            payload.update(self._apply())
        except JcstateError as exc:
            log.error("converge failed: %s", exc)
            payload.update({"ok": False, "changed": False, "error": str(exc), "report": {}})
        try:
            payload["facts"] = self._facts()
        except JcstateError as exc:
            payload["facts"] = {"error": str(exc)}
        self.outbox.put(payload)
        self._last_converge = time.monotonic()
        self.commands.journal_changed()  # a policy's commands may have run
        self.flush()

    def _apply(self) -> dict[str, Any]:
        from jcstate import engine
        from jcstate.host import Host
        from jcstate.secrets import MappingSecrets

        if self._document is None:
            error = self._server_error or "no document"
            return {"ok": False, "changed": False, "report": {}, "error": error}
        from jcstate.document import Document

        document = Document.from_dict(self._document)
        host = Host(root=self.config.root)
        enrolled = self.identity.device() or {}
        report = engine.apply(
            document,
            host,
            MappingSecrets(self._secrets),
            device={"id": enrolled.get("id", "")},
            escrow=self._escrow,
        )
        counts = report.counts() if callable(getattr(report, "counts", None)) else {}
        log.info("converged %s: %s", self._etag[:8], counts or ("ok" if report.ok else "failed"))
        return {
            "ok": bool(report.ok),
            "changed": bool(getattr(report, "changed", False)),
            "report": report.to_dict(),
        }

    def _escrow(self, key: Secret, volume: str | None) -> None:
        """Send a FileVault recovery key (a Secret) to the server; raises when it cannot.

        A failure fails the plan's escrow step, so its stamp is not written and the next
        converge tries again; meanwhile the key stays in its root-only 0600 file.
        """
        self.client.escrow(volume, key)
        log.info("escrowed the FileVault recovery key of volume %s", volume or "?")

    def _facts(self) -> dict[str, Any]:
        from jcstate import engine
        from jcstate.host import Host

        facts = engine.device_facts(Host(root=self.config.root))
        facts["agentVersion"] = self.version()
        return facts

    def flush(self) -> int:
        """Send queued reports and command results oldest first; each is dropped only once
        acknowledged."""
        sent = 0
        for file, payload in self.outbox.pending():
            self.client.report(payload)
            self.outbox.done(file)
            sent += 1
        results = self.commands.unsent()
        for start in range(0, len(results), RESULTS_PER_REQUEST):
            try:
                answer = self.client.command_results(results[start : start + RESULTS_PER_REQUEST])
            except (Unreachable, AuthError):
                raise
            except ServerError as exc:
                # a result the server refuses must not stop the polling: it stays in the
                # journal and is offered again at the next flush
                log.error("the server refused command results: %s", exc)
                break
            self.commands.acknowledge([str(i) for i in answer.get("acks", [])])
            sent += len(answer.get("acks", []))
        return sent
