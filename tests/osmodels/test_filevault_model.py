"""FileVault on the Mac model: deferred enable → login → escrow → add and remove users, and the
models' own strictness (they refuse what they do not know)."""

from __future__ import annotations

from typing import Any

import pytest

from jcstate.modules.filevault.darwin import DEFER_PLIST, ESCROW_STAMP
from jcstate.plan import Plan, Run
from jcstate.registry import resource
from jcstate.resource import PlanContext
from jcstate.secret import Secret
from jcstate.secrets import MappingSecrets

from . import ModelError
from .darwin import MacModel
from .scenario import DarwinDriver, WindowsDriver

SECRETS = {"passwords": {"alice-pw": "alice secret", "ladmin-pw": "ladmin-pw", "bob-pw": "bob pw"}}
USERS = [
    {"name": "alice", "admin": True, "password": {"secretRef": "alice-pw"}},
    {"name": "bob", "password": {"secretRef": "bob-pw"}},
]


def _converge(mac: MacModel, spec: dict[str, Any], escrowed: list[Any] | None = None) -> Plan:
    """gather → plan → execute for groups, users and fileVault; returns the plan it ran."""
    ctx = PlanContext(host=mac, secrets=MappingSecrets(SECRETS))
    if escrowed is not None:
        ctx.escrow = lambda key, volume: escrowed.append((key, volume))
    ctx.desired = {k: resource(k).parse(v) for k, v in spec.items()}
    changes = []
    for key in ("users", "fileVault"):
        backend = resource(key).backend("darwin")
        assert backend is not None
        ctx.facts[key] = backend.gather(mac)
    for key in ("users", "fileVault"):
        if key in ctx.desired:
            changes += resource(key).backend("darwin").plan(ctx.desired[key], ctx)  # type: ignore[union-attr]
    plan = Plan(changes)
    assert not [c.error for c in changes if c.error]
    for change in plan.ordered():
        for step in change.steps:
            step.execute(mac)
    return plan


def test_enable_is_deferred_then_escrowed_then_users_follow_the_policy() -> None:
    mac = MacModel()
    spec: dict[str, Any] = {
        "users": USERS,
        "fileVault": {"enabled": True, "users": ["alice"], "escrowRecoveryKey": True},
    }
    escrowed: list[Any] = []
    first = _converge(mac, spec, escrowed)
    assert [c.name for c in first.ordered()] == ["alice", "bob", "FileVault"]
    assert mac.fv.deferred_to == "" and not mac.fv.on
    assert mac.dirs["/var/db/jcstate/filevault"] == 0o700
    assert not _converge(mac, spec, escrowed).changes  # deferred: nothing more to do

    mac.login("alice")  # fdesetup enables FileVault and writes the deferral plist
    assert mac.fv.on and DEFER_PLIST in mac.files
    escrow_plan = _converge(mac, spec, escrowed)
    assert [c.name for c in escrow_plan.changes] == ["recoveryKey"]
    ((key, volume),) = escrowed
    assert isinstance(key, Secret) and key.reveal() == "AB12-CD34-EF56-GH78-IJ90-KL12"
    assert volume == "5A7B0000-1111-2222-3333-444455556666"
    assert "AB12" not in str(escrow_plan.to_dict())
    assert ESCROW_STAMP in mac.files and b"AB12" not in mac.files[ESCROW_STAMP]
    assert not _converge(mac, spec, escrowed).changes
    assert len(escrowed) == 1  # escrowed once

    spec["fileVault"]["users"] = ["alice", "bob"]
    add = _converge(mac, spec, escrowed)
    (step,) = add.changes[0].steps
    assert isinstance(step, Run) and step.argv == ("fdesetup", "add", "-inputplist")
    assert mac.fv.users == ["alice", "bob"]
    # both passwords went through stdin only
    assert not any("alice secret" in a or "bob pw" in a for argv in mac.commands_run for a in argv)
    assert not _converge(mac, spec, escrowed).changes

    spec["fileVault"]["users"] = ["bob"]
    _converge(mac, spec, escrowed)
    assert mac.fv.users == ["bob"]
    assert not _converge(mac, spec, escrowed).changes


def test_add_needs_an_enabled_users_password() -> None:
    mac = MacModel()
    mac.fv.on, mac.fv.users = True, ["ladmin"]
    ctx = PlanContext(host=mac, secrets=MappingSecrets(SECRETS))
    ctx.desired = {
        "users": resource("users").parse(USERS),
        "fileVault": resource("fileVault").parse({"enabled": True, "users": ["alice", "ladmin"]}),
    }
    ctx.facts = {"fileVault": resource("fileVault").backend("darwin").gather(mac)}  # type: ignore[union-attr]
    (change,) = resource("fileVault").backend("darwin").plan(ctx.desired["fileVault"], ctx)  # type: ignore[union-attr]
    assert change.error and "ladmin" in change.error and "secretRef" in change.error


@pytest.mark.parametrize("driver", [DarwinDriver, WindowsDriver])
def test_models_refuse_what_they_do_not_know(driver: Any) -> None:
    host = driver().host
    with pytest.raises(ModelError):
        host.run(("rm", "-rf", "/Users/alice"))
    with pytest.raises(ModelError):
        host.run(
            (
                "powershell.exe",
                "-NoProfile",
                "-NonInteractive",
                "-Command",
                "Remove-LocalUser alice",
            )
        )


def test_mac_model_refuses_a_password_in_argv() -> None:
    mac = MacModel()
    with pytest.raises(ModelError):
        mac.run(("sysadminctl", "-addUser", "eve", "-password", "hunter2"))
