"""Engine behaviour on a small in-memory resource: order, skips, convergence, check mode."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jcstate import engine
from jcstate.host import Host
from jcstate.plan import Change, FieldChange, Plan, RemoveFile, Run, WriteFile
from jcstate.report import render_json, render_text
from jcstate.resource import Resource
from jcstate.secret import Secret


@dataclass
class Doc:
    spec: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    policies: list[str] = field(default_factory=lambda: ["test"])


class FileBackend:
    """Each entry is a file /kv/<name> holding a value. Special values misbehave on purpose."""

    os = "linux"
    supports = frozenset({"value"})

    def gather(self, host: Host) -> dict[str, str]:
        base = host.real_path("/kv")
        if not os.path.isdir(base):
            return {}
        return {n: host.read_text(f"/kv/{n}") or "" for n in sorted(os.listdir(base))}

    def plan(self, desired: list[dict[str, Any]], ctx: Any) -> list[Change]:
        facts = ctx.facts["kv"]
        out = []
        for entry in desired:
            name, value = entry["name"], entry.get("value")
            requires = [("kv", r) for r in entry.get("requires", [])]
            phase = entry.get("phase", 10)
            if entry.get("state") == "absent":
                if name in facts:
                    out.append(
                        Change("kv", name, "remove", phase, steps=[RemoveFile(f"/kv/{name}")])
                    )
                continue
            if facts.get(name) == value:
                continue
            if entry.get("refuse"):
                out.append(Change("kv", name, "update", phase, error=entry["refuse"]))
                continue
            if name in facts and "update_phase" in entry:
                phase = entry["update_phase"]  # an update planned in a later phase than a create
            if value == "FAIL":
                steps: list[Any] = [Run(("sh", "-c", "echo boom >&2; exit 3"))]
            elif value == "LIE":
                steps = [Run(("true",))]
            elif value == "HALF":
                steps = [WriteFile(f"/kv/{name}", "half")]  # claims success, writes half
            else:
                steps = [WriteFile(f"/kv/{name}", Secret(value) if entry.get("secret") else value)]
            action = "update" if name in facts else "create"
            shown = Secret(value) if entry.get("secret") else value
            out.append(
                Change(
                    "kv",
                    name,
                    action,
                    phase,
                    fields=[FieldChange("value", facts.get(name), shown)],
                    steps=steps,
                    requires=requires,
                )
            )
        return out


@pytest.fixture
def kv(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Host:
    backend = FileBackend()
    res = Resource(key="kv", parse=lambda section: section, backends={"linux": "x:y"})
    monkeypatch.setattr(Resource, "backend", lambda self, os_name: backend)
    monkeypatch.setattr(engine, "RESOURCES", [res])
    (tmp_path / "kv").mkdir()
    return Host(root=str(tmp_path), os_name="linux")


def test_apply_then_second_plan_is_empty(kv: Host) -> None:
    doc = Doc({"kv": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]})
    report = engine.apply(doc, kv)
    assert report.ok and [r.status for r in report.results] == ["ok", "ok"]
    assert (Path(kv.real_path("/kv/a")).read_text(), Path(kv.real_path("/kv/b")).read_text()) == (
        "1",
        "2",
    )
    assert engine.plan(doc, kv).changes == []


def test_check_mode_changes_nothing(kv: Host) -> None:
    doc = Doc({"kv": [{"name": "a", "value": "1"}]})
    report = engine.apply(doc, kv, check=True)
    assert not report.applied and len(report.plan.changes) == 1
    assert not os.path.exists(kv.real_path("/kv/a"))


def test_failure_skips_dependents_and_others_go_on(kv: Host) -> None:
    doc = Doc(
        {
            "kv": [
                {"name": "base", "value": "FAIL"},
                {"name": "child", "value": "c", "requires": ["base"], "phase": 20},
                {"name": "other", "value": "o", "phase": 20},
            ]
        }
    )
    report = engine.apply(doc, kv)
    status = {r.change.name: r for r in report.results}
    assert status["base"].status == "failed" and "boom" in status["base"].stderr
    assert status["child"].status == "skipped" and "kv/base" in status["child"].message
    assert status["other"].status == "ok"
    assert not report.ok
    assert not os.path.exists(kv.real_path("/kv/child"))


def test_claimed_success_that_did_not_converge_is_a_failure(kv: Host) -> None:
    report = engine.apply(Doc({"kv": [{"name": "a", "value": "LIE"}]}), kv)
    assert report.results[0].status == "failed"
    assert "did not converge" in report.results[0].message


def test_leftover_in_another_phase_still_fails_the_change(kv: Host) -> None:
    """A create whose leftover comes back as a later-phase update has not converged either."""
    report = engine.apply(Doc({"kv": [{"name": "a", "value": "HALF", "update_phase": 30}]}), kv)
    (result,) = report.results
    assert result.status == "failed" and not report.ok
    assert result.message == "did not converge: still differs after apply (value: half → HALF)"


def test_a_refused_later_phase_does_not_fail_what_converged(kv: Host) -> None:
    """The refused phase-30 change is still planned after apply; the phase-10 one converged."""
    doc = Doc(
        {
            "kv": [
                {"name": "a", "value": "1"},
                {"name": "a", "value": "2", "phase": 30, "refuse": "not allowed"},
            ]
        }
    )
    report = engine.apply(doc, kv)
    assert [(r.change.phase, r.status) for r in report.results] == [(10, "ok"), (30, "refused")]


def test_order_creates_by_phase_then_removals_in_reverse(kv: Host) -> None:
    for name in ("g", "u"):
        Path(kv.real_path(f"/kv/{name}")).write_text("x")
    doc = Doc(
        {
            "kv": [
                {"name": "g", "state": "absent", "phase": 10},
                {"name": "u", "state": "absent", "phase": 20},
                {"name": "late", "value": "1", "phase": 30},
                {"name": "early", "value": "1", "phase": 5},
            ]
        }
    )
    order = [(c.name, c.action) for c in engine.plan(doc, kv).ordered()]
    assert order == [("early", "create"), ("late", "create"), ("u", "remove"), ("g", "remove")]


def test_refused_change_is_not_applied(kv: Host) -> None:
    p = Plan(
        changes=[
            Change(
                "kv", "x", "create", 10, steps=[WriteFile("/kv/x", "1")], error="would lock you out"
            )
        ]
    )
    results = engine.execute(p, kv)
    assert results[0].status == "refused"
    assert not os.path.exists(kv.real_path("/kv/x"))


def test_secrets_never_printed(kv: Host) -> None:
    doc = Doc({"kv": [{"name": "s", "value": "hunter2-very-secret", "secret": True}]})
    for check in (True, False):
        report = engine.apply(doc, kv, check=check)
        text = render_text(report, show_steps=True) + render_json(report)
        assert "hunter2" not in text and "(secret)" in text
        json.loads(render_json(report))
    assert Path(kv.real_path("/kv/s")).read_text() == "hunter2-very-secret"


def test_text_report_is_terraform_like(kv: Host) -> None:
    Path(kv.real_path("/kv/old")).write_text("1")
    Path(kv.real_path("/kv/chg")).write_text("before")
    doc = Doc(
        {
            "kv": [
                {"name": "new", "value": "v"},
                {"name": "chg", "value": "after"},
                {"name": "old", "state": "absent"},
            ]
        }
    )
    text = render_text(engine.apply(doc, kv, check=True))
    assert "+ kv new" in text and "~ kv chg" in text and "- kv old" in text
    assert "value: before → after" in text
    assert text.splitlines()[-1] == "Plan: 1 to create, 1 to change, 1 to remove."


def _batch_plan(tmp: Path, values: list[str], phase_after: bool = False) -> Plan:
    """Changes whose batch step appends stdin to a log unless it contains 'bad' (all or nothing)."""
    script = (
        f'input=$(cat); echo run >> {tmp}/runs; case "$input" in *bad*) exit 1;; esac; '
        f'printf "%s\\n" "$input" >> {tmp}/log'
    )
    changes = [
        Change(
            "kv",
            v,
            "create",
            20,
            steps=[Run(("sh", "-c", script), stdin=Secret(f"{v}\n"), batch=True)],
        )
        for v in values
    ]
    if phase_after:
        changes.append(
            Change(
                "kv",
                "after",
                "create",
                30,
                requires=[("kv", values[-1])],
                steps=[Run(("sh", "-c", f"echo after >> {tmp}/log"))],
            )
        )
    return Plan(changes=changes)


def test_batch_steps_of_a_phase_run_as_one_process(kv: Host, tmp_path: Path) -> None:
    results = engine.execute(_batch_plan(tmp_path, ["a", "b", "c"], phase_after=True), kv)
    assert [r.status for r in results] == ["ok"] * 4
    assert (tmp_path / "runs").read_text().count("run") == 1
    # the batch ran before the next phase, whose change depends on it
    assert (tmp_path / "log").read_text().split() == ["a", "b", "c", "after"]


def test_failed_batch_is_retried_one_by_one_to_find_the_culprit(kv: Host, tmp_path: Path) -> None:
    results = engine.execute(_batch_plan(tmp_path, ["a", "bad", "c"], phase_after=True), kv)
    status = {r.change.name: r.status for r in results}
    assert status == {"a": "ok", "bad": "failed", "c": "ok", "after": "ok"}
    assert (tmp_path / "log").read_text().split() == ["a", "c", "after"]
    assert (tmp_path / "runs").read_text().count("run") == 4  # merged once, then 3 alone
    failing = engine.execute(_batch_plan(tmp_path, ["x", "bad"], phase_after=True), kv)
    assert {r.change.name: r.status for r in failing}["after"] == "skipped"


def test_nothing_ran_means_no_second_read(kv: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = Doc({"kv": [{"name": "a", "value": "1"}]})
    engine.apply(doc, kv)
    calls = []
    real = engine._plan
    monkeypatch.setattr(engine, "_plan", lambda ctx: calls.append(1) or real(ctx))
    report = engine.apply(doc, kv)
    assert report.ok and report.results == [] and calls == [1]


def test_sources_name_the_policy_line_of_each_resource(tmp_path: Path) -> None:
    from jcstate.resource import PlanContext

    ctx = PlanContext(
        host=Host(root=str(tmp_path)), sources={"users/alice": "a.yaml:3", "sshMfa": "b.yaml:9"}
    )
    assert ctx.source("users", "alice") == "a.yaml:3"
    assert ctx.source("sshMfa", "alice") == "b.yaml:9"  # an entry of a section: the section
    assert ctx.source("sshMfa") == "b.yaml:9"
    assert ctx.source("users", "bob") is None


def test_a_value_the_model_cannot_take_is_a_plan_error(tmp_path: Path) -> None:
    from jcstate.errors import PlanError

    doc = Doc({"users": [{"name": "alice", "expires": "tomorrow-ish"}]})
    with pytest.raises(PlanError, match="users: "):
        engine.plan(doc, Host(root=str(tmp_path), os_name="linux"))


def test_only_the_resources_the_document_manages_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gathered: list[str] = []

    class Recording(FileBackend):
        def __init__(self, key: str) -> None:
            self.key = key

        def gather(self, host: Host) -> dict[str, str]:
            gathered.append(self.key)
            return super().gather(host)

    backends = {"kv": Recording("kv"), "other": Recording("other")}
    resources = [
        Resource(key=key, parse=lambda section: section, backends={"linux": "x:y"})
        for key in backends
    ]
    monkeypatch.setattr(Resource, "backend", lambda self, os_name: backends[self.key])
    monkeypatch.setattr(engine, "RESOURCES", resources)
    host = Host(root=str(tmp_path), os_name="linux")
    engine.plan(Doc({"kv": [{"name": "a", "value": "1"}]}), host)
    assert gathered == ["kv"]  # `other` is not managed: neither imported nor read
    gathered.clear()
    engine.plan(Doc({"kv": [], "other": [{"name": "b", "value": "2"}]}), host)
    assert gathered == ["kv", "other"]


def test_resources_the_ledger_owns_are_read_for_their_undo() -> None:
    """A resource no policy manages any more is still read when the ledger owns something of
    it: its undo is planned from those facts (the no-op skip must not hide it)."""
    from jcstate import undo
    from jcstate.ledger import Ledger

    ledger = Ledger(path="/var/lib/jcstate/ledger.json")
    assert undo.needs(ledger) == set() and undo.needs(None) == set()
    ledger.user("dana")
    ledger.ssh_mfa_config = True
    assert undo.needs(ledger) == {"users", "sshMfa"}
    ledger.file_vault_users.add("dana")
    assert undo.needs(ledger) == {"users", "sshMfa", "fileVault"}
