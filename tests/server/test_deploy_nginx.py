"""docs/deploy.md for real: nginx (TLS) in front of two ``jcstate server`` processes on one
PostgreSQL database, with the configuration exactly as that page gives it.

A real agent process enrolls and long-polls through nginx; a push through the process that does
not hold its poll wakes it within a second (when nginx finished the answer, from its access
log); the process holding the poll is killed with SIGKILL and that costs the agent one retry
(one 502 at nginx, one "unreachable" line in the agent's log, no error), and the next push
converges through the other process.

nginx runs in the foreground with its own prefix in a temporary directory (never the system
service), on loopback only.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import live
import pytest

from jcstate.server.api_client import AdminClient

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx missing (apt: nginx)"),
]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def policy(name: str) -> dict[str, str]:
    text = f"apiVersion: jcstate/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec: {{}}\n"
    return {"base.yaml": text}


def documented_config() -> str:
    """The ```nginx block of docs/deploy.md."""
    [block] = re.findall(r"```nginx\n(.*?)```", DOCS.read_text(), re.S)
    return block


MAIN = """\
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format timed '$msec $request_method $uri $status $upstream_addr';
    access_log {prefix}/access.log timed;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/jcstate.conf;
}}
"""


class Nginx:
    def __init__(self, prefix: Path, port: int, upstreams: list[int], cert: str, key: str):
        self.prefix, self.port = prefix, port
        (prefix / "tmp").mkdir(parents=True)
        site = documented_config()
        for needle, value in (
            ("127.0.0.1:8441", f"127.0.0.1:{upstreams[0]}"),
            ("127.0.0.1:8442", f"127.0.0.1:{upstreams[1]}"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
            ("/etc/nginx/tls/jcstate.pem", cert),
            ("/etc/nginx/tls/jcstate-key.pem", key),
        ):
            assert needle in site, needle
            site = site.replace(needle, value)
        (prefix / "jcstate.conf").write_text(site)
        (prefix / "nginx.conf").write_text(MAIN.format(prefix=prefix))
        argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [*argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def access(self) -> list[tuple[float, str, str, int, str]]:
        """(time the answer was finished, method, path, status, upstream) per request."""
        path = self.prefix / "access.log"
        rows = []
        for line in path.read_text().splitlines() if path.exists() else []:
            at, method, uri, status, upstream = line.split(" ", 4)
            rows.append((float(at), method, uri, int(status), upstream))
        return rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: the master takes its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(database: str, data: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "jcstate", "server", "--database", database]
    argv += ["--data", str(data), "--listen", f"127.0.0.1:{port}"]
    argv += ["--trusted-proxy", "127.0.0.1/32"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None, 60)
    assert proc.poll() is None, "server did not start"
    return proc


def _healthy(url: str, **kw: Any) -> bool:
    try:
        return httpx.get(url + "/api/v1/health", timeout=2, **kw).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(predicate: Any, timeout: float, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)


def held(port: int) -> float:
    """jcstate_held_polls of one process (its /metrics, on loopback)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1
    found = re.search(r"^jcstate_held_polls (\S+)$", text, re.M)
    return float(found.group(1)) if found else -1


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, Any]]:
    reason = live.postgres_available()
    if reason:
        pytest.skip(reason)
    from jcstate.server.certs import make_cert

    tls = make_cert(str(tmp_path / "tls"), ["localhost", "127.0.0.1"])
    data = tmp_path / "data"
    ports = [live.free_port(), live.free_port()]
    servers: dict[int, subprocess.Popen[bytes]] = {}
    nginx = None
    with live.postgres_database() as database:
        try:
            servers[ports[0]] = start_server(database, data, ports[0])
            servers[ports[1]] = start_server(database, data, ports[1])
            nginx = Nginx(tmp_path / "nginx", live.free_port(), ports, tls["cert"], tls["key"])
            url = f"https://127.0.0.1:{nginx.port}"
            trust = ssl.create_default_context(cafile=tls["ca"])
            wait_for(lambda: _healthy(url, verify=trust), 30, step=0.1)
            yield {
                "url": url,
                "ca": tls["ca"],
                "trust": trust,
                "nginx": nginx,
                "servers": servers,
                "data": data,
                "tmp": tmp_path,
            }
        finally:
            if nginx is not None:
                nginx.stop()
            for proc in servers.values():
                if proc.poll() is None:
                    proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def agent_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_agent_behind_nginx_and_two_processes(deployment):
    d = deployment
    nginx: Nginx = d["nginx"]
    ports = list(d["servers"])
    token = (d["data"] / "admin-token").read_text().strip()
    key = (d["data"] / "connect-key").read_text().strip()
    admin = AdminClient(d["url"], token, ca_file=d["ca"])  # the admin API through nginx too
    admin.call("POST", "/api/v1/revisions", {"files": policy("first")})

    tmp: Path = d["tmp"]
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\n")
    log_file = tmp / "agent.log"
    argv = [sys.executable, "-m", "jcstate.agent", "--server", d["url"], "--ca-file", d["ca"]]
    argv += ["--connect-key", key, "--state-dir", str(tmp / "state"), "--root", str(root)]
    argv += ["--log-file", str(log_file), "--install-dir", str(tmp / "opt")]
    argv += ["--wait", "30", "--max-backoff", "1", "--log-format", "json"]
    agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def converged() -> bool:
            devices = admin.call("GET", "/api/v1/devices")
            return bool(devices) and devices[0]["lastReportOk"] is True and not devices[0]["drift"]

        def polling() -> int | None:
            """The port of the process holding the agent's poll, once exactly one does."""
            counts = {port: held(port) for port in ports if d["servers"][port].poll() is None}
            holding = [port for port, n in counts.items() if n == 1]
            return holding[0] if len(holding) == 1 and sum(counts.values()) == 1 else None

        # enrolled and converged through nginx, then held in a long poll by one process
        wait_for(converged, 60, step=0.2)
        assert any(e["message"].startswith("enrolled as device") for e in agent_log(log_file))
        wait_for(lambda: polling() is not None, 30, step=0.05)
        holder = polling()
        assert holder is not None
        other = next(p for p in ports if p != holder)

        # a push through the other process wakes the poll within a second
        time.sleep(0.3)
        pushed = time.time()
        direct = AdminClient(f"http://127.0.0.1:{other}", token)
        direct.call("POST", "/api/v1/revisions", {"files": policy("second")})
        direct.close()

        def answered() -> list[float]:
            return [
                at
                for at, method, uri, status, _ in nginx.access()
                if uri == "/api/v1/device/work" and status == 200 and at > pushed
            ]

        wait_for(lambda: answered(), 10)
        took = answered()[0] - pushed
        assert took < 1.0, f"the held poll was answered {took:.3f} s after the push"
        wait_for(converged, 30, step=0.1)

        # kill -9 the process holding the (next) poll: one retry, not a failed round
        wait_for(lambda: polling() is not None, 30, step=0.05)
        victim = polling()
        assert victim is not None
        survivor = next(p for p in ports if p != victim)
        before = len(agent_log(log_file))
        d["servers"][victim].send_signal(signal.SIGKILL)
        d["servers"][victim].wait(10)
        wait_for(lambda: held(survivor) == 1, 30, step=0.05)  # the agent polls again
        admin.call("POST", "/api/v1/revisions", {"files": policy("third")})
        wait_for(converged, 30, step=0.1)

        after = agent_log(log_file)[before:]
        unreachable = [e for e in after if e["message"].startswith("server unreachable")]
        assert len(unreachable) == 1, after
        assert "502" in unreachable[0]["message"]
        assert not [e for e in after if e["level"] == "ERROR"], after
        failed = [row for row in nginx.access() if row[3] >= 500]
        assert [(row[2], row[3]) for row in failed] == [("/api/v1/device/work", 502)]
        # the proxy does not expose /metrics
        assert httpx.get(d["url"] + "/metrics", verify=d["trust"]).status_code == 404
        assert agent.poll() is None
    finally:
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        if agent.stderr:
            agent.stderr.close()
        admin.close()
