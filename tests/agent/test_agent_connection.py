"""The agent's HTTP/1.1 connection (socket + ssl, no http.client) against scripted servers.

Each server thread accepts connections, reads whole requests (head and Content-Length body)
and answers with the bytes a test gives, so framing, keep-alive, limits, malformed answers,
timeouts and TLS verification are checked byte for byte. The client's URL parsing and query
encoding are compared with urllib.parse, which they replace.
"""

from __future__ import annotations

import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jcstate.agent.client import Client, Unreachable, quote, split_url
from jcstate.agent.connection import Connection, ProtocolError, TooLarge
from jcstate.agent.identity import Identity
from jcstate.errors import AuthError, ServerError

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Scripted:
    """A server that answers the n-th request with ``answers[n]`` (bytes, or a callable given
    the connection to do something else); records requests and connections."""

    def __init__(self, answers: list[bytes | Callable[[socket.socket], None]], *, tls=None):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # accept wakes up to see close()
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        self.tls = tls
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers and not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            with conn, conn.makefile("rb") as reader:
                try:
                    self._answer(conn, reader)
                except OSError:
                    pass  # the client went away or stopped early: the test says what it wanted

    def _answer(self, conn: socket.socket, reader) -> None:  # type: ignore[no-untyped-def]
        """Answer requests on one connection while the script lasts and keeps it open."""
        while self.answers:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                if not line:
                    return
                head += line
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.requests.append(head + reader.read(length))
            answer = self.answers.pop(0)
            if callable(answer):
                answer(conn)
                return
            conn.sendall(answer)
            head_of_answer = answer.rsplit(b"\r\n\r\n", 1)[0].lower()  # all but the body
            framed = b"content-length" in head_of_answer or b"chunked" in head_of_answer
            if b"connection: close" in head_of_answer or not framed:
                return  # read until close, or asked to close

    def close(self) -> None:
        self.stopped = True
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def make(answers, **kw) -> Scripted:
        servers.append(Scripted(answers, **kw))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _get(conn: Connection, path: str = "/x", **kw):
    return conn.request("GET", path, {"X-Test": "1"}, b"", timeout=5, **kw)


def test_content_length_answers_keep_the_connection(scripted):
    server = scripted([OK, OK.replace(b"{}", b"[]")])
    conn = Connection("http", "127.0.0.1", server.port)
    first = _get(conn)
    second = conn.request("POST", "/y?a=1", {}, b'{"k": 1}', timeout=5)
    assert (first.status, first.body, second.body) == (200, b"{}", b"[]")
    assert first.getheader("content-type") == "application/json"
    assert server.connections == 1 and conn.connected
    head = server.requests[0].decode()
    assert head.startswith("GET /x HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Content-Length: 0\r\n" in head
    assert "X-Test: 1\r\n" in head
    assert server.requests[1].endswith(b'Content-Length: 8\r\n\r\n{"k": 1}')
    conn.close()


def test_a_chunked_answer_with_extensions_and_a_trailer(scripted):
    body = b"4;name=x\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: y\r\n\r\n"
    server = scripted([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, OK])
    conn = Connection("http", "127.0.0.1", server.port)
    assert _get(conn).body == b"Wikipedia in\r\n\r\nchunks."
    assert _get(conn).body == b"{}" and server.connections == 1  # still the same connection
    conn.close()


def test_an_answer_read_until_close_and_connection_close(scripted):
    server = scripted(
        [
            b"HTTP/1.1 200 OK\r\n\r\nto the end",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nraw bytes",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n1.0",
            OK,
        ]
    )
    conn = Connection("http", "127.0.0.1", server.port)
    assert _get(conn).body == b"to the end" and not conn.connected
    assert _get(conn).body == b"raw bytes" and not conn.connected
    assert _get(conn).body == b"ok" and not conn.connected
    assert _get(conn).body == b"1.0" and not conn.connected  # HTTP/1.0 without keep-alive
    assert _get(conn).body == b"{}"
    assert server.connections == 5
    conn.close()


def test_interim_answers_are_skipped_and_204_has_no_body(scripted):
    server = scripted(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            OK,
        ]
    )
    conn = Connection("http", "127.0.0.1", server.port)
    answer = _get(conn)
    assert (answer.status, answer.body) == (204, b"")
    assert _get(conn).body == b"{}" and server.connections == 1
    conn.close()


def test_headers_folded_and_repeated(scripted):
    server = scripted(
        [b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nX-Long: a\r\n b\r\nContent-Length: 0\r\n\r\n"]
    )
    conn = Connection("http", "127.0.0.1", server.port)
    answer = _get(conn)
    assert answer.getheader("X-A") == "1, 2" and answer.getheader("x-long") == "a b"
    conn.close()


def test_bodies_over_the_limit(scripted):
    server = scripted(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"6\r\n012345\r\n6\r\n6789ab\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n0123456789a",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        ]
    )
    conn = Connection("http", "127.0.0.1", server.port)
    with pytest.raises(TooLarge) as announced:
        _get(conn, limit=10)
    assert announced.value.length == 11 and not conn.connected  # the rest is not read
    for _ in range(2):
        with pytest.raises(TooLarge) as found:
            _get(conn, limit=10)
        assert found.value.length is None and not conn.connected
    assert _get(conn, limit=10).body == b"0123456789"
    conn.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
        b"",  # closed without an answer
    ],
)
def test_a_malformed_or_cut_answer_is_a_protocol_error(scripted, answer):
    server = scripted([lambda conn: (conn.sendall(answer), conn.shutdown(socket.SHUT_WR))])
    conn = Connection("http", "127.0.0.1", server.port)
    with pytest.raises(ProtocolError):
        _get(conn)
    assert not conn.connected


