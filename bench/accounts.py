"""Benchmark: 20 groups and 100 users in a test host — jcstate against its peers and the floor.

Three scenarios per contender, in one fresh test host per contender and round:

- ``first``: the accounts do not exist; create them all.
- ``noop``:  apply again right away; nothing may change.
- ``drift``: one user deleted (``userdel -r``) and one shell changed by hand, then apply.

Contenders (all timed *inside* the host, except ``jcstate --root``):

- ``floor``: a shell loop of ``groupadd``/``useradd`` plus one ``chpasswd -e`` for every hash;
  for the no-op, the project's Python reading /etc/passwd, /etc/group and /etc/shadow; for the
  drift, that read plus exactly the three commands that fix it.
- ``jcstate``: ``jcstate apply POLICY`` inside the host (project venv bound in read-only).
- ``jcstate --root``: ``jcstate apply --root ROOT POLICY`` from outside the host.
- ``ansible``: ``ansible-playbook -c local`` with ``ansible.builtin.group``/``user`` loops, from
  its own venv (created on first use with ``pip install ansible-core``).
- ``salt``: ``salt-call --local state.apply`` (masterless) of an SLS with ``group.present`` and
  ``user.present`` in Jinja loops, from its own venv (``--salt-venv``; see ``ensure_salt``).
- ``pyinfra``: ``pyinfra @local deploy.py --yes`` with ``server.group``/``server.user`` in
  loops, from its own venv (created on first use with ``pip install pyinfra``).

Every timed run is checked: the account files must match the workload afterwards, and the
tool's own output must agree (jcstate: 120 creates, then 0 changes and no command run, then 1
create + 1 update; Ansible: the PLAY RECAP; Salt: every state's result and changes; pyinfra:
its per-host summary). Then the in-process no-op plan is timed:
``engine.plan`` against ``Host(root=ROOT)`` of the host jcstate populated.

    .venv/bin/python bench/accounts.py [--rounds 3] [--ansible-rounds 1] [--no-ansible]
                                       [--peer-rounds 1] [--no-salt] [--no-pyinfra]
                                       [--only NAME ...] [--json FILE]

Needs root (test hosts). Wall times are medians over rounds; see bench/README.md for method.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from accounts_check import account_problems  # noqa: E402
from accounts_contenders import (  # noqa: E402
    POLICY,
    VENV_PYTHON,
    Ansible,
    Contender,
    Floor,
    JcstateInside,
    JcstateRoot,
    Output,
    Pyinfra,
    Salt,
)
from accounts_table import PlanTiming, Sample, render  # noqa: E402
from accounts_workload import DRIFT_CHANGED, DRIFT_DELETED, DRIFT_SHELL, SCENARIOS, Workload  # noqa: E402
from testhost import TestHost, missing_requirements, running_host  # noqa: E402

MEASURE = str(HERE / "accounts_measure.py")
DEFAULT_ANSIBLE_VENV = Path.home() / ".cache" / "jcstate" / "bench-ansible-venv"
DEFAULT_SALT_VENV = Path.home() / ".cache" / "jcstate" / "bench-salt-venv"
DEFAULT_PYINFRA_VENV = Path.home() / ".cache" / "jcstate" / "bench-pyinfra-venv"
SALT_VERSION = "3008.5"
PYINFRA_VERSION = "3.10.0"


# -- timing one command ----------------------------------------------------------------------
def _measure(host: TestHost, contender: Contender, scenario: str) -> tuple[dict[str, Any], Output]:
    """Time one command with accounts_measure.py, inside the host or from outside it."""
    argv, env = contender.argv(scenario), contender.env()
    if contender.inside:
        out, err = "/tmp/bench-measured.out", "/tmp/bench-measured.err"
        proc = host.run(_wrapper(out, err, argv), env=env, timeout=1200, check=False)
        return _figures(proc, host.path(out), host.path(err))
    with tempfile.TemporaryDirectory(prefix="jcstate-accounts-bench-") as tmp:
        out_path, err_path = Path(tmp, "measured.out"), Path(tmp, "measured.err")
        proc = subprocess.run(
            _wrapper(str(out_path), str(err_path), argv),
            capture_output=True,
            text=True,
            timeout=1200,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", **env},
            check=False,
        )
        return _figures(proc, out_path, err_path)


def _wrapper(out: str, err: str, argv: list[str]) -> list[str]:
    return [VENV_PYTHON, MEASURE, "--stdout", out, "--stderr", err, "--", *argv]


def _figures(
    proc: subprocess.CompletedProcess[str], out: Path, err: Path
) -> tuple[dict[str, Any], Output]:
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring wrapper failed: {proc.stderr.strip()}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures, Output(figures["returncode"], out.read_text(), err.read_text())


def _drift_by_hand(host: TestHost, workload: Workload) -> None:
    host.run(["userdel", "-r", workload.user(DRIFT_DELETED).name])
    host.run(["usermod", "-s", DRIFT_SHELL, workload.user(DRIFT_CHANGED).name])
    left = account_problems(host.root, workload)
    if len(left) < 2:  # the drift must be visible, or the drift scenario measures nothing
        raise RuntimeError(f"drift by hand did not show: {left}")


def run_contender(
    contender: Contender, workload: Workload, round_no: int, after: Any = None
) -> list[Sample]:
    """The three scenarios in one fresh host; ``after(host)`` runs before the host stops."""
    samples = []
    with running_host(f"bench-{round_no}") as host:
        host.install_jcstate()
        contender.setup(host, workload)
        for scenario in SCENARIOS:
            if scenario == "drift":
                _drift_by_hand(host, workload)
            figures, output = _measure(host, contender, scenario)
            problems = contender.confirm(scenario, output)
            problems += account_problems(host.root, workload)
            samples.append(
                Sample(
                    contender.name,
                    scenario,
                    round_no,
                    figures["wall"],
                    figures["cpu"],
                    figures["maxrss_kib"],
                    figures["tree_peak_kib"],
                    problems[:5],
                )
            )
            print(
                f"  {contender.name:15} round {round_no} {scenario:6} "
                f"{figures['wall']:8.3f} s  {'OK' if not problems else 'PROBLEM'}",
                file=sys.stderr,
                flush=True,
            )
            if scenario == "noop" and after is not None:
                after(host)
    return samples


# -- the in-process plan ---------------------------------------------------------------------
def time_plan_in_process(root: Path, iterations: int) -> PlanTiming:
    """The no-op plan against ``Host(root=ROOT)``, in this process, ``iterations`` times."""
    from jcstate import engine
    from jcstate.document import Device, load_repo
    from jcstate.host import Host

    host = Host(root=str(root))
    policy = str(root / POLICY.lstrip("/"))

    def document() -> Any:
        repo = load_repo([policy])
        return repo.document_for(Device.local(host), facts=engine.device_facts(host))

    doc = document()
    engine.plan(doc, host)  # warm: imports and first-use loading of the backends
    plan_ms, full_ms, changes = [], [], 0
    for _ in range(iterations):
        start = time.perf_counter()
        result = engine.plan(doc, host)
        plan_ms.append((time.perf_counter() - start) * 1000)
        changes = max(changes, len(result.changes) + len(result.errors))
    for _ in range(max(3, iterations // 5)):
        start = time.perf_counter()
        engine.plan(document(), host)
        full_ms.append((time.perf_counter() - start) * 1000)
    return PlanTiming(iterations, plan_ms, full_ms, changes)


# -- Ansible's venv --------------------------------------------------------------------------
def ensure_ansible(venv: Path) -> Path:
    """A venv with ansible-core, made with the project's base interpreter (already bound in)."""
    if (venv / "bin" / "ansible-playbook").exists():
        return venv
    python = os.path.join(sys.base_prefix, "bin", "python3")
    print(f"creating {venv} (pip install ansible-core) ...", file=sys.stderr, flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return venv


def ensure_salt(venv: Path) -> Path:
    """A venv with Salt, made with the project's base interpreter.

    Salt 3008.5's own requirement ``certifi>=2026.10.23`` may be newer than the package index
    has; Salt is then installed without dependencies and its ``requirements/base.txt`` and
    ``zeromq.txt`` (from its sdist) with that one floor dropped (certifi is Salt's CA bundle
    for HTTPS, which a masterless state.apply on local accounts never uses).
    """
    if (venv / "bin" / "salt-call").exists():
        return venv
    python = os.path.join(sys.base_prefix, "bin", "python3")
    pip = str(venv / "bin" / "pip")
    print(f"creating {venv} (pip install salt=={SALT_VERSION}) ...", file=sys.stderr, flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    if subprocess.run([pip, "install", "-q", f"salt=={SALT_VERSION}"], check=False).returncode:
        with tempfile.TemporaryDirectory(prefix="jcstate-bench-salt-") as tmp:
            subprocess.run(
                [
                    pip,
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-d",
                    tmp,
                    f"salt=={SALT_VERSION}",
                ],
                check=True,
            )
            import tarfile

            with tarfile.open(next(Path(tmp).glob("salt-*.tar.gz"))) as sdist:
                wanted = [
                    m
                    for m in sdist.getmembers()
                    if m.name.endswith(("/requirements/base.txt", "/requirements/zeromq.txt"))
                    and m.name.count("/") == 2
                ]
                lines = []
                for member in wanted:
                    text = sdist.extractfile(member).read().decode()  # type: ignore[union-attr]
                    lines += [
                        "certifi" if line.startswith("certifi>=") else line
                        for line in text.splitlines()
                    ]
            reqs = Path(tmp, "requirements.txt")
            reqs.write_text("\n".join(lines) + "\n")
            subprocess.run([pip, "install", "-q", "-r", str(reqs)], check=True)
            subprocess.run([pip, "install", "-q", "--no-deps", f"salt=={SALT_VERSION}"], check=True)
    return venv


def ensure_pyinfra(venv: Path) -> Path:
    """A venv with pyinfra, made with the project's base interpreter."""
    if (venv / "bin" / "pyinfra").exists():
        return venv
    python = os.path.join(sys.base_prefix, "bin", "python3")
    print(f"creating {venv} (pip install pyinfra) ...", file=sys.stderr, flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"pyinfra=={PYINFRA_VERSION}"], check=True
    )
    return venv


def _version(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="fresh hosts per contender for floor and jcstate (default 3)",
    )
    parser.add_argument("--ansible-rounds", type=int, default=1)
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--no-root", action="store_true", help="skip jcstate --root")
    parser.add_argument("--ansible-venv", type=Path, default=DEFAULT_ANSIBLE_VENV)
    parser.add_argument("--peer-rounds", type=int, default=1, help="rounds of Salt and pyinfra")
    parser.add_argument("--no-salt", action="store_true")
    parser.add_argument("--no-pyinfra", action="store_true")
    parser.add_argument("--salt-venv", type=Path, default=DEFAULT_SALT_VENV)
    parser.add_argument("--pyinfra-venv", type=Path, default=DEFAULT_PYINFRA_VENV)
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these contenders (e.g. salt pyinfra)"
    )
    parser.add_argument("--plan-iterations", type=int, default=50)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    args = parser.parse_args()
    if args.users < max(DRIFT_DELETED, DRIFT_CHANGED) or args.groups < 2:
        parser.error(f"the drift scenario needs --users >= {DRIFT_DELETED} and --groups >= 2")
    why = missing_requirements()
    if why:
        print(f"accounts benchmark cannot run: {why}", file=sys.stderr)
        return 2
    workload = Workload(n_groups=args.groups, n_users=args.users)
    plan: list[tuple[Contender, int]] = [(Floor(), args.rounds), (JcstateInside(), args.rounds)]
    if not args.no_root:
        plan.append((JcstateRoot(), args.rounds))
    ansible_version = "skipped"
    if not args.no_ansible:
        venv = ensure_ansible(args.ansible_venv)
        ansible_version = _version([str(venv / "bin" / "ansible-playbook"), "--version"])
        plan.append((Ansible(venv=str(venv)), args.ansible_rounds))
    peers = []
    if not args.no_salt:
        venv = ensure_salt(args.salt_venv)
        peers.append(_version([str(venv / "bin" / "salt-call"), "--version"]))
        plan.append((Salt(venv=str(venv)), args.peer_rounds))
    if not args.no_pyinfra:
        venv = ensure_pyinfra(args.pyinfra_venv)
        peers.append(_version([str(venv / "bin" / "pyinfra"), "--version"]))
        plan.append((Pyinfra(venv=str(venv)), args.peer_rounds))
    if args.only:
        plan = [(c, rounds) for c, rounds in plan if c.name in args.only]

    started = time.monotonic()
    samples: list[Sample] = []
    timing: PlanTiming | None = None

    def time_plan(host: TestHost) -> None:
        nonlocal timing
        if timing is None:
            timing = time_plan_in_process(host.root, args.plan_iterations)

    # Sequential (a 2-core machine has no room for overlap), and interleaved: round r of every
    # contender before round r + 1 of any, so that load from elsewhere hits all of them alike.
    load_before = os.getloadavg()
    for r in range(1, max(rounds for _, rounds in plan) + 1):
        for contender, rounds in plan:
            if r > rounds:
                continue
            in_host = isinstance(contender, JcstateInside) and not isinstance(
                contender, JcstateRoot
            )
            samples += run_contender(contender, workload, r, time_plan if in_host else None)
    load_after = os.getloadavg()
    header = (
        f"accounts benchmark: {workload.n_groups} groups, {workload.n_users} users "
        f"(home, shell, comment, one SHA-512 hash, 2 supplementary groups each)\n"
        f"test host: Debian bookworm overlay, {os.cpu_count()} CPUs; "
        f"python {sys.version.split()[0]}; {'; '.join([ansible_version, *peers])}; "
        f"bench took {time.monotonic() - started:.0f} s; load average 1 min "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(render(samples, timing, header))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "samples": [asdict(s) for s in samples],
                    "plan": None if timing is None else asdict(timing),
                },
                indent=1,
            )
        )
    return (
        0 if not any(s.problems for s in samples) and (timing is None or not timing.changes) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
