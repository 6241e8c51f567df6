"""Fixtures the end-to-end tests share."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

import live  # noqa: E402  (tests/server/live.py)


@pytest.fixture
def server_proc(tmp_path: Path) -> Iterator[live.ServerProcess]:
    """A real ``jcstate server`` process on SQLite in ``tmp_path/data`` (token and connect key
    in its files there)."""
    srv = live.ServerProcess(["--data", str(tmp_path / "data")], live.free_port()).start()
    try:
        yield srv
    finally:
        srv.kill()
