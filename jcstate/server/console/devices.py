"""The Devices page, one device's page, its Actions (with confirmation) and live updates.

Actions go through the API's own code: :func:`jcstate.server.routes.commands._issue` with the
signed-in admin, so the console can issue exactly what the caller's role may issue through
the API, and each command lands in the same audit log (actor ``admin:NAME``). The roles each
action needs are those of the API's routes (``ACTION_ROLES``; a test holds them to
``tests/server/authz_matrix.yaml``).
"""

from __future__ import annotations

import shlex
import time
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from jcstate.server.admins import AdminAccounts, verify_password
from jcstate.server.console import queries
from jcstate.server.console.web import (
    ConsoleAdmin,
    PageError,
    ctx_of,
    form_of,
    page,
    signed_in,
)
from jcstate.server.roles import COMMAND_RUNNER

router = APIRouter(include_in_schema=False)

READ = Depends(signed_in("read-only"))
READ_OR_RUN = Depends(signed_in("read-only", COMMAND_RUNNER))
REFRESH = Depends(signed_in("read-only", touch=False))  # a page polling its live values
MANAGE = Depends(signed_in("manager"))
ADMINISTER = Depends(signed_in("administrator"))

# action → (role needed, label, what happens): the API's routes need the same roles
ACTION_ROLES = {
    "lock": "manager",
    "restart": "manager",
    "shutdown": "manager",
    "run": "manager",
    "erase": "administrator",
}
ACTIONS = {
    "lock": ("Lock", "locks every graphical session on {host}; logged-in users stay logged in."),
    "restart": (
        "Restart",
        "warns logged-in users on {host}, waits the delay, then restarts it. It is done once "
        "{host} comes back with a new boot time.",
    ),
    "shutdown": (
        "Shut down",
        "warns logged-in users on {host}, waits the delay, then powers it off.",
    ),
    "erase": (
        "Erase",
        "destroys the data on {host}'s encrypted volumes and wipes its disks. This cannot be "
        "undone.",
    ),
    "run": ("Run command", "runs a program on {host} as root (or the user you name)."),
}
PER_PAGE = 50


def _device(request: Request, device: str) -> dict[str, Any]:
    row = ctx_of(request).store.device(device)
    if row is None:
        raise PageError(404, "There is no such device.")
    return row


def _summary(ctx: Any, row: dict[str, Any], power: Any) -> dict[str, Any]:
    from jcstate.server.routes.admin import _device_summary

    return _device_summary(ctx, row, power)


@router.get("/")
def home() -> Response:
    return RedirectResponse("/devices", status_code=303)


def _query(request: Request) -> queries.DeviceQuery:
    p = request.query_params
    try:
        number = max(int(p.get("page", "1") or 1), 1)
    except ValueError:
        number = 1
    return queries.DeviceQuery(
        search=p.get("q", "").strip(),
        os=p.get("os", ""),
        label=p.get("label", "").strip(),
        status=p.get("status", "") if p.get("status", "") in queries.STATUSES else "",
        sort=p.get("sort", "hostname") if p.get("sort") in queries.SORTS else "hostname",
        descending=p.get("order") == "desc",
        page=number,
        per_page=PER_PAGE,
    )


def _rows(request: Request, q: queries.DeviceQuery) -> tuple[list[dict[str, Any]], int]:
    """One page of devices as shown: summary, pending commands, failures of the last run."""
    ctx = ctx_of(request)
    rows, total = queries.find_devices(ctx.store, q, time.time() - ctx.online_after)
    ids = [r["id"] for r in rows]
    power = ctx.queue.power_states(ids)
    pending = queries.pending_commands(ctx.store, ids)
    reports = queries.last_reports(ctx.store, ids)
    shown = []
    for row in rows:
        s = _summary(ctx, row, power)
        s["pending"] = pending.get(row["id"], 0)
        s["failures"] = queries.failures(reports.get(row["id"]))
        s["state"] = (
            row["status"] if row["status"] != "active" else "online" if s["online"] else "offline"
        ) + (f" · {s['activity']}" if s["activity"] else "")
        if s["lastReportAt"] is None:
            s["converge"] = "no report"
        elif s["failures"]:
            s["converge"] = f"failed ({s['failures']})"
        else:
            s["converge"] = "drift" if s["drift"] else "ok"
        shown.append(s)
    return shown, total


