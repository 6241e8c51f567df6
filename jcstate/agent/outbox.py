"""Reports kept on disk until the server acknowledges them.

Each report is one file, written atomically and fsynced before the agent goes on, so it survives
``kill -9``, a reboot and a server outage. Files are sent oldest first, as the bytes they hold
(re-serialising a report of hundreds of accounts would leave its objects' memory in the resident
agent), and removed only after the server's acknowledgement; the report id inside makes a resend
after a lost acknowledgement harmless (the server stores each id once).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Outbox"]


class Outbox:
    """A directory of pending reports."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)

    def put(self, payload: dict[str, Any]) -> str:
        name = f"{time.time_ns():020d}-{payload['reportId']}.json"
        final = os.path.join(self.path, name)
        tmp = os.path.join(self.path, "." + name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)  # the rename itself must survive a crash
        finally:
            os.close(dfd)
        return final

    def pending(self) -> Iterator[tuple[str, bytes]]:
        """(file, the report's JSON), oldest first. A torn or unreadable file, or one that is not
        a JSON object, is set aside, not resent."""
        for name in sorted(os.listdir(self.path)):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            full = os.path.join(self.path, name)
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
        try:
            os.unlink(file)
        except FileNotFoundError:
            pass

    def __len__(self) -> int:
        return sum(
            1 for n in os.listdir(self.path) if n.endswith(".json") and not n.startswith(".")
        )
