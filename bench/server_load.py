"""Simulate N agents long-polling one server process; measure wake latency, RSS and CPU.

    python bench/server_load.py --agents 1000
    python bench/server_load.py --agents 10000 --postgres postgresql://postgres@127.0.0.1/postgres

Starts ``jcstate server`` (SQLite in a temporary data directory, or a throwaway PostgreSQL
database that is dropped afterwards), enrolls N simulated agents over HTTP (each with its own
Ed25519 key, signing every request like the real agent), lets them all hold a long poll, then
pushes new policy revisions and records, per agent, the time from the push (before the admin's
request is sent) to having the new document: the kernel's receive time of its last byte (see
``Conn``), and beside it the time this simulator read it. Each simulated agent then waits a
simulated apply time (``--apply-seconds``, jittered) and posts a report, as the real one does.

The simulator is a minimal asyncio HTTP/1.1 client (one keep-alive connection per agent), so
10,000 agents fit in one process. Client and server share this machine's cores: the figures
include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jcstate.agent import signing

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: fleet}
vars: {shell: /bin/bash}
spec:
  groups:
    - {name: developers, gid: 2001}
  users:
    - {name: alice, uid: 1501, shell: "{{ vars.shell }}", groups: [developers]}
    - {name: bob, uid: 1502, shell: /bin/sh, fullName: "rev REV"}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; not exported by Python


class Conn:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for uvicorn's answers.

    A raw non-blocking socket read with ``recvmsg`` from the event loop's reader callback,
    with the kernel's receive timestamps on (``SO_TIMESTAMPNS``, which TCP supports): each
    answer carries two arrival times.

    - ``arrived``: when its last bytes reached this machine's TCP stack (the kernel's
      timestamp of the last segment read). This is "the agent has it": on a real fleet every
      agent has its own CPU, while here 10,000 simulated agents share one.
    - ``seen``: when this simulator got round to reading it. It adds the simulator's own
      queue of 10,000 sockets on one core, so it bounds the figure from above.
    """

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self._stamp = 0.0  # kernel receive time of the last segment read
        self._answer: asyncio.Future[tuple[int, bytes, float, float]] | None = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data, ancillary, _, _ = self.sock.recvmsg(262144, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                self._stamp = sec + nsec / 1e9
        self._data(data)

    def _data(self, data: bytes) -> None:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self._buf[:end]).lower().split(b"\r\n")
        length = 0
        for line in lines[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
        total = end + 4 + length
        if len(self._buf) < total:
            return
        seen = time.time()
        status = int(lines[0][9:12])
        body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((status, body, self._stamp or seen, seen))

    def _lost(self, exc: Exception | None) -> None:
        self.close()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError(f"closed: {exc}"))

    # -- requests -----------------------------------------------------------------------------
    async def request(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, float, float]:
        """(status, body, arrival time, time seen) of one request on this connection."""
        loop = asyncio.get_running_loop()
        for attempt in range(3):
            try:
                if self.sock is None:
                    await self._connect()
                head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
                self._buf.clear()
                self._answer = loop.create_future()
                assert self.sock is not None
                await loop.sock_sendall(self.sock, head.encode() + body)
                return await self._answer
            except (ConnectionError, OSError):
                self.close()
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
        self.sock = None


@dataclass
class SimAgent:
    port: int
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    device_id: str = ""
    etag: str = ""
    revision: int | None = None
    cursor: int = 0  # the highest command seq handled, sent with every poll as the agent does
    polling_since: float = 0.0  # when the current long poll (with an etag) was sent
    # revision → (time it arrived, time the simulator read it); see Conn
    received: dict[int, tuple[float, float]] = field(default_factory=dict)
    commands: dict[str, tuple[float, float]] = field(default_factory=dict)  # command id → same
    errors: int = 0
    apply_s: float = 1.0

    def __post_init__(self) -> None:
        self.conn = Conn(self.port)

    async def call(
        self, method: str, target: str, payload: Any = None
    ) -> tuple[int, Any, tuple[float, float]]:
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = signing.sign_headers(self.key, method, target, body, self.device_id)
        status, raw, arrived, seen = await self.conn.request(method, target, body, headers)
        return status, json.loads(raw) if raw else None, (arrived, seen)

    async def enroll(self, connect_key: str, n: int) -> None:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        import base64

        status, answer, _ = await self.call(
            "POST",
            "/api/v1/enroll",
            {
                "connectKey": connect_key,
                "publicKey": base64.b64encode(raw).decode(),
                "hostname": f"sim{n:05d}",
                "os": "linux",
                "osVersion": "12",
                "arch": "x86_64",
            },
        )
        assert status == 201, (status, answer)
        self.device_id = answer["id"]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            params = {"etag": self.etag, "wait": "55", "commands": str(self.cursor)}
            query = urllib.parse.urlencode(params)
            self.polling_since = time.time() if self.etag else 0.0
            try:
                status, work, arrived = await self.call("GET", f"/api/v1/device/work?{query}")
            except (ConnectionError, OSError):
                self.errors += 1
                await asyncio.sleep(1)
                continue
            self.polling_since = 0.0
            if status != 200:
                self.errors += 1
                await asyncio.sleep(1)
                continue
            if work["commands"]:
                results = []
                for command in work["commands"]:
                    self.commands.setdefault(command["id"], arrived)
                    self.cursor = max(self.cursor, int(command["seq"]))
                    results.append({"id": command["id"], "status": "succeeded", "exitCode": 0})
                await self.call("POST", "/api/v1/device/commands/results", {"results": results})
            if work["document"] is not None:
                self.received[work["revision"]] = arrived
                self.etag, self.revision = work["etag"], work["revision"]
                # a real agent plans and applies before it reports: spread like that
                await asyncio.sleep(random.uniform(0.5, 1.5) * self.apply_s)
                report = {
                    "reportId": secrets.token_hex(16),
                    "etag": self.etag,
                    "ok": True,
                    "changed": False,
                    "report": {"counts": {}},
                    "facts": {"hostname": "sim"},
                }
                await self.call("POST", "/api/v1/device/reports", report)


