"""The device's durable journal of commands: what makes "at most once" true across crashes.

One JSON file per command id in the journal directory (default ``/var/lib/jcstate/journal``
under the host's root; the agent's state dir holds the same place), written through
:meth:`Host.write_file` — atomic rename, file and directory fsynced — so a record is either
wholly there or not at all, even after a power cut.

A record's life::

    (absent) ──start()──▶ started ──finish()──▶ finished ──acknowledge()──▶ finished, acked
                             │                     ▲
                             │  await_reboot()     │ boot time changed (restart done)
                             └──▶ awaiting-reboot ─┘

``start`` is written *before* anything runs. A record found ``started`` later means the
process died in between: :meth:`Journal.recover` reports it ``interrupted`` and it never
runs again — except ``erase``, which is resumed until it finishes (half an erase is worse
than a repeated one), and ``update``, which stays ``started`` between its attempts and is
resumed after a restart (installing a release twice is harmless). An id the journal holds
is never started again, whatever its state; acknowledging only drops the output that was
kept for the server, never the id.

One writer at a time: the agent's single-instance lock, or one ``jcstate apply``.

A full disk (or any write the file system refuses) is where "at most once" is decided:

* ``start`` raises when its record cannot be written, and the caller does not run the command
  (:meth:`~jcstate.modules.commands.execution.CommandRunner.run` reports it ``failed`` with
  that reason through :meth:`Journal.refuse`);
* every later record (``finish``, ``refuse``, ``acknowledge``) is *held* in memory when it
  cannot be written: :meth:`get` and :meth:`pending_results` answer from it, so the result
  still reaches the server and the id is never started again by this process, and
  :meth:`write_held` writes it once space returns. A process that ends before that loses only
  what was held: a ``started`` record left on disk is settled ``interrupted`` at the next
  start, and a command refused without any record is finished on the server once its result
  was acknowledged, so it is not delivered again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from jcstate.errors import HostError
from jcstate.host import Host
from jcstate.modules.commands import ID_PATTERN
from jcstate.modules.commands.boot import rebooted_since
from jcstate.modules.commands.result import CommandResult

__all__ = ["DEFAULT_DIR", "Entry", "Journal", "now_text"]

log = logging.getLogger(__name__)

DEFAULT_DIR = "/var/lib/jcstate/journal"
RESUMED = ("erase", "update")  # actions whose started record is run again, not "interrupted"
State = Literal["started", "awaiting-reboot", "finished"]


def now_text() -> str:
    """The current time as RFC 3339 UTC, the form the journal and reports use."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Entry:
    """One command's record. ``command`` is kept only for what may be resumed (RESUMED)."""

    id: str
    action: str
    state: State
    started_at: str
    boot_time: float | None = None
    attempts: int = 1
    command: dict[str, Any] | None = None
    result: CommandResult | None = None
    acknowledged: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "state": self.state,
            "startedAt": self.started_at,
            "bootTime": self.boot_time,
            "attempts": self.attempts,
            "command": self.command,
            "result": None if self.result is None else self.result.to_dict(),
            "acknowledged": self.acknowledged,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        result = data.get("result")
        return cls(
            id=data["id"],
            action=data["action"],
            state=data["state"],
            started_at=data["startedAt"],
            boot_time=data.get("bootTime"),
            attempts=int(data.get("attempts", 1)),
            command=data.get("command"),
            result=None if result is None else CommandResult.from_dict(result),
            acknowledged=bool(data.get("acknowledged", False)),
            notes=list(data.get("notes", [])),
        )


