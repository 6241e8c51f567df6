"""What a resource is, as the engine sees it: a model, one backend per OS, and verify checks.

A resource lives in one folder, ``modules/<name>/``: ``__init__.py`` defines its model and a
``RESOURCE`` of type :class:`Resource`; ``linux.py``, ``darwin.py``, ``windows.py`` define a
``BACKEND`` each; ``verify.py`` turns the desired state into testinfra checks. The engine never
names an OS and never imports a backend it does not need (backends are named by import path
and loaded on first use, which keeps the agent's import footprint small).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jcstate.host import Host
    from jcstate.plan import Change

__all__ = ["Backend", "Check", "PlanContext", "Resource"]


@dataclass
class PlanContext:
    """What a backend may look at while planning: the host, every resource's facts, the device."""

    host: Host
    facts: dict[str, Any] = field(default_factory=dict)  # resource key → that backend's facts
    device: dict[str, Any] = field(
        default_factory=dict
    )  # id, hostname, os, osVersion, arch, labels
    desired: dict[str, Any] = field(default_factory=dict)  # resource key → parsed model
    sources: dict[str, str] = field(default_factory=dict)  # "users/alice", "sshMfa" → file:line
    secrets: Any = None  # a jcstate.secrets.SecretSource, for resources that need secrets
    warnings: list[str] = field(default_factory=list)  # plan-wide notes (a command skipped)
    # agent only: callable(key: Secret, volume: str | None) that sends a FileVault recovery key
    # to the server; None in standalone runs (the key then stays in its 0600 file)
    escrow: Any = None
    # the ownership ledger (jcstate.ledger.Ledger) when the run keeps one; None: no undo
    ledger: Any = None
    declared: dict[str, Any] = field(default_factory=dict)  # desired as the policies say it
    undo: list[Any] = field(default_factory=list)  # jcstate.undo.Undo entries of this plan
    # the instant time-bound rights are judged at (aware datetime; jcstate.timebound): fixed
    # for a whole run, so the re-read after apply judges as the plan did
    now: Any = None

    def source(self, key: str, name: str | None = None) -> str | None:
        """Where the policies ask for this resource (``file:line``; several places joined).

        An entry without a place of its own (a user listed in ``sshMfa.users``) answers with
        its section's place.
        """
        found = self.sources.get(f"{key}/{name}") if name is not None else None
        return found or self.sources.get(key)


class Backend(Protocol):
    """How one resource is read and changed on one OS. Planning is pure: no command runs."""

    os: str
    supports: frozenset[str]  # fields this OS can manage; others are reported as skipped

    def gather(self, host: Host) -> Any:
        """Read the current state (facts) once, e.g. by parsing /etc/passwd."""
        ...

    def plan(self, desired: Any, ctx: PlanContext) -> list[Change]:
        """Compare desired with ``ctx.facts[key]`` and return the changes needed, in order."""
        ...


@dataclass(frozen=True)
class Check:
    """One verify check: a description and a function of a testinfra host that raises on failure."""

    resource: str
    name: str
    description: str
    run: Callable[[Any], None]


@dataclass(frozen=True)
class Resource:
    """A resource kind: its key in ``spec``, how to parse it, where its backends are."""

    key: str  # the key under spec: "users"
    parse: Callable[[Any], Any]  # spec[key] (plain data) → the model the backends take
    backends: Mapping[str, str]  # os → "jcstate.modules.users.linux:BACKEND"
    checks: str | None = None  # "jcstate.modules.users.verify:checks"

    def backend(self, os_name: str) -> Backend | None:
        path = self.backends.get(os_name)
        return None if path is None else _load(path)

    def verify_checks(self) -> Callable[[Any, str], list[Check]] | None:
        return None if self.checks is None else _load(self.checks)


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
