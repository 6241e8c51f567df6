"""Signing in to the console from tests, the way a browser's form does (httpx, no browser).

Also used by the browser tests to create accounts and read TOTP codes.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any

import httpx

from jcstate.server.admins import AdminAccounts, totp_code

PASSWORD = "correct horse battery"


def add_admin(server: Any, name: str, role: str, password: str = PASSWORD) -> None:
    AdminAccounts(server.ctx.store).add(name, role, password, "test")


def hidden(page: str, field: str = "csrf") -> str:
    found = re.search(rf'name="{field}" value="([^"]*)"', page)
    assert found, f"no {field} field in the page"
    return html.unescape(found.group(1))


def seed_of(page: str) -> str:
    found = re.search(r'<code class="seed">([A-Z2-7]+)</code>', page)
    assert found, "no TOTP key on the enrolment page"
    return found.group(1)


def code_for(seed: str, offset: int = 0) -> str:
    return totp_code(seed, int(time.time() // 30) + offset)


def post_signin(client: httpx.Client, name: str, password: str) -> httpx.Response:
    form = client.get("/signin").text
    return client.post(
        "/signin", data={"csrf": hidden(form), "username": name, "password": password}
    )


def signed_in(server: Any, name: str, role: str, *, seeds: dict[str, str] | None = None) -> Any:
    """An httpx client with a signed-in session of a new admin ``name`` of ``role``."""
    add_admin(server, name, role)
    client = httpx.Client(base_url=server.url, follow_redirects=True, timeout=30)
    server.opened.append(client)  # closed when the server stops
    resp = post_signin(client, name, PASSWORD)
    if role == "administrator":
        seed = seed_of(resp.text)
        if seeds is not None:
            seeds[name] = seed
        resp = client.post("/signin/totp", data={"csrf": hidden(resp.text), "code": code_for(seed)})
    assert resp.status_code == 200 and "Sign out" in resp.text, resp.text[:2000]
    return client


def csrf_of(client: httpx.Client, path: str = "/devices") -> str:
    return hidden(client.get(path).text)
