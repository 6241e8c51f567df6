"""The agent loop: lock → enroll once → settle commands → (send results → poll → converge →
run commands → report)*.

On a new document the agent has a worker process plan and apply it with the engine
(:mod:`jcstate.agent.worker`; this process never imports the engine), puts the report (plan,
results, facts) in the durable outbox, and sends the outbox before polling again. Security
commands the server queued for this device come in the same poll and run after the converge,
in order, each at most once (:mod:`jcstate.agent.commands`); their results are sent from the
command journal until the server acknowledges them. When the server is unreachable it backs
off exponentially with full jitter (honouring ``Retry-After``), keeping every report for later.
Only one agent runs per state directory (a lock file).
A long poll that ends empty re-converges the last document every ``reconverge`` seconds, so
drift made by hand is corrected even when no admin pushes anything.
A policy with ``fileVault.escrowRecoveryKey`` has its recovery key sent to the server during the
converge (by the worker, :class:`~jcstate.agent.worker.Escrow`); when that fails, the next
converge tries again.
Time-bound admin rights (a policy's ``admin: {until: T}``, ``jcstate elevate``) end on the
device at their instant, offline too: the loop checks at start and at every round, and neither
its long poll nor its back-off sleep lasts past the next instant (:mod:`jcstate.agent.expiry`).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time

from jcstate import __version__
from jcstate.agent import logs
from jcstate.agent.client import Client, Unreachable
from jcstate.agent.commands import QueuedCommands
from jcstate.agent.expiry import Clock, Expiries, managed_user, text
from jcstate.agent.identity import Identity
from jcstate.agent.outbox import Outbox
from jcstate.agent.spawn import Child
from jcstate.agent.update import Updater, fetch_from
from jcstate.errors import AuthError, JcstateError, ServerError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Agent", "AgentConfig", "WorkerError", "backoff_delay", "setup_logging"]

RESULTS_PER_REQUEST = 100
DRAIN_RETRY = 120.0  # after a "draining" answer, retry quickly this long (a server restart)

log = logs.getLogger("jcstate.agent")


class AgentConfig:
    """The agent's settings (``jcstate agent`` flags).

    A plain class, not a dataclass: ``dataclasses`` (and ``inspect``) would cost the resident
    agent about 1 MB.
    """

    def __init__(
        self,
        server: str,
        connect_key: str = "",
        ca_file: str | None = None,
        state_dir: str = "/var/lib/jcstate",
        log_file: str | None = "/var/log/jcstate.log",
        install_dir: str = "/opt/jcstate",
        root: str = "/",
        wait: float = 55.0,
        max_backoff: float = 300.0,
        reconverge: float = 1800.0,
        once: bool = False,
        worker_timeout: float = 1800.0,
        release_key: str | None = None,
        replan: float = 300.0,
    ):
        self.server = server
        self.connect_key = connect_key
        self.ca_file = ca_file
        self.state_dir = state_dir
        self.log_file = log_file
        self.install_dir = install_dir
        self.root = root
        self.wait = wait  # long-poll length asked of the server
        self.max_backoff = max_backoff
        self.reconverge = reconverge  # re-apply the last document this often, seconds
        self.replan = replan  # between converges, plan (no apply) this often and report drift
        self.once = once  # converge once and exit (tests, cron)
        self.worker_timeout = worker_timeout  # a converge worker running longer is killed
        self.release_key = release_key  # pinned once in state_dir (jcstate.agent.release_key)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"AgentConfig({fields})"


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)], but never before Retry-After."""
    delay = min(cap, base * (2 ** min(attempt, 30))) * _uniform()
    return max(delay, retry_after or 0.0)


def _uniform() -> float:
    """Uniform in [0, 1), from 53 random bits as ``random.random()`` draws them (the
    ``random`` module, with its Mersenne Twister state, costs the agent about 0.15 MB)."""
    return (int.from_bytes(os.urandom(7), "big") >> 3) / (1 << 53)


def setup_logging(
    log_file: str | None,
    level: int = logs.INFO,
    *,
    echo: int | None = None,
    json_lines: bool = False,
) -> None:
    """Log to a file that logrotate may move away (no ``copytruncate`` needed); see
    :mod:`jcstate.agent.logs` (the agent itself logs without importing ``logging``)."""
    logs.setup(log_file, level, echo=echo, json_lines=json_lines)


