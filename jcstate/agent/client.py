"""A small HTTP client for the device API, standard library only, that signs every request.

``http.client`` instead of a full HTTP library keeps the agent's memory small; one connection is
kept alive and re-opened after any failure. Responses are JSON.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from typing import Any

from jcstate.agent import signing
from jcstate.agent.identity import Identity
from jcstate.errors import AuthError, ServerError
from jcstate.secret import Secret

__all__ = ["Client", "Unreachable"]


class Unreachable(ServerError):
    """The server could not be reached or asked us to come back later (``retry_after`` s)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Client:
    """Signed JSON requests to one server."""

    def __init__(self, server: str, identity: Identity, *, ca_file: str | None = None):
        url = urllib.parse.urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ServerError(f"{server}: expected http(s)://host[:port]")
        self.server = server.rstrip("/")
        self._url = url
        self._prefix = url.path.rstrip("/")
        self._ca_file = ca_file
        self.identity = identity
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = self._url.hostname or "", self._url.port
            if self._url.scheme == "https":
                context = ssl.create_default_context(cafile=self._ca_file)
                self._conn = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=context
                )
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        device_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send a signed request; return the JSON answer. Raises AuthError, Unreachable."""
        target = self._prefix + path
        data = b"" if body is None else json.dumps(body).encode()
        if device_id is None:
            device = self.identity.device()
            device_id = device["id"] if device else ""
        headers = signing.sign_headers(self.identity.private_key, method, target, data, device_id)
        headers["Content-Type"] = "application/json"
        try:
            conn = self._connection(timeout)
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Unreachable(f"{self.server}: {exc}") from exc
        if resp.status in (429, 502, 503, 504):
            retry = resp.getheader("Retry-After")
            raise Unreachable(
                f"{self.server}: HTTP {resp.status}",
                float(retry) if retry and retry.isdigit() else None,
            )
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"detail": raw[:200].decode(errors="replace")}
        if resp.status in (401, 403):
            raise AuthError(
                f"{self.server} refused the device: {answer.get('detail', resp.status)}"
            )
        if resp.status >= 400:
            raise ServerError(f"{method} {path}: HTTP {resp.status}: {answer.get('detail', '')}")
        return answer if isinstance(answer, dict) else {"items": answer}

    def download(
        self, path: str, *, limit: int = 64 * 1024 * 1024, timeout: float = 120.0
    ) -> bytes:
        """A signed GET whose answer is raw bytes (a release wheel), at most ``limit`` of them.

        Errors as :meth:`request`: Unreachable, AuthError, ServerError (also for a larger body).
        """
        target = self._prefix + path
        device = self.identity.device()
        headers = signing.sign_headers(
            self.identity.private_key, "GET", target, b"", device["id"] if device else ""
        )
        try:
            conn = self._connection(timeout)
            conn.request("GET", target, body=b"", headers=headers)
            resp = conn.getresponse()
            length = resp.getheader("Content-Length") or ""
            if resp.status == 200 and length.isdigit() and int(length) > limit:
                self.close()  # the unread body must not stay on a kept-alive connection
                raise ServerError(f"GET {path}: {length} bytes is more than {limit}")
            raw = resp.read(limit + 1)
            if len(raw) > limit:
                self.close()  # the rest of the body is still on the wire
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Unreachable(f"{self.server}: {exc}") from exc
        if resp.status in (429, 502, 503, 504):
            retry = resp.getheader("Retry-After")
            raise Unreachable(
                f"{self.server}: HTTP {resp.status}",
                float(retry) if retry and retry.isdigit() else None,
            )
        if resp.status != 200:
            try:
                detail = json.loads(raw).get("detail", resp.status)
            except (ValueError, AttributeError):
                detail = raw[:200].decode(errors="replace")
            if resp.status in (401, 403):
                raise AuthError(f"{self.server} refused the device: {detail}")
            raise ServerError(f"GET {path}: HTTP {resp.status}: {detail}")
        if len(raw) > limit:
            raise ServerError(f"GET {path}: more than {limit} bytes")
        return raw

    # -- the device API ----------------------------------------------------------------------
    def enroll(self, connect_key: str, info: dict[str, str]) -> dict[str, Any]:
        body = {"connectKey": connect_key, "publicKey": self.identity.public_key_b64, **info}
        return self.request("POST", "/api/v1/enroll", body, device_id="")

    def work(self, etag: str, wait: float, commands: int | None = None) -> dict[str, Any]:
        """Long-poll; ``commands`` is the highest command ``seq`` this agent has handled."""
        params = {"etag": etag, "wait": f"{wait:g}"}
        if commands is not None:
            params["commands"] = str(commands)
        query = urllib.parse.urlencode(params)
        return self.request("GET", f"/api/v1/device/work?{query}", timeout=wait + 30)

    def report(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/api/v1/device/reports", payload, timeout=60)

    def command_results(
        self, results: list[dict[str, Any]], *, timeout: float = 60
    ) -> dict[str, Any]:
        """Send command results; the answer's ``acks`` are stored (or were already)."""
        return self.request(
            "POST", "/api/v1/device/commands/results", {"results": results}, timeout=timeout
        )

    def escrow(self, volume: str | None, key: Secret, *, timeout: float = 30) -> dict[str, Any]:
        """Send a FileVault recovery key to the server (revealed only into the request body)."""
        return self.request(
            "POST",
            "/api/v1/device/escrow",
            {"volume": volume, "key": key.reveal()},
            timeout=timeout,
        )
