"""What a plan or an apply did, as data and as Terraform-style text.

The text form::

    + groups developers
        gid: 2001
    ~ users bob
        shell: /bin/sh → /bin/zsh
    - users mallory
    > command incident-42-lock (lock)
        action: lock
    ! users root: refused: would remove the last admin account …

    Plan: 1 to create, 1 to change, 1 to remove, 1 to run, 1 refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from jcstate.plan import Change, Plan
from jcstate.secret import REDACTED, Secret

__all__ = ["Report", "Result", "render_json", "render_text"]

Status = Literal["ok", "failed", "skipped", "refused"]

_SYMBOL = {"create": "+", "update": "~", "remove": "-", "run": ">"}
_SINGULAR = {
    "groups": "group",
    "users": "user",
    "sshMfa": "ssh-mfa",
    "fileVault": "filevault",
    "commands": "command",
}


@dataclass
class Result:
    """How one change went."""

    change: Change
    status: Status
    message: str = ""
    stderr: str = ""
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = self.change.to_dict()
        out["status"] = self.status
        if self.message:
            out["message"] = self.message
        if self.stderr:
            out["stderr"] = self.stderr
        out["duration"] = round(self.duration, 4)
        return out


@dataclass
class Report:
    """A plan, and when applied, the result of every change."""

    plan: Plan
    results: list[Result] = field(default_factory=list)
    applied: bool = False
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.plan.errors or self.errors:
            return False
        if not self.applied:
            return not any(c.error for c in self.plan.changes)
        return all(r.status == "ok" for r in self.results)

    @property
    def changed(self) -> bool:
        return any(r.status == "ok" for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "remove": 0, "run": 0, "refused": 0}
        for c in self.plan.changes:
            out["refused" if c.error else c.action] += 1
        if self.applied:
            for status in ("ok", "failed", "skipped"):
                out[status] = sum(1 for r in self.results if r.status == status)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "applied": self.applied,
            "ok": self.ok,
            "counts": self.counts(),
            "errors": self.plan.errors + self.errors,
            "warnings": list(self.plan.warnings),
        }
        if self.applied:
            out["results"] = [r.to_dict() for r in self.results]
            out["duration"] = round(self.duration, 4)
        else:
            out["changes"] = [c.to_dict() for c in self.plan.ordered()]
        return out


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    return str(value)


def _show(value: Any) -> str:
    if isinstance(value, Secret):
        return REDACTED
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value and value.strip() == value else json.dumps(value)
    return str(value)


def render_text(report: Report, *, show_steps: bool = False, color: bool = False) -> str:
    """Terraform-style text: one block per change, then a summary line."""
    paint = _Painter(color)
    lines: list[str] = []
    by_change = {id(r.change): r for r in report.results}
    for change in report.plan.ordered():
        kind = _SINGULAR.get(change.kind, change.kind)
        result = by_change.get(id(change))
        name = f"{change.name} ({change.summary})" if change.summary else change.name
        if change.error:
            lines.append(paint.red(f"! {kind} {name}: refused: {change.error}"))
            continue
        head = f"{_SYMBOL[change.action]} {kind} {name}"
        if result is not None and result.status != "ok":
            head += f"  [{result.status.upper()}]"
        lines.append(paint.action(change.action, head))
        for fc in change.fields:
            if fc.field == "state" and change.action != "update":
                continue  # the +/- already says it
            if change.action == "create" or fc.before is None and change.action != "update":
                lines.append(f"    {fc.field}: {_show(fc.after)}")
            elif change.action == "remove":
                lines.append(f"    {fc.field}: {_show(fc.before)}")
            else:
                lines.append(f"    {fc.field}: {_show(fc.before)} → {_show(fc.after)}")
        for name in change.skipped_fields:
            lines.append(paint.yellow(f"    (skipped) {name}"))
        if show_steps:
            lines.extend(f"    $ {step}" for step in change.steps)
        if result is not None and result.status != "ok":
            lines.append(paint.red(f"    {result.message}"))
            for err_line in result.stderr.strip().splitlines()[-5:]:
                lines.append(paint.red(f"    | {err_line}"))
    for warning in report.plan.warnings:
        lines.append(paint.yellow(f"warning: {warning}"))
    for error in report.plan.errors + report.errors:
        lines.append(paint.red(f"error: {error}"))
    if lines:
        lines.append("")
    lines.append(_summary(report))
    return "\n".join(lines)


def _summary(report: Report) -> str:
    n = report.counts()
    if not report.plan.changes and not report.plan.errors:
        return "No changes. The system matches the policy."
    parts = [f"{n['create']} to create", f"{n['update']} to change", f"{n['remove']} to remove"]
    if n["run"]:
        parts.append(f"{n['run']} to run")
    if n["refused"]:
        parts.append(f"{n['refused']} refused")
    if not report.applied:
        return "Plan: " + ", ".join(parts) + "."
    done = f"{n['ok']} done, {n['failed']} failed, {n['skipped']} skipped"
    return f"Apply {'complete' if report.ok else 'FAILED'}: {done} (of " + ", ".join(parts) + ")."


class _Painter:
    _CODES = {"red": "31", "green": "32", "yellow": "33"}

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def red(self, text: str) -> str:
        return self._wrap(self._CODES["red"], text)

    def yellow(self, text: str) -> str:
        return self._wrap(self._CODES["yellow"], text)

    def action(self, action: str, text: str) -> str:
        code = {"create": "32", "update": "33", "remove": "31", "run": "36"}[action]
        return self._wrap(code, text)
