"""Routes for saved commands (:mod:`jcstate.server.saved`): administrators store, edit, remove
and assign them; everyone on the role ladder lists them; a command runner lists its own.

Running one is a command route (``POST /devices/{ref}/commands/saved/{saved}``, in
:mod:`jcstate.server.routes.commands`). Every change is audited with the saved command's name
and its program (``argv[0]``), never the whole argv: like a ``run``, it may hold anything an
administrator typed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import ConfigDict, Field

from jcstate.errors import JcstateError
from jcstate.server.auth import Admin, action_of, require
from jcstate.server.contract import StrictBody
from jcstate.server.roles import COMMAND_RUNNER
from jcstate.server.saved import SavedCommands, SavedConflict, assignee, saved_view
from jcstate.server.views import errors

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["admin"])

LIST = Depends(require("read-only", COMMAND_RUNNER))
ADMINISTER = Depends(require("administrator"))
_NAME = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
SAVED = Path(pattern=_NAME, description="the saved command's name")


def _saved(request: Request) -> SavedCommands:
    return SavedCommands(request.app.state.ctx.store)


def _audit(request: Request, admin: Admin, target: str, outcome: str = "ok", **detail: Any) -> None:
    request.app.state.ctx.store.audit(
        admin.actor, action_of(request), outcome, role=admin.role, target=target, detail=detail
    )


class NewSaved(StrictBody):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)
    argv: list[str] = Field(min_length=1, max_length=1000, description="the program and its args")
    timeout: int | None = Field(None, ge=1, le=86400, description="seconds (default 300)")
    description: str = Field("", max_length=2000)


class SavedChange(StrictBody):
    """What to change; what is left out is kept. The version goes up by one."""

    model_config = ConfigDict(extra="forbid")
    argv: list[str] | None = Field(None, min_length=1, max_length=1000)
    timeout: int | None = Field(None, ge=1, le=86400)
    description: str | None = Field(None, max_length=2000)


@router.get("/saved-commands")
def list_saved(request: Request, admin: Admin = LIST) -> list[dict[str, Any]]:
    """Saved commands with their argv and assignments; a command runner sees only those
    assigned to it, without the assignments."""
    saved = _saved(request)
    if admin.role == COMMAND_RUNNER:
        return [saved_view(r) for r in saved.list(assigned_to=assignee(admin.actor))]
    assigned = saved.assignments()
    return [saved_view(r, assigned.get(r["name"], [])) for r in saved.list()]


@router.post("/saved-commands", status_code=201, responses=errors(409, 422))
def add_saved(body: NewSaved, request: Request, admin: Admin = ADMINISTER) -> dict[str, Any]:
    """Store a saved command (argv, never a shell line); version 1, assigned to no one."""
    try:
        row = _saved(request).add(body.name, body.argv, body.timeout, body.description, admin.actor)
    except JcstateError as exc:
        _audit(request, admin, body.name, "refused", reason=str(exc))
        raise HTTPException(409 if isinstance(exc, SavedConflict) else 422, str(exc)) from None
    _audit(request, admin, body.name, program=body.argv[0], version=1)
    return saved_view(row, [])


@router.patch("/saved-commands/{saved}", responses=errors(404, 409, 422))
def edit_saved(
    body: SavedChange, request: Request, saved: str = SAVED, admin: Admin = ADMINISTER
) -> dict[str, Any]:
    """Change a saved command's argv, timeout or description; its assignments are kept, its
    version goes up, and the audit keeps the programs before and after."""
    store = _saved(request)
    try:
        changed = store.edit(saved, admin.actor, body.argv, body.timeout, body.description)
    except JcstateError as exc:
        _audit(request, admin, saved, "refused", reason=str(exc))
        raise HTTPException(409 if isinstance(exc, SavedConflict) else 422, str(exc)) from None
    if changed is None:
        raise HTTPException(404, f"no saved command {saved} (jcstate command saved list)")
    before, after = changed
    assigned = store.assignments().get(saved, [])
    _audit(
        request,
        admin,
        saved,
        version=after["version"],
        argvChanged=before["argv"] != after["argv"],
        programBefore=before["argv"][0],
        program=after["argv"][0],
        assignments=len(assigned),  # who may now run the new argv without a new assignment
    )
    return saved_view(after, assigned)


@router.delete("/saved-commands/{saved}", responses=errors(404))
def remove_saved(request: Request, saved: str = SAVED, admin: Admin = ADMINISTER) -> Any:
    """Remove a saved command and its assignments (commands it queued are kept)."""
    if not _saved(request).remove(saved):
        raise HTTPException(404, f"no saved command {saved} (jcstate command saved list)")
    _audit(request, admin, saved)
    return {"name": saved, "removed": True}


_KIND = Path(pattern="^(token|admin)$", description="token (its id) or admin (console account)")
_IDENT = Path(pattern="^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$", description="token id or account name")


@router.put("/saved-commands/{saved}/assignments/{kind}/{ident}", responses=errors(404, 422))
def assign_saved(
    request: Request,
    saved: str = SAVED,
    kind: str = _KIND,
    ident: str = _IDENT,
    admin: Admin = ADMINISTER,
) -> dict[str, Any]:
    """Let a command-runner token or console account run this saved command."""
    try:
        created = _saved(request).assign(saved, kind, ident, admin.actor)
    except LookupError as exc:
        _audit(request, admin, saved, "refused", reason=str(exc.args[0]), kind=kind, id=ident)
        raise HTTPException(404, str(exc.args[0])) from None
    except JcstateError as exc:
        _audit(request, admin, saved, "refused", reason=str(exc), kind=kind, id=ident)
        raise HTTPException(422, str(exc)) from None
    _audit(request, admin, saved, kind=kind, id=ident, created=created)
    return {"saved": saved, "kind": kind, "id": ident, "assigned": True, "created": created}


@router.delete("/saved-commands/{saved}/assignments/{kind}/{ident}", responses=errors(404))
def unassign_saved(
    request: Request,
    saved: str = SAVED,
    kind: str = _KIND,
    ident: str = _IDENT,
    admin: Admin = ADMINISTER,
) -> dict[str, Any]:
    """Take a saved command away from a token or console account."""
    if not _saved(request).unassign(saved, kind, ident):
        raise HTTPException(404, f"saved command {saved} is not assigned to {kind} {ident}")
    _audit(request, admin, saved, kind=kind, id=ident)
    return {"saved": saved, "kind": kind, "id": ident, "assigned": False}
