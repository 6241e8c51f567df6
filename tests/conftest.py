"""Fixtures shared by the whole suite: test hosts (real Debian systems in namespaces).

Any test that asks for ``testhost`` (directly or through another fixture) is marked
``testhost`` and skipped, with the reason, where test hosts cannot run: not root, no
namespaces, no debootstrap. The image is built on first use (about a minute, once; see
docs/testing.md). At the end of the session every host still running is stopped and the
session fails if any test-host mount is left behind.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# testhost.py sits next to this file; make it importable however pytest was told to import
# test modules (rootdir-relative, prepend or importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import testhost as th  # noqa: E402

_requirements: list[str | None] = []  # cached answer of th.missing_requirements()


def _skip_reason() -> str | None:
    if not _requirements:
        _requirements.append(th.missing_requirements())
    return _requirements[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a test host, so ``-m 'not testhost'`` deselects them."""
    for item in items:
        if "testhost" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.testhost)


@pytest.fixture(scope="session")
def testhost_image() -> Path:
    """The cached Debian image (built here on first use)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    return th.ensure_image()


@pytest.fixture
def testhost(testhost_image: Path, request: pytest.FixtureRequest) -> Iterator[th.TestHost]:
    """A fresh, running test host for this test only; stopped and deleted afterwards."""
    # A valid hostname from the test's name: [a-z0-9-], at most 40 characters.
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:37].rstrip("-")
    host = th.TestHost("th-" + name, image=testhost_image)
    host.start()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def testinfra_host(testhost: th.TestHost) -> Any:
    """testinfra's view of the test host, through the chroot backend."""
    return th.testinfra_host(testhost.root)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop hosts a crashed test left running; fail the run if mounts were left behind."""
    stopped = th.stop_all()
    left = th.leftovers()
    if not (stopped or left):
        return
    message = (
        f"test hosts left running (now stopped): {', '.join(stopped)}. " if stopped else ""
    ) + (f"left behind: {', '.join(left)}" if left else "")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("ERROR " + message, red=True)
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
