"""Run saved command: the console page of command runners (and of managers, for any saved
command). A command runner signs in to this page and sees nothing else of the console.

The device is typed (hostname or id), not picked from a list: a fleet of thousands makes no
menu, and the API's own device lookup answers an unknown or ambiguous name. Running goes
through the API's route function (:func:`jcstate.server.routes.commands.run_saved`) with the
signed-in admin, so the assignment check, the queue and the audit entry are the API's.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from jcstate.server.console.web import ConsoleAdmin, PageError, ctx_of, form_of, page, signed_in
from jcstate.server.roles import COMMAND_RUNNER

router = APIRouter(include_in_schema=False)

RUN = Depends(signed_in("manager", COMMAND_RUNNER))


def _values(request: Request, admin: ConsoleAdmin, **extra: Any) -> dict[str, Any]:
    from jcstate.server.commands import command_view
    from jcstate.server.saved import SavedCommands, assignee, saved_view

    ctx = ctx_of(request)
    saved = SavedCommands(ctx.store)
    mine = assignee(admin.actor) if admin.role == COMMAND_RUNNER else None
    names = {d["id"]: d["hostname"] for d in ctx.store.list_devices()}
    own = ctx.queue.list(limit=20, created_by=admin.actor)
    return {
        "saved": [saved_view(r) for r in saved.list(assigned_to=mine)],
        "commands": [command_view(c, names.get(c["device_id"])) for c in own],
        "error": "",
        "values": {},
        "issued": request.query_params.get("issued", ""),
        **extra,
    }


@router.get("/run")
def run_page(request: Request, admin: ConsoleAdmin = RUN) -> Response:
    return page(request, "run.html", admin, **_values(request, admin))


@router.post("/run")
async def run_saved_command(request: Request, admin: ConsoleAdmin = RUN) -> Response:
    from starlette.concurrency import run_in_threadpool

    from jcstate.server.routes.commands import SavedRun, run_saved

    form = await form_of(request)
    device, name = form.get("device", "").strip(), form.get("saved", "")
    try:
        if not device or not name:
            raise PageError(422, "Give a device and choose a saved command.")
        made = await run_in_threadpool(run_saved, device, SavedRun(), request, name, admin)
    except (HTTPException, PageError) as exc:
        status = exc.status_code if isinstance(exc, HTTPException) else exc.status
        message = str(exc.detail) if isinstance(exc, HTTPException) else exc.message
        values = _values(request, admin, error=message, values=form)
        return page(request, "run.html", admin, status, **values)
    return RedirectResponse(f"/run?issued={urllib.parse.quote(made['id'])}", status_code=303)
