"""The engine: facts → plan → apply → re-read, for one document on one host.

Planning asks every resource's backend for the current state (facts) once, then for the changes
that move it to the document's desired state. Applying runs the changes in order
(:meth:`Plan.ordered`), skips the dependents of a change that failed, then reads the system
again and plans once more: any change that claims success but whose resource still differs is
reported ``failed: did not converge``, with each field still different and the value read back,
never a silent success. How strict that is depends on the backends' diffs: each compares every
declared attribute on its own (docs/resources/users.md, "After apply"). Check mode is "stop
after planning": no backend ever sees a check flag.
"""

from __future__ import annotations

import platform
import time
from itertools import groupby
from typing import TYPE_CHECKING, Any, Protocol

from jcstate import timebound, undo
from jcstate.errors import JcstateError, LedgerError, PlanError
from jcstate.host import Host
from jcstate.plan import Change, Plan, Run, Step
from jcstate.registry import RESOURCES
from jcstate.report import Report, Result
from jcstate.resource import PlanContext
from jcstate.secret import Secret
from jcstate.secrets import NoSecrets, SecretSource

if TYPE_CHECKING:
    from jcstate.ledger import Ledger

__all__ = ["apply", "context", "decide", "device_facts", "plan"]


def _warn(message: str, *args: Any) -> None:
    """Log a warning; ``logging`` is imported only then (a run without one does not pay it)."""
    import logging

    logging.getLogger(__name__).warning(message, *args)


def context(
    document: Any,
    host: Host,
    secrets: SecretSource | None = None,
    device: Any = None,
    *,
    escrow: Any = None,
    ledger: Ledger | None = None,
    now: Any = None,
) -> PlanContext:
    """Parse the document's sections into models; facts are gathered when planning.

    ``escrow``: the agent's callable ``(key: Secret, volume: str | None)`` that sends a FileVault
    recovery key to the server; None in standalone runs. ``ledger``: what jcstate owns here
    (:mod:`jcstate.ledger`); with one, the plan also undoes what no policy wants any more.
    ``now``: the instant time-bound rights are judged at (an aware datetime; default the wall
    clock when the run starts; the agent gives its own clock, see :mod:`jcstate.timebound`).
    """
    ctx = PlanContext(
        host=host,
        device=_as_dict(device),
        sources=dict(getattr(document, "sources", None) or {}),
        secrets=secrets if secrets is not None else NoSecrets(),
        escrow=escrow,
        ledger=ledger,
        now=now if now is not None else timebound.now_utc(),
    )
    spec = document.spec
    for res in RESOURCES:
        if res.key in spec and spec[res.key] is not None:
            try:
                ctx.desired[res.key] = res.parse(spec[res.key])
            except (ValueError, TypeError) as exc:
                # a rendered value the schema could not see (a template giving a bad date)
                raise PlanError(f"{res.key}: {exc}") from exc
    ctx.declared = dict(ctx.desired)
    return ctx


def _as_dict(device: Any) -> dict[str, Any]:
    if device is None:
        return {}
    if isinstance(device, dict):
        return dict(device)
    return {
        k: getattr(device, k)
        for k in ("id", "hostname", "os", "osVersion", "arch", "labels")
        if hasattr(device, k)
    }


def _gather(ctx: PlanContext, errors: list[str]) -> None:
    ctx.facts.clear()
    with ctx.host.facts_round():
        _gather_round(ctx, errors)


def _gather_round(ctx: PlanContext, errors: list[str]) -> None:
    # Only what the document manages and what the ledger owns (its undo is planned): any other
    # resource is not planned, and importing and reading it (PAM and sshd files, the command
    # journal) would be most of a no-op run.
    wanted = set(ctx.desired) | undo.needs(ctx.ledger)
    for res in RESOURCES:
        if res.key not in wanted:
            continue
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
    return decide(ctx, result)


