"""One converge in a process of its own: ``python -m jcstate.agent.worker``.

The resident agent (:mod:`jcstate.agent.loop`) only polls, keeps the outbox and runs queued
commands; it never imports the engine, the document model, the resource modules, Jinja2 or
YAML. For each converge (and for the facts sent at enrollment) it starts this module, writes
one JSON request to its stdin and reads one JSON answer from its stdout. The memory a converge
needed goes back to the OS when the worker exits, and a resource module that crashes, leaks or
hangs takes down one worker, never the agent loop.

Request (stdin; it carries the document's secrets, so it never goes into argv, the
environment or a log)::

    {"mode": "converge" | "plan" | "expire" | "facts", "root": "/", "document": {...} | null,
     "error": "the server could not render …" | null, "secrets": {...}, "etag": "…",
     "deviceId": "…", "now": 1801245600.0,
     "server": "https://…", "caFile": null, "stateDir": "/var/lib/jcstate",
     "logFile": "/var/log/jcstate.log" | null, "logLevel": 20, "lifeline": 5}

Answer (stdout, one JSON object)::

    converge: {"ok": bool, "changed": bool, "report": {...}, "error"?: str, "facts": {...}}
    plan:     {"ok": bool, "changed": false, "report": {...}, "error"?: str} (nothing applied)
    expire:   as converge, but only the removals of admin rights are applied
    facts:    {"facts": {...}}

``now`` (epoch seconds) is the agent's clock (:class:`jcstate.agent.expiry.Clock`), which a
step backwards of the wall clock cannot move back: time-bound admin rights are judged at it.
Mode ``expire`` is what the agent runs when a right ends and it holds no document from the
server (a restart while offline): the last document it kept, without its password fields and
secrets, is planned in full (so the undo layer sees every policy) and only the changes that
take an admin right away are applied.

Anything a module prints goes to stderr: stdout carries the answer only. The worker logs to
the agent's log file itself. ``lifeline`` is the read end of a pipe whose write end only the
agent holds: when the agent dies (``kill -9``, a service stop) the pipe reads end-of-file and
the worker stops at once, as the in-process converge did before, so a restarted agent never
applies next to a leftover worker. A FileVault recovery key met during the converge is sent to
the server from here (:class:`Escrow`), signed with the device's own key from the state
directory. The ownership ledger (:mod:`jcstate.ledger`) lives in the state directory too,
``ledger.json``; its names (never secrets) travel with the facts as ``facts["ledger"]``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any

from jcstate.errors import JcstateError
from jcstate.secret import Secret

__all__ = ["Escrow", "main", "run"]

log = logging.getLogger("jcstate.agent")

EXIT_FAILED = 1  # an unexpected error; the answer still says which
EXIT_BAD_REQUEST = 2
EXIT_ORPHANED = 3  # the agent went away mid-converge


class Escrow:
    """Sends a FileVault recovery key to the server; raises when it cannot.

    A failure fails the plan's escrow step, so its stamp is not written and the next converge
    tries again; meanwhile the key stays in its root-only 0600 file. The signed client is made
    on first use from the agent's state directory (the worker runs as the same user).
    """

    def __init__(self, server: str, state_dir: str, ca_file: str | None = None):
        self.server, self.state_dir, self.ca_file = server, state_dir, ca_file
        self._client: Any = None

    def __call__(self, key: Secret, volume: str | None) -> None:
        if self._client is None:
            from jcstate.agent.client import Client
            from jcstate.agent.identity import Identity

            self._client = Client(self.server, Identity(self.state_dir), ca_file=self.ca_file)
        self._client.escrow(volume, key)
        log.info("escrowed the FileVault recovery key of volume %s", volume or "?")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def run(request: dict[str, Any], escrow: Escrow | None = None) -> dict[str, Any]:
    """Answer one request (see the module docstring); ``escrow`` defaults to the request's."""
    from jcstate.host import Host

    host = Host(root=str(request.get("root") or "/"))
    mode = request.get("mode")
    if mode == "facts":
        return {"facts": _facts(host, request)}
    if mode not in ("converge", "plan", "expire"):
        raise JcstateError(f"unknown worker mode {mode!r}")
    own = escrow is None
    if escrow is None:
        escrow = Escrow(
            str(request.get("server") or ""),
            str(request.get("stateDir") or ""),
            request.get("caFile"),
        )
    answer: dict[str, Any] = {}
    try:
        answer.update(_apply(request, host, escrow))
    except JcstateError as exc:
        log.error("converge failed: %s", exc)
        answer.update({"ok": False, "changed": False, "error": str(exc), "report": {}})
    finally:
        if own:
            escrow.close()
    if mode == "plan":  # between converges: the server needs the plan only
        return answer
    try:
        answer["facts"] = _facts(host, request)
    except JcstateError as exc:
        answer["facts"] = {"error": str(exc)}
    return answer


