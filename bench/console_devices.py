"""Benchmark: the console's Devices page with 10,000 devices (issue 13: answer in ≤ 300 ms).

Seeds a fresh database (SQLite by default, or ``--database postgresql://…``) with 10,000
devices — three operating systems, labels, last-seen times spread over a day so that about
half are online, a report for each and a queued command for every tenth — then starts a real
server (uvicorn on loopback, tests/server/live.py), signs in as a read-only console admin and
times whole page loads over HTTP (request → full HTML received), each view ``--rounds`` times:

- the first page (50 devices, sorted by hostname),
- a hostname search, an OS filter, a label filter, online only,
- sorted by last seen (descending), and the last page.

    .venv/bin/python bench/console_devices.py [--devices 10000] [--rounds 20] [--database URL]

Prints the median and 95th percentile per view; exits 1 when a median exceeds 300 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))

import live  # noqa: E402
from console_session import signed_in  # noqa: E402

from jcstate.server import db  # noqa: E402

BUDGET = 0.300


def seed(store, count: int) -> None:
    rng = random.Random(13)
    now = time.time()
    systems = [("linux", "12"), ("darwin", "14.5"), ("windows", "11")]
    devices, reports, commands = [], [], []
    for i in range(count):
        os_name, version = systems[i % 3]
        device_id = secrets.token_hex(8)
        seen = now - rng.uniform(0, 86400) if i % 2 else now - rng.uniform(0, 30)
        devices.append(
            {
                "id": device_id,
                "hostname": f"host-{i:05d}.example.internal",
                "os": os_name,
                "os_version": version,
                "arch": "x86_64",
                "agent_version": "0.1.0",
                "labels": {"site": ["berlin", "lyon", "austin"][i % 3], "team": f"t{i % 20}"},
                "public_key": secrets.token_urlsafe(32),
                "status": "active",
                "connect_key_id": None,
                "enrolled_at": now - 86400 * 30,
                "last_seen": seen,
                "last_report_at": seen,
                "last_report_ok": i % 17 != 0,
                "last_report_changed": i % 5 == 0,
                "applied_etag": "x",
                "facts": {"hostname": f"host-{i:05d}", "agentVersion": "0.1.0"},
            }
        )
        reports.append(
            {
                "device_id": device_id,
                "report_id": secrets.token_hex(8),
                "received_at": seen,
                "etag": "x",
                "ok": i % 17 != 0,
                "changed": i % 5 == 0,
                "body": {"ok": i % 17 != 0, "report": {"results": [], "errors": []}},
            }
        )
        if i % 10 == 0:
            commands.append(
                {
                    "id": f"c-{secrets.token_hex(8)}",
                    "device_id": device_id,
                    "source": "admin",
                    "action": "lock",
                    "body": {"action": "lock"},
                    "state": "queued",
                    "cancel_requested": False,
                    "created_at": now,
                    "created_by": "bench",
                    "deliveries": 0,
                }
            )
    with store.transaction() as conn:
        conn.execute(db.devices.insert(), devices)
        conn.execute(db.reports.insert(), reports)
        conn.execute(db.commands.insert(), commands)


VIEWS = {
    "first page": {},
    "search hostname": {"q": "host-0999"},
    "filter os": {"os": "darwin"},
    "filter label": {"label": "site=lyon"},
    "online only": {"status": "online"},
    "sort last seen desc": {"sort": "lastSeen", "order": "desc"},
    "last page": {"page": "200"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--database", help="postgresql://… (default: SQLite in a temp dir)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="jcstate-bench-")
    database = args.database or f"sqlite:///{tmp}/jcstate.db"
    with live.live_server(database, tmp, announce=False) as srv:
        started = time.monotonic()
        seed(srv.ctx.store, args.devices)
        print(f"seeded {args.devices} devices in {time.monotonic() - started:.1f} s")
        client: httpx.Client = signed_in(srv, "bench", "read-only")
        worst = 0.0
        for name, params in VIEWS.items():
            client.get("/devices", params=params)  # warm
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                resp = client.get("/devices", params=params)
                times.append(time.perf_counter() - t0)
                assert resp.status_code == 200 and "<table" in resp.text
            times.sort()
            median = statistics.median(times)
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            worst = max(worst, median)
            print(f"{name:22s} median {median * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms")
    print(f"worst median {worst * 1000:.1f} ms (budget {BUDGET * 1000:.0f} ms)")
    return 0 if worst <= BUDGET else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