def decide(ctx: PlanContext, result: Plan | None = None) -> Plan:
    """The plan from the facts already in ``ctx.facts``: the undo layer, then every backend."""
    result = result if result is not None else Plan()
    ctx.desired = dict(ctx.declared)
    timebound.resolve(ctx)  # admin: {until: T} → admin before T, not managed from T on
    ctx.undo = undo.extend(ctx)  # what the ledger owns and no policy wants: planned as undo
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
    undo.mark(result.changes, ctx.undo)
    timebound.annotate(result.changes, ctx)
    result.warnings.extend(ctx.warnings)
    return result


def plan(
    document: Any,
    host: Host,
    secrets: SecretSource | None = None,
    *,
    device: Any = None,
    escrow: Any = None,
    ledger: Ledger | None = None,
    now: Any = None,
) -> Plan:
    """What would change on ``host`` to reach ``document`` (nothing runs, nothing is written)."""
    return _plan(context(document, host, secrets, device, escrow=escrow, ledger=ledger, now=now))


def apply(
    document: Any,
    host: Host,
    secrets: SecretSource | None = None,
    *,
    check: bool = False,
    device: Any = None,
    escrow: Any = None,
    ledger: Ledger | None = None,
    now: Any = None,
    only: Any = None,
) -> Report:
    """Plan, then (unless ``check``) apply, re-read and report.

    With a ``ledger``, what a change makes jcstate own is written to it *before* the change runs
    (a change whose entry cannot be written is not applied), the rest right after it succeeded,
    and an undo entry is dropped only once the re-read plan no longer needs it (see
    :mod:`jcstate.undo`). ``now``: see :func:`context`. ``only``: a predicate on changes; the
    others are left out of the plan (the agent's offline expiry applies only the removals of
    ended admin rights, :mod:`jcstate.timebound`).
    """
    ctx = context(document, host, secrets, device, escrow=escrow, ledger=ledger, now=now)
    whole = first = _plan(ctx)
    if only is not None:
        # the undo entries settle on the whole plan: a change left out is still pending
        first = Plan([c for c in whole.changes if only(c)], whole.errors, whole.warnings)
    if check:
        return Report(plan=first, results=[], applied=False)
    started = time.monotonic()
    results = execute(first, host, ledger=_ledger_writer(ctx))
    if any(r.status == "ok" for r in results):
        # apply, then read again: what still differs did not converge
        second = _plan(ctx)
        left = second if only is None else Plan([c for c in second.changes if only(c)])
        _mark_unconverged(results, left)
    else:
        second = whole  # nothing ran: the system is as it was planned
    if ledger is not None:
        declared = list(ctx.declared.get("users") or [])
        changed = undo.settle(ledger, ctx.undo, second, ctx.facts)
        if undo.refresh(ledger, declared) or changed:
            ledger.save()
    return Report(
        plan=first,
        results=results,
        applied=True,
        duration=time.monotonic() - started,
        errors=[e for e in second.errors if e not in first.errors],
    )


class Recorder(Protocol):
    """What keeps the ledger in step with the changes :func:`execute` runs."""

    def before(self, change: Change) -> None:
        """Called before the change's steps; raising LedgerError keeps the change from running."""

    def after(self, change: Change) -> None:
        """Called right after the change's steps succeeded (may raise LedgerError)."""

    def failed(self, change: Change) -> None:
        """Called when the change's steps failed: take back what ``before`` claimed."""


