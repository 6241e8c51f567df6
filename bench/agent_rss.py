"""The real agent's resident memory when idle after a converge (target: 20 MB or less).

    python bench/agent_rss.py [--entry jcstate.agent|jcstate]

Starts ``jcstate server`` on SQLite, pushes a policy (a group and two users), copies the test-host
image (``~/.cache/jcstate/img-manual`` by default; read only) to a temporary root, runs the
agent with ``--root`` on that copy, waits for its report, lets it settle into its long poll and
reads its RSS, USS and PSS (psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: rss}
spec:
  groups:
    - {name: developers, gid: 2001}
  users:
    - {name: alice, uid: 1501, shell: /bin/bash, groups: [developers]}
    - {name: bob, uid: 1502, shell: /bin/sh}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, token: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entry", default="jcstate.agent", choices=["jcstate.agent", "jcstate"])
    parser.add_argument("--image", default=os.path.expanduser("~/.cache/jcstate/img-manual"))
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="jcstate-rss-")
    root = os.path.join(tmp, "root")
    subprocess.run(["cp", "-a", args.image, root], check=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jcstate",
            "server",
            "--data",
            os.path.join(tmp, "data"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = None
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api/v1/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        token = open(os.path.join(tmp, "data", "admin-token")).read().strip()
        key = open(os.path.join(tmp, "data", "connect-key")).read().strip()
        _call(url, token, "POST", "/api/v1/revisions", {"files": {"rss.yaml": POLICY}})
        entry = (
            ["-m", "jcstate.agent"] if args.entry == "jcstate.agent" else ["-m", "jcstate", "agent"]
        )
        agent = subprocess.Popen(
            [
                sys.executable,
                *entry,
                "--server",
                url,
                "--connect-key",
                key,
                "--state-dir",
                os.path.join(tmp, "state"),
                "--log-file",
                os.path.join(tmp, "agent.log"),
                "--install-dir",
                os.path.join(tmp, "opt"),
                "--root",
                root,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        device: dict = {}
        while time.monotonic() < deadline:
            devices = _call(url, token, "GET", "/api/v1/devices")
            if devices and devices[0]["lastReportAt"]:
                device = devices[0]
                break
            time.sleep(0.2)
        time.sleep(args.settle)  # back in its long poll, idle
        mem = psutil.Process(agent.pid).memory_full_info()
        print(
            json.dumps(
                {
                    "entry": args.entry,
                    "converged_ok": device.get("lastReportOk"),
                    "rss_mb": round(mem.rss / 2**20, 1),
                    "uss_mb": round(mem.uss / 2**20, 1),
                    "pss_mb": round(mem.pss / 2**20, 1),
                },
                indent=2,
            )
        )
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
