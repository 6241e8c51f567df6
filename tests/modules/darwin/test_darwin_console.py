"""macOS lock-out safety for the console user, against the fixtures under ``console/``.

A case has the format of ``test_darwin_fixtures.py`` plus ``facts.stat``, the result of
``stat -f %Su /dev/console`` as ``{"returncode", "stdout", "stderr"}``, which goes through the
backend's own parser. tests/osmodels/test_console_lockout.py runs the same checks on the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_darwin_fixtures import _facts, as_expected

from jcstate.host import Host
from jcstate.modules.users.directory import parse_console
from jcstate.plan import Change
from jcstate.registry import resource
from jcstate.resource import PlanContext
from jcstate.secrets import MappingSecrets

HERE = Path(__file__).parent
CASES = sorted((HERE / "console").glob("*.darwin.json"))


def plan(case: dict[str, Any]) -> tuple[list[Change], list[str]]:
    """The users backend's changes and warnings for the case."""
    ctx = PlanContext(host=Host(os_name="darwin"), secrets=MappingSecrets(None))
    ctx.desired = {"users": resource("users").parse(case["desired"])}
    ctx.facts = _facts(case["facts"])
    stat = case["facts"]["stat"]
    directory = ctx.facts["users"]
    directory.console, directory.console_problem = parse_console(
        stat["returncode"], stat["stdout"], stat["stderr"]
    )
    backend = resource("users").backend("darwin")
    assert backend is not None
    return backend.plan(ctx.desired["users"], ctx), ctx.warnings


@pytest.mark.parametrize("path", CASES, ids=[p.name.split(".")[0] for p in CASES])
def test_console_fixture(path: Path) -> None:
    data = json.loads(path.read_text())
    changes, warnings = plan(data)
    expected = data["expected"]["changes"]
    got = [
        as_expected(c, expected[i] if i < len(expected) else None) for i, c in enumerate(changes)
    ]
    assert got == expected, data["description"]
    assert warnings == data["expected"].get("warnings", []), data["description"]


def test_parse_console() -> None:
    assert parse_console(0, "alice\n", "") == ("alice", None)
    assert parse_console(0, "root\n", "") == (None, None)  # the login window
    user, problem = parse_console(1, "", "stat: /dev/console: No such file or directory\n")
    assert user is None and problem and "No such file" in problem
    assert parse_console(0, "", "")[0] is None and parse_console(0, "", "")[1]
