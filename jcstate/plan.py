"""Plans are data: a typed list of changes, each with the exact steps that carry it out.

The same objects are printed, serialised to JSON, sent to the server and applied. Secrets
inside them are :class:`~jcstate.secret.Secret` values and serialise as ``(secret)``.

A :class:`Change` is one resource (``user alice``) moving from its current state to the desired
one. Its ``fields`` say what differs (for the report); its ``steps`` say how (for apply). A
change with an ``error`` was refused at plan time (lock-out safety, missing secret) and is never
applied; its dependents are skipped.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jcstate.errors import CommandFailed
from jcstate.secret import Secret, redact

if TYPE_CHECKING:
    from jcstate.host import Host

__all__ = [
    "Change",
    "FieldChange",
    "MakeDir",
    "Plan",
    "RemoveFile",
    "Run",
    "Step",
    "WriteFile",
]

Action = Literal["create", "update", "remove", "run"]

log = logging.getLogger(__name__)

# A transient failure (a tool that found its lock taken by another process) is retried this many
# times in all, waiting RETRY_FIRST_WAIT, then twice as long each time, at most RETRY_MAX_WAIT,
# with jitter: about 8 s in the worst case, then the change fails as any other would.
RETRY_ATTEMPTS = 8
RETRY_FIRST_WAIT = 0.1
RETRY_MAX_WAIT = 2.0


@dataclass(frozen=True)
class Run:
    """Run an argument vector (never a shell string). ``stdin`` may carry a Secret.

    ``batch=True`` lets the engine merge this run with the other batch runs of the same argv in
    the same phase into one process whose stdin is all of theirs, one after the other. Only for
    tools that read independent lines and apply them all or nothing (``chpasswd``): a hundred
    users then cost one process instead of a hundred. The run may happen after the change's
    later steps (it runs at the end of the phase), so nothing that must follow it belongs in
    the same change (a ``usermod -L`` meant to lock the hash it writes would run first); if the
    merged run fails, each is run alone to find the one at fault.

    ``retry_on``: texts that, found in the stderr of a failed run, mark the failure as transient
    (another process holds a lock the tool needs): the run is tried again after a bounded,
    growing wait instead of failing the change. Only for tools that change nothing when they
    fail that way; the backend that builds the run says which texts (the engine names no tool).
    """

    argv: tuple[str, ...]
    stdin: str | Secret | None = None
    chroot: bool = False
    batch: bool = False
    retry_on: tuple[str, ...] = ()

    def execute(self, host: Host) -> None:
        attempt = 1
        while True:
            try:
                host.run(self.argv, stdin=self.stdin, chroot=self.chroot)
                return
            except CommandFailed as exc:
                if attempt >= RETRY_ATTEMPTS or not self.transient(exc.stderr):
                    raise
                wait = min(RETRY_MAX_WAIT, RETRY_FIRST_WAIT * 2 ** (attempt - 1))
                wait *= random.uniform(0.5, 1.0)  # two retrying writers do not stay in step
                log.info(
                    "%s: %s; trying again in %.2f s (attempt %d of %d)",
                    self.argv[0],
                    exc.stderr.strip(),
                    wait,
                    attempt + 1,
                    RETRY_ATTEMPTS,
                )
                time.sleep(wait)
                attempt += 1

    def transient(self, stderr: str) -> bool:
        """Whether a failure with this stderr is worth trying again."""
        return any(text in stderr for text in self.retry_on)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": list(self.argv)}
        if self.stdin is not None:
            out["stdin"] = redact(self.stdin)
        return out

    def __str__(self) -> str:
        text = " ".join(_quote(a) for a in self.argv)
        if self.stdin is not None:
            text += " < " + ("(secret)" if isinstance(self.stdin, Secret) else "(stdin)")
        return text


@dataclass(frozen=True)
class WriteFile:
    """Write a file atomically, never following a symlink; owner may be a name resolved at apply."""

    path: str
    content: str | Secret
    mode: int = 0o644
    owner: str | int | None = None
    group: str | int | None = None

    def execute(self, host: Host) -> None:
        host.write_file(self.path, self.content, mode=self.mode, owner=self.owner, group=self.group)

    def to_dict(self) -> dict[str, Any]:
        return {
            "write": self.path,
            "mode": f"{self.mode:04o}",
            "owner": self.owner,
            "group": self.group,
            "content": redact(self.content) if isinstance(self.content, Secret) else "(text)",
        }

    def __str__(self) -> str:
        who = f" {self.owner}:{self.group}" if self.owner is not None else ""
        return f"write {self.path} ({self.mode:04o}{who})"


@dataclass(frozen=True)
class MakeDir:
    """Create a directory, or set an existing one's owner and mode."""

    path: str
    mode: int = 0o755
    owner: str | int | None = None
    group: str | int | None = None

    def execute(self, host: Host) -> None:
        host.make_dir(self.path, mode=self.mode, owner=self.owner, group=self.group)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mkdir": self.path,
            "mode": f"{self.mode:04o}",
            "owner": self.owner,
            "group": self.group,
        }

    def __str__(self) -> str:
        who = f" {self.owner}:{self.group}" if self.owner is not None else ""
        return f"mkdir {self.path} ({self.mode:04o}{who})"


@dataclass(frozen=True)
class RemoveFile:
    """Remove a file or a symlink (never the link's target)."""

    path: str

    def execute(self, host: Host) -> None:
        host.remove_file(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"remove": self.path}

    def __str__(self) -> str:
        return f"remove {self.path}"


Step = Run | WriteFile | MakeDir | RemoveFile


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: ``before`` is what the system has, ``after`` what is wanted."""

    field: str
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "before": redact(self.before), "after": redact(self.after)}


@dataclass
class Change:
    """One resource moving to its desired state.

    ``phase`` orders changes: lower phases apply first for create/update; removals run after
    everything else in reverse phase order. ``requires`` names (kind, name) pairs whose
    failure makes this change skip.
    """

    kind: str
    name: str
    action: Action
    phase: int
    fields: list[FieldChange] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    requires: list[tuple[str, str]] = field(default_factory=list)
    skipped_fields: list[str] = field(default_factory=list)
    error: str | None = None
    source: str | None = None  # file:line of the policy entry that asked for it
    summary: str | None = None  # a word the report puts after the name: "(lock)" for a command

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "fields": [f.to_dict() for f in self.fields],
            "steps": [s.to_dict() for s in self.steps],
        }
        if self.requires:
            out["requires"] = [list(r) for r in self.requires]
        if self.skipped_fields:
            out["skipped"] = list(self.skipped_fields)
        if self.error:
            out["error"] = self.error
        if self.source:
            out["source"] = self.source
        if self.summary:
            out["summary"] = self.summary
        return out


@dataclass
class Plan:
    """The ordered changes for one system, plus plan-wide problems."""

    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def ordered(self) -> list[Change]:
        """Creates and updates by ascending phase, then removals by descending phase."""
        ups = [c for c in self.changes if c.action != "remove"]
        downs = [c for c in self.changes if c.action == "remove"]
        ups.sort(key=lambda c: c.phase)
        downs.sort(key=lambda c: -c.phase)
        return ups + downs

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.ordered()],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }


def _quote(arg: str) -> str:
    if arg and all(ch.isalnum() or ch in "-_./=:,+@%" for ch in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
