"""sshMfa Linux backend, pyinfra style: one JSON case per file under ``cases/``.

Each case gives the machine (a fixture root plus ``setup``), the policy and the secrets, and
the exact changes expected: kind, name, action, steps as printed, requirements, or an error.
Cases marked ``converges`` are then applied (commands faked, files real) and planned again:
the second plan must be empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fakehost import FakeSshdHost, build_root

from jcstate.modules.ssh_mfa import parse
from jcstate.modules.ssh_mfa.linux import BACKEND
from jcstate.modules.users.model import parse as parse_users
from jcstate.plan import Change, Plan
from jcstate.resource import PlanContext
from jcstate.secret import REDACTED
from jcstate.secrets import MappingSecrets

CASES = sorted((Path(__file__).parent / "cases").glob("*.linux.json"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="fixture roots chown files to users")


def plan_case(host: FakeSshdHost, case: dict[str, Any]) -> list[Change]:
    ctx = PlanContext(host=host, secrets=MappingSecrets(case.get("secrets", {})))
    ctx.desired["sshMfa"] = parse(case["sshMfa"])
    ctx.desired["users"] = parse_users(case.get("users", []))
    ctx.facts["sshMfa"] = BACKEND.gather(host)
    return BACKEND.plan(ctx.desired["sshMfa"], ctx)


def summarise(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": change.kind,
        "name": change.name,
        "action": change.action,
        "steps": [str(s) for s in change.steps],
    }
    if change.requires:
        out["requires"] = [list(r) for r in change.requires]
    if change.error:
        out["error"] = change.error
    return out


def matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    want = dict(expected)
    error = want.pop("error", None)
    got = dict(actual)
    got_error = got.pop("error", None)
    if error is None:
        return want == got and got_error is None
    return want == {k: v for k, v in got.items() if k in want} and error in (got_error or "")


@pytest.mark.parametrize("path", CASES, ids=[p.name.removesuffix(".linux.json") for p in CASES])
def test_case(path: Path, tmp_path: Path) -> None:
    case = json.loads(path.read_text())
    root = build_root(tmp_path, case.get("setup", {}))
    host = FakeSshdHost(str(root))
    changes = plan_case(host, case)
    actual = [summarise(c) for c in changes]
    assert len(actual) == len(case["expect"]), json.dumps(actual, indent=1)
    for want, got in zip(case["expect"], actual, strict=True):
        assert matches(want, got), f"expected {want}\n     got {got}"
    for secret in case.get("secrets", {}).get("totp", {}).values():
        assert secret not in json.dumps([c.to_dict() for c in changes])
    assert host.commands_run == [], "planning must not run commands"
    if not case.get("converges"):
        return
    for change in Plan(changes).ordered():
        for step in change.steps:
            step.execute(host)
    assert plan_case(host, case) == []


def test_cases_exist() -> None:
    assert len(CASES) >= 10


def test_plans_print_secrets_redacted(tmp_path: Path) -> None:
    case = json.loads((Path(__file__).parent / "cases" / "enable.linux.json").read_text())
    host = FakeSshdHost(str(build_root(tmp_path, case["setup"])))
    changes = plan_case(host, case)
    secret_change = next(c for c in changes if c.name == "alice")
    assert secret_change.to_dict()["steps"][0]["content"] == REDACTED
    assert all(REDACTED in repr(f.after) or f.after is None for f in secret_change.fields)