class _LedgerWriter:
    """Write-ahead for ownership: a create or update is noted in the ledger (and the file
    written) before it runs, so no account, membership or admin right can land on the machine
    without its entry, even if the process dies right after the tool ran or the disk is full
    (then the change does not run at all). A failed change takes its claim back. Undo changes
    are noted after they ran: an entry that outlives its undo settles next round
    (docs/ownership.md, "Safety")."""

    def __init__(self, ctx: PlanContext, ledger: Ledger):
        self.ledger = ledger
        self.on_removal = {u.name: u.on_removal for u in ctx.declared.get("users") or []}
        self.claims: dict[tuple[str, str], str] = {}  # change → the ledger before its claim

    def before(self, change: Change) -> None:
        if change.summary == undo.SUMMARY or change.action not in ("create", "update"):
            return
        snapshot = self.ledger.text()
        if undo.record(self.ledger, change, self.on_removal):
            self.claims[change.key] = snapshot
            try:
                self.ledger.save()
            except LedgerError:
                self._restore(snapshot)
                raise
        undo.fault_point(undo.FAULT_AFTER_CLAIM_ENV)  # tests only: a crash before the tool runs
        undo.counted_fault_point()

    def after(self, change: Change) -> None:
        claimed = self.claims.pop(change.key, None) is not None
        undo.counted_fault_point()  # tests only: the tools ran, the ledger is not written yet
        if change.summary == undo.SUMMARY:
            undo.fault_point()  # tests only: a crash between the undo and the ledger write
        # a change claimed before it ran is in the ledger already: recording it twice would
        # flip what is not idempotent (an admin right given back reads as one taken away)
        if not claimed and undo.record(self.ledger, change, self.on_removal):
            self.ledger.save()

    def failed(self, change: Change) -> None:
        snapshot = self.claims.pop(change.key, None)
        if snapshot is None:
            return
        self._restore(snapshot)
        try:
            self.ledger.save()
        except LedgerError as exc:
            # the claim stays on disk: it names something that is not there, which the next
            # round settles (a create is made again, or its entry goes as already gone)
            _warn("%s", exc)

    def _restore(self, snapshot: str) -> None:
        back = type(self.ledger).parse(snapshot, self.ledger.path, self.ledger.host)
        self.ledger.__dict__.update(back.__dict__)


def _ledger_writer(ctx: PlanContext) -> Recorder | None:
    """What keeps the run's ledger (None: the run keeps none)."""
    if ctx.ledger is None:
        return None
    return _LedgerWriter(ctx, ctx.ledger)


def execute(the_plan: Plan, host: Host, ledger: Recorder | None = None) -> list[Result]:
    """Run the plan's changes in order; a failed change's dependents are skipped, others go on.

    Changes run phase by phase. Within a phase, batch steps (``Run(batch=True)``, such as
    ``chpasswd``) are collected and run together at the end of the phase, before anything of a
    later phase, so a dependent never runs before the batch it depends on. ``ledger`` is told
    before each change (a LedgerError there: the change is not run and fails with that reason),
    after each change whose steps succeeded, and of each that failed.
    """
    results: list[Result] = []
    failed: set[tuple[str, str]] = set()
    for _, group in groupby(the_plan.ordered(), key=lambda c: (c.action == "remove", c.phase)):
        batches: dict[tuple[tuple[str, ...], bool], list[tuple[Result, Run]]] = {}
        for change in group:
            if change.error:
                results.append(Result(change, "refused", change.error))
                failed.add(change.key)
                continue
            blocker = next((r for r in [change.key, *change.requires] if r in failed), None)
            if blocker is not None:
                results.append(
                    Result(
                        change,
                        "skipped",
                        f"skipped: depends on {blocker[0]}/{blocker[1]}, which failed",
                    )
                )
                failed.add(change.key)
                continue
            if ledger is not None:
                try:
                    ledger.before(change)
                except LedgerError as exc:
                    _warn("%s %s not applied: %s", change.kind, change.name, exc)
                    results.append(Result(change, "failed", f"not applied: {exc}"))
                    failed.add(change.key)
                    continue
            result, deferred = _execute_change(change, host)
            results.append(result)
            if result.status != "ok":
                failed.add(change.key)
                if ledger is not None:
                    ledger.failed(change)
                continue
            if ledger is not None:
                try:
                    ledger.after(change)
                except LedgerError as exc:
                    # the change is made; what it owns was claimed before it ran, and an
                    # undo whose entry stays settles next round
                    _warn("%s %s: %s", change.kind, change.name, exc)
                    result.message = f"applied; {exc}"
            for step in deferred:
                batches.setdefault((step.argv, step.chroot), []).append((result, step))
        for items in batches.values():
            _run_batch(items, host, failed)
    return results


def _execute_change(change: Change, host: Host) -> tuple[Result, list[Run]]:
    """Run a change's steps, except batch steps, which are returned for the end of the phase."""
    start = time.monotonic()
    deferred: list[Run] = []
    for step in change.steps:
        if isinstance(step, Run) and step.batch:
            deferred.append(step)
            continue
        failure = _try(step, host)
        if failure is not None:
            import logging  # only on a failure: a run without one does not import it

            logging.getLogger(__name__).warning(
                "%s %s failed: %s", change.kind, change.name, failure[0]
            )
            return (
                Result(
                    change,
                    "failed",
                    failure[0],
                    stderr=failure[1],
                    duration=time.monotonic() - start,
                ),
                [],
            )
    return Result(change, "ok", "", duration=time.monotonic() - start), deferred


