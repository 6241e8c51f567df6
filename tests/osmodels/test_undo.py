"""Undo on every OS: what the ledger owns and no policy wants any more goes, as ordinary changes.

Linux plans with the real backends on the shadow-utils simulator (the undo layer and the
backends through :func:`jcstate.engine.decide`; the test host tests in tests/e2e run the whole
engine on real tools). macOS and Windows run the whole :func:`jcstate.engine.apply`, ledger
writes included, on the OS models of this package: recorded transcripts of the real tools, not
a real Mac or Windows machine.
"""

from __future__ import annotations

from typing import Any

import pytest

from jcstate import engine, undo
from jcstate.document import Document
from jcstate.ledger import Ledger, UserRecord
from jcstate.plan import Plan
from jcstate.report import render_text
from jcstate.secrets import MappingSecrets

from .scenario import DarwinDriver, LinuxDriver, WindowsDriver

SECRETS = MappingSecrets({"passwords": {"dana-pw": "correct horse battery"}})
DANA = {
    "name": "dana",
    "fullName": "Dana Example",
    "admin": True,
    "groups": ["developers"],
    "password": {"hash": "$6$danaSalt$danaHashValue0123456789", "secretRef": "dana-pw"},
}
GROUPS = [{"name": "developers", "gid": 2001}]
DRIVERS = {"linux": LinuxDriver, "darwin": DarwinDriver, "windows": WindowsDriver}
LEDGER = "/ledger.json"


def converge(driver: Any, spec: dict[str, Any], ledger: Ledger) -> tuple[Plan, int]:
    """One round as the engine runs it; (the first plan, mutating commands run)."""
    before = driver.mutations
    if driver.os != "linux":
        report = engine.apply(Document(spec=spec), driver.host, SECRETS, ledger=ledger)
        assert report.ok, render_text(report)
        return report.plan, driver.mutations - before
    ctx = engine.context(Document(spec=spec), driver.host, SECRETS, ledger=ledger)
    ctx.facts = driver.facts()
    first = engine.decide(ctx)
    assert not [c.error for c in first.changes if c.error]
    on_removal = {u.name: u.on_removal for u in ctx.declared.get("users") or []}
    for change in first.ordered():
        for step in change.steps:
            driver.run_step(step)
        undo.record(ledger, change, on_removal)
    ctx.facts = driver.facts()
    second = engine.decide(ctx)
    assert second.changes == [], [c.to_dict() for c in second.changes]
    undo.settle(ledger, ctx.undo, second, ctx.facts)
    undo.refresh(ledger, list(ctx.declared.get("users") or []))
    return first, driver.mutations - before


def _ledger(driver: Any) -> Ledger:
    return Ledger(LEDGER, driver.host if driver.os != "linux" else None)