class WorkerError(JcstateError):
    """A converge worker crashed, was killed, timed out or answered garbage."""


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
        self._last_plan = 0.0
        self._drift_reported = False  # the last plan report said the device drifted
        self._draining_until = 0.0  # the server said it is stopping: come back quickly
        self._failures = 0
        self._enroll_facts: dict[str, Any] | None = None  # facts sent when enrolling
        self._server_error: str | None = None  # the server could not render our document
        updater = Updater(config.install_dir, config.state_dir, fetch_from(self.client))
        self.clock = Clock(config.state_dir)
        self.expiries = Expiries(config.state_dir)
        self.commands = QueuedCommands(
            config.root,
            actions=actions,
            updater=updater,
            converger=self._converge_now,
            elevator=self._elevate,
        )
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
            raise JcstateError("not enrolled yet: give --connect-key-file FILE (or --connect-key)")
        if self._enroll_facts is None:
            # read once: an unreachable server must not start a worker at every retry
            self._enroll_facts = self._facts()
        facts = self._enroll_facts
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
            self.pin_release_key()
            return self._loop()
        finally:
            self.close()

    def pin_release_key(self) -> None:
        """Pin ``--release-key`` (once: a different key than the pinned one is refused)."""
        if not self.config.release_key:
            return
        from jcstate.agent import release_key

        if release_key.pin(self.config.state_dir, self.config.release_key):
            log.info("pinned the release key: updates must be signed by it")

    def _loop(self) -> int:
        log.info("jcstate agent %s starting; server %s", self.version(), self.config.server)
        while True:
            try:
                self.enforce_expiry()  # before anything that needs the server
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
        if time.monotonic() < self._draining_until:
            # the server said it is stopping (a restart): try again within half a second,
            # without backing off, so the agent is back within a second of the new server
            time.sleep(0.1 + 0.4 * _uniform())
            return
        delay = backoff_delay(self._failures, 1.0, self.config.max_backoff, retry_after)
        self._failures += 1
        due = self.expiries.seconds_to_next(self.clock.now())
        if due is not None and due < delay:
            delay = due  # offline: wake at the instant a right ends, and take it away
        log.info("retrying in %.1f s", delay)
        time.sleep(delay)

    def step(self) -> None:
        """One poll, and a converge when there is a new document (or reconverge is due)."""
        wait = 0.0 if self.config.once else self.config.wait
        due = self.expiries.seconds_to_next(self.clock.now())
        if due is not None:
            wait = min(wait, max(due, 0.05))  # the poll ends when a right does
        work = self.client.work(self._etag, wait, self.commands.cursor)
        if work.get("draining"):
            self._draining_until = time.monotonic() + DRAIN_RETRY
        if work.get("error"):
            log.error("the server cannot render this device's document: %s", work["error"])
        if work.get("document") is not None or work.get("error"):
            self._document = work.get("document")
            self._server_error = work.get("error")
            self._secrets = work.get("secrets") or {}
            self._etag = str(work.get("etag") or "")
            self.expiries.remember(self._document, self._etag)
            self.converge()
        elif work.get("etag") and not self._etag:
            self._etag = str(work["etag"])  # no policy yet: nothing to do until one arrives
        elif (
            self._document is not None
            and time.monotonic() - self._last_converge > self.config.reconverge
        ):
            self.converge()
        elif (
            self._document is not None
            and not work.get("draining")
            and time.monotonic() - max(self._last_converge, self._last_plan) > self.config.replan
        ):
            self.plan()
        if work.get("commands"):
            self.run_commands(work["commands"])
        if self.commands.retry_due():  # a self-update's next attempt (jcstate.agent.update)
            self.flush()
        self.enforce_expiry()

    def enforce_expiry(self) -> bool:
        """Converge now when an admin right ended since the last converge; True when one did.

        With no document from the server in memory (a restart while offline), the last one
        kept in the state directory is planned and only the removals of admin rights are
        applied (worker mode ``expire``). The report goes to the outbox either way.
        """
        now = self.clock.now()
        self.clock.save()
        ended = self.expiries.due(now)
        if not ended:
            return False
        log.info("an admin right ended at %s: taking it away", ", ".join(map(text, ended)))
        if self._document is not None:
            self._converge_into_outbox()
            self._last_converge = time.monotonic()
            self.commands.journal_changed()
        elif self.expiries.document is not None:
            self._converge_into_outbox(mode="expire", document=self.expiries.document)
        else:
            self.expiries.enforced_at(now)  # nothing to converge: nothing was granted here
        return True

    def _elevate(self, spec: Any) -> tuple[bool, str]:
        """Action ``elevate`` of the command queue: keep (or end) the elevation, converge."""
        user = spec.user
        if spec.revoke:
            if not self.expiries.revoke(user):
                return True, f"{user} has no elevation on this device: nothing to revoke"
            if self._document is None:
                return True, f"elevation of {user} revoked; the right goes at the next converge"
            ok, message = self._converge_for(
                user,
                unchanged="no change was made: the right it gave had already gone, or a policy "
                "or an admin outside jcstate gives it",
            )
            return ok, f"elevation of {user} revoked: {message}"
        if self._document is None:
            return False, self._server_error or "no policy document for this device yet"
        if managed_user(self._document, user) is None:
            return False, (
                f"not elevated: no policy on this device lists {user} as a present user; "
                "jcstate elevates only accounts a policy manages (add the user to a policy "
                "first)"
            )
        now = self.clock.now()
        until = min(spec.until.timestamp(), now + spec.seconds)
        if until <= now:
            return False, f"not elevated: its end ({text(until)}) has passed on this device"
        self.expiries.grant(user, until, spec.reason)
        self.clock.save()
        log.info("elevation: %s is admin until %s (%s)", user, text(until), spec.reason or "")
        ok, message = self._converge_for(
            user, unchanged="no change was needed (the account was an admin already)"
        )
        return ok, f"{user} is admin until {text(until)}: {message}"

    def _converge_for(self, user: str, unchanged: str) -> tuple[bool, str]:
        """Converge now; (ok, what happened to ``user``'s account) from the report, or
        ``unchanged`` when the converge changed nothing of it. The report waits in the outbox:
        the loop sends it with the command's result."""
        payload = self._converge_into_outbox()
        self._last_converge = time.monotonic()
        self.commands.journal_changed()
        report = payload.get("report") or {}
        for result in report.get("results") or []:
            if result.get("kind") == "users" and result.get("name") == user:
                if result.get("status") != "ok":
                    why = result.get("message") or result.get("error") or result.get("status")
                    return False, f"{result.get('status')}: {why}"
                return True, "applied"
        if payload.get("error"):
            return False, f"converge failed: {payload['error']}"
        return True, unchanged

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

    def converge(self) -> dict[str, Any]:
        """Plan and apply the current document in a worker; queue the report; send the queue.
        Returns what was queued (without the facts)."""
        payload = self._converge_into_outbox()  # its report is on disk
        self._last_converge = time.monotonic()
        self.commands.journal_changed()  # a policy's commands may have run
        self.flush()
        return payload

    def _converge_now(self) -> tuple[bool, str]:
        """Action ``converge`` of the command queue: converge now; (ok, what happened)."""
        if self._document is None:
            return False, self._server_error or "no policy document for this device yet"
        payload = self.converge()
        counts = (payload.get("report") or {}).get("counts") or {}
        done = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        if payload.get("ok"):
            return True, f"converged: {done or 'no change'}"
        return False, f"converge failed: {payload.get('error') or done or 'see the report'}"

    def _worker_request(self, mode: str, document: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a converge or plan worker is given: the document (with the running
        elevations), its secrets, who we are, and the clock's instant."""
        enrolled = self.identity.device() or {}
        now = self.clock.now()
        offline = document is not None  # the kept document: no secrets, no server error
        return {
            "mode": mode,
            "document": self.expiries.merged(document or self._document, now),
            "error": None if offline else self._server_error,
            "secrets": {} if offline else self._secrets,
            "etag": self._etag,
            "deviceId": enrolled.get("id", ""),
            "now": now,
        }

    def plan(self) -> None:
        """Between converges: plan (nothing applied) and tell the server when the device has
        drifted (changes it has not applied), or no longer has; see docs/state-model.md."""
        self._last_plan = time.monotonic()
        try:
            answer = self._work(self._worker_request("plan"))
        except WorkerError as exc:
            log.error("plan failed: %s", exc)
            return
        report = answer.get("report") or {}
        drifted = bool(report.get("changes") or report.get("errors"))
        if not drifted and not self._drift_reported:
            return  # nothing new to say: the server already shows no drift
        if drifted:
            log.warning("drift: %s", report.get("counts"))
        self.outbox.put(
            {
                "reportId": os.urandom(16).hex(),
                "kind": "plan",
                "etag": self._etag,
                "ok": bool(answer.get("ok")),
                "changed": False,
                "report": report,
                "facts": {},
            }
        )
        self._drift_reported = drifted
        self.flush()

    def _converge_into_outbox(
        self, mode: str = "converge", document: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        etag = self.expiries.etag if document is not None else self._etag
        payload: dict[str, Any] = {"reportId": os.urandom(16).hex(), "etag": etag}
        request = self._worker_request(mode, document)
        try:
            answer = self._work(request)
        except WorkerError as exc:
            log.error("converge failed: %s", exc)
            answer = {"ok": False, "error": str(exc), "facts": {"error": str(exc)}}
        else:
            # what ended by the converge's instant was judged (and lock-out refusals reported)
            self.expiries.enforced_at(request["now"])
        payload["ok"] = bool(answer.get("ok"))
        payload["changed"] = bool(answer.get("changed"))
        payload["report"] = answer.get("report") or {}
        if answer.get("error"):
            payload["error"] = str(answer["error"])
        facts = answer.get("facts")
        if not isinstance(facts, dict):
            facts = {"error": "the converge worker sent no facts"}
        elif "error" not in facts:
            facts["agentVersion"] = self.version()
        payload["facts"] = facts
        self.outbox.put(payload)
        # the converge's report sets drift on the server (changes it did not apply); a later
        # plan reports again when it finds drift, or to clear what this one left
        self._drift_reported = not payload["ok"]
        return {k: v for k, v in payload.items() if k != "facts"}

    def _facts(self) -> dict[str, Any]:
        facts = self._work({"mode": "facts"}).get("facts")
        if not isinstance(facts, dict):
            raise WorkerError("the converge worker sent no facts")
        facts["agentVersion"] = self.version()
        return facts

    def _work(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one :mod:`jcstate.agent.worker` on ``request``; its answer, or WorkerError.

        The request (with the document's secrets) goes through the worker's stdin only. The
        worker has a process group of its own, so a timeout kills it with everything it
        started; the lifeline pipe stops it when this process dies.
        """
        lifeline, keep = os.pipe()
        request = {
            **request,
            "root": self.config.root,
            "server": self.client.server,
            "caFile": self.config.ca_file,
            "stateDir": self.config.state_dir,
            "logFile": self.config.log_file or None,
            "logLevel": logs.level(),
            "logFormat": logs.line_format(),
            "lifeline": lifeline,
        }
        try:
            proc = Child([sys.executable, "-m", "jcstate.agent.worker"], pass_fd=lifeline)
        except OSError as exc:
            os.close(keep)
            raise WorkerError(f"could not start the converge worker: {exc}") from exc
        finally:
            os.close(lifeline)
        timeout = self.config.worker_timeout
        try:
            out = proc.communicate(json.dumps(request).encode(), timeout=timeout)
        except TimeoutError:
            proc.kill_group()
            try:
                proc.communicate(b"", timeout=30)
            except TimeoutError:
                proc.wait()  # a process that left the group still holds stdout: let it be
            raise WorkerError(
                f"the converge worker ran longer than {timeout:g} s and was killed"
            ) from None
        except BaseException:
            proc.kill_group()
            proc.wait()
            raise
        finally:
            proc.close()
            os.close(keep)
        try:
            answer = json.loads(out)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = None
        status = proc.wait()  # exited: its stdout was read to the end and it was waited for
        if status != 0:
            if answer is not None and answer.get("error"):
                raise WorkerError(str(answer["error"]))
            if status < 0:
                try:
                    name = signal.Signals(-status).name
                except ValueError:
                    name = f"signal {-status}"
                raise WorkerError(f"the converge worker was killed by {name}")
            raise WorkerError(f"the converge worker exited with status {status}")
        if answer is None:
            text = out[:200].decode(errors="replace")
            raise WorkerError(f"the converge worker answered something else than JSON: {text!r}")
        return answer

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