@router.get("/devices")
def devices(request: Request, admin: ConsoleAdmin = READ_OR_RUN) -> Response:
    if admin.role == COMMAND_RUNNER:  # where sign-in lands: a command runner's page is /run
        return RedirectResponse("/run", status_code=303)
    ctx = ctx_of(request)
    q = _query(request)
    shown, total = _rows(request, q)
    pages = max((total + PER_PAGE - 1) // PER_PAGE, 1)
    base = {k: v for k, v in request.query_params.items() if k != "page" and v}

    def link(**changes: Any) -> str:
        return "/devices?" + urllib.parse.urlencode({**base, **changes})

    return page(
        request,
        "devices.html",
        admin,
        devices=shown,
        total=total,
        q=q,
        pages=pages,
        link=link,
        live="/devices/live?" + urllib.parse.urlencode({**base, "page": q.page}),
        systems=queries.operating_systems(ctx.store),
        statuses=queries.STATUSES,
        sorts=queries.SORTS,
    )


@router.get("/devices/live")
def devices_live(request: Request, admin: ConsoleAdmin = REFRESH) -> Response:
    """What the Devices page refreshes without a reload, for the devices it shows."""
    from jcstate.server.console.web import _when

    shown, _ = _rows(request, _query(request))
    values: dict[str, str] = {}
    for d in shown:
        values[f"dev-{d['id']}-state"] = d["state"]
        values[f"dev-{d['id']}-seen"] = _when(d["lastSeen"])
        values[f"dev-{d['id']}-converge"] = d["converge"]
        values[f"dev-{d['id']}-pending"] = str(d["pending"])
    return JSONResponse(values)


def _facts_view(facts: Any) -> list[tuple[str, Any]]:
    if not isinstance(facts, dict):
        return []
    return sorted(facts.items())


@router.get("/devices/{device}")
def device_page(device: str, request: Request, admin: ConsoleAdmin = READ) -> Response:
    from jcstate.server.approvals import settle_lapsed
    from jcstate.server.commands import command_view

    ctx = ctx_of(request)
    row = _device(request, device)
    summary = _summary(ctx, row, None)
    last = ctx.store.last_report(row["id"])
    rendered = ctx.renderer.for_device(row, ctx.generation(row["id"]))
    document = rendered.document or {}
    settle_lapsed(ctx)
    commands = [command_view(c) for c in ctx.queue.list(row["id"], limit=50)]
    issued = request.query_params.get("issued", "")
    issued_state = next((c["state"] for c in commands if c["id"] == issued), "")
    keys = ctx.store.recovery_keys(row["id"])
    facts = row["facts"] if isinstance(row["facts"], dict) else {}
    return page(
        request,
        "device.html",
        admin,
        device=summary,
        facts=_facts_view(facts),
        filevault=facts.get("fileVault") or facts.get("filevault"),
        rendered=rendered,
        policies=document.get("policies") or [],
        report=None if last is None else (last["body"].get("report") or last["body"]),
        report_ok=None if last is None else last["ok"],
        report_changed=None if last is None else last["changed"],
        report_at=None if last is None else last["received_at"],
        commands=commands,
        recovery=[{"volume": k["volume"], "escrowedAt": k["escrowed_at"]} for k in keys],
        actions=ACTIONS,
        action_roles=ACTION_ROLES,
        issued=issued,
        issued_state=issued_state,
    )


@router.get("/devices/{device}/live")
def device_live(device: str, request: Request, admin: ConsoleAdmin = REFRESH) -> Response:
    """What the device page refreshes without a reload: states of its commands, online."""
    from jcstate.server.console.web import _when

    ctx = ctx_of(request)
    row = _device(request, device)
    summary = _summary(ctx, row, None)
    values: dict[str, str] = {
        "online": "online" if summary["online"] else "offline",
        "last-seen": _when(summary["lastSeen"]),
        "activity": summary["activity"] or "",
    }
    for c in ctx.queue.list(row["id"], limit=50):
        values[f"cmd-{c['seq']}-state"] = c["state"] + (
            " (cancel requested)" if c["cancel_requested"] and c["state"] != "cancelled" else ""
        )
        values[f"cmd-{c['seq']}-exit"] = "" if c["exit_code"] is None else str(c["exit_code"])
        values[f"cmd-{c['seq']}-finished"] = _when(c["finished_at"]) if c["finished_at"] else ""
        result = c.get("result") or {}
        values[f"cmd-{c['seq']}-output"] = "\n".join(
            (result.get("stdout") or result.get("message") or "").rstrip("\n").splitlines()[-5:]
        )
    return JSONResponse(values)


@router.get("/devices/{device}/actions/{action}")
def confirm_action(
    device: str, action: str, request: Request, admin: ConsoleAdmin = READ
) -> Response:
    if action not in ACTIONS:
        raise PageError(404, "There is no such action.")
    row = _device(request, device)
    needed = ACTION_ROLES[action]
    from jcstate.server.roles import allows

    if not allows(admin.role, needed):
        raise PageError(403, f"{ACTIONS[action][0]} needs the {needed} role; you are {admin.role}.")
    return page(request, "confirm.html", admin, **_confirm_values(row, action))


def _confirm_values(row: dict[str, Any], action: str, **extra: Any) -> dict[str, Any]:
    label, effect = ACTIONS[action]
    return {
        "device": row,
        "action": action,
        "label": label,
        "effect": effect.format(host=row["hostname"]),
        "error": "",
        "values": {},
        **extra,
    }


def _command_body(action: str, form: dict[str, str], row: dict[str, Any]) -> Any:
    """The API's NewCommand for the submitted form; PageError(422) for bad input."""
    from pydantic import ValidationError

    from jcstate.server.routes.commands import NewCommand

    body: dict[str, Any] = {}
    try:
        if action in ("restart", "shutdown"):
            if form.get("delay", "").strip():
                body["delay"] = int(form["delay"])
            if form.get("message", "").strip():
                body["message"] = form["message"].strip()
        elif action == "erase":
            if form.get("hostname", "").strip() != row["hostname"]:
                raise PageError(
                    422,
                    f"The name you typed does not match this device's hostname "
                    f"({row['hostname']}). Nothing was sent.",
                )
            body["confirm"] = row["id"]
        elif action == "run":
            line = form.get("line", "").strip()
            if not line:
                raise PageError(422, "Give a command to run.")
            run: dict[str, Any] = {}
            if form.get("mode", "argv") == "shell":
                run["command"] = line
            else:
                run["argv"] = shlex.split(line)
            if form.get("user", "").strip():
                run["user"] = form["user"].strip()
            if form.get("timeout", "").strip():
                run["timeout"] = int(form["timeout"])
            body["run"] = run
        return NewCommand.model_validate(body)
    except ValueError as exc:  # int() or shlex, and pydantic's ValidationError
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise PageError(422, f"That is not a valid command: {reason}.") from None


@router.post("/devices/{device}/actions/{action}")
async def do_action(
    device: str, action: str, request: Request, admin: ConsoleAdmin = READ
) -> Response:
    from starlette.concurrency import run_in_threadpool

    from jcstate.server.roles import allows
    from jcstate.server.routes.commands import _issue

    if action not in ACTIONS:
        raise PageError(404, "There is no such action.")
    ctx = ctx_of(request)
    row = _device(request, device)
    needed = ACTION_ROLES[action]
    if not allows(admin.role, needed):
        ctx.store.audit(
            admin.actor,
            "POST /devices/{device}/actions/{action}",
            "denied",
            role=admin.role,
            target=row["id"],
            detail={"action": action, "reason": f"needs role {needed}"},
        )
        raise PageError(403, f"{ACTIONS[action][0]} needs the {needed} role; you are {admin.role}.")
    form = await form_of(request)
    try:
        body = _command_body(action, form, row)
    except PageError as exc:
        ctx.store.audit(
            admin.actor,
            "POST /devices/{device}/actions/{action}",
            "refused",
            role=admin.role,
            target=row["id"],
            detail={"action": action, "reason": exc.message},
        )
        values = _confirm_values(row, action, error=exc.message, values=form)
        return page(request, "confirm.html", admin, exc.status, **values)
    try:
        made = await run_in_threadpool(_issue, request, admin, row["id"], action, body)
    except HTTPException as exc:
        values = _confirm_values(row, action, error=str(exc.detail), values=form)
        return page(request, "confirm.html", admin, exc.status_code, **values)
    return RedirectResponse(
        f"/devices/{row['id']}?issued={urllib.parse.quote(made['id'])}#commands", status_code=303
    )


@router.post("/devices/{device}/recovery-key")
async def reveal_recovery_key(
    device: str, request: Request, admin: ConsoleAdmin = ADMINISTER
) -> Response:
    """The escrowed FileVault key, after the administrator typed their password again."""
    from starlette.concurrency import run_in_threadpool

    from jcstate.server.routes.admin import recovery_key

    ctx = ctx_of(request)
    row = _device(request, device)
    form = await form_of(request)
    account = AdminAccounts(ctx.store).get(admin.name)
    if account is None or not verify_password(form.get("password", ""), account["password_hash"]):
        ctx.store.audit(
            admin.actor,
            "POST /devices/{device}/recovery-key",
            "denied",
            role=admin.role,
            target=row["id"],
            detail={"reason": "wrong password"},
        )
        raise PageError(403, "Wrong password: the recovery key stays hidden.")
    try:
        keys = await run_in_threadpool(recovery_key, row["id"], request, None, True, admin)
    except HTTPException as exc:
        raise PageError(exc.status_code, str(exc.detail)) from None
    return page(request, "recovery.html", admin, device=row, keys=keys)


# -- just-in-time admin --------------------------------------------------------------------
def _elevation(form: dict[str, str]) -> Any:
    """The API's NewElevation for the submitted form; PageError(422) for bad input."""
    from pydantic import ValidationError

    from jcstate.cli.elevate import duration
    from jcstate.errors import JcstateError
    from jcstate.server.routes.commands import NewElevation

    user = form.get("user", "").strip()
    reason = form.get("reason", "").strip()
    if not user:
        raise PageError(422, "Give the user to make admin (a user a policy manages here).")
    body: dict[str, Any] = {"user": user}
    if form.get("revoke"):
        body["revoke"] = True
    else:
        if not reason:
            raise PageError(422, "Give a reason: every elevation is audited with it.")
        text = form.get("duration", "").strip()
        try:
            body["seconds"] = duration(text)
        except JcstateError:
            raise PageError(
                422, f"{text!r} is not a duration: give one such as 30m, 2h, 1h30m or 1d."
            ) from None
    if reason:
        body["reason"] = reason
    try:
        return NewElevation.model_validate(body)
    except ValidationError as exc:
        raise PageError(422, f"That is not a valid elevation: {exc.errors()[0]['msg']}.") from None


@router.post("/devices/{device}/elevate")
async def elevate(device: str, request: Request, admin: ConsoleAdmin = MANAGE) -> Response:
    """Queue ``elevate`` (or its revoke) through the API's route function: same checks, same
    audit entry (``command.elevate`` with user, until and reason)."""
    from starlette.concurrency import run_in_threadpool

    from jcstate.server.routes.commands import elevate as elevate_route

    ctx = ctx_of(request)
    row = _device(request, device)
    form = await form_of(request)
    try:
        body = _elevation(form)
        made = await run_in_threadpool(elevate_route, row["id"], body, request, admin)
    except (PageError, HTTPException) as exc:
        status, message = (
            (exc.status, exc.message)
            if isinstance(exc, PageError)
            else (exc.status_code, str(exc.detail))
        )
        if isinstance(exc, PageError):  # the API's route audits its own refusals
            ctx.store.audit(
                admin.actor,
                "POST /devices/{device}/elevate",
                "refused",
                role=admin.role,
                target=row["id"],
                detail={"action": "elevate", "reason": message},
            )
        values = {k: form.get(k, "") for k in ("user", "duration", "reason", "revoke")}
        return page(
            request, "elevate.html", admin, status, device=row, error=message, values=values
        )
    return RedirectResponse(
        f"/devices/{row['id']}?issued={urllib.parse.quote(made['id'])}#commands", status_code=303
    )
