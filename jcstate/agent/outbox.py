"""Reports kept on disk until the server acknowledges them.

Each report is one file, written atomically and fsynced before the agent goes on, so it survives
``kill -9``, a reboot and a server outage. Files are sent oldest first, as the bytes they hold
(re-serialising a report of hundreds of accounts would leave its objects' memory in the resident
agent), and removed only after the server's acknowledgement; the report id inside makes a resend
after a lost acknowledgement harmless (the server stores each id once).

When the disk refuses a report (full, read-only), it is *held* in memory instead: it is sent
at the next flush like any other, and written to disk as soon as the disk takes it (each
:meth:`Outbox.pending` tries), so a round's result still reaches the server while the state
directory is full. What is held dies with the process; at most :data:`MAX_HELD` reports are
held, the oldest dropped first (a newer converge report says more than an older one).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from jcstate.agent import logs

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_HELD", "Outbox"]

MAX_HELD = 16  # reports kept in memory while the disk refuses them

log = logs.getLogger("jcstate.agent")


class Outbox:
    """A directory of pending reports."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._held: dict[str, bytes] = {}  # file it would have been → the report's JSON

    def put(self, payload: dict[str, Any]) -> str:
        """Queue ``payload``; the file it is (or will be) kept in. Never raises for a disk that
        refuses it: the report is then held in memory (see the module docstring)."""
        name = f"{time.time_ns():020d}-{payload['reportId']}.json"
        final = os.path.join(self.path, name)
        data = json.dumps(payload).encode()
        try:
            self._write(final, data)
        except OSError as exc:
            log.error(
                "could not write report %s to the outbox (%s); kept in memory until sent",
                payload["reportId"],
                exc,
            )
            self._held[final] = data
            while len(self._held) > MAX_HELD:
                dropped = min(self._held)
                del self._held[dropped]
                log.error("dropped the held report %s: too many held", os.path.basename(dropped))
        return final

    def _write(self, final: str, data: bytes) -> None:
        tmp = os.path.join(self.path, "." + os.path.basename(final) + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)  # the rename itself must survive a crash
        finally:
            os.close(dfd)

    def _write_held(self) -> None:
        for final in sorted(self._held):
            try:
                self._write(final, self._held[final])
            except OSError:
                return  # still refused: the rest stay in memory too
            del self._held[final]

    def pending(self) -> Iterator[tuple[str, bytes]]:
        """(file, the report's JSON), oldest first. A torn or unreadable file, or one that is not
        a JSON object, is set aside, not resent. Held reports come in their place."""
        self._write_held()
        names = [n for n in os.listdir(self.path) if n.endswith(".json") and not n.startswith(".")]
        for full in sorted([os.path.join(self.path, n) for n in names] + list(self._held)):
            if full in self._held:
                yield full, self._held[full]
                continue
            try:
                with open(full, "rb") as f:
                    data = f.read()
                if not isinstance(json.loads(data), dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError):
                os.replace(full, full + ".bad")
                continue
            yield full, data

    def done(self, file: str) -> None:
        if self._held.pop(file, None) is not None:
            return
        try:
            os.unlink(file)
        except FileNotFoundError:
            pass

    def __len__(self) -> int:
        on_disk = sum(
            1 for n in os.listdir(self.path) if n.endswith(".json") and not n.startswith(".")
        )
        return on_disk + len(self._held)
