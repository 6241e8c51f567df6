"""``GET /metrics``: the Prometheus text format with held polls, devices, commands, converge
results, push/wake/request latency; only for the metrics token or a loopback client."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import live
import pytest
from prometheus_client.parser import text_string_to_metric_families

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""
TOKEN = "metrics-" + "t" * 32


@pytest.fixture
def srv(database: str, tmp_path: Path):
    with live.live_server(
        database, str(tmp_path), trusted_proxies=("127.0.0.0/8",), metrics_token=TOKEN
    ) as server:
        yield server


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple], float]:
    answer = httpx.get(url + "/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_polls_pushes_reports_and_commands(srv):
    admin = srv.admin()
    client, device_id = srv.device("laptop1")
    etag = client.work("", 0)["etag"]
    got: dict = {}
    poll = threading.Thread(target=lambda: got.update(client.work(etag, 30)))
    poll.start()
    deadline = time.monotonic() + 10
    while len(srv.ctx.waiters) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    before = scrape(srv.url)
    assert value(before, "jcstate_held_polls") == 1
    assert value(before, "jcstate_devices", status="online") == 1
    assert value(before, "jcstate_devices", status="offline") == 0

    admin.call("POST", "/api/v1/revisions", {"files": {"base.yaml": POLICY}})
    poll.join(10)
    assert got["document"] is not None
    admin.call("POST", f"/api/v1/devices/{device_id}/commands/lock", {})
    client.report({"reportId": "r" * 32, "etag": got["etag"], "ok": True, "changed": True})
    client.report({"reportId": "r" * 32, "etag": got["etag"], "ok": True, "changed": True})
    client.report({"reportId": "s" * 32, "etag": got["etag"], "ok": False})
    admin.call("GET", f"/api/v1/devices/{device_id}")

    after = scrape(srv.url)
    assert value(after, "jcstate_held_polls") == 0
    assert value(after, "jcstate_wake_seconds_count") >= 1
    assert value(after, "jcstate_woken_polls_total") >= 1
    assert value(after, "jcstate_push_seconds_count") == 1
    assert value(after, "jcstate_commands", state="queued") == 1
    assert value(after, "jcstate_commands", state="succeeded") == 0
    # a resent report is counted once
    ok = value(after, "jcstate_converge_reports_total", result="ok", changed="true")
    failed = value(after, "jcstate_converge_reports_total", result="failed", changed="false")
    assert (ok, failed) == (1, 1)
    # latency by route template, never by id; the held long poll is not a latency
    routes = {dict(labels).get("route") for (name, labels) in after if "request_seconds" in name}
    assert "/api/v1/devices/{ref}" in routes
    assert not any(device_id in (r or "") for r in routes)
    assert "/api/v1/device/work" not in routes


def test_metrics_need_the_token_or_a_loopback_client(sqlite_server, tmp_path: Path):
    with live.live_server(
        f"sqlite:///{tmp_path}/m.db",
        str(tmp_path),
        trusted_proxies=("127.0.0.0/8",),
        metrics_token=TOKEN,
    ) as srv:
        # relayed by a (trusted) proxy on loopback for a client elsewhere: not loopback
        remote = {"X-Forwarded-For": "203.0.113.9"}
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            assert http.get("/metrics", headers=remote).status_code == 401
            wrong = {**remote, "Authorization": "Bearer " + "x" * len(TOKEN)}
            assert http.get("/metrics", headers=wrong).status_code == 401
        scrape(srv.url, **remote, Authorization=f"Bearer {TOKEN}")
        scrape(srv.url)  # loopback itself
        assert "/metrics" not in httpx.get(srv.url + "/openapi.json").text
    # a server without a metrics token: only loopback
    with httpx.Client(base_url=sqlite_server.url, timeout=30) as http:
        spoofed = {"X-Forwarded-For": "203.0.113.9"}  # no trusted proxy: ignored
        assert http.get("/metrics", headers=spoofed).status_code == 200
