"""The admin console in the browser, served by ``jcstate server`` at ``/`` (the API stays under
``/api/``): server-rendered pages (Jinja2 templates beside the routes), one stylesheet and one
small script shipped in the package, no build step, no network access at run time.

:func:`install` adds it to the application: routes, static files, security headers, the
session store. Pages read through the server's store and call the API's own route functions
for anything that changes state, so the console has no power the admin's role lacks.
"""

from __future__ import annotations

from typing import Any

from fastapi.staticfiles import StaticFiles

from jcstate.server.console import devices, fleet, people, rollouts, runs, signin
from jcstate.server.console.web import HERE, PageError, Redirect, SecurityHeaders, error_page
from jcstate.server.sessions import Sessions

__all__ = ["announce", "install"]


def install(app: Any, *, idle: float, lifetime: float) -> None:
    """Mount the console on ``app`` with sessions ending after ``idle`` / ``lifetime`` s."""
    app.state.console_sessions = Sessions(app.state.ctx.store, idle=idle, lifetime=lifetime)
    for module in (signin, devices, fleet, people, rollouts, runs):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_exception_handler(PageError, error_page)
    app.add_exception_handler(Redirect, error_page)
    app.add_middleware(SecurityHeaders)


def announce(store: Any) -> None:
    """Tell whoever started the server where the console is, and how to get in."""
    from jcstate.server.admins import AdminAccounts

    print("Admin console: open this server's address in a browser.", flush=True)
    if AdminAccounts(store).count() == 0:
        print(
            "No console admin yet: add one with "
            "`jcstate admin add NAME --role administrator --server URL --token TOKEN` "
            "(the admin token of the first start).",
            flush=True,
        )
