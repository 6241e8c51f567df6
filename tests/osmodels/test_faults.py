"""The device under faults: a lost shadow-utils lock is retried; a full disk applies nothing
whose ownership the ledger cannot record."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from jcstate import engine, plan
from jcstate.document import Document
from jcstate.errors import CommandFailed
from jcstate.ledger import Ledger
from jcstate.modules.accounts import shadow
from jcstate.plan import Change, Plan, Run
from jcstate.report import render_text
from jcstate.secrets import MappingSecrets

from .scenario import DarwinDriver, LinuxDriver

SimHost = sys.modules["shadow_sim"].SimHost  # scenario puts tests/modules on the path
System = sys.modules["shadow_sim"].System

BUSY = "useradd: cannot lock /etc/passwd; try again later.\n"
SHADOW_TOOLS = {"useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel"}
SHADOW_TOOLS |= {"gpasswd", "chpasswd"}


class BusyHost(SimHost):
    """The simulator, but the first ``busy`` commands find the shadow lock taken."""

    def __init__(self, system: System, busy: int):
        super().__init__(system)
        self.busy = busy

    def run(self, argv: Any, **kw: Any) -> Any:
        if self.busy > 0:
            self.busy -= 1
            raise CommandFailed(tuple(argv), 1, BUSY)
        return super().run(argv, **kw)


@pytest.fixture(autouse=True)
def _no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan.time, "sleep", lambda _s: None)


def _create(name: str) -> Plan:
    run = shadow.run("useradd", "/", ["-m"], [name])
    return Plan([Change("users", name, "create", 10, steps=[run])])


def test_a_change_that_lost_the_shadow_lock_is_tried_again() -> None:
    host = BusyHost(System(), busy=3)
    results = engine.execute(_create("erin"), host)
    assert [r.status for r in results] == ["ok"], results[0].message
    assert "erin" in host.system.users
    assert len(host.commands_run) == 1  # the three busy tries never reached the system


def test_the_retry_is_bounded() -> None:
    host = BusyHost(System(), busy=plan.RETRY_ATTEMPTS)
    results = engine.execute(_create("erin"), host)
    assert results[0].status == "failed" and "try again later" in results[0].message
    assert "erin" not in host.system.users


def test_other_failures_are_not_retried() -> None:
    host = SimHost(System())
    host.system.users.update(LinuxDriver().sim.users)
    results = engine.execute(_create("root"), host)  # exists: useradd fails for good
    assert results[0].status == "failed"
    assert len(host.commands_run) == 1


def test_every_shadow_utils_run_retries_a_lost_lock() -> None:
    driver = LinuxDriver()
    spec = {
        "groups": [{"name": "developers", "gid": 2001, "members": ["dana"]}],
        "users": [
            {
                "name": "dana",
                "admin": True,
                "groups": ["developers"],
                "password": {"hash": "$6$salt$hashvalue0123456789"},
                "state": "locked",
            }
        ],
    }
    ctx = engine.context(Document(spec=spec), driver.host, MappingSecrets({}))
    ctx.facts = driver.facts()
    runs = [s for c in engine.decide(ctx).changes for s in c.steps if isinstance(s, Run)]
    tools = {r.argv[0] for r in runs}
    assert {"useradd", "groupadd", "chpasswd"} <= tools
    for run in runs:
        if run.argv[0] in SHADOW_TOOLS:
            assert run.retry_on == shadow.LOCK_BUSY, run


class FullDisk:
    """Where the ledger lives: every write fails as on a full file system."""

    def write_file(self, *_a: Any, **_kw: Any) -> None:
        raise OSError(28, "No space left on device")


def test_a_change_whose_ledger_entry_cannot_be_written_is_not_applied() -> None:
    driver = DarwinDriver()
    ledger = Ledger("/ledger.json", FullDisk())  # type: ignore[arg-type]
    spec = {"users": [{"name": "dana", "password": {"secretRef": "pw"}}]}
    secrets = MappingSecrets({"passwords": {"pw": "correct horse battery"}})
    report = engine.apply(Document(spec=spec), driver.host, secrets, ledger=ledger)
    result = next(r for r in report.results if r.change.key == ("users", "dana"))
    assert result.status == "failed", render_text(report)
    assert "not applied" in result.message and "No space left" in result.message
    assert "dana" not in driver.observe()["users"]
    assert ledger.users == {}
