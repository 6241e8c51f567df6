"""A real server for tests: uvicorn in a thread on a free loopback port, SQLite or PostgreSQL.

Also throwaway PostgreSQL databases (``jcstate_test_<random>``, dropped afterwards) and signed
device calls made with the agent's own client, so the tests exercise both sides of the wire.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity
from jcstate.server.app import Settings, create_app
from jcstate.server.bootstrap import bootstrap

PG_ADMIN_URL = os.environ.get("JCSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: skip the PostgreSQL tests
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for one test (module), dropped afterwards."""
    import psycopg

    name = f"jcstate_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class LiveServer:
    url: str
    admin_token: str
    connect_key: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread
    tmp: str
    _n: int = field(default=0)
    opened: list[Any] = field(default_factory=list)  # clients to close at teardown

    def close_clients(self) -> None:
        for client in self.opened:
            client.close()

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    def admin(self, role: str = "administrator") -> Any:
        """An AdminClient with a fresh token of ``role``."""
        from jcstate.server.api_client import AdminClient

        client = AdminClient(self.url, self.token(role))
        self.opened.append(client)
        return client

    def token(self, role: str) -> str:
        return self.ctx.store.create_token(f"test {role}", role, None)[1]

    def device(
        self,
        name: str = "",
        *,
        connect_key: str | None = None,
        hostname: str = "",
        os_name: str = "linux",
    ) -> tuple[Client, str]:
        """Enroll a new device with its own key pair; returns its client and id."""
        self._n += 1
        state = os.path.join(self.tmp, f"device-{self._n}-{name}")
        client = Client(self.url, Identity(state))
        self.opened.append(client)
        answer = client.enroll(
            connect_key or self.connect_key,
            {
                "hostname": hostname or name or f"host{self._n}",
                "os": os_name,
                "osVersion": "12",
                "arch": "x86_64",
                "agentVersion": "test",
            },
        )
        client.identity.save_device(answer["id"], self.url)
        return client, answer["id"]


@contextmanager
def live_server(database: str, tmp: str, **settings: Any) -> Iterator[LiveServer]:
    """Run a server until the block ends."""
    first = bootstrap(database, None)
    assert first is not None
    app = create_app(Settings(database=database, secret_key=os.urandom(32), **settings))
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_keep_alive=90,
        lifespan="on",
        server_header=False,
        proxy_headers=False,  # as `jcstate server`: X-Forwarded-* are jcstate.server.peer's
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    srv = LiveServer(
        f"http://127.0.0.1:{port}", first.admin_token, first.connect_key, app, server, thread, tmp
    )
    try:
        yield srv
    finally:
        srv.close_clients()
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass
class ServerProcess:
    """``jcstate server`` as a real process (so that it can be killed with SIGKILL)."""

    args: list[str]
    port: int
    proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        import subprocess
        import sys
        import urllib.request

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jcstate",
                "server",
                *self.args,
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/api/v1/health", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("jcstate server did not start")

    def kill(self) -> None:
        """SIGKILL: no chance to finish a request or flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            if self.proc.stderr:
                self.proc.stderr.close()


def free_port() -> int:
    sock = free_socket()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()
