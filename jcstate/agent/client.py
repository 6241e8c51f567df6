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
        data = b"" if body is None else json.dumps(body).encode()
        _, raw = self._exchange(method, path, data, device_id=device_id, timeout=timeout)
        answer = _json(raw)
        return answer if isinstance(answer, dict) else {"items": answer}

    def download(
        self, path: str, *, limit: int = 64 * 1024 * 1024, timeout: float = 120.0
    ) -> bytes:
        """A signed GET whose answer is raw bytes (a release wheel), at most ``limit`` of them.

        Errors as :meth:`request`: Unreachable, AuthError, ServerError (also for a larger body).
        """
        resp, raw = self._exchange("GET", path, b"", timeout=timeout, limit=limit)
        if resp.status != 200:
            raise ServerError(f"GET {path}: HTTP {resp.status}")
        return raw

    def _exchange(
        self,
        method: str,
        path: str,
        data: bytes,
        *,
        device_id: str | None = None,
        timeout: float,
        limit: int | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Sign and send one request; the response and its body when the status is a success.

        ``limit``: the most bytes of body accepted (a larger one is a ServerError and the
        connection is dropped, since the rest is still on the wire).
        Raises Unreachable (network, 429/502/503/504 with Retry-After), AuthError (401/403),
        ServerError (any other error status).
        """
        target = self._prefix + path
        if device_id is None:
            device = self.identity.device()
            device_id = device["id"] if device else ""
        headers = signing.sign_headers(self.identity.private_key, method, target, data, device_id)
        headers["Content-Type"] = "application/json"
        try:
            conn = self._connection(timeout)
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            length = resp.getheader("Content-Length") or ""
            if limit is not None and length.isdigit() and int(length) > limit:
                self.close()  # the unread body must not stay on a kept-alive connection
                raise ServerError(f"{method} {path}: {length} bytes is more than {limit}")
            raw = resp.read() if limit is None else resp.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Unreachable(f"{self.server}: {exc}") from exc
        if limit is not None and len(raw) > limit:
            self.close()
            raise ServerError(f"{method} {path}: more than {limit} bytes")
        if resp.status in (429, 502, 503, 504):
            retry = resp.getheader("Retry-After")
            raise Unreachable(
                f"{self.server}: HTTP {resp.status}",
                float(retry) if retry and retry.isdigit() else None,
            )
        if resp.status >= 400:
            answer = _json(raw)
            detail = answer.get("detail", "") if isinstance(answer, dict) else ""
            if resp.status in (401, 403):
                raise AuthError(f"{self.server} refused the device: {detail or resp.status}")
            raise ServerError(f"{method} {path}: HTTP {resp.status}: {detail}")
        return resp, raw

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


def _json(raw: bytes) -> Any:
    """A JSON answer; a body that is not JSON becomes ``{"detail": <its start>}``."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"detail": raw[:200].decode(errors="replace")}