def _try(step: Step, host: Host) -> tuple[str, str] | None:
    """Execute one step; on failure, (message, stderr)."""
    try:
        step.execute(host)
    except JcstateError as exc:
        return f"{step}: {exc}", getattr(exc, "stderr", "") or ""
    except OSError as exc:
        return f"{step}: {exc.strerror or exc}", ""
    return None


def _run_batch(items: list[tuple[Result, Run]], host: Host, failed: set[tuple[str, str]]) -> None:
    """One process for all the batch's stdins; when it fails, each alone to find the culprit."""
    if len(items) > 1:
        first = items[0][1]
        merged = Run(
            first.argv,
            stdin=Secret("".join(_reveal(step.stdin) for _, step in items)),
            chroot=first.chroot,
            retry_on=first.retry_on,
        )
        if _try(merged, host) is None:
            return
    for result, step in items:
        failure = _try(step, host)
        if failure is not None:
            result.status = "failed"
            result.message, result.stderr = failure
            failed.add(result.change.key)


def _reveal(value: str | Secret | None) -> str:
    if value is None:
        return ""
    return value.reveal() if isinstance(value, Secret) else value


def _mark_unconverged(results: list[Result], second: Plan) -> None:
    """Fail every ``ok`` change whose resource the re-read plan still finds different.

    A leftover change is matched by resource, not by phase: a user created at phase 20 whose
    ``useradd -G`` did not take shows up again as a phase-30 membership change, and that must
    fail the create. The message names each field still different, with the value read back.
    """
    ok: dict[tuple[str, str], list[Result]] = {}
    phases: dict[tuple[str, str, int], Result] = {}
    for result in results:
        phases[(*result.change.key, result.change.phase)] = result
        if result.status == "ok":
            ok.setdefault(result.change.key, []).append(result)
    left: dict[int, tuple[Result, list[str]]] = {}
    for still in second.changes:
        same = phases.get((*still.key, still.phase))
        if same is not None and same.status != "ok":
            continue  # refused, failed or skipped this run: already reported as such
        result = same if same is not None else (ok.get(still.key) or [None])[-1]
        if result is None:
            continue
        left.setdefault(id(result), (result, []))[1].append(_differences(still))
    for result, differences in left.values():
        result.status = "failed"
        result.message = f"did not converge: still differs after apply ({'; '.join(differences)})"


def _differences(change: Change) -> str:
    """``state: partly locked (expired by the lock) → locked, …``; secrets as ``(secret)``."""
    if not change.fields:
        return change.action
    shown = []
    for f in change.fields:
        item = f.to_dict()
        shown.append(f"{f.field}: {_shown(item['before'])} → {_shown(item['after'])}")
    return ", ".join(shown)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


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
    with host.facts_round():
        seen: set[int] = set()
        for res in RESOURCES:
            _summarise(res, host, facts, seen)
    return facts


def _summarise(res: Any, host: Host, facts: dict[str, Any], seen: set[int]) -> None:
    backend = res.backend(host.os)
    if backend is None:
        return
    try:
        gathered = backend.gather(host)
    except JcstateError as exc:
        facts[res.key] = {"error": str(exc)}
        return
    summary = getattr(gathered, "summary", None)
    if callable(summary) and id(gathered) not in seen:  # users and groups share account facts
        seen.add(id(gathered))
        facts[res.key] = summary()


def _hostname(host: Host) -> str:
    if host.root == "/":
        return platform.node()
    text = host.read_text("/etc/hostname") or ""
    return text.strip() or platform.node()


def _boot_time(host: Host) -> float | None:
    if host.root != "/":
        return None
    # /proc/stat where there is one (no psutil import on Linux), psutil elsewhere
    from jcstate.modules.commands.boot import boot_time

    return boot_time(host)
