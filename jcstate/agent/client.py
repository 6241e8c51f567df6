"""A small HTTP client for the device API, standard library only, that signs every request.

One HTTP/1.1 connection (:mod:`jcstate.agent.connection`, on ``socket`` and ``ssl``) is kept
alive and re-opened after any failure; it keeps the agent's memory small, as does parsing the
server URL and encoding the query here rather than importing ``urllib.parse`` (which loads
``ipaddress``). Responses are JSON.
"""

from __future__ import annotations

import json

from jcstate.agent import signing
from jcstate.agent.connection import Connection, ProtocolError, Response, TooLarge
from jcstate.errors import AuthError, ServerError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 0.4 MB)
if TYPE_CHECKING:
    from typing import Any

    from jcstate.agent.identity import Identity
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
        scheme, host, port, path = split_url(server)
        self.server = server.rstrip("/")
        self._prefix = path.rstrip("/")
        self.identity = identity
        self._conn = Connection(scheme, host, port, ca_file=ca_file)

    def close(self) -> None:
        self._conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | bytes | None = None,
        *,
        device_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send a signed request (``body``: an object, or JSON already serialised); return the
        JSON answer. Raises AuthError, Unreachable."""
        if isinstance(body, bytes):
            data = body
        else:
            data = b"" if body is None else json.dumps(body).encode()
        answer = _json(
            self._exchange(method, path, data, device_id=device_id, timeout=timeout).body
        )
        return answer if isinstance(answer, dict) else {"items": answer}

    def download(
        self, path: str, *, limit: int = 64 * 1024 * 1024, timeout: float = 120.0
    ) -> bytes:
        """A signed GET whose answer is raw bytes (a release wheel), at most ``limit`` of them.

        Errors as :meth:`request`: Unreachable, AuthError, ServerError (also for a larger body).
        """
        resp = self._exchange("GET", path, b"", timeout=timeout, limit=limit)
        if resp.status != 200:
            raise ServerError(f"GET {path}: HTTP {resp.status}")
        return resp.body

    def _exchange(
        self,
        method: str,
        path: str,
        data: bytes,
        *,
        device_id: str | None = None,
        timeout: float,
        limit: int | None = None,
    ) -> Response:
        """Sign and send one request; the response (with its body) when the status is a success.

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
            resp = self._conn.request(method, target, headers, data, timeout=timeout, limit=limit)
        except TooLarge as exc:  # the connection is closed: the rest of the body is unread
            if exc.length is not None:
                raise ServerError(
                    f"{method} {path}: {exc.length} bytes is more than {limit}"
                ) from None
            raise ServerError(f"{method} {path}: more than {limit} bytes") from None
        except (OSError, ProtocolError) as exc:
            raise Unreachable(f"{self.server}: {exc}") from exc
        if resp.status in (429, 502, 503, 504):
            retry = resp.getheader("Retry-After")
            raise Unreachable(
                f"{self.server}: HTTP {resp.status}",
                float(retry) if retry and retry.isdigit() else None,
            )
        if resp.status >= 400:
            answer = _json(resp.body)
            detail = answer.get("detail", "") if isinstance(answer, dict) else ""
            if resp.status in (401, 403):
                raise AuthError(f"{self.server} refused the device: {detail or resp.status}")
            raise ServerError(f"{method} {path}: HTTP {resp.status}: {detail}")
        return resp

    # -- the device API ----------------------------------------------------------------------
    def enroll(self, connect_key: str, info: dict[str, str]) -> dict[str, Any]:
        body = {"connectKey": connect_key, "publicKey": self.identity.public_key_b64, **info}
        return self.request("POST", "/api/v1/enroll", body, device_id="")

    def work(self, etag: str, wait: float, commands: int | None = None) -> dict[str, Any]:
        """Long-poll; ``commands`` is the highest command ``seq`` this agent has handled."""
        params = {"etag": etag, "wait": f"{wait:g}"}
        if commands is not None:
            params["commands"] = str(commands)
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        return self.request("GET", f"/api/v1/device/work?{query}", timeout=wait + 30)

    def report(self, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        """Send a report: an object, or the JSON of an outbox file as it is."""
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


def split_url(server: str) -> tuple[str, str, int | None, str]:
    """``scheme://host[:port][/path]`` → (scheme, host, port or None, path).

    What ``urllib.parse.urlsplit`` gives as ``scheme``, ``hostname``, ``port`` and ``path``
    (user info dropped, the host lower-cased, an IPv6 address without its brackets); a URL
    that is not http(s) with a host, or whose port is not a number up to 65535, is refused.
    """
    scheme, sep, rest = server.strip().partition("://")
    netloc, path = rest, ""
    for i, c in enumerate(rest):
        if c in "/?#":
            netloc, path = rest[:i], rest[i:]
            break
    path = path.split("?", 1)[0].split("#", 1)[0]
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else None
        if not bracket or (after and port_text is None):
            host = ""
    else:
        host, colon, port_text = hostport.partition(":")
        port_text = port_text if colon else None
    port = None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
            raise ServerError(f"{server}: the port is not a number up to 65535")
        port = int(port_text)
    if not sep or scheme.lower() not in ("http", "https") or not host:
        raise ServerError(f"{server}: expected http(s)://host[:port]")
    return scheme.lower(), host.lower(), port, path


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str) -> str:
    """A query key or value, encoded as ``urllib.parse.urlencode`` does (``quote_plus``)."""
    return "".join(
        chr(b) if b in _UNRESERVED else "+" if b == 0x20 else f"%{b:02X}"
        for b in text.encode("utf-8")
    )


def _json(raw: bytes) -> Any:
    """A JSON answer; a body that is not JSON becomes ``{"detail": <its start>}``."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"detail": raw[:200].decode(errors="replace")}
