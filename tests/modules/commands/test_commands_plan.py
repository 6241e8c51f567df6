"""Planning ``commands``: planned until the journal holds the id; the second plan is empty."""

from __future__ import annotations

from pathlib import Path

from recording_host import RecordingHost

from jcstate.modules.commands import parse
from jcstate.modules.commands.backend import PHASE, RunCommand
from jcstate.modules.commands.darwin import BACKEND as DARWIN
from jcstate.modules.commands.journal import Journal
from jcstate.modules.commands.linux import BACKEND as LINUX
from jcstate.plan import Change, Plan
from jcstate.report import Report, Result, render_text
from jcstate.resource import PlanContext

LOCK_AND_RUN = [
    {"id": "incident-42-lock", "action": "lock"},
    {"id": "rotate-logs", "action": "run", "run": {"command": "logrotate -f /etc/l.conf"}},
]


def _plan(
    backend: object, host: RecordingHost, section: list[dict[str, object]]
) -> tuple[list[Change], list[str]]:
    ctx = PlanContext(host=host)
    ctx.facts["commands"] = backend.gather(host)  # type: ignore[attr-defined]
    changes = backend.plan(parse(section), ctx)  # type: ignore[attr-defined]
    return changes, ctx.warnings


def test_new_ids_are_planned_then_the_plan_is_empty(tmp_path: Path) -> None:
    host = RecordingHost(
        str(tmp_path),
        "linux",
        [
            {"argv": ["loginctl", "list-sessions"], "stdout": "2 1000 alice seat0 tty2\n"},
            {
                "argv": ["loginctl", "show-session"],
                "stdout": "Id=2\nName=alice\nUser=1000\nType=x11\nClass=user\n",
            },
        ],
    )
    changes, warnings = _plan(LINUX, host, LOCK_AND_RUN)
    assert [(c.kind, c.name, c.action, c.phase) for c in changes] == [
        ("commands", "incident-42-lock", "run", PHASE),
        ("commands", "rotate-logs", "run", PHASE),
    ]
    assert changes[0].fields[0].to_dict() == {"field": "action", "before": None, "after": "lock"}
    assert host.commands_run == []  # planning runs nothing
    step = changes[0].steps[0]
    assert isinstance(step, RunCommand)
    assert step.to_dict()["programs"] == [
        ["loginctl", "list-sessions"],
        ["loginctl", "lock-sessions"],
    ]
    assert str(step).startswith("journal incident-42-lock started; loginctl")
    step.execute(host)  # through the journal
    assert ("loginctl", "lock-sessions") in host.commands_run
    changes, warnings = _plan(LINUX, host, LOCK_AND_RUN[:1])
    assert changes == [] and warnings == []


def test_expired_command_is_a_warning_not_a_change(tmp_path: Path) -> None:
    host = RecordingHost(str(tmp_path), "linux")
    changes, warnings = _plan(
        LINUX, host, [{"id": "late", "action": "lock", "notAfter": "2001-01-01T00:00:00Z"}]
    )
    assert changes == []
    assert warnings == ["command late: skipped, notAfter 2001-01-01T00:00:00+00:00 has passed"]


def test_macos_lock_and_erase_are_plan_errors(tmp_path: Path) -> None:
    host = RecordingHost(str(tmp_path), "darwin")
    changes, _ = _plan(
        DARWIN,
        host,
        [
            {"id": "l", "action": "lock"},
            {"id": "e", "action": "erase", "confirm": "erase"},
            {"id": "r", "action": "restart"},
        ],
    )
    errors = {c.name: c.error for c in changes}
    assert errors["l"] is not None and "MDM command on macOS" in errors["l"]
    assert errors["e"] is not None and "EraseDevice" in errors["e"]
    assert errors["r"] is None


def test_interrupted_command_is_not_planned_but_a_started_erase_is(tmp_path: Path) -> None:
    host = RecordingHost(str(tmp_path), "linux")
    journal = Journal(host)
    journal.start("lock-1", "lock", boot_time=None)
    journal.start(
        "wipe-1",
        "erase",
        boot_time=None,
        command={"id": "wipe-1", "action": "erase", "confirm": "erase"},
    )
    changes, warnings = _plan(
        LINUX,
        host,
        [
            {"id": "lock-1", "action": "lock"},
            {"id": "wipe-1", "action": "erase", "confirm": "erase"},
        ],
    )
    assert [c.name for c in changes] == ["wipe-1"]
    assert changes[0].fields[-1].after == "attempt 2: erase was interrupted"
    assert warnings == [
        "command lock-1: interrupted earlier (started, never finished); it is not run again"
    ]


def test_report_head_names_the_action_and_results_still_map(tmp_path: Path) -> None:
    """``> command incident-42-lock (lock)``: the action in the head, from Change.summary."""
    host = RecordingHost(str(tmp_path), "linux")
    changes, _ = _plan(LINUX, host, LOCK_AND_RUN)
    assert [c.summary for c in changes] == ["lock", "run"]
    assert changes[0].to_dict()["summary"] == "lock"
    planned = render_text(Report(Plan(changes))).splitlines()
    assert "> command incident-42-lock (lock)" in planned
    assert "> command rotate-logs (run)" in planned

    # Applied: each result is still found by its change (a failed one is marked on its head).
    results = [Result(changes[0], "ok"), Result(changes[1], "failed", message="exit 1")]
    applied = render_text(Report(Plan(changes), results=results, applied=True)).splitlines()
    assert "> command incident-42-lock (lock)" in applied
    assert "> command rotate-logs (run)  [FAILED]" in applied
    assert "    exit 1" in applied


def test_refused_command_names_its_action_too(tmp_path: Path) -> None:
    host = RecordingHost(str(tmp_path), "darwin")
    changes, _ = _plan(DARWIN, host, [{"id": "l", "action": "lock"}])
    text = render_text(Report(Plan(changes)))
    assert text.startswith("! command l (lock): refused: "), text