def test_a_silent_server_times_out(scripted):
    gate = threading.Event()
    server = scripted([lambda conn: gate.wait(10)])
    conn = Connection("http", "127.0.0.1", server.port)
    with pytest.raises(OSError, match="timed out"):
        conn.request("GET", "/", {}, b"", timeout=0.3)
    gate.set()
    assert not conn.connected


def test_requests_with_line_breaks_are_refused_before_sending(scripted):
    conn = Connection("http", "127.0.0.1", 9)
    with pytest.raises(ProtocolError):
        conn.request("GET", "/a b", {}, b"", timeout=1)
    with pytest.raises(ProtocolError):
        conn.request("GET", "/", {"X": "a\r\nInjected: 1"}, b"", timeout=1)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from jcstate.server.certs import make_cert

    base = tmp_path_factory.mktemp("certs")
    make_cert(str(base / "right"), ["127.0.0.1"])
    make_cert(str(base / "name"), ["jcstate.example"])
    return {"right": base / "right", "wrong_name": base / "name"}


def _tls_server(directory: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem", directory / "server-key.pem")
    return context


def test_https_verifies_the_ca_file_and_the_host_name(scripted, certs):
    server = scripted([OK, OK], tls=_tls_server(certs["right"]))
    conn = Connection("https", "127.0.0.1", server.port, ca_file=str(certs["right"] / "ca.pem"))
    assert _get(conn).body == b"{}" and _get(conn).body == b"{}"
    assert server.connections == 1
    conn.close()

    untrusted = scripted([OK], tls=_tls_server(certs["right"]))
    conn = Connection("https", "127.0.0.1", untrusted.port)  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(conn)

    misnamed = scripted([OK], tls=_tls_server(certs["wrong_name"]))
    ca = str(certs["wrong_name"] / "ca.pem")
    conn = Connection("https", "127.0.0.1", misnamed.port, ca_file=ca)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch|hostname"):
        _get(conn)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8443",
        "https://jcstate.example:8443/",
        "HTTPS://JCstate.Example/prefix/api/",
        "https://user:secret@host.example:1/p?q=1#f",
        "http://[::1]:8080/x",
        "http://[fe80::1]",
        "https://host.example",
        "http://h:/path",
    ],
)
def test_split_url_agrees_with_urlsplit(url):
    expected = urllib.parse.urlsplit(url)
    assert split_url(url) == (expected.scheme, expected.hostname, expected.port, expected.path)


@pytest.mark.parametrize(
    "url", ["ftp://h/", "h:8443", "http://", "http://h:99999", "http://h:x/", "http://[::1/"]
)
def test_split_url_refuses_what_the_client_cannot_use(url):
    with pytest.raises(ServerError):
        split_url(url)


@pytest.mark.parametrize(
    "value", ["", "abc", 'W/"etag-1"', "a b+c&d=e/f?g#h", "ünïcødé", "~._-", "0.5", "%41"]
)
def test_quote_agrees_with_urlencode(value):
    assert f"e={quote(value)}" == urllib.parse.urlencode({"e": value})


def test_the_client_maps_statuses_to_errors(scripted, tmp_path):
    server = scripted(
        [
            b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
            b'HTTP/1.1 403 No\r\nContent-Length: 18\r\n\r\n{"detail": "gone"}',
            b'HTTP/1.1 500 Oops\r\nContent-Length: 16\r\n\r\n{"detail": "db"}',
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1,2]",
        ]
    )
    client = Client(f"http://127.0.0.1:{server.port}/base/", Identity(str(tmp_path / "s")))
    with pytest.raises(Unreachable) as busy:
        client.work("", 0)
    assert busy.value.retry_after == 7.0
    with pytest.raises(AuthError, match="gone"):
        client.request("GET", "/a")
    with pytest.raises(ServerError, match="HTTP 500: db"):
        client.request("GET", "/b")
    with pytest.raises(ServerError, match="11 bytes is more than 10"):
        client.download("/c", limit=10)
    assert client.request("GET", "/d") == {"items": [1, 2]}
    assert server.requests[0].startswith(b"GET /base/api/v1/device/work?etag=&wait=0 HTTP/1.1")
    assert b"X-Jcstate-Signature: " in server.requests[0]
    client.close()


def test_an_unreachable_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    client = Client(f"http://127.0.0.1:{port}", Identity(str(tmp_path / "s")))
    with pytest.raises(Unreachable, match="Connection refused"):
        client.request("GET", "/x")
