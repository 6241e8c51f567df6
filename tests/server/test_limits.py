"""Limits at the server's edge and the API contract, against a real server on loopback.

Bodies over the limit (413 before they are read, also chunked, also on the raw long poll),
requests beyond the in-flight cap (503 + Retry-After, held polls apart) and agents that honour
it, enrollment rate limits (429 + Retry-After), enrollment refusals audited, authentication
before the body, strict types, NUL refused, and the Allow header of a 405.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import types
import urllib.parse
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.agent import signing
from jcstate.agent.client import Client, Unreachable
from jcstate.agent.identity import Identity
from jcstate.agent.loop import Agent, AgentConfig

MiB = 1024 * 1024
PUSH = "/api/v1/revisions"


def _netloc(server: Any) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(server.url)
    return parts.hostname, parts.port


def _request(
    server: Any,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    source: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    host, port = _netloc(server)
    conn = http.client.HTTPConnection(
        host, port, timeout=30, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, answer
    finally:
        conn.close()


def _raw(server: Any, head: str) -> socket.socket:
    """A socket that has sent ``head`` (request line and headers) and nothing more."""
    sock = socket.create_connection(_netloc(server), timeout=30)
    sock.sendall(head.encode())
    return sock


def _status(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


# -- bodies ------------------------------------------------------------------------------------
def test_a_body_announced_over_the_limit_gets_413_before_it_is_sent(tmp_path: Path) -> None:
    with live.live_server(f"sqlite:///{tmp_path}/db", str(tmp_path), max_body=64 * 1024) as srv:
        for method, path in [
            ("POST", "/api/v1/revisions"),
            ("POST", "/api/v1/device/reports"),
            ("GET", "/api/v1/device/work"),  # the raw ASGI long poll
            ("POST", "/api/v1/enroll"),
        ]:
            # headers only: the server answers without waiting for the 10 MiB
            sock = _raw(
                srv, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * MiB}\r\n\r\n"
            )
            with sock:
                status, head = _status(sock)
            assert status == 413, (path, head)


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/v1/revisions"),
        ("POST", "/api/v1/device/reports"),
        ("GET", "/api/v1/device/work"),
    ],
)
def test_a_chunked_body_over_the_limit_gets_413(tmp_path: Path, method: str, path: str) -> None:
    with live.live_server(f"sqlite:///{tmp_path}/db", str(tmp_path), max_body=64 * 1024) as srv:
        sock = _raw(
            srv, f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        with sock:
            chunk = b"x" * 16384
            try:
                for _ in range(64):  # 1 MiB in all, never announced
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass  # the server answered and closed before the end
            status, _ = _status(sock)
        assert status == 413


def test_a_release_may_be_larger_than_the_general_limit(tmp_path: Path) -> None:
    with live.live_server(f"sqlite:///{tmp_path}/db", str(tmp_path), max_body=1 * MiB) as srv:
        token = srv.token("administrator")
        status, _, answer = _request(
            srv,
            "POST",
            "/api/v1/releases",
            b"\0" * (2 * MiB),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
        )
        assert status == 422, answer  # read whole and judged (not a wheel), not refused by size
        sock = _raw(
            srv,
            f"POST /api/v1/revisions HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * MiB}\r\n\r\n",
        )
        with sock:
            assert _status(sock)[0] == 413  # the general limit still holds elsewhere


# -- the contract ------------------------------------------------------------------------------
def test_an_anonymous_malformed_body_gets_401(sqlite_server: Any) -> None:
    json_header = {"Content-Type": "application/json"}
    for path in ["/api/v1/revisions", "/api/v1/device/reports", "/api/v1/device/escrow"]:
        status, _, answer = _request(sqlite_server, "POST", path, b"{not json", json_header)
        assert status == 401, (path, answer)
        status, _, _ = _request(sqlite_server, "POST", path, b'{"files": 5}', json_header)
        assert status == 401, path


def test_types_are_strict_and_nul_is_refused(sqlite_server: Any) -> None:
    headers = {
        "Authorization": f"Bearer {sqlite_server.admin_token}",
        "Content-Type": "application/json",
    }
    body = {"files": {}, "dryRun": 0}
    status, _, answer = _request(
        sqlite_server, "POST", "/api/v1/revisions", json.dumps(body).encode(), headers
    )
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "dryRun"], answer
    body = {"files": {"a\u0000.yaml": "x"}, "dryRun": True}
    status, _, answer = _request(
        sqlite_server, "POST", "/api/v1/revisions", json.dumps(body).encode(), headers
    )
    assert status == 422, answer
    # a validation error says where, never what was sent (it may be a secret)
    body = {"volume": None, "key": 12345678}
    client, _ = sqlite_server.device("escrowing")
    data = json.dumps(body).encode()
    target = "/api/v1/device/escrow"
    signed = signing.sign_headers(
        client.identity.private_key, "POST", target, data, client.identity.device()["id"]
    )
    status, _, answer = _request(
        sqlite_server, "POST", target, data, {**signed, "Content-Type": "application/json"}
    )
    assert status == 422 and "12345678" not in json.dumps(answer), answer


def test_a_405_lists_every_method_of_the_path(sqlite_server: Any) -> None:
    status, headers, _ = _request(sqlite_server, "PATCH", "/api/v1/tokens")
    assert status == 405
    assert sorted(m.strip() for m in headers["allow"].split(",")) == ["GET", "POST"]


def test_every_operation_documents_the_shared_errors(sqlite_server: Any) -> None:
    _, _, schema = _request(sqlite_server, "GET", "/openapi.json")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status in ("400", "401", "403", "404", "413", "422", "429", "503"):
                assert status in operation["responses"], (method, path, status)


# -- overload ----------------------------------------------------------------------------------
def test_beyond_the_in_flight_cap_requests_get_503_and_held_polls_do_not_count(
    tmp_path: Path,
) -> None:
    with live.live_server(
        f"sqlite:///{tmp_path}/db", str(tmp_path), max_in_flight=2, max_wait=30
    ) as srv:
        token = srv.token("read-only")
        client, _ = srv.device("poller")
        etag = client.work("", 0)["etag"]
        # five held long polls: they take no slot
        held = []
        for _ in range(5):
            target = f"/api/v1/device/work?etag={etag}&wait=30"
            headers = signing.sign_headers(
                client.identity.private_key, "GET", target, b"", client.identity.device()["id"]
            )
            head = f"GET {target} HTTP/1.1\r\nHost: x\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()
            )
            held.append(_raw(srv, head + "\r\n"))
        time.sleep(0.5)
        auth = {"Authorization": f"Bearer {token}"}
        assert _request(srv, "GET", "/api/v1/whoami", headers=auth)[0] == 200
        # two requests in flight (their bodies never finish arriving) fill the cap
        slow = [
            _raw(srv, "POST /api/v1/revisions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            for _ in range(2)
        ]
        time.sleep(0.5)
        status, headers, answer = _request(srv, "GET", "/api/v1/whoami", headers=auth)
        assert status == 503 and int(headers["retry-after"]) > 0, answer
        assert _request(srv, "GET", "/api/v1/health")[0] == 200  # liveness is not shed
        # an agent meets the 503 as "come back after Retry-After"
        with pytest.raises(Unreachable) as caught:
            client.request("GET", "/api/v1/device")
        assert caught.value.retry_after == int(headers["retry-after"])
        for sock in slow:
            sock.close()
        time.sleep(0.5)
        assert _request(srv, "GET", "/api/v1/whoami", headers=auth)[0] == 200
        for sock in held:
            sock.close()


class _Slept(BaseException):
    pass


def test_an_agent_waits_at_least_retry_after_when_shed(tmp_path: Path, monkeypatch) -> None:
    from jcstate.agent import loop

    with live.live_server(f"sqlite:///{tmp_path}/db", str(tmp_path), max_in_flight=1) as srv:
        slow = _raw(srv, "POST /api/v1/revisions HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
        time.sleep(0.3)
        config = AgentConfig(
            server=srv.url,
            connect_key=srv.connect_key,
            state_dir=str(tmp_path / "state"),
            log_file=None,
            install_dir=str(tmp_path / "opt"),
            root=str(tmp_path / "root"),
            max_backoff=1.0,  # without Retry-After it would wait at most 1 s
        )
        agent = Agent(config)
        srv.opened.append(agent.client)
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            raise _Slept

        # the agent loop's clock only: the server runs in this process too
        fake_time = types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic, time=time.time)
        monkeypatch.setattr(loop, "time", fake_time)
        with pytest.raises(_Slept):
            agent._loop()
        slow.close()
        assert slept and slept[0] >= 5.0, slept  # the server's Retry-After


# -- enrollment --------------------------------------------------------------------------------
def _enrollment(
    identity: Identity, connect_key: str, public_key: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "connectKey": connect_key,
            "publicKey": public_key or identity.public_key_b64,
            "hostname": "h",
            "os": "linux",
        }
    ).encode()
    headers = signing.sign_headers(identity.private_key, "POST", "/api/v1/enroll", body, "")
    return body, {**headers, "Content-Type": "application/json"}


def _denied(server: Any, reason: str) -> list[dict[str, Any]]:
    return [
        row
        for row in server.ctx.store.list_audit(1000)
        if row["outcome"] == "denied" and reason in json.dumps(row["detail"])
    ]


def test_enrollment_is_refused_and_audited_for_a_foreign_key_a_replay_and_a_wrong_signer(
    sqlite_server: Any, tmp_path: Path
) -> None:
    srv = sqlite_server
    victim, victim_id = srv.device("victim")
    attacker = Identity(str(tmp_path / "attacker"))
    # another device's public key, signed by the attacker's own key: possession fails
    body, headers = _enrollment(attacker, srv.connect_key, victim.identity.public_key_b64)
    status, _, answer = _request(srv, "POST", "/api/v1/enroll", body, headers)
    assert status == 401, answer
    assert _denied(srv, "bad request signature")
    # a replayed enrollment: the same bytes and headers again
    body, headers = _enrollment(attacker, srv.connect_key)
    first = _request(srv, "POST", "/api/v1/enroll", body, headers)
    assert first[0] == 201
    again = _request(srv, "POST", "/api/v1/enroll", body, headers)
    assert again[0] == 401 and _denied(srv, "replayed request"), again
    # a request for the victim's id signed by another key than the one enrolled
    target = "/api/v1/device"
    forged = signing.sign_headers(attacker.private_key, "GET", target, b"", victim_id)
    status, _, _ = _request(srv, "GET", target, None, forged)
    assert status == 401
    rows = [r for r in _denied(srv, "bad request signature") if r["actor"] == f"device:{victim_id}"]
    assert rows and rows[0]["action"] == "GET /api/v1/device"
    # nothing reached the victim's record
    assert srv.ctx.store.device(victim_id)["public_key"] == victim.identity.public_key_b64


def test_enrollment_is_rate_limited_per_address(tmp_path: Path) -> None:
    with live.live_server(
        f"sqlite:///{tmp_path}/db",
        str(tmp_path),
        enroll_per_address=6.0,  # one every 10 s
        enroll_burst=3,
        enroll_per_key=0,
    ) as srv:
        codes = []
        for n in range(4):
            body, headers = _enrollment(Identity(str(tmp_path / f"d{n}")), srv.connect_key)
            codes.append(_request(srv, "POST", "/api/v1/enroll", body, headers, source="127.0.0.1"))
        assert [c[0] for c in codes] == [201, 201, 201, 429]
        assert 1 <= int(codes[-1][1]["retry-after"]) <= 10
        assert _denied(srv, "too many enrollments from this address")
        # another address has its own bucket
        body, headers = _enrollment(Identity(str(tmp_path / "other")), srv.connect_key)
        assert _request(srv, "POST", "/api/v1/enroll", body, headers, source="127.0.0.2")[0] == 201


def test_enrollment_is_rate_limited_per_connect_key(tmp_path: Path) -> None:
    with live.live_server(
        f"sqlite:///{tmp_path}/db",
        str(tmp_path),
        enroll_per_address=0,
        enroll_per_key=6.0,
        enroll_burst=2,
    ) as srv:
        codes = []
        for n in range(3):
            client = Client(srv.url, Identity(str(tmp_path / f"d{n}")))
            srv.opened.append(client)
            try:
                client.enroll(srv.connect_key, {"hostname": f"h{n}", "os": "linux"})
                codes.append(201)
            except Unreachable as exc:
                codes.append(429)
                assert exc.retry_after and exc.retry_after >= 1
        assert codes == [201, 201, 429]
        assert _denied(srv, "too many enrollments with this connect key")
        other = srv.ctx.store.create_connect_key("second")["key"]
        client = Client(srv.url, Identity(str(tmp_path / "second")))
        srv.opened.append(client)
        assert client.enroll(other, {"hostname": "x", "os": "linux"})["id"]