def _admin_push(url: str, token: str, rev_text: str) -> int:
    body = json.dumps({"files": {"fleet.yaml": rev_text}}).encode()
    req = urllib.request.Request(
        url + "/api/v1/revisions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(json.loads(resp.read())["revision"])


def _admin_command(url: str, token: str, device_id: str) -> str:
    """Queue a ``run`` command for one device; its id."""
    body = json.dumps({"run": {"argv": ["true"]}}).encode()
    req = urllib.request.Request(
        f"{url}/api/v1/devices/{device_id}/commands/run",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return str(json.loads(resp.read())["id"])


def _wake_lines(data_dir: str) -> list[str]:
    """The server's ``wake:`` log lines so far (held polls, answered at once, time)."""
    try:
        with open(os.path.join(data_dir, "server.log")) as f:
            return [line.split(" wake: ", 1)[1].strip() for line in f if " wake: " in line]
    except OSError:
        return []


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def bench(args: argparse.Namespace, database: str | None) -> dict[str, Any]:
    port = args.attach_port or _free_port()
    tmp = args.attach_data or tempfile.mkdtemp(prefix="jcstate-bench-")
    argv = [
        sys.executable,
        "-m",
        "jcstate",
        "server",
        "--data",
        tmp,
        "--listen",
        f"127.0.0.1:{port}",
    ]
    if os.environ.get("BENCH_PROFILE"):  # profile the server: python -m cProfile -o FILE
        argv[1:1] = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
    if database:
        argv += ["--database", database]
    if args.attach_port:  # a server started elsewhere (e.g. under a profiler)
        pid = int(open(os.path.join(tmp, "server.pid")).read())
        server = None
    else:
        log_file = open(os.path.join(tmp, "server.log"), "w")  # noqa: SIM115 (closed below)
        server = subprocess.Popen(
            [*argv, "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=log_file
        )
        log_file.close()
        pid = server.pid
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api/v1/health", timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        proc = psutil.Process(pid)
        token = open(os.path.join(tmp, "admin-token")).read().strip()
        key = open(os.path.join(tmp, "connect-key")).read().strip()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _admin_push, url, token, POLICY.replace("REV", "0"))

        agents = [SimAgent(port, apply_s=args.apply_seconds) for _ in range(args.agents)]
        started = time.monotonic()
        sem = asyncio.Semaphore(64)

        async def enroll(i: int, agent: SimAgent) -> None:
            async with sem:
                await agent.enroll(key, i)

        await asyncio.gather(*(enroll(i, a) for i, a in enumerate(agents)))
        enroll_s = time.monotonic() - started

        stop = asyncio.Event()
        tasks = [asyncio.create_task(a.run(stop)) for a in agents]

        async def all_polling(timeout: float) -> float:
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                now = time.time()
                if all(a.polling_since and now - a.polling_since > 0.3 for a in agents):
                    return time.monotonic() - t0
                await asyncio.sleep(0.2)
            return float("nan")

        async def drained(timeout: float = 180) -> None:
            """Wait until the server is quiet: every agent's poll received, reports stored."""
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                c0 = proc.cpu_times()
                await asyncio.sleep(1)
                c1 = proc.cpu_times()
                if c1.user + c1.system - c0.user - c0.system < 0.25:
                    return

        settle_s = await all_polling(120)
        await drained()
        await asyncio.sleep(2)
        cpu0 = proc.cpu_times()
        await asyncio.sleep(5)
        cpu1 = proc.cpu_times()
        idle_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / 5
        rss_idle = proc.memory_info().rss
        rounds = []
        for i in range(args.pushes):
            cpu0 = proc.cpu_times()
            wakes_before = len(_wake_lines(tmp))
            t_push = time.time()
            rev = await loop.run_in_executor(
                None, _admin_push, url, token, POLICY.replace("REV", str(i + 1))
            )
            push_s = time.time() - t_push
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(rev not in a.received for a in agents):
                await asyncio.sleep(0.05)
            lat = [a.received[rev][0] - t_push for a in agents if rev in a.received]
            seen = [a.received[rev][1] - t_push for a in agents if rev in a.received]
            await all_polling(60)
            await drained()
            cpu1 = proc.cpu_times()
            rounds.append(
                {
                    "revision": rev,
                    "woken": len(lat),
                    "push_request_ms": round(push_s * 1000, 1),
                    "min_ms": round(min(lat) * 1000, 1) if lat else None,
                    "p50_ms": round(_pct(lat, 50) * 1000, 1),
                    "p99_ms": round(_pct(lat, 99) * 1000, 1),
                    "max_ms": round(max(lat) * 1000, 1) if lat else None,
                    # when the simulator read them (its one core's queue included)
                    "seen_p50_ms": round(_pct(seen, 50) * 1000, 1),
                    "seen_p99_ms": round(_pct(seen, 99) * 1000, 1),
                    # the whole round: wake, every report and every new poll
                    "server_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
                    # the server's own account: how long answering the held polls took it
                    # (on PostgreSQL a push wakes twice: its NOTIFY and the local wake)
                    "server_wake": _wake_lines(tmp)[wakes_before:],
                }
            )
            await asyncio.sleep(1)
        # commands: one at a time to a random device while every other poll stays held
        command_lat: list[float] = []
        command_seen: list[float] = []
        for agent in random.sample(agents, min(args.commands, len(agents))):
            t_cmd = time.time()
            cid = await loop.run_in_executor(None, _admin_command, url, token, agent.device_id)
            deadline = time.monotonic() + 10
            while cid not in agent.commands and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            if cid in agent.commands:
                command_lat.append(agent.commands[cid][0] - t_cmd)
                command_seen.append(agent.commands[cid][1] - t_cmd)
        commands = {
            "sent": args.commands,
            "delivered": len(command_lat),
            "p50_ms": round(_pct(command_lat, 50) * 1000, 1),
            "p99_ms": round(_pct(command_lat, 99) * 1000, 1),
            "max_ms": round(max(command_lat) * 1000, 1) if command_lat else None,
            "seen_p50_ms": round(_pct(command_seen, 50) * 1000, 1),
            "seen_p99_ms": round(_pct(command_seen, 99) * 1000, 1),
        }
        rss_after = proc.memory_info().rss
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for a in agents:
            a.conn.close()
        return {
            "agents": args.agents,
            "database": "postgresql" if database else "sqlite",
            "enroll_s": round(enroll_s, 1),
            "all_polling_after_s": round(settle_s, 1),
            "server_rss_idle_mb": round(rss_idle / 2**20, 1),
            "server_rss_after_mb": round(rss_after / 2**20, 1),
            "server_cpu_idle_pct": round(idle_cpu * 100, 1),
            "client_errors": sum(a.errors for a in agents),
            "pushes": rounds,
            "commands": commands,
        }
    finally:
        if server is not None:  # an attached server is not ours to stop
            _stop(server)
            shutil.rmtree(tmp, ignore_errors=True)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(2)  # SIGINT: uvicorn stops cleanly (and a profile is written)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if server.stderr:
        server.stderr.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--pushes", type=int, default=3)
    parser.add_argument(
        "--commands", type=int, default=100, help="commands sent one by one to random agents"
    )
    parser.add_argument("--attach-port", type=int, help="use a running server on this port")
    parser.add_argument("--attach-data", help="that server's data dir (tokens, server.pid)")
    parser.add_argument(
        "--apply-seconds", type=float, default=1.0, help="mean simulated apply time before a report"
    )
    parser.add_argument(
        "--postgres", metavar="ADMIN_URL", help="use a throwaway database on this server"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    database = None
    name = ""
    if args.postgres:
        import psycopg

        name = f"jcstate_bench_{secrets.token_hex(4)}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        database = args.postgres.rsplit("/", 1)[0] + "/" + name
    try:
        try:
            import uvloop  # the server's event loop too; the simulator keeps up with it
        except ImportError:
            result = asyncio.run(bench(args, database))
        else:
            result = uvloop.run(bench(args, database))
    finally:
        if name:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
