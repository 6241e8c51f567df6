"""The Commands, Policies and Audit pages.

Cancelling, approving and rejecting an erase call the API's own route functions (the signed-in
account is the person, for two-person erase); the audit page needs the administrator role, as
``GET /api/v1/audit`` does.
"""

from __future__ import annotations

import datetime as dt
import difflib
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from jcstate.server.approvals import settle_lapsed
from jcstate.server.commands import ACTIVE_STATES, AWAITING, FINAL_STATES, command_view
from jcstate.server.console import queries
from jcstate.server.console.devices import ACTIONS
from jcstate.server.console.web import ConsoleAdmin, PageError, _when, ctx_of, page, signed_in

router = APIRouter(include_in_schema=False)

READ = Depends(signed_in("read-only"))
REFRESH = Depends(signed_in("read-only", touch=False))  # a page polling its live values
MANAGE = Depends(signed_in("manager"))
ADMINISTER = Depends(signed_in("administrator"))
PER_PAGE = 100
OUTCOMES = ("ok", "denied", "refused", "failed")
STATES = (AWAITING, *ACTIVE_STATES, *FINAL_STATES)
COMMAND_ACTIONS = (*ACTIONS, "update", "elevate")  # what the Commands page filters by


def _page_number(request: Request) -> int:
    try:
        return max(int(request.query_params.get("page", "1") or 1), 1)
    except ValueError:
        return 1


def _commands(request: Request) -> tuple[list[dict[str, Any]], int, dict[str, str]]:
    p = request.query_params
    filters = {
        "state": p.get("state", "") if p.get("state", "") in STATES else "",
        "device": p.get("device", "").strip(),
        "action": p.get("action", "") if p.get("action", "") in COMMAND_ACTIONS else "",
    }
    settle_lapsed(ctx_of(request))
    rows, total = queries.find_commands(
        ctx_of(request).store, page=_page_number(request), per_page=PER_PAGE, **filters
    )
    return rows, total, filters


