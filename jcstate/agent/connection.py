"""One kept-alive HTTP/1.1 connection on ``socket`` and ``ssl``: what the agent's client needs.

``http.client`` parses headers with the ``email`` package, which costs the resident agent
about 1.4 MB; this reads the status line and the headers itself. Requests carry their body
with a Content-Length; answers may come with a Content-Length, chunked, or until the server
closes. Every socket operation has the request's timeout. HTTPS verifies the server's
certificate against ``ca_file`` (else the system's store) and its host name, exactly as
``ssl.create_default_context`` does; ``ssl`` is imported only for https. Like ``http.client``
it uses no proxy. Any failure closes the connection; the next request opens a new one.
"""

from __future__ import annotations

import io
import socket

__all__ = ["Connection", "ProtocolError", "Response", "TooLarge"]

MAX_LINE = 65536  # the longest status, header or chunk-size line accepted (as http.client)
MAX_HEADERS = 100
SEND_AT_ONCE = 65536  # a smaller body goes out in the same write as the head


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x, or stopped short."""


class TooLarge(ProtocolError):
    """The body is longer than the caller's limit (``length``: its announced size, if any)."""

    def __init__(self, length: int | None):
        super().__init__(f"a body of {length} bytes" if length is not None else "a longer body")
        self.length = length


class Response:
    """Status, headers (lower-case names) and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


class Connection:
    """Requests to one ``host``:``port``, one at a time, on a connection kept open."""

    def __init__(self, scheme: str, host: str, port: int | None, *, ca_file: str | None = None):
        self.tls = scheme == "https"
        self.host = host
        self.port = port or (443 if self.tls else 80)
        self.ca_file = ca_file
        self._sock: socket.socket | None = None
        self._reader: io.BufferedReader | None = None  # kept between answers: it may hold more
        name = f"[{host}]" if ":" in host else host  # an IPv6 address
        self._host_header = name if port in (None, 443 if self.tls else 80) else f"{name}:{port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self, timeout: float) -> None:
        # the host as ASCII bytes: given a str, getaddrinfo and ssl encode it with the "idna"
        # codec, which imports unicodedata (about 0.4 MB); a non-ASCII name is encoded so here
        try:
            host = self.host.encode("ascii")
        except UnicodeEncodeError:
            host = self.host.encode("idna")
        sock = socket.create_connection((host, self.port), timeout)  # type: ignore[arg-type]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                import ssl

                # a new context per connection: a CA file replaced on disk counts at the next one
                context = ssl.create_default_context(cafile=self.ca_file)
                sock = context.wrap_socket(sock, server_hostname=host)  # type: ignore[arg-type]
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._reader = sock.makefile("rb")

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        timeout: float,
        limit: int | None = None,
    ) -> Response:
        """Send one request and read its whole answer (at most ``limit`` bytes of body).

        Raises OSError (network, timeout, TLS), ProtocolError, TooLarge; the connection is
        closed after any of them.
        """
        if any(c <= " " or c == "\x7f" for c in method + target):
            raise ProtocolError(f"{target!r}: not a request target")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        head.append("Accept-Encoding: identity")
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ProtocolError(f"header {name}: a line break in its value")
            head.append(f"{name}: {value}")
        head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        try:
            if self._sock is None:
                self._connect(timeout)
            else:
                self._sock.settimeout(timeout)
            assert self._sock is not None
            if len(body) < SEND_AT_ONCE:
                self._sock.sendall(data + body)
            else:
                self._sock.sendall(data)
                self._sock.sendall(body)
            response, keep = self._answer(method, limit)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return response

    # -- reading the answer ----------------------------------------------------------------
    def _line(self) -> bytes:
        assert self._reader is not None
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("a line of the answer is too long")
        return line

    def _answer(self, method: str, limit: int | None) -> tuple[Response, bool]:
        """The response and whether the connection may carry another request."""
        while True:
            line = self._line()
            if not line:
                raise ProtocolError("the server closed the connection without an answer")
            parts = line.decode("latin-1").rstrip("\r\n").split(None, 2)
            if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
            if not (_digits(parts[1]) and len(parts[1]) == 3):
                raise ProtocolError(f"not an HTTP status: {line[:80]!r}")
            status, version = int(parts[1]), parts[0]
            headers = self._headers()
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue) is skipped, as http.client does
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if version == "HTTP/1.1":
            keep = "close" not in tokens
        else:
            keep = "keep-alive" in tokens
        if method == "HEAD" or status in (204, 304):
            return Response(status, headers, b""), keep
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding:
            if encoding.rsplit(",", 1)[-1].strip() != "chunked":
                return Response(status, headers, self._until_close(limit)), False
            return Response(status, headers, self._chunked(limit)), keep
        length = headers.get("content-length")
        if length is None:
            return Response(status, headers, self._until_close(limit)), False
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not _digits(next(iter(values))):
            raise ProtocolError(f"Content-Length: {length!r}")
        size = int(values.pop())
        if limit is not None and size > limit:
            raise TooLarge(size)  # the caller closes: the unread body is still on the wire
        return Response(status, headers, self._exactly(size)), keep

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        last = ""
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise ProtocolError("the answer's headers stopped short")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # an obsolete folded continuation
                headers[last] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"not a header line: {line[:80]!r}")
            last = name.lower()
            value = value.strip()
            headers[last] = f"{headers[last]}, {value}" if last in headers else value
        raise ProtocolError(f"more than {MAX_HEADERS} headers")

    def _exactly(self, size: int) -> bytes:
        assert self._reader is not None
        data = self._reader.read(size)
        if len(data) != size:
            raise ProtocolError(f"the body stopped after {len(data)} of {size} bytes")
        return data

    def _chunked(self, limit: int | None) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self._line().split(b";", 1)[0].strip()
            if not line or line.strip(b"0123456789abcdefABCDEF"):
                raise ProtocolError(f"not a chunk size: {line[:20]!r}")
            size = int(line, 16)
            if size == 0:
                break
            total += size
            if limit is not None and total > limit:
                raise TooLarge(None)
            parts.append(self._exactly(size))
            if self._line() not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk does not end with a line break")
        self._headers()  # the trailer, ignored
        return b"".join(parts)

    def _until_close(self, limit: int | None) -> bytes:
        reader = self._reader
        assert reader is not None
        data = reader.read() if limit is None else reader.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise TooLarge(None)
        return data


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()
