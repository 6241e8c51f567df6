"""The engine: facts → plan → apply → re-read, for one document on one host.

Planning asks every resource's backend for the current state (facts) once, then for the changes
that move it to the document's desired state. Applying runs the changes in order
(:meth:`Plan.ordered`), skips the dependents of a change that failed, then reads the system
again and plans once more: any change that claims success but is still needed is reported
``failed: did not converge``, never a silent success. Check mode is "stop after planning": no
backend ever sees a check flag.
"""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

from jcstate.errors import JcstateError
from jcstate.host import Host
from jcstate.plan import Change, Plan
from jcstate.registry import RESOURCES
from jcstate.report import Report, Result
from jcstate.resource import PlanContext
from jcstate.secrets import NoSecrets, SecretSource

__all__ = ["apply", "context", "device_facts", "plan"]

log = logging.getLogger(__name__)


def context(
    document: Any, host: Host, secrets: SecretSource | None = None, device: Any = None
) -> PlanContext:
    """Parse the document's sections into models; facts are gathered when planning."""
    ctx = PlanContext(
        host=host,
        device=_as_dict(device),
        sources=dict(getattr(document, "sources", None) or {}),
        secrets=secrets if secrets is not None else NoSecrets(),
    )
    spec = document.spec
    for res in RESOURCES:
        if res.key in spec and spec[res.key] is not None:
            ctx.desired[res.key] = res.parse(spec[res.key])
    return ctx


def _as_dict(device: Any) -> dict[str, Any]:
    if device is None:
        return {}
    if isinstance(device, dict):
        return dict(device)
    return {k: getattr(device, k) for k in ("id", "hostname", "os", "osVersion", "arch", "labels")
            if hasattr(device, k)}


def _gather(ctx: PlanContext, errors: list[str]) -> None:
    ctx.facts.clear()
    for res in RESOURCES:
        backend = res.backend(ctx.host.os)
        if backend is None:
            continue
        try:
            ctx.facts[res.key] = backend.gather(ctx.host)
        except JcstateError as exc:
            errors.append(f"{res.key}: cannot read the current state: {exc}")


def _plan(ctx: PlanContext) -> Plan:
    result = Plan()
    ctx.warnings.clear()
    _gather(ctx, result.errors)
    for res in RESOURCES:
        if res.key not in ctx.desired:
            continue
        backend = res.backend(ctx.host.os)
        if backend is None:
            result.errors.append(f"{res.key}: not supported on {ctx.host.os}")
            continue
        if res.key not in ctx.facts:
            continue  # gathering failed; already reported
        try:
            result.changes.extend(backend.plan(ctx.desired[res.key], ctx))
        except JcstateError as exc:
            result.errors.append(f"{res.key}: {exc}")
    result.warnings.extend(ctx.warnings)
    return result


def plan(
    document: Any, host: Host, secrets: SecretSource | None = None, *, device: Any = None
) -> Plan:
    """What would change on ``host`` to reach ``document`` (nothing runs)."""
    return _plan(context(document, host, secrets, device))


def apply(
    document: Any,
    host: Host,
    secrets: SecretSource | None = None,
    *,
    check: bool = False,
    device: Any = None,
) -> Report:
    """Plan, then (unless ``check``) apply, re-read and report."""
    ctx = context(document, host, secrets, device)
    first = _plan(ctx)
    if check:
        return Report(plan=first, results=[], applied=False)
    started = time.monotonic()
    results = execute(first, host)
    second = _plan(ctx)
    _mark_unconverged(results, second)
    return Report(
        plan=first,
        results=results,
        applied=True,
        duration=time.monotonic() - started,
        errors=[e for e in second.errors if e not in first.errors],
    )


def execute(the_plan: Plan, host: Host) -> list[Result]:
    """Run the plan's changes in order; a failed change's dependents are skipped, others go on."""
    results: list[Result] = []
    failed: set[tuple[str, str]] = set()
    for change in the_plan.ordered():
        if change.error:
            results.append(Result(change, "refused", change.error))
            failed.add(change.key)
            continue
        blocker = next((r for r in [change.key, *change.requires] if r in failed), None)
        if blocker is not None:
            results.append(
                Result(change, "skipped", f"skipped: depends on {blocker[0]}/{blocker[1]}, which failed")
            )
            failed.add(change.key)
            continue
        results.append(_execute_change(change, host))
        if results[-1].status != "ok":
            failed.add(change.key)
    return results


def _execute_change(change: Change, host: Host) -> Result:
    start = time.monotonic()
    for step in change.steps:
        try:
            step.execute(host)
        except JcstateError as exc:
            stderr = getattr(exc, "stderr", "") or ""
            log.warning("%s %s failed: %s", change.kind, change.name, exc)
            return Result(change, "failed", f"{step}: {exc}", stderr=stderr,
                          duration=time.monotonic() - start)
        except OSError as exc:
            return Result(change, "failed", f"{step}: {exc.strerror or exc}",
                          duration=time.monotonic() - start)
    return Result(change, "ok", "", duration=time.monotonic() - start)


def _mark_unconverged(results: list[Result], second: Plan) -> None:
    left = {(c.kind, c.name, c.phase): c for c in second.changes}
    for result in results:
        c = result.change
        still = left.get((c.kind, c.name, c.phase))
        if result.status == "ok" and still is not None:
            fields = ", ".join(f.field for f in still.fields) or still.action
            result.status = "failed"
            result.message = f"did not converge: still differs after apply ({fields})"


def device_facts(host: Host) -> dict[str, Any]:
    """A JSON-able summary of the device, for reports: identity, boot time, accounts."""
    release = host.os_release()
    facts: dict[str, Any] = {
        "hostname": _hostname(host),
        "os": host.os,
        "osVersion": release.get("VERSION_ID", platform.release()),
        "osName": release.get("PRETTY_NAME", platform.system()),
        "arch": platform.machine(),
        "bootTime": _boot_time(host),
    }
    for res in RESOURCES:
        backend = res.backend(host.os)
        if backend is None:
            continue
        try:
            gathered = backend.gather(host)
        except JcstateError as exc:
            facts[res.key] = {"error": str(exc)}
            continue
        summary = getattr(gathered, "summary", None)
        if callable(summary):
            facts[res.key] = summary()
    return facts


def _hostname(host: Host) -> str:
    if host.root == "/":
        return platform.node()
    text = host.read_text("/etc/hostname") or ""
    return text.strip() or platform.node()


def _boot_time(host: Host) -> float | None:
    if host.root != "/":
        return None
    import psutil  # only here: the engine's import path stays small

    return float(psutil.boot_time())
