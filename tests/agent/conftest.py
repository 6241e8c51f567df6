"""Agent fixtures: a live server (from tests/server/live.py) the agent can talk to."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

import live  # noqa: E402


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[live.LiveServer]:
    with live.live_server(f"sqlite:///{tmp_path}/jcstate.db", str(tmp_path)) as srv:
        yield srv