@router.get("/commands")
def commands_page(request: Request, admin: ConsoleAdmin = READ) -> Response:
    rows, total, filters = _commands(request)
    number = _page_number(request)
    pages = max((total + PER_PAGE - 1) // PER_PAGE, 1)
    base = {k: v for k, v in filters.items() if v}

    def link(**changes: Any) -> str:
        return "/commands?" + urllib.parse.urlencode({**base, **changes})

    return page(
        request,
        "commands.html",
        admin,
        commands=[
            {
                **command_view(r, r["hostname"]),
                "active": r["state"] in (*ACTIVE_STATES, AWAITING),
            }
            for r in rows
        ],
        total=total,
        filters=filters,
        states=STATES,
        actions=list(COMMAND_ACTIONS),
        number=number,
        pages=pages,
        link=link,
        live="/commands/live?" + urllib.parse.urlencode({**base, "page": number}),
    )


@router.get("/commands/live")
def commands_live(request: Request, admin: ConsoleAdmin = REFRESH) -> Response:
    rows, _, _ = _commands(request)
    values: dict[str, str] = {}
    for r in rows:
        state = r["state"]
        if r["cancel_requested"] and state != "cancelled":
            state += " (cancel requested)"
        values[f"cmd-{r['seq']}-state"] = state
        values[f"cmd-{r['seq']}-exit"] = "" if r["exit_code"] is None else str(r["exit_code"])
        values[f"cmd-{r['seq']}-finished"] = _when(r["finished_at"]) if r["finished_at"] else ""
    return JSONResponse(values)


async def _on_command(seq: int, request: Request, call: Any) -> Response:
    """``call(row)`` (an API route function, run in the thread pool) on the command numbered
    ``seq``, its refusal shown as the page's error; then back to the page the form was on."""
    from starlette.concurrency import run_in_threadpool

    row = ctx_of(request).queue.by_seq(seq)
    if row is None:
        raise PageError(404, "There is no such command.")
    try:
        await run_in_threadpool(call, row)
    except HTTPException as exc:
        raise PageError(exc.status_code, str(exc.detail)) from None
    return await _back(request)


@router.post("/commands/{seq}/cancel")
async def cancel(seq: int, request: Request, admin: ConsoleAdmin = MANAGE) -> Response:
    from jcstate.server.routes.commands import cancel_command

    return await _on_command(
        seq, request, lambda row: cancel_command(row["id"], request, row["device_id"], admin)
    )


async def _back(request: Request) -> Response:
    """Back to the page the form was on (a path on this site), else the Commands page."""
    from jcstate.server.console.web import form_of

    back = (await form_of(request)).get("back", "")
    ok = back.startswith("/") and not back.startswith("//") and "\\" not in back
    return RedirectResponse(back if ok else "/commands", status_code=303)


@router.post("/commands/{seq}/approve")
async def approve(seq: int, request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    """Approve an erase another person asked for (two-person erase)."""
    from jcstate.server.routes.commands import approve_command

    return await _on_command(
        seq, request, lambda row: approve_command(row["id"], request, row["device_id"], admin)
    )


@router.post("/commands/{seq}/reject")
async def reject(seq: int, request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    """Reject an erase awaiting approval; the form's ``reason`` is kept."""
    from jcstate.server.console.web import form_of
    from jcstate.server.routes.commands import Rejection, reject_command

    rejection = Rejection(reason=(await form_of(request)).get("reason", "")[:1000])
    return await _on_command(
        seq,
        request,
        lambda row: reject_command(row["id"], request, rejection, row["device_id"], admin),
    )


# -- policies ------------------------------------------------------------------------------
@router.get("/policies")
def policies(request: Request, admin: ConsoleAdmin = READ) -> Response:
    revisions = ctx_of(request).store.list_revisions(200)
    return page(request, "policies.html", admin, revisions=revisions)


def _revision(request: Request, number: int) -> dict[str, Any]:
    row = ctx_of(request).store.revision(number)
    if row is None:
        raise PageError(404, f"There is no revision {number}.")
    return dict(row)


@router.get("/policies/diff")
def policy_diff(request: Request, admin: ConsoleAdmin = READ) -> Response:
    try:
        old_n, new_n = int(request.query_params["from"]), int(request.query_params["to"])
    except (KeyError, ValueError):
        raise PageError(400, "Choose two revisions to compare.") from None
    old, new = _revision(request, old_n), _revision(request, new_n)
    files = []
    for path in sorted(set(old["files"]) | set(new["files"])):
        a, b = old["files"].get(path), new["files"].get(path)
        if a == b:
            continue
        lines = list(
            difflib.unified_diff(
                (a or "").splitlines(),
                (b or "").splitlines(),
                f"r{old_n}/{path}" if a is not None else "/dev/null",
                f"r{new_n}/{path}" if b is not None else "/dev/null",
                lineterm="",
            )
        )
        files.append({"path": path, "lines": lines})
    return page(request, "diff.html", admin, old=old, new=new, files=files)


@router.get("/policies/{number}")
def policy(number: int, request: Request, admin: ConsoleAdmin = READ) -> Response:
    from jcstate.errors import JcstateError
    from jcstate.server.routes.admin import _blast_radius

    ctx = ctx_of(request)
    row = _revision(request, number)
    try:
        radius = _blast_radius(ctx, ctx.renderer.repo(number))
        error = ""
    except JcstateError as exc:
        radius, error = [], str(exc)
    return page(
        request,
        "policy.html",
        admin,
        revision=row,
        radius=radius,
        error=error,
        previous=number - 1 if number > 1 else None,
    )


# -- audit ---------------------------------------------------------------------------------
def _time(text: str) -> float | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise PageError(400, f"{text!r} is not a date and time (YYYY-MM-DDTHH:MM).") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@router.get("/audit")
def audit(request: Request, admin: ConsoleAdmin = ADMINISTER) -> Response:
    p = request.query_params
    filters = {
        k: p.get(k, "").strip() for k in ("actor", "action", "target", "outcome", "since", "until")
    }
    rows = queries.find_audit(
        ctx_of(request).store,
        actor=filters["actor"],
        action=filters["action"],
        target=filters["target"],
        outcome=filters["outcome"] if filters["outcome"] in OUTCOMES else "",
        since=_time(filters["since"]),
        until=_time(filters["until"]),
    )
    return page(request, "audit.html", admin, rows=rows, filters=filters, outcomes=OUTCOMES)
