"""A Host whose commands are answered from a script of responses and recorded, never run.

Files still go through the real :class:`~jcstate.host.Host` under a temporary root, so the
journal is real; only processes are faked. Used by the per-OS command-form fixtures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jcstate.host import Host, RunResult


class RecordingHost(Host):
    """Answers ``run`` from ``responses`` (first matching argv prefix; default: exit 0)."""

    def __init__(self, root: str, os_name: str, responses: Sequence[dict[str, Any]] = ()):
        super().__init__(root, os_name=os_name)
        self.responses = list(responses)
        self.stdin_seen: list[str | None] = []
        self.env_seen: list[dict[str, str] | None] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> RunResult:
        argv = tuple(str(a) for a in argv)
        self.commands_run.append(argv)
        stdin = kwargs.get("stdin")
        self.stdin_seen.append(None if stdin is None else str(stdin))
        self.env_seen.append(kwargs.get("env"))
        for response in self.responses:
            prefix = tuple(response["argv"])
            if argv[: len(prefix)] == prefix:
                return RunResult(
                    argv,
                    response.get("returncode", 0),
                    response.get("stdout", ""),
                    response.get("stderr", ""),
                    0.0,
                )
        return RunResult(argv, 0, "", "", 0.0)
