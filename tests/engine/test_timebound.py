"""Time-bound admin in the shared layer: the model, the schema, the plan text, the expiry.

Plans run the real Linux users backend and the undo layer on the shadow-utils simulator
(tests/modules/shadow_sim.py), and apply through the real engine (``engine.execute`` with the
ledger writer), so what "only what jcstate granted" and lock-out safety mean is checked on
the same code that runs on a device.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))

from account_cases import facts_from  # noqa: E402
from shadow_sim import SimHost, System, _Group, _User  # noqa: E402

from jcstate import engine, undo  # noqa: E402
from jcstate.document import validate_paths  # noqa: E402
from jcstate.host import Host  # noqa: E402
from jcstate.ledger import Ledger  # noqa: E402
from jcstate.modules.users.model import admin_at, parse  # noqa: E402
from jcstate.plan import Plan  # noqa: E402
from jcstate.report import Report, render_text  # noqa: E402
from jcstate.resource import PlanContext  # noqa: E402
from jcstate.timebound import ENDED  # noqa: E402

UNTIL = "2027-01-31T18:00:00Z"
T = dt.datetime(2027, 1, 31, 18, 0, tzinfo=dt.UTC)
BEFORE = T - dt.timedelta(seconds=1)


def test_until_parses_with_z_or_an_offset_and_refuses_a_time_without_one() -> None:
    (alice, bob) = parse(
        [
            {"name": "alice", "admin": {"until": UNTIL}},
            {"name": "bob", "admin": {"until": "2027-01-31T19:00:00+01:00"}},
        ]
    )
    assert alice.admin is True and alice.admin_until == T
    assert bob.admin_until == T  # the same instant, written with its offset
    with pytest.raises(ValueError, match="no UTC offset"):
        parse([{"name": "carol", "admin": {"until": "2027-01-31T18:00:00"}}])
    with pytest.raises(ValueError, match="not an RFC 3339"):
        parse([{"name": "carol", "admin": {"until": "tomorrow"}}])
    assert parse([{"name": "dan", "admin": True}])[0].admin_until is None


def test_admin_at_is_admin_before_the_instant_and_not_managed_from_it() -> None:
    (alice,) = parse([{"name": "alice", "admin": {"until": UNTIL}}])
    assert admin_at(alice, BEFORE).admin is True
    assert admin_at(alice, T).admin is None  # at the instant: ended
    assert admin_at(alice, T + dt.timedelta(days=1)).admin is None
    (bob,) = parse([{"name": "bob", "admin": False}])
    assert admin_at(bob, T) is bob


POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: p}}
spec:
  users:
    - name: alice
      admin: {admin}
"""


@pytest.mark.parametrize(
    ("admin", "line_col", "words"),
    [
        ("{until: 2027-01-31T18:00:00}", "7:22", "has no UTC offset: add Z"),
        ("{until: next tuesday}", "7:22", "is not a valid date-time (RFC 3339"),
        ("{until: 2027-02-30T18:00:00Z}", "7:22", "is not a valid date-time"),
        ("{untill: 2027-01-31T18:00:00Z}", "7:15", "unknown field 'untill'"),
        ("yes please", "7:14", "true or false or a mapping"),
    ],
)
def test_a_bad_until_is_a_problem_at_its_file_and_line(
    tmp_path: Path, admin: str, line_col: str, words: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(admin=admin))
    repo, problems = validate_paths([str(path)])
    assert repo is None
    shown = [str(p) for p in problems]
    assert any(s.startswith(f"{path}:{line_col}: ") and words in s for s in shown), shown


def test_a_good_until_validates_and_an_admin_group_in_groups_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(admin="{until: '2027-01-31T19:00:00+01:00'}"))
    repo, problems = validate_paths([str(path)])
    assert problems == [] and repo is not None
    path.write_text(POLICY.format(admin="{until: 2027-01-31T18:00:00Z}") + "      groups: [sudo]\n")
    _, problems = validate_paths([str(path)])
    assert [str(p) for p in problems] == [
        f"{path}:8:16: groups lists 'sudo', an admin group, but admin is time-bound: the "
        "membership would outlast admin.until; remove it from groups (admin: {until: …} "
        "grants it)"
    ]


# -- plans and applies on the simulator ---------------------------------------------------------
def _system(alice_admin: bool = False, bob_admin: bool = True) -> System:
    """root without a usable password, alice with one; bob (another admin who can log in)
    unless ``bob_admin`` is false."""
    sys_ = System()
    sys_.users["root"] = _User(0, 0, "root", "/root", "/bin/bash", "*")
    sys_.users["alice"] = _User(1501, 1501, "", "/home/alice", "/bin/sh", "$6$a$hash")
    sys_.users["bob"] = _User(1502, 1502, "", "/home/bob", "/bin/sh", "$6$b$hash")
    sys_.groups.update(root=_Group(0), sudo=_Group(27), alice=_Group(1501), bob=_Group(1502))
    if alice_admin:
        sys_.groups["sudo"].members.append("alice")
    if bob_admin:
        sys_.groups["sudo"].members.append("bob")
    return sys_


