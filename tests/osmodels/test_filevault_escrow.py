"""engine.apply hands the agent's ``escrow`` callable to the FileVault backend (Mac model).

Deferred enable → login (the model writes the recovery key) → the engine's escrow step calls the
callable with the key as a Secret → the next plan is empty; the key never reaches the report.
When the callable fails, the stamp is not written and the next apply tries again.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from jcstate import engine
from jcstate.errors import ServerError
from jcstate.modules.filevault.darwin import ESCROW_STAMP
from jcstate.report import render_json, render_text
from jcstate.secret import Secret
from jcstate.secrets import MappingSecrets

from .scenario import DarwinDriver

KEY = "AB12-CD34-EF56-GH78-IJ90-KL12"  # what MacModel.login writes to the deferral plist
VOLUME = "5A7B0000-1111-2222-3333-444455556666"
SECRETS = {"passwords": {"alice-pw": "alice secret"}}
SPEC = {
    "users": [{"name": "alice", "admin": True, "password": {"secretRef": "alice-pw"}}],
    "fileVault": {"enabled": True, "users": ["alice"], "escrowRecoveryKey": True},
}


def _document() -> Any:
    return SimpleNamespace(spec=SPEC, sources={})


def _enabled_mac() -> DarwinDriver:
    """A Mac on which the policy was applied and alice logged in: the key is on disk."""
    driver = DarwinDriver()
    report = engine.apply(_document(), driver.host, MappingSecrets(SECRETS))
    assert {r.status for r in report.results} == {"ok"}, [r.message for r in report.results]
    driver.host.login("alice")
    return driver


def _text(report: Any) -> str:
    return render_text(report, show_steps=True) + render_json(report)


def test_apply_passes_escrow_to_the_filevault_backend() -> None:
    driver = _enabled_mac()
    received: list[tuple[Any, str | None]] = []

    def escrow(key: Secret, volume: str | None) -> None:
        received.append((key, volume))

    report = engine.apply(_document(), driver.host, MappingSecrets(SECRETS), escrow=escrow)
    assert [(r.change.kind, r.change.name, r.status) for r in report.results] == [
        ("fileVault", "recoveryKey", "ok")
    ]
    [(key, volume)] = received
    assert isinstance(key, Secret) and key.reveal() == KEY and volume == VOLUME
    assert KEY not in _text(report) and "(secret)" in _text(report)

    again = engine.apply(_document(), driver.host, MappingSecrets(SECRETS), escrow=escrow)
    assert again.plan.changes == [] and len(received) == 1
    planned = engine.plan(_document(), driver.host, MappingSecrets(SECRETS), escrow=escrow)
    assert planned.changes == [] and planned.warnings == []


def test_without_escrow_the_plan_only_warns() -> None:
    driver = _enabled_mac()
    plan = engine.plan(_document(), driver.host, MappingSecrets(SECRETS))
    assert plan.changes == []
    assert any("not escrowed" in w for w in plan.warnings)


def test_a_failed_escrow_writes_no_stamp_and_is_retried() -> None:
    driver = _enabled_mac()

    def unreachable(key: Secret, volume: str | None) -> None:
        raise ServerError("http://127.0.0.1:9: connection refused")

    failed = engine.apply(_document(), driver.host, MappingSecrets(SECRETS), escrow=unreachable)
    [result] = failed.results
    assert result.status == "failed" and "connection refused" in result.message
    assert ESCROW_STAMP not in driver.host.files
    assert KEY not in _text(failed)

    received: list[Any] = []
    retried = engine.apply(
        _document(),
        driver.host,
        MappingSecrets(SECRETS),
        escrow=lambda key, volume: received.append(key),
    )
    assert [r.status for r in retried.results] == ["ok"] and len(received) == 1
    assert ESCROW_STAMP in driver.host.files