def _apply(request: dict[str, Any], host: Any, escrow: Escrow) -> dict[str, Any]:
    from jcstate import engine
    from jcstate.secrets import MappingSecrets

    if request.get("document") is None:
        error = request.get("error") or "no document"
        return {"ok": False, "changed": False, "report": {}, "error": error}
    from jcstate.document import Document

    document = Document.from_dict(request["document"])
    report = engine.apply(
        document,
        host,
        MappingSecrets(request.get("secrets") or {}),
        device={"id": str(request.get("deviceId") or "")},
        escrow=escrow,
        ledger=_ledger(request),
        check=request.get("mode") == "plan",  # plan only: nothing is applied
        now=_now(request),
        only=_takes_admin_away if request.get("mode") == "expire" else None,
    )
    counts = report.counts() if callable(getattr(report, "counts", None)) else {}
    etag = str(request.get("etag") or "")
    done = "planned" if request.get("mode") == "plan" else "converged"
    log.info("%s %s: %s", done, etag[:8], counts or ("ok" if report.ok else "failed"))
    return {
        "ok": bool(report.ok),
        "changed": bool(getattr(report, "changed", False)),
        "report": report.to_dict(),
    }


def _now(request: dict[str, Any]) -> Any:
    """The agent's clock as an aware datetime (None: the wall clock)."""
    import datetime

    now = request.get("now")
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        return datetime.datetime.fromtimestamp(now, datetime.UTC)
    return None


def _takes_admin_away(change: Any) -> bool:
    """Mode ``expire`` applies these only: a user's admin right removed."""
    return change.kind == "users" and any(
        f.field == "admin" and f.after is False for f in change.fields
    )


def _ledger(request: dict[str, Any]) -> Any:
    """The agent's ownership ledger, in its state directory (raises LedgerError if damaged)."""
    from jcstate.host import Host
    from jcstate.ledger import FILE_NAME, Ledger

    state_dir = str(request.get("stateDir") or "")
    if not state_dir:
        return None  # a bare request (tests): no ledger, no undo
    return Ledger.load(Host(), os.path.join(os.path.abspath(state_dir), FILE_NAME))


def _facts(host: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The device's facts, with the names the ledger holds (for the server's blast radius)."""
    from jcstate import engine

    facts = engine.device_facts(host)
    try:
        ledger = _ledger(request)
    except JcstateError as exc:
        facts["ledger"] = {"error": str(exc)}
    else:
        if ledger is not None:
            facts["ledger"] = ledger.summary()
    return facts


def _watch_agent(fd: int) -> None:
    """Stop this process as soon as the agent is gone (its end of the lifeline closes)."""

    def wait() -> None:
        try:
            while os.read(fd, 1):
                pass  # the agent never writes: any byte is ignored, end-of-file means gone
        except OSError:
            pass
        log.error("the agent went away; this converge stops here")
        os._exit(EXIT_ORPHANED)  # no cleanup: as if the agent's own converge had been killed

    threading.Thread(target=wait, name="lifeline", daemon=True).start()


def _setup_logging(request: dict[str, Any]) -> None:
    from jcstate.agent.loop import setup_logging

    level = int(request.get("logLevel") or logging.INFO)
    log_file = request.get("logFile")
    if log_file:
        setup_logging(str(log_file), level, json_lines=request.get("logFormat") == "json")
    else:  # as the agent without a log file: warnings and errors reach stderr
        logging.getLogger("jcstate").setLevel(level)


def main() -> int:
    # The answer gets its own copy of stdout; fd 1 becomes stderr, so whatever a module or a
    # tool prints cannot corrupt the answer.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with os.fdopen(answer_fd, "w", encoding="utf-8") as out:
        try:
            request = json.load(sys.stdin)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            json.dump({"ok": False, "error": f"bad request to the converge worker: {exc}"}, out)
            return EXIT_BAD_REQUEST
        _setup_logging(request)
        if isinstance(request.get("lifeline"), int):
            _watch_agent(request["lifeline"])
        code = 0
        try:
            answer = run(request)
        except JcstateError as exc:
            log.error("%s", exc)
            answer = {"ok": False, "changed": False, "report": {}, "error": str(exc)}
            code = EXIT_FAILED
        except Exception as exc:  # a bug in a module: one failed converge, not a dead agent
            log.exception("the converge worker failed")
            answer = {
                "ok": False,
                "changed": False,
                "report": {},
                "error": f"the converge worker failed: {type(exc).__name__}: {exc}",
            }
            code = EXIT_FAILED
        json.dump(answer, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
