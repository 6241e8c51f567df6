"""The Rollout page: the newest staged rollout as ``jcstate rollout status`` shows it, with
Promote and Abort for managers and above.

Promote and abort call the API's own route functions
(:func:`jcstate.server.routes.rollouts.promote_rollout` / ``abort_rollout``) with the
signed-in admin, so the checks (a halted rollout needs ``force``), the change and the audit
entry (``rollout.promote`` / ``rollout.abort``, actor ``admin:NAME``) are the API's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from jcstate.server.console.web import ConsoleAdmin, PageError, ctx_of, form_of, page, signed_in

router = APIRouter(include_in_schema=False)

READ = Depends(signed_in("read-only"))
MANAGE = Depends(signed_in("manager"))


def _status(request: Request) -> dict[str, Any] | None:
    from jcstate.server import rollout

    return rollout.status(ctx_of(request))


@router.get("/rollout")
def rollout_page(request: Request, admin: ConsoleAdmin = READ) -> Response:
    view = _status(request)
    done = request.query_params.get("done", "")
    return page(
        request,
        "rollout.html",
        admin,
        ro=view,
        done=done if done in ("promoted", "aborted") else "",
        error="",
    )


@router.post("/rollout/promote")
async def promote(request: Request, admin: ConsoleAdmin = MANAGE) -> Response:
    """Send the rollout's revision to every device now; a halted one only with ``force``."""
    from jcstate.server.routes.rollouts import EndRollout, promote_rollout

    form = await form_of(request)
    body = EndRollout(message=form.get("message", "").strip()[:1000], force="force" in form)
    return await _end(request, admin, promote_rollout, body, "promoted")


@router.post("/rollout/abort")
async def abort(request: Request, admin: ConsoleAdmin = MANAGE) -> Response:
    """Send every device, canaries included, back to the revision before the rollout's."""
    from jcstate.server.routes.rollouts import AbortRollout, abort_rollout

    form = await form_of(request)
    body = AbortRollout(message=form.get("message", "").strip()[:1000])
    return await _end(request, admin, abort_rollout, body, "aborted")


# what each button does, as the confirmation says it
EFFECTS = {
    "promote": (
        "Promote",
        "sends revision {revision} to every device now, without waiting for the canaries.",
    ),
    "abort": (
        "Abort",
        "sends every device, canaries included, back to revision {previous}; revision "
        "{revision} is never sent again (history keeps it).",
    ),
}


def _open(request: Request) -> dict[str, Any]:
    view = _status(request)
    if view is None or view["state"] not in ("canary", "halted"):
        raise PageError(409, "No rollout is in progress: see the Rollout page.")
    return view


@router.get("/rollout/{what}")
def confirm(what: str, request: Request, admin: ConsoleAdmin = MANAGE) -> Response:
    """The confirmation before Promote or Abort (a GET changes nothing)."""
    if what not in EFFECTS:
        raise PageError(404, "There is no such page.")
    view = _open(request)
    label, effect = EFFECTS[what]
    return page(
        request,
        "rollout_confirm.html",
        admin,
        ro=view,
        what=what,
        label=label,
        effect=effect.format(revision=view["revision"], previous=view["previous"]),
    )


async def _end(
    request: Request, admin: ConsoleAdmin, route: Callable[..., Any], body: Any, done: str
) -> Response:
    from starlette.concurrency import run_in_threadpool

    try:
        await run_in_threadpool(route, body, request, admin)
    except HTTPException as exc:  # 409: nothing in progress, halted without force, a race
        if exc.status_code != 409:
            raise PageError(exc.status_code, str(exc.detail)) from None
        view = _status(request)
        return page(request, "rollout.html", admin, 409, ro=view, done="", error=str(exc.detail))
    return RedirectResponse(f"/rollout?done={done}", status_code=303)
