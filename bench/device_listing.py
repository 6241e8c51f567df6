"""How long ``GET /api/v1/devices`` takes for a 10,000-device fleet, per filter (issue 12).

Runs a real server (tests/server/live.py) on SQLite and, when reachable, PostgreSQL; inserts
10,000 devices (labels team/site, a quarter darwin, one in ten failed, last seen spread over
200 s), pushes one policy selecting ``team=eng``, then times each query (best of 5, over HTTP)
and prints it with the page size and ``X-Total-Count``.

    .venv/bin/python bench/device_listing.py [--devices N]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))

import live  # noqa: E402

from jcstate.server import db  # noqa: E402

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
selector: {labels: {team: eng}}
spec:
  users:
    - {name: alice, uid: 1501}
"""
QUERIES = (
    "?limit=50",
    "?limit=50&page=100&sort=-lastSeen",
    "?label=team%3Deng&label=site%3Dparis&limit=50",
    "?status=online&limit=50",
    "?status=failed&limit=50",
    "?status=drift&limit=50",
    "?search=host09&limit=50",
    "",
)


def measure(url: str, tmp: str, devices: int) -> None:
    with live.live_server(url, tmp) as srv:
        now = time.time()
        rows = [
            {
                "id": f"{i:016x}",
                "hostname": f"host{i:05}",
                "os": "darwin" if i % 4 == 0 else "linux",
                "os_version": "12",
                "arch": "x86_64",
                "agent_version": "1",
                "labels": {"team": ("eng", "ops", "sec")[i % 3], "site": ("paris", "lyon")[i % 2]},
                "public_key": base64.b64encode(os.urandom(32)).decode(),
                "status": "active",
                "enrolled_at": now,
                "last_seen": now - (i % 200),
                "last_report_at": now,
                "last_report_ok": bool(i % 10),
                "last_report_changed": False,
                "applied_etag": "stale",
            }
            for i in range(devices)
        ]
        with srv.ctx.store.transaction() as conn:
            conn.execute(db.devices.insert(), rows)
        srv.admin().call("POST", "/api/v1/revisions", {"files": {"base.yaml": POLICY}})
        for query in QUERIES:
            req = urllib.request.Request(
                srv.url + "/api/v1/devices" + query,
                headers={"Authorization": f"Bearer {srv.admin_token}"},
            )
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                with urllib.request.urlopen(req) as resp:
                    body, total = resp.read(), resp.headers["X-Total-Count"]
                best = min(best, time.perf_counter() - start)
            kind = url.split(":")[0]
            shown = f"{len(json.loads(body))} of {total}"
            print(f"{kind:10} {query or '(everything)':48} {best * 1000:8.1f} ms  {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{tmp}/jcstate.db", tmp, args.devices)
    if live.postgres_available() is None:
        with tempfile.TemporaryDirectory() as tmp, live.postgres_database() as url:
            measure(url, tmp, args.devices)


if __name__ == "__main__":
    main()
