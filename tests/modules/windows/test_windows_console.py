"""Windows lock-out safety for the console user, against the fixtures under ``console/``.

A case has the format of ``test_windows_fixtures.py`` plus ``facts.Console``, the facts script's
``Console`` object (``{"UserName": "WS01\\\\alice" | null, "Error": null | "message"}``), which is
added to the facts JSON and goes through the backend's own parser.
tests/osmodels/test_console_lockout.py runs the same checks on the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_windows_fixtures import as_expected, facts_text

from jcstate.host import Host
from jcstate.modules.users.winfacts import parse
from jcstate.plan import Change
from jcstate.registry import resource
from jcstate.resource import PlanContext
from jcstate.secrets import MappingSecrets

HERE = Path(__file__).parent
CASES = sorted((HERE / "console").glob("*.windows.json"))


def plan(case: dict[str, Any]) -> tuple[list[Change], list[str]]:
    """The users backend's changes and warnings for the case."""
    ctx = PlanContext(host=Host(os_name="windows"), secrets=MappingSecrets(None))
    ctx.desired = {"users": resource("users").parse(case["desired"])}
    data = json.loads(facts_text(case["facts"]))
    data["Console"] = case["facts"]["Console"]
    ctx.facts = {"users": parse(json.dumps(data))}
    backend = resource("users").backend("windows")
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


def test_console_parsing() -> None:
    base = json.loads(facts_text({}))
    assert parse(json.dumps(base)).console is None  # no Console object: nobody
    for console, user, unknown in (
        ({"UserName": "WS01\\Alice", "Error": None}, "Alice", False),
        ({"UserName": None, "Error": None}, None, False),
        ({"UserName": "", "Error": None}, None, False),
        ({"UserName": None, "Error": "RPC server unavailable"}, None, True),
    ):
        facts = parse(json.dumps(base | {"Console": console}))
        assert facts.console == user and (facts.console_problem is not None) == unknown
    facts = parse(json.dumps(base | {"Console": {"UserName": "CORP\\ALICE", "Error": None}}))
    assert facts.on_console("alice") and not facts.on_console("bob")
