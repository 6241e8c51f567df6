"""Server fixtures: a live server on SQLite and, where reachable, on PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import browser  # noqa: E402
import live  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind the server supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jcstate.db"
        return
    reason = live.postgres_available()
    if reason:
        pytest.skip(reason)
    with live.postgres_database() as url:
        yield url


@pytest.fixture
def server(database: str, tmp_path: Path) -> Iterator[live.LiveServer]:
    with live.live_server(database, str(tmp_path)) as srv:
        yield srv


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[live.LiveServer]:
    with live.live_server(f"sqlite:///{tmp_path}/jcstate.db", str(tmp_path)) as srv:
        yield srv


@pytest.fixture(scope="module")  # module: one Playwright at a time, whatever the test order
def chromium() -> Iterator[object]:
    """Debian's chromium under Playwright (skips without it): see browser.py."""
    with browser.launched() as launched:
        yield launched


@pytest.fixture
def new_page(chromium: object) -> Iterator[object]:
    with browser.page_maker(chromium) as make:
        yield make
