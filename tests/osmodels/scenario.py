"""One scenario, three operating systems: a driver per OS and the plan/apply loop they share.

A driver gives the facts of its system, carries out plan steps, makes drift by hand, and reports
what the system now looks like (read from the system's own state, not from jcstate's parsers, so
a parser bug cannot hide itself). Linux runs on the shadow-utils simulator of
``tests/modules/shadow_sim.py``; macOS and Windows on the models in this package. Planning and
applying go through the real backends (``Resource.backend(os)``), in the engine's order
(:meth:`jcstate.plan.Plan.ordered`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

from jcstate.host import Host
from jcstate.plan import Change, Plan, Step
from jcstate.registry import resource
from jcstate.resource import PlanContext
from jcstate.secrets import MappingSecrets

from .darwin import MacModel
from .windows import WindowsModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))  # shadow_sim, cases

from account_cases import facts_from  # noqa: E402
from shadow_sim import System, _Group, _User  # noqa: E402

KEYS = ("groups", "users", "fileVault")
ROOT_HASH = "$6$rootSalt$rootHashValue"


class Driver(Protocol):
    os: str
    host: Host

    def facts(self) -> dict[str, Any]: ...
    def run_step(self, step: Step) -> None: ...
    def observe(self) -> dict[str, Any]: ...
    def drift(self) -> None: ...


class LinuxDriver:
    os = "linux"

    def __init__(self) -> None:
        self.host = Host(root="/", os_name="linux")
        self.sim = System()
        self.sim.users["root"] = _User(0, 0, "root", "/root", "/bin/bash", ROOT_HASH)
        self.sim.groups.update(root=_Group(0), sudo=_Group(27), users=_Group(100))
        self.mutations = 0

    def facts(self) -> dict[str, Any]:
        facts = self.sim.facts(facts_from)
        return {"users": facts, "groups": facts}

    def run_step(self, step: Step) -> None:
        self.mutations += 1
        self.sim.apply(step)

    def observe(self) -> dict[str, Any]:
        users = {
            name: {
                "fullName": u.gecos,
                "admin": name in self.sim.groups["sudo"].members,
                "locked": u.password.startswith("!"),
            }
            for name, u in self.sim.users.items()
            if name != "root"
        }
        groups = {
            n: sorted(g.members)
            for n, g in self.sim.groups.items()
            if n not in ("root", "sudo", "users") and n not in self.sim.users
        }
        return {"users": users, "groups": groups}

    def drift(self) -> None:
        self.sim.users["alice"].gecos = "Mallory"
        self.sim.groups["developers"].members.remove("bob")
        self.sim.groups["sudo"].members.remove("alice")


class DarwinDriver:
    os = "darwin"

    def __init__(self) -> None:
        self.host = MacModel()

    @property
    def mutations(self) -> int:
        return sum(1 for argv in self.host.commands_run if not _reads(argv))

    def facts(self) -> dict[str, Any]:
        return {k: resource(k).backend(self.os).gather(self.host) for k in KEYS}  # type: ignore[union-attr]

    def run_step(self, step: Step) -> None:
        step.execute(self.host)

    def observe(self) -> dict[str, Any]:
        mac = self.host
        users = {
            name: {
                "fullName": u.real_name,
                "admin": name in mac.groups["admin"].members,
                "locked": u.disabled,
            }
            for name, u in mac.users.items()
            if name not in ("root", "_www", "ladmin")
        }
        groups = {
            n: sorted(g.members)
            for n, g in mac.groups.items()
            if n not in ("wheel", "staff", "_www", "admin")
        }
        return {"users": users, "groups": groups}

    def drift(self) -> None:
        mac = self.host
        mac.users["alice"].real_name = "Mallory"
        mac.groups["developers"].members.remove("bob")
        mac.groups["admin"].members.remove("alice")


class WindowsDriver:
    os = "windows"

    def __init__(self, admin_name: str = "Administrators") -> None:
        self.host = WindowsModel(admin_name)

    @property
    def mutations(self) -> int:
        return sum(1 for argv in self.host.commands_run if not _reads(argv))

    def facts(self) -> dict[str, Any]:
        return {k: b.gather(self.host) for k in KEYS if (b := resource(k).backend(self.os))}

    def run_step(self, step: Step) -> None:
        step.execute(self.host)

    def observe(self) -> dict[str, Any]:
        win = self.host
        admins = {m[1] for m in win.admins_group().members}
        users = {
            u.name: {"fullName": u.full_name, "admin": u.sid in admins, "locked": not u.enabled}
            for u in win.users.values()
            if u.name not in ("Administrator", "Guest", "it-admin")
        }
        sids = {u.sid: u.name for u in win.users.values()}
        groups = {
            g.name: sorted(sids[m[1]] for m in g.members if m[1] in sids)
            for g in win.groups.values()
            if g.sid.startswith("S-1-5-21-")
        }
        return {"users": users, "groups": groups}

    def drift(self) -> None:
        win = self.host
        win.users["alice"].full_name = "Mallory"
        bob, alice = win.users["bob"].sid, win.users["alice"].sid
        dev = win.groups["developers"]
        dev.members = [m for m in dev.members if m[1] != bob]
        admins = win.admins_group()
        admins.members = [m for m in admins.members if m[1] != alice]


def _reads(argv: tuple[str, ...]) -> bool:
    """Whether a command only reads (facts), for counting mutating commands."""
    from jcstate.modules.users.powershell import SCRIPTS, decode

    if argv[0] == "powershell.exe":
        return decode(argv[-1]) == SCRIPTS["facts"]
    return argv[:2] in (
        ("dscl", "-plist"),
        ("fdesetup", "status"),
        ("fdesetup", "list"),
        ("stat", "-f"),
    )


def plan(
    driver: Driver, spec: dict[str, Any], secrets: dict[str, Any]
) -> tuple[list[Change], list[str]]:
    """The changes the backends of ``driver.os`` plan for ``spec`` (and the plan's warnings)."""
    ctx = PlanContext(host=driver.host, secrets=MappingSecrets(secrets))
    ctx.desired = {k: resource(k).parse(v) for k, v in spec.items()}
    ctx.facts = driver.facts()
    changes: list[Change] = []
    for key in KEYS:
        backend = resource(key).backend(driver.os)
        if key in ctx.desired and backend is not None:
            changes += backend.plan(ctx.desired[key], ctx)
    return changes, list(ctx.warnings)


def apply(driver: Driver, spec: dict[str, Any], secrets: dict[str, Any]) -> list[Change]:
    """Plan, refuse on any planned error, run every step in the engine's order."""
    changes, _ = plan(driver, spec, secrets)
    errors = [f"{c.kind}/{c.name}: {c.error}" for c in changes if c.error]
    assert not errors, errors
    for change in Plan(changes).ordered():
        for step in change.steps:
            driver.run_step(step)
    return changes
