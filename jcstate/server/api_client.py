"""The admin side of the API as Python calls, for the ``jcstate`` admin commands.

A thin wrapper over ``requests`` with the bearer token; it imports nothing of the server
framework, so admin commands start fast.
"""

from __future__ import annotations

from typing import Any

from jcstate.errors import AuthError, ServerError

__all__ = ["AdminClient"]


class AdminClient:
    """Calls the admin API of one server with one token."""

    def __init__(self, server: str, token: str, *, ca_file: str | None = None, timeout: float = 60):
        import requests

        self.server = server.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._verify: str | bool = ca_file or True
        self._timeout = timeout

    def close(self) -> None:
        self._session.close()

    def call(
        self, method: str, path: str, body: Any = None, *, data: bytes | None = None, **params: Any
    ) -> Any:
        """``body`` goes as JSON; ``data`` (a release wheel) as application/octet-stream."""
        import requests

        try:
            resp = self._session.request(
                method,
                self.server + path,
                json=body if data is None else None,
                data=data,
                headers=None if data is None else {"Content-Type": "application/octet-stream"},
                params=params or None,
                verify=self._verify,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise ServerError(f"{self.server}: {exc}") from exc
        try:
            answer = resp.json()
        except ValueError:
            answer = {"detail": resp.text[:500]}
        if resp.status_code in (401, 403):
            raise AuthError(f"{self.server}: {answer.get('detail', resp.reason)}")
        if resp.status_code >= 400:
            detail = answer.get("detail", resp.reason) if isinstance(answer, dict) else answer
            if isinstance(detail, dict) and "problems" in detail:
                raise ServerError(
                    "the server refused the policies:\n" + "\n".join(detail["problems"])
                )
            raise ServerError(f"{method} {path}: HTTP {resp.status_code}: {detail}")
        return answer
