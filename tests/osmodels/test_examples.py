"""examples/mixed-fleet converges on the macOS and Windows models through the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from jcstate import engine
from jcstate.document import Device, load_repo
from jcstate.secrets import MappingSecrets

from .scenario import DarwinDriver, WindowsDriver

REPO = Path(__file__).resolve().parents[2] / "examples" / "mixed-fleet"
SECRETS = {
    "passwords": {
        "it-admin-password": "it admin pass phrase",
        "dana-password": "dana pass phrase",
        "backupsvc-password": "backup pass phrase",
        "helpdesk-password": "helpdesk pass phrase",
    }
}


@pytest.mark.parametrize(
    ("driver_class", "device"),
    [
        (DarwinDriver, Device(hostname="mac-1", os="darwin", id="d-1")),
        (
            WindowsDriver,
            Device(hostname="win-1", os="windows", id="d-2", labels={"form": "laptop"}),
        ),
    ],
    ids=["darwin", "windows"],
)
def test_mixed_fleet_example_applies_then_plans_nothing(driver_class: type, device: Device) -> None:
    driver = driver_class()
    document = load_repo([str(REPO)]).document_for(device)
    assert document.policies  # the OS-specific policy matched, not only the all-devices one
    report = engine.apply(document, driver.host, MappingSecrets(SECRETS), device=device)
    failures = [
        f"{r.change.kind}/{r.change.name}: {r.message}" for r in report.results if r.status != "ok"
    ]
    assert report.plan.errors == [] and failures == []
    assert {c.name for c in report.plan.changes} >= {"itadmin"}
    again = engine.apply(document, driver.host, MappingSecrets(SECRETS), device=device)
    assert again.plan.changes == [], [c.to_dict() for c in again.plan.changes]
