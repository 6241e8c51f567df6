"""The ``jcstate apply`` no-op of two trees, interleaved in one test host: before and after.

On a shared 2-core machine the load from elsewhere swings a 0.2 s figure by several times, so a
"before" measured yesterday and an "after" measured now compare the machine, not the code. This
runs both in the same host, alternately (before, after, before, ...), so that both see the same
load, and prints min / median wall and CPU time of each:

    sudo .venv/bin/python bench/noop_compare.py --before f6e7d59 [--runs 20]

The host is populated once with the accounts workload (``bench/accounts_workload.py``: 20
groups, 100 users) by this tree's jcstate; then each run is ``jcstate apply POLICY --output
json`` inside the host, timed there by ``accounts_measure.py`` as in ``accounts.py``, and
checked to be a no-op (0 changes, no command run). The ``--before`` tree is ``git archive`` of
that revision, copied into the host's /tmp with ``modules`` and ``schemas`` linked in as
``jcstate.modules`` and ``jcstate.schemas``, compiled to bytecode, and imported first through
``PYTHONPATH`` with the same interpreter and venv (same dependencies).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

from accounts_contenders import JCSTATE, POLICY, VENV_PYTHON  # noqa: E402
from accounts_workload import Workload  # noqa: E402
from testhost import missing_requirements, running_host  # noqa: E402

MEASURE = str(HERE / "accounts_measure.py")
BEFORE = "/tmp/noop-before"


def _unpack(host, rev: str) -> None:
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    ).stdout
    dest = host.path(BEFORE)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "jcstate" / "modules").symlink_to("../modules")
    (dest / "jcstate" / "schemas").symlink_to("../schemas")
    subprocess.run(
        [VENV_PYTHON, "-m", "compileall", "-q", "-d", BEFORE, str(dest / "jcstate")],
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    for sub in ("modules", "schemas"):
        subprocess.run(
            [VENV_PYTHON, "-m", "compileall", "-q", "-d", f"{BEFORE}/{sub}", str(dest / sub)],
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )


def _run(host, env: dict[str, str]) -> dict[str, float]:
    out, err = "/tmp/noop.out", "/tmp/noop.err"
    argv = [VENV_PYTHON, MEASURE, "--stdout", out, "--stderr", err, "--"]
    argv += [JCSTATE, "apply", POLICY, "--output", "json"]
    proc = host.run(argv, env=env, timeout=300, check=False)
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    report = json.loads(host.path(out).read_text())
    changes = sum(report["counts"].get(k, 0) for k in ("create", "update", "remove"))
    if figures["returncode"] != 0 or changes or report.get("results") or not report.get("ok"):
        raise RuntimeError(f"not a clean no-op: {host.path(err).read_text()[-500:]}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, metavar="REV", help="git revision to compare")
    parser.add_argument("--runs", type=int, default=20, help="runs of each tree (default 20)")
    args = parser.parse_args()
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with running_host("noop-compare") as host:
        host.install_jcstate()
        host.path(POLICY).write_text(Workload().policy())
        first = host.run([JCSTATE, "apply", POLICY, "--output", "json"], timeout=600, check=False)
        if first.returncode != 0:
            raise RuntimeError(f"the first apply failed: {first.stderr[-500:]}")
        _unpack(host, args.before)
        envs = {"before": {"PYTHONPATH": BEFORE}, "after": {}}
        for name in envs:  # warm both (page cache, bytecode)
            _run(host, envs[name])
        for _ in range(args.runs):
            for name, env in envs.items():
                results[name].append(_run(host, env))
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"jcstate apply no-op, 20 groups / 100 users, {args.runs} runs each, interleaved;"
        f" load average 1 min at the end {load}"
    )
    for name, runs in results.items():
        wall = [r["wall"] for r in runs]
        cpu = [r["cpu"] for r in runs]
        print(
            f"  {name:6} ({args.before if name == 'before' else 'this tree'}): wall min"
            f" {min(wall):.3f} s, median {statistics.median(wall):.3f} s; CPU min"
            f" {min(cpu):.3f} s, median {statistics.median(cpu):.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
