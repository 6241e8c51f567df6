"""The work route served as raw ASGI answers exactly as the FastAPI route does, and one push
wakes many held polls with the shared answer."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.agent import signing
from jcstate.server.wake import Waiters

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
vars: {shell: /bin/bash}
spec:
  users:
    - {name: alice, uid: 1501, shell: "{{ vars.shell }}"}
"""

PER_DEVICE = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: mine}
selector: {hostnames: ["web*"]}
spec:
  users:
    - {name: bob, uid: 1502, fullName: "Bob on {{ device.hostname }}"}
"""


def _push(server: live.LiveServer, files: dict[str, str]) -> None:
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": files})


def _raw(server: live.LiveServer, target: str, headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(server.url).netloc)
    try:
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _session(server: live.LiveServer) -> list[Any]:
    """The same conversation with either server; what each step answered."""
    seen: list[Any] = []
    client, device_id = server.device("web1")
    first = client.work("", 0)
    seen.append(("no policy", first["document"], first["revision"], first["commands"]))
    _push(server, {"base.yaml": POLICY, "mine.yaml": PER_DEVICE})
    work = client.work("", 0)
    seen.append(("document", work["document"], work["secrets"], work["error"], work["commands"]))
    same = client.work(work["etag"], 0.2)
    seen.append(("unchanged", same["document"], same["etag"] == work["etag"], same["commands"]))
    key = client.identity.private_key
    target = "/api/v1/device/work?etag=&wait=0"
    unsigned = _raw(server, target, {})
    seen.append(("unsigned", unsigned))
    bad = "/api/v1/device/work?etag=&wait=soon"
    status, answer = _raw(server, bad, signing.sign_headers(key, "GET", bad, b"", device_id))
    seen.append(("bad wait", status))
    moved = signing.sign_headers(key, "GET", "/api/v1/device", b"", device_id)
    seen.append(("moved signature", _raw(server, target, moved)))
    return seen


def test_raw_route_answers_as_the_fastapi_route_does(tmp_path: Path) -> None:
    answers = []
    for raw in (True, False):
        db = f"sqlite:///{tmp_path}/{raw}.db"
        with live.live_server(db, str(tmp_path / str(raw)), raw_longpoll=raw) as server:
            answers.append(_session(server))
    assert answers[0] == answers[1]
    assert answers[0][0] == ("no policy", None, None, [])
    document = answers[0][1][1]
    assert document["spec"]["users"][1]["fullName"] == "Bob on web1"
    # sources name the pushed repo's files, not the server's temporary copy
    assert document["sources"] == {"users/alice": "base.yaml:7", "users/bob": "mine.yaml:7"}
    assert answers[0][3] == ("unsigned", (401, {"detail": "unknown device"}))
    assert answers[0][4] == ("bad wait", 422)
    assert answers[0][5] == ("moved signature", (401, {"detail": "bad request signature"}))


def test_one_push_wakes_every_held_poll_with_one_shared_answer(sqlite_server) -> None:
    _push(sqlite_server, {"base.yaml": POLICY})
    clients = [sqlite_server.device(f"host{n}")[0] for n in range(20)]
    etags = {c.work("", 0)["etag"] for c in clients}
    assert len(etags) == 1  # devices with equal documents share the etag
    got: dict[int, tuple[float, dict[str, Any]]] = {}

    def poll(n: int) -> None:
        answer = clients[n].work(next(iter(etags)), 30)
        got[n] = (time.monotonic(), answer)

    threads = [threading.Thread(target=poll, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    time.sleep(0.5)  # all held now
    pushed = time.monotonic()
    _push(sqlite_server, {"base.yaml": POLICY.replace("/bin/bash", "/bin/zsh")})
    for t in threads:
        t.join(10)
    assert len(got) == len(clients)
    assert max(at for at, _ in got.values()) - pushed < 1.0
    answers = [a for _, a in got.values()]
    assert {a["etag"] for a in answers} != etags
    assert all(a == answers[0] for a in answers)
    assert answers[0]["document"]["spec"]["users"][0]["shell"] == "/bin/zsh"


def test_wakes_during_prepare_are_folded_and_a_failing_prepare_still_wakes() -> None:
    async def scenario() -> tuple[int, list[str], list[str]]:
        calls = 0
        fail = False

        async def prepare() -> None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            if fail:
                raise RuntimeError("database away")

        waiters = Waiters(prepare)
        waiters.bind(asyncio.get_running_loop())
        with waiters.register("a") as a, waiters.register("b") as b:
            waiters.wake("all")
            waiters.wake("all")  # while the first prepare runs
            await asyncio.sleep(0)
            assert not a.is_set()  # nobody is woken before the state is ready
            await asyncio.wait_for(a.wait(5), 2)
            await asyncio.wait_for(b.wait(5), 2)
            folded = calls
        fail = True
        with waiters.register("c") as c, waiters.register("d") as d:
            waiters.wake("device:c")
            await asyncio.wait_for(c.wait(5), 1)
            c_reasons = sorted(c.reasons)
            assert not d.is_set()
            waiters.wake("all")
            await asyncio.wait_for(d.wait(5), 2)
            return folded, c_reasons, sorted(d.reasons)

    folded, c_reasons, d_reasons = asyncio.run(scenario())
    assert folded <= 2  # the two wakes needed at most two reads, never one per waiter
    assert c_reasons == ["device"]
    assert d_reasons == ["all"]


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_a_held_wait_ends_at_its_timeout(timeout: float) -> None:
    async def scenario() -> float:
        waiters = Waiters()
        waiters.bind(asyncio.get_running_loop())
        with waiters.register("a") as a:
            start = time.monotonic()
            await a.wait(timeout)
            return time.monotonic() - start

    assert timeout <= asyncio.run(scenario()) < timeout + 0.5


def test_a_push_answers_held_requests_itself_when_it_can() -> None:
    async def scenario() -> list[tuple[bool, list[str]]]:
        waiters = Waiters(prepare=lambda: asyncio.sleep(0))
        waiters.bind(asyncio.get_running_loop())
        order: list[str] = []

        def deliverer(name: str, result: bool | None) -> Any:
            def deliver(later: list[Any]) -> bool:
                order.append(name)
                if result is None:
                    raise RuntimeError("client went away")
                later.append(lambda: order.append(f"{name} completed"))
                return result

            return deliver

        out = []
        with waiters.register("a") as a, waiters.register("b") as b, waiters.register("c") as c:
            a.deliver, b.deliver, c.deliver = (
                deliverer("a", True),
                deliverer("b", False),
                deliverer("c", None),
            )
            waiters.wake("all")
            for event in (a, b, c):
                await asyncio.wait_for(event.wait(5), 2)
                out.append((event.answered, sorted(event.reasons)))
        assert sorted(order[:3]) == ["a", "b", "c"]  # every answer written first,
        assert sorted(order[3:]) == ["a completed", "b completed"]  # then their bookkeeping
        return out

    assert asyncio.run(scenario()) == [(True, ["all"]), (False, ["all"]), (False, ["all"])]


def test_a_wake_during_the_read_is_read_again_before_anyone_is_answered() -> None:
    async def scenario() -> tuple[int, list[int]]:
        reads = 0

        async def prepare() -> None:
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.05)

        waiters = Waiters(prepare)
        waiters.bind(asyncio.get_running_loop())
        seen: list[int] = []

        def deliver(later: list[Any]) -> bool:
            seen.append(reads)  # how many reads had happened when it was answered
            return True

        with waiters.register("a") as a:
            a.deliver = deliver
            waiters.wake("all")  # a NOTIFY …
            await asyncio.sleep(0.01)
            waiters.wake("all")  # … and the local wake of the same push, while reading
            await asyncio.wait_for(a.wait(5), 2)
        return reads, seen

    reads, seen = asyncio.run(scenario())
    assert reads == 2
    assert seen == [2]  # answered from the second read, never from the stale first one


def _raw_exchange(url: str, requests: list[bytes]) -> tuple[list[bytes], bool]:
    """Send requests one after the other on one connection; each response as bytes, and
    whether the server closed the connection after the last one."""
    import re
    import socket

    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    responses = []
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        buf = b""
        for request in requests:
            sock.sendall(request)
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
            while len(buf) < length:
                buf += sock.recv(65536)
            responses.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
        sock.settimeout(0.3)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return responses, closed


def _work_request(client: Any, device_id: str, etag: str, extra: bytes = b"") -> bytes:
    target = f"/api/v1/device/work?etag={etag}&wait=0"
    headers = signing.sign_headers(client.identity.private_key, "GET", target, b"", device_id)
    lines = [f"GET {target} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines).encode() + b"\r\n" + extra + b"\r\n"


def test_a_whole_answer_is_written_in_one_call_as_uvicorn_would_write_it(
    sqlite_server, monkeypatch, caplog
) -> None:
    from jcstate.server import longpoll

    writes: list[bool] = []
    whole = longpoll._write_whole

    def counted(cycle: Any, body: bytes) -> bool:
        writes.append(whole(cycle, body))
        return writes[-1]

    monkeypatch.setattr(longpoll, "_write_whole", counted)
    _push(sqlite_server, {"base.yaml": POLICY})
    client, device_id = sqlite_server.device("web1")
    etag = client.work("", 0)["etag"]
    assert writes == [True]  # uvicorn's httptools protocol: the direct path is taken

    def session() -> tuple[list[bytes], bool, list[bytes], bool]:
        # keep-alive: a changed and an unchanged answer on one connection, then a close
        kept, kept_closed = _raw_exchange(
            sqlite_server.url,
            [_work_request(client, device_id, ""), _work_request(client, device_id, etag)],
        )
        closing, closed = _raw_exchange(
            sqlite_server.url, [_work_request(client, device_id, "", b"Connection: close\r\n")]
        )
        return kept, kept_closed, closing, closed

    with caplog.at_level("INFO", logger="uvicorn.access"):
        direct = session()
    assert len(writes) == 4 and all(writes)
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(logged) == 3 and all("/api/v1/device/work?etag=" in m for m in logged)
    assert all(m.endswith('HTTP/1.1" 200') for m in logged)  # as uvicorn's access log
    monkeypatch.setattr(longpoll, "direct_writer", lambda send: None)
    via_send = session()
    assert len(writes) == 4  # ASGI send only

    def same_date(response: bytes) -> bytes:
        import re

        return re.sub(rb"(?im)^date: [^\r]*", b"date: D", response)

    assert [same_date(r) for r in direct[0]] == [same_date(r) for r in via_send[0]]
    assert same_date(direct[2][0]) == same_date(via_send[2][0])
    assert (direct[1], direct[3]) == (via_send[1], via_send[3]) == (False, True)
    assert b"\r\nconnection: close\r\n" in direct[2][0]
    first = json.loads(direct[0][0].partition(b"\r\n\r\n")[2])
    assert first["etag"] == etag and first["document"]["spec"]["users"][0]["name"] == "alice"
    assert json.loads(direct[0][1].partition(b"\r\n\r\n")[2])["document"] is None


def test_a_push_writes_the_held_answers_itself(sqlite_server, monkeypatch) -> None:
    from jcstate.server import longpoll

    delivered: list[bool] = []
    deliver = longpoll._deliver

    def counted(*args: Any) -> bool:
        delivered.append(deliver(*args))
        return delivered[-1]

    monkeypatch.setattr(longpoll, "_deliver", counted)
    _push(sqlite_server, {"base.yaml": POLICY})
    clients = [sqlite_server.device(f"host{n}")[0] for n in range(5)]
    etag = clients[0].work("", 0)["etag"]
    got: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda c=c: got.append(c.work(etag, 30))) for c in clients]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(sqlite_server.app.state.ctx.waiters) < len(clients):
        assert time.monotonic() < deadline, "the polls were not held"
        time.sleep(0.02)
    _push(sqlite_server, {"base.yaml": POLICY.replace("/bin/bash", "/bin/zsh")})
    for t in threads:
        t.join(10)
    assert delivered == [True] * len(clients)
    assert [a["document"]["spec"]["users"][0]["shell"] for a in got] == ["/bin/zsh"] * 5
