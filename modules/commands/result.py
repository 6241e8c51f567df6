"""What a command did: :class:`Outcome` from an OS action, :class:`CommandResult` for reports.

An OS action (``linux.py`` …) returns an :class:`Outcome`. The runner turns it into a
:class:`CommandResult` with the command's id and times, which the journal keeps until the
server acknowledges it. Output is already tail-capped when it gets here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CommandResult", "Outcome", "Status"]

# running: a restart whose reboot has not been seen yet (boot time unchanged).
Status = Literal["succeeded", "failed", "interrupted", "running"]
FINAL_STATUSES = ("succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class Outcome:
    """What one OS action did. ``awaiting_reboot``: done only once the boot time changes.
    ``pending``: not final, the action is tried again later (an update waiting out its back-off).
    """

    ok: bool
    message: str = ""
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    timed_out: bool = False
    duration: float = 0.0
    awaiting_reboot: bool = False
    pending: bool = False


@dataclass(frozen=True)
class CommandResult:
    """The result of one command on one device, as journaled and reported to the server."""

    id: str
    action: str
    status: Status
    message: str = ""
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    timed_out: bool = False
    duration: float = 0.0
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "status": self.status,
            "message": self.message,
            "exitCode": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "truncated": self.truncated,
            "timedOut": self.timed_out,
            "duration": round(self.duration, 4),
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CommandResult:
        return cls(
            id=data["id"],
            action=data["action"],
            status=data["status"],
            message=data.get("message", ""),
            exit_code=data.get("exitCode"),
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            truncated=bool(data.get("truncated", False)),
            timed_out=bool(data.get("timedOut", False)),
            duration=float(data.get("duration", 0.0)),
            started_at=data.get("startedAt"),
            finished_at=data.get("finishedAt"),
        )