class Journal:
    """The command journal of one host (see the module docstring for the states)."""

    def __init__(self, host: Host, directory: str = DEFAULT_DIR):
        self.host = host
        self.directory = directory.rstrip("/") or "/"
        self._held: dict[str, Entry] = {}  # records the disk refused, newest state per id

    # -- reading -----------------------------------------------------------------------
    def _path(self, command_id: str) -> str:
        if not ID_PATTERN.fullmatch(command_id):
            raise HostError(f"{command_id!r}: not a valid command id for the journal")
        return f"{self.directory}/{command_id}.json"

    def get(self, command_id: str) -> Entry | None:
        """The record of ``command_id``, or None when this device never started it."""
        path = self._path(command_id)
        if command_id in self._held:
            return self._held[command_id]
        text = self.host.read_text(path)
        if text is None:
            return None
        return self._load(command_id, text)

    def entries(self) -> list[Entry]:
        """Every record, oldest start first."""
        names = self.host.list_dir(self.directory) or []
        out = []
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue  # a write in progress, or not ours
            cid = name[: -len(".json")]
            if not ID_PATTERN.fullmatch(cid):
                continue
            text = self.host.read_text(f"{self.directory}/{name}")
            if text is not None and cid not in self._held:
                out.append(self._load(cid, text))
        out.extend(self._held.values())
        return sorted(out, key=lambda e: (e.started_at, e.id))

    def ids(self) -> set[str]:
        return {e.id for e in self.entries()}

    @staticmethod
    def _load(command_id: str, text: str) -> Entry:
        try:
            return Entry.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError):
            # An unreadable record still proves the id was started: never run it again.
            return Entry(
                command_id, "unknown", "started", now_text(), notes=["journal record unreadable"]
            )

    # -- writing -----------------------------------------------------------------------
    def _write(self, entry: Entry) -> None:
        """Write ``entry`` durably, or raise (HostError, OSError); see :meth:`_keep`."""
        self._ensure_dir()
        self.host.write_file(
            self._path(entry.id),
            json.dumps(entry.to_dict(), indent=1, sort_keys=True) + "\n",
            mode=0o600,
            sync_dir=True,
        )
        self._held.pop(entry.id, None)

    def _keep(self, entry: Entry) -> Entry:
        """Write ``entry``; when the disk refuses, hold it in memory until :meth:`write_held`."""
        try:
            self._write(entry)
        except (HostError, OSError) as exc:
            self._held[entry.id] = entry
            log.error(
                "journal: could not write the record of command %s (%s); kept in memory and "
                "written once the disk takes it",
                entry.id,
                exc,
            )
        return entry

    def held(self) -> list[str]:
        """Ids whose latest record is only in memory (the disk refused it)."""
        return sorted(self._held)

    def write_held(self) -> list[str]:
        """Try again to write the records held in memory; the ids still held."""
        for entry in list(self._held.values()):
            try:
                self._write(entry)
            except (HostError, OSError):
                break  # the disk is still full: the rest would fail the same way
            log.info("journal: wrote the held record of command %s", entry.id)
        return self.held()

    def _ensure_dir(self) -> None:
        if self.host.exists(self.directory):
            return
        parts = [p for p in self.directory.split("/") if p]
        for depth in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            if not self.host.exists(path):
                # The journal says what ran on this device: root's business only.
                self.host.make_dir(path, mode=0o700 if depth == len(parts) else 0o755)

    def start(
        self,
        command_id: str,
        action: str,
        *,
        boot_time: float | None,
        command: dict[str, Any] | None = None,
    ) -> Entry:
        """Record durably that ``command_id`` is about to run. Refuses a known id; raises
        (HostError, OSError) when the record cannot be written: then it must not run."""
        if self.get(command_id) is not None:
            raise HostError(f"command {command_id} is already in the journal; not starting it")
        entry = Entry(
            command_id,
            action,
            "started",
            now_text(),
            boot_time=boot_time,
            command=command if action in RESUMED else None,
        )
        self._write(entry)
        return entry

    def resume(self, entry: Entry) -> Entry:
        """Count another attempt of a started command (erase) before running it again."""
        entry = replace(entry, attempts=entry.attempts + 1)
        self._write(entry)
        return entry

    def await_reboot(self, command_id: str, note: str) -> Entry:
        """A restart was handed to the OS: done when the boot time changes."""
        entry = self._require(command_id)
        entry = replace(entry, state="awaiting-reboot", notes=[*entry.notes, note])
        self._write(entry)
        return entry

    def finish(self, command_id: str, result: CommandResult) -> Entry:
        """Record the result; it stays until :meth:`acknowledge` (held in memory when the disk
        refuses it)."""
        entry = self._require(command_id)
        entry = replace(entry, state="finished", result=result, command=None)
        return self._keep(entry)

    def refuse(self, result: CommandResult, boot_time: float | None = None) -> Entry:
        """Record a command that was never started (its ``started`` record could not be
        written) as finished with ``result``: the id is known from now on, so it never runs."""
        entry = Entry(
            result.id,
            result.action,
            "finished",
            result.started_at or now_text(),
            boot_time=boot_time,
            result=result,
        )
        return self._keep(entry)

    def acknowledge(self, command_id: str) -> bool:
        """The server has stored the result: drop its output, keep the id forever."""
        entry = self.get(command_id)
        if entry is None or entry.state != "finished" or entry.acknowledged:
            return False
        assert entry.result is not None
        slim = replace(entry.result, stdout="", stderr="")
        self._keep(replace(entry, result=slim, acknowledged=True))
        return True

    def _require(self, command_id: str) -> Entry:
        entry = self.get(command_id)
        if entry is None:
            raise HostError(f"command {command_id} is not in the journal")
        return entry

    # -- after a crash or a reboot -------------------------------------------------------
    def recover(self, boot_time: float | None) -> list[Entry]:
        """Settle what an earlier process left unfinished; return the entries to resume.

        started (not RESUMED)   → finished, interrupted (it never runs again)
        awaiting-reboot         → finished, succeeded, once the boot time has changed
        started erase / update  → returned, to be run again by the caller
        """
        resume = []
        for entry in self.entries():
            if entry.state == "started" and entry.action in RESUMED:
                resume.append(entry)
            elif entry.state == "started":
                self.finish(
                    entry.id,
                    self._result(
                        entry,
                        "interrupted",
                        "interrupted: the agent stopped after starting this command and before "
                        "recording its result; it is not run again",
                    ),
                )
            elif entry.state == "awaiting-reboot" and rebooted_since(entry.boot_time, boot_time):
                said = "; ".join(entry.notes)
                self.finish(
                    entry.id,
                    self._result(
                        entry,
                        "succeeded",
                        f"the device restarted (boot time changed){': ' + said if said else ''}",
                    ),
                )
        return resume

    @staticmethod
    def _result(entry: Entry, status: Any, message: str) -> CommandResult:
        return CommandResult(
            entry.id,
            entry.action,
            status,
            message,
            started_at=entry.started_at,
            finished_at=now_text(),
        )

    def pending_results(self) -> list[CommandResult]:
        """Final results the server has not acknowledged yet, oldest first (the outbox)."""
        return [
            e.result
            for e in self.entries()
            if e.state == "finished" and not e.acknowledged and e.result is not None
        ]