def _dana(driver: Any) -> dict[str, Any] | None:
    found: dict[str, Any] | None = driver.observe()["users"].get("dana")
    return found


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
@pytest.mark.parametrize(
    ("choice", "want"),
    [
        ("lock", {"admin": False, "locked": True}),
        ("keep", {"admin": False, "locked": False}),
        ("delete", None),
    ],
)
def test_a_user_jcstate_created_follows_on_removal(
    os_name: str, choice: str, want: dict[str, Any] | None
) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA | {"onRemoval": choice}]}, ledger)
    assert ledger.users["dana"].created and ledger.users["dana"].groups == {"developers"}
    assert ledger.users["dana"].admin_before is False

    plan, _ = converge(driver, {"groups": GROUPS}, ledger)
    text = render_text(engine.Report(plan=plan, results=[], applied=False))
    verb = "-" if choice == "delete" else "~"
    assert f"{verb} user dana (no longer in any policy)" in text, text
    dana = _dana(driver)
    if want is None:
        assert dana is None
    else:
        assert dana is not None and {k: dana[k] for k in want} == want
        assert driver.observe()["groups"]["developers"] == []
    if os_name == "linux":
        assert "/home/dana" in driver.sim.nodes  # the home is kept in every case
    if want is None:
        assert ledger.users == {}
    else:  # locked or kept: still jcstate's creation, never touched again
        assert ledger.users["dana"].to_dict() == {
            "created": True,
            "onRemoval": choice,
            "retired": True,
        }

    again, mutations = converge(driver, {"groups": GROUPS}, ledger)
    assert again.changes == [] and mutations == 0


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_a_locked_user_listed_again_then_removed_again_is_locked_again(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)
    converge(driver, {"groups": GROUPS}, ledger)
    assert _dana(driver)["locked"] is True  # type: ignore[index]
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)  # back: unlocked by policy
    assert _dana(driver)["locked"] is False  # type: ignore[index]
    assert ledger.users["dana"].created and not ledger.users["dana"].retired
    converge(driver, {"groups": GROUPS}, ledger)
    dana = _dana(driver)
    assert dana is not None and dana["locked"] is True and dana["admin"] is False
    assert ledger.users["dana"].retired


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_a_taken_over_account_gets_its_admin_state_back_and_is_never_locked(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA | {"admin": False, "groups": []}]}, ledger)
    ledger.users.clear()  # as if an admin had made dana by hand: not jcstate's account
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)
    assert ledger.users["dana"].created is False
    assert ledger.users["dana"].admin_before is False
    assert _dana(driver)["admin"] is True  # type: ignore[index]

    converge(driver, {"groups": GROUPS}, ledger)
    dana = _dana(driver)
    assert dana is not None and dana["admin"] is False and dana["locked"] is False
    assert driver.observe()["groups"]["developers"] == []
    assert ledger.users == {}


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_an_admin_right_jcstate_took_away_comes_back(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    converge(driver, {"users": [DANA | {"groups": []}]}, ledger)
    ledger.users.clear()  # dana is an admin jcstate did not make
    converge(driver, {"users": [DANA | {"groups": [], "admin": False}]}, ledger)
    assert ledger.users["dana"].admin_before is True
    converge(driver, {}, ledger)
    assert _dana(driver)["admin"] is True  # type: ignore[index]
    assert ledger.users == {}


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_a_membership_no_policy_gives_goes_but_the_user_stays(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)
    plan, _ = converge(driver, {"groups": GROUPS, "users": [DANA | {"groups": []}]}, ledger)
    assert [f.field for c in plan.changes for f in c.fields] == ["groups"]
    assert driver.observe()["groups"]["developers"] == []
    assert _dana(driver)["admin"] is True  # type: ignore[index]
    assert ledger.users["dana"].groups == set()


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_a_user_moved_to_another_policy_is_not_churned(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    first = Document(spec={"groups": GROUPS, "users": [DANA]}, policies=["eng"])
    converge(driver, first.spec, ledger)
    kept = ledger.text()
    moved = {"groups": GROUPS, "users": [dict(DANA)]}  # the same entry, from policy "sales"
    plan, mutations = converge(driver, moved, ledger)
    assert plan.changes == [] and mutations == 0
    assert ledger.text() == kept


@pytest.mark.parametrize("os_name", ["darwin", "windows"])
def test_undo_is_refused_where_it_would_remove_the_last_admin(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    admin = "ladmin" if os_name == "darwin" else "it-admin"
    ledger = _ledger(driver)
    ledger.users[admin] = UserRecord(admin_before=False)  # jcstate had made it an admin
    report = engine.apply(Document(spec={}), driver.host, SECRETS, ledger=ledger)
    (change,) = report.plan.changes
    assert change.summary == undo.SUMMARY
    assert change.error and "last one" in change.error
    assert driver.observe()["users"].get(admin, {"admin": True})["admin"] is True
    assert ledger.users[admin].admin_before is False  # kept: the undo is still owed


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_an_undo_interrupted_before_the_ledger_write_is_finished_next_round(
    os_name: str,
) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)
    saved = Ledger.parse(ledger.text(), LEDGER, ledger.host)
    converge(driver, {"groups": GROUPS}, ledger)  # the undo ran …
    ledger = saved  # … but the ledger on disk is the one from before (killed before writing)
    plan, mutations = converge(driver, {"groups": GROUPS}, ledger)
    assert plan.changes == [] and mutations == 0  # undoing what is undone is a no-op
    assert ledger.users["dana"].retired  # and the entry is settled now


@pytest.mark.parametrize("os_name", sorted(DRIVERS))
def test_a_user_deleted_by_hand_is_forgotten_not_recreated(os_name: str) -> None:
    driver = DRIVERS[os_name]()
    ledger = _ledger(driver)
    ledger.users["ghost"] = UserRecord(created=True)
    plan, mutations = converge(driver, {}, ledger)
    assert plan.changes == [] and mutations == 0
    assert ledger.users == {}


def test_filevault_users_jcstate_added_leave_with_the_section() -> None:
    driver = DarwinDriver()
    mac = driver.host
    mac.fv.on, mac.fv.users = True, ["ladmin"]
    secrets = MappingSecrets({"passwords": {"alice-pw": "alice secret", "ladmin-pw": "ladmin-pw"}})
    users = [
        {"name": "alice", "password": {"secretRef": "alice-pw"}},
        {"name": "ladmin", "password": {"secretRef": "ladmin-pw"}},
    ]
    ledger = _ledger(driver)
    spec = {"users": users, "fileVault": {"enabled": True, "users": ["ladmin", "alice"]}}
    report = engine.apply(Document(spec=spec), mac, secrets, ledger=ledger)
    assert report.ok, render_text(report)
    assert mac.fv.users == ["ladmin", "alice"]
    assert ledger.file_vault_users == {"alice"}  # ladmin was enabled before jcstate came

    report = engine.apply(Document(spec={"users": users}), mac, secrets, ledger=ledger)
    assert report.ok, render_text(report)
    (change,) = [c for c in report.plan.changes if c.kind == "fileVault"]
    assert change.summary == undo.SUMMARY
    assert [s.argv for s in change.steps] == [("fdesetup", "remove", "-user", "alice")]  # type: ignore[union-attr]
    assert mac.fv.users == ["ladmin"]
    assert ledger.file_vault_users == set()
    assert not engine.apply(
        Document(spec={"users": users}), mac, secrets, ledger=ledger
    ).plan.changes


def test_linux_undo_that_would_lock_the_last_admin_is_refused() -> None:
    driver = LinuxDriver()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)
    driver.sim.users["root"].password = "*"  # root cannot log in: dana is the last admin
    ctx = engine.context(Document(spec={"groups": GROUPS}), driver.host, SECRETS, ledger=ledger)
    ctx.facts = driver.facts()
    refused = [c for c in engine.decide(ctx).changes if c.error]
    assert refused and all(c.summary == undo.SUMMARY for c in refused)
    assert "last one" in (refused[0].error or "") and "allowLockout" in (refused[0].error or "")


def test_windows_names_in_the_ledger_compare_case_insensitively() -> None:
    driver = WindowsDriver()
    ledger = _ledger(driver)
    converge(driver, {"groups": GROUPS, "users": [DANA]}, ledger)
    plan, mutations = converge(
        driver, {"groups": GROUPS, "users": [DANA | {"name": "DANA"}]}, ledger
    )
    assert plan.changes == [] and mutations == 0  # the same account: nothing undone
    assert _dana(driver)["locked"] is False  # type: ignore[index]