def _converge(
    sys_: System, users: list[dict[str, Any]], ledger: Ledger, now: dt.datetime
) -> tuple[Plan, Report]:
    """What engine.apply does, on the simulator: plan, apply with the ledger, re-read, settle."""
    ctx = PlanContext(host=Host(root="/", os_name="linux"), ledger=ledger, now=now)
    ctx.declared = {"users": parse(users)}

    def read() -> None:
        facts = sys_.facts(facts_from)
        ctx.facts = {"users": facts, "groups": facts}

    read()
    first = engine.decide(ctx)
    results = engine.execute(first, SimHost(sys_), ledger=engine._ledger_writer(ctx))
    read()
    second = engine.decide(ctx)
    undo.settle(ledger, ctx.undo, second, ctx.facts)
    return first, Report(first, results, applied=True)


def _sudo(sys_: System) -> list[str]:
    return sorted(m for m in sys_.groups["sudo"].members if m != "bob")


def test_granted_until_the_instant_then_taken_back_with_the_reason() -> None:
    sys_, ledger = _system(), Ledger("/ledger.json")
    users = [{"name": "alice", "admin": {"until": UNTIL}}]
    first, report = _converge(sys_, users, ledger, BEFORE - dt.timedelta(hours=2))
    (change,) = first.changes
    assert [f.to_dict() for f in change.fields] == [
        {"field": "admin", "before": False, "after": f"until {UNTIL}"}
    ]
    assert "admin: false → until 2027-01-31T18:00:00Z" in render_text(report)
    assert _sudo(sys_) == ["alice"] and ledger.users["alice"].admin_before is False
    # still before the instant: nothing to do
    assert _converge(sys_, users, ledger, BEFORE)[0].changes == []
    # at the instant: the right jcstate granted goes, and the plan says why
    first, report = _converge(sys_, users, ledger, T)
    (change,) = first.changes
    assert [(f.field, f.before, f.after) for f in change.fields] == [("admin", True, False)]
    assert change.summary == ENDED.format(UNTIL)
    assert [r.status for r in report.results] == ["ok"]
    assert _sudo(sys_) == [] and "alice" not in ledger.users  # settled: nothing of it is ours
    assert _converge(sys_, users, ledger, T + dt.timedelta(hours=1))[0].changes == []


def test_an_ended_right_jcstate_did_not_grant_is_left_alone() -> None:
    sys_, ledger = _system(alice_admin=True), Ledger("/ledger.json")  # admin by hand
    users = [{"name": "alice", "admin": {"until": UNTIL}}]
    assert _converge(sys_, users, ledger, BEFORE)[0].changes == []  # already admin
    assert _converge(sys_, users, ledger, T)[0].changes == []
    assert _sudo(sys_) == ["alice"]


def test_an_ended_right_of_the_last_admin_who_can_log_in_is_kept_and_refused() -> None:
    sys_, ledger = _system(bob_admin=False), Ledger("/ledger.json")
    users = [{"name": "alice", "admin": {"until": UNTIL}}]
    _converge(sys_, users, ledger, BEFORE)
    assert _sudo(sys_) == ["alice"]  # alice has a password: the only admin who can log in
    first, report = _converge(sys_, users, ledger, T)
    (change,) = first.changes
    assert "last admin" in (change.error or "") or "without an admin" in (change.error or "")
    assert [r.status for r in report.results] == ["refused"]
    assert _sudo(sys_) == ["alice"]  # kept
    assert ledger.users["alice"].admin_before is False  # still owed: tried again next round
    assert "refused" in render_text(report)


def test_a_right_given_back_stays_given_back_round_after_round() -> None:
    """Regression: the ledger writer recorded an undo of ``admin`` twice (its claim before the
    tool ran, then again after), which read as "jcstate took a right away", so the next round
    granted it again, and so on, flapping every round."""
    sys_, ledger = _system(), Ledger("/ledger.json")
    now = BEFORE
    _converge(sys_, [{"name": "alice", "admin": True}], ledger, now)
    assert _sudo(sys_) == ["alice"]
    for _ in range(3):
        _converge(sys_, [{"name": "alice"}], ledger, now)
        assert _sudo(sys_) == [] and "alice" not in ledger.users
