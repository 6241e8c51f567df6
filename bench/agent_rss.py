"""The real agent's resident memory when idle after a converge (target: 20 MB or less).

    python bench/agent_rss.py [--runs 3] [--tls] [--users 2] [--entry jcstate.agent|jcstate]
                              [--install wheel|in-place]

Each run starts ``jcstate server`` on SQLite (with ``--tls``: HTTPS with a certificate from
``jcstate server make-cert``, as a device would talk to it), pushes a policy (a group and two
users), copies the test-host image to a temporary root, runs the agent with ``--root`` on that
copy, waits for its report, lets it settle into its long poll and reads the agent process's
RSS, USS and PSS (psutil) and the largest parts of its ``/proc/PID/smaps`` (``top_parts_kb``:
mapping → [RSS, private] in kB). ``anon_mb`` is the anonymous memory (the Python heap), the rest
of RSS (``files_mb``) is mapped files: libpython, OpenSSL, libc, libsodium. USS and PSS depend
on what else maps the same libraries (here the bench's own server, the same interpreter); RSS
does not. The converge runs in a worker process: its peak RSS is sampled (every 20 ms) while
the run waits for the report.

The agent runs as devices run it. ``--install wheel`` (the default) builds this tree as a wheel
(the layout of tests/server/wheels.py), installs it with pip into a fresh venv of the same base
interpreter -- pip compiles the bytecode, as on a device -- and launches exactly the systemd
unit's command and environment (``InstallPlan.argv()`` and ``environment()``); the venv finds the
third-party packages (PyNaCl, Jinja2, ...) in this interpreter's site-packages through a path
line in a ``.pth`` file. ``--install in-place`` runs this venv's editable install instead, as
the bench did before: its editable finder (a ``.pth`` hook) and, with ``PYTHONDONTWRITEBYTECODE``
set, a compile of every jcstate module at each start are not what a device pays.

The image is ``--image``, else ``$JCSTATE_TESTHOST_IMAGE``, else ``~/.cache/jcstate/img-manual``,
else the newest ``~/.cache/jcstate/img-*`` directory, else the test-host image is built as the
end-to-end tests build it (tests/testhost.py; needs root and debootstrap). The image is only
read.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from jcstate import __version__
from jcstate.agent.install import InstallPlan

REPO = Path(__file__).resolve().parents[1]
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
TOP_PARTS = 8


def policy(users: int) -> str:
    """The policy above, or with ``users`` > 2 that many generated users (a bigger report)."""
    if users <= 2:
        return POLICY
    lines = [
        f"    - {{name: u{i:03d}, uid: {3000 + i}, shell: /bin/sh, groups: [developers]}}"
        for i in range(users)
    ]
    return POLICY.split("  users:")[0] + "  users:\n" + "\n".join(lines) + "\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_image(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("JCSTATE_TESTHOST_IMAGE"):
        return os.environ["JCSTATE_TESTHOST_IMAGE"]
    cache = Path.home() / ".cache" / "jcstate"
    if (cache / "img-manual").is_dir():
        return str(cache / "img-manual")
    images = [p for p in cache.glob("img-*") if p.is_dir() and (p / "etc" / "passwd").exists()]
    if images:
        return str(max(images, key=lambda p: p.stat().st_mtime))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import testhost

    return str(testhost.ensure_image())


def install_venv(where: str) -> str:
    """This tree installed from a wheel into a fresh venv under ``where``; its python."""
    sys.path.insert(0, str(REPO / "tests" / "server"))
    import wheels

    wheel = wheels.build_wheel(Path(where), __version__, wheels.source_files(__version__))
    venv = os.path.join(where, "venv")
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    site = out.stdout.strip()
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", site, str(wheel)], check=True)  # compiles the bytecode
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    with open(os.path.join(site, "bench-deps.pth"), "w") as f:
        f.write("".join(d + "\n" for d in sorted(deps)))
    return python


def smaps_parts(pid: int) -> list[tuple[str, int, int]]:
    """(mapping, RSS kB, private kB) per file or anonymous kind, largest RSS first."""
    rss: collections.Counter[str] = collections.Counter()
    private: collections.Counter[str] = collections.Counter()
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
                path = fields[5] if len(fields) > 5 else "[anon]"
                name = os.path.basename(path) if path.startswith("/") else path
            elif fields[0] == "Rss:":
                rss[name] += int(fields[1])
            elif fields[0] in ("Private_Clean:", "Private_Dirty:"):
                private[name] += int(fields[1])
    return [(n, kb, private[n]) for n, kb in rss.most_common()]


class Server:
    """``jcstate server`` on SQLite in ``tmp`` (HTTPS with ``tls``)."""

    def __init__(self, tmp: str, tls: bool):
        self.tmp, self.tls = tmp, tls
        port = _free_port()
        argv = [sys.executable, "-m", "jcstate", "server", "--data", os.path.join(tmp, "data")]
        argv += ["--listen", f"127.0.0.1:{port}"]
        self.context: ssl.SSLContext | None = None
        self.ca_file: str | None = None
        if tls:
            certs = os.path.join(tmp, "certs")
            subprocess.run(
                [sys.executable, "-m", "jcstate", "server", "make-cert", "--out", certs],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            argv += ["--tls-cert", os.path.join(certs, "server.pem")]
            argv += ["--tls-key", os.path.join(certs, "server-key.pem")]
            self.ca_file = os.path.join(certs, "ca.pem")
            self.context = ssl.create_default_context(cafile=self.ca_file)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                self._open(urllib.request.Request(self.url + "/api/v1/health"), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        data = os.path.join(tmp, "data")
        self.token = open(os.path.join(data, "admin-token")).read().strip()
        self.connect_key = open(os.path.join(data, "connect-key")).read().strip()

    def _open(self, req: urllib.request.Request, timeout: float):  # type: ignore[no-untyped-def]
        return urllib.request.urlopen(req, timeout=timeout, context=self.context)

    def call(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with self._open(req, 30) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def one_run(args: argparse.Namespace, image: str, python: str) -> dict[str, object]:
    tmp = tempfile.mkdtemp(prefix="jcstate-rss-")
    root = os.path.join(tmp, "root")
    subprocess.run(["cp", "-a", image, root], check=True)
    server = Server(tmp, args.tls)
    agent = None
    try:
        server.call("POST", "/api/v1/revisions", {"files": {"rss.yaml": policy(args.users)}})
        plan = InstallPlan(
            server=server.url,
            connect_key=server.connect_key,
            ca_file=server.ca_file,
            state_dir=os.path.join(tmp, "state"),
            log_file=os.path.join(tmp, "agent.log"),
            install_dir=os.path.join(tmp, "opt"),
            python=python,
        )
        # what `jcstate agent install` writes beside the unit: the key the unit names (0600)
        os.makedirs(plan.state_dir, mode=0o700, exist_ok=True)
        with open(os.open(plan.connect_key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(plan.connect_key + "\n")
        if args.entry == "jcstate.agent":
            argv = plan.argv()  # the unit's ExecStart
        else:
            argv = [python, "-m", "jcstate", "agent", *plan.options()]
        argv += ["--root", root]
        env = {**os.environ, **plan.environment()}
        if args.install == "wheel":
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # a device has no such setting
        agent = subprocess.Popen(  # in /, as systemd starts it: no checkout on sys.path
            argv, cwd="/", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        watched = psutil.Process(agent.pid)
        worker_peak = 0
        deadline = time.monotonic() + 60
        device: dict = {}
        while time.monotonic() < deadline:
            for child in watched.children(recursive=True):
                try:
                    worker_peak = max(worker_peak, child.memory_info().rss)
                except psutil.Error:
                    pass
            devices = server.call("GET", "/api/v1/devices")
            if devices and devices[0]["lastReportAt"]:  # type: ignore[index]
                device = devices[0]  # type: ignore[index]
                break
            time.sleep(0.02)
        time.sleep(args.settle)  # back in its long poll, idle
        mem = watched.memory_full_info()
        parts = smaps_parts(agent.pid)
        anon = sum(kb for n, kb, _ in parts if n.startswith("["))  # heap, anon, stack, vdso
        return {
            "converged_ok": device.get("lastReportOk"),
            "rss_mb": round(mem.rss / 2**20, 1),
            "uss_mb": round(mem.uss / 2**20, 1),
            "pss_mb": round(mem.pss / 2**20, 1),
            "anon_mb": round(anon / 1024, 1),
            "files_mb": round((mem.rss / 1024 - anon) / 1024, 1),
            "worker_peak_rss_mb": round(worker_peak / 2**20, 1),
            "children_when_idle": len(watched.children(recursive=True)),
            "top_parts_kb": {n: [kb, p] for n, kb, p in parts[:TOP_PARTS]},
        }
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(20)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--entry", default="jcstate.agent", choices=["jcstate.agent", "jcstate"])
    parser.add_argument("--image", help="a Debian system image to copy (read only)")
    parser.add_argument(
        "--install",
        default="wheel",
        choices=["wheel", "in-place"],
        help="wheel: installed in a fresh venv, as on a device; in-place: this editable venv",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="HTTPS between agent and server")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=2, help="more users: a bigger report")
    args = parser.parse_args()
    image = find_image(args.image)
    work = tempfile.mkdtemp(prefix="jcstate-rss-venv-")
    try:
        python = install_venv(work) if args.install == "wheel" else sys.executable
        runs = [one_run(args, image, python) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        key: {
            "median": statistics.median(r[key] for r in runs),  # type: ignore[misc]
            "min": min(r[key] for r in runs),  # type: ignore[type-var]
            "max": max(r[key] for r in runs),  # type: ignore[type-var]
        }
        for key in ("rss_mb", "uss_mb", "pss_mb", "anon_mb", "files_mb", "worker_peak_rss_mb")
    }
    print(
        json.dumps(
            {
                "entry": args.entry,
                "install": args.install,
                "tls": args.tls,
                "users": args.users,
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
