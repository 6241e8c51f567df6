"""The contenders of the accounts benchmark: the shell floor, jcstate (two ways), Ansible, Salt
and pyinfra.

Each contender says, per scenario (``first``, ``noop``, ``drift``), which command to time and
whether the output of that command shows it did what the scenario needs (a jcstate no-op that
reports changes, or an Ansible run with ``failed=1``, is a broken measurement, not a fast one).
What the command left in the account files is checked separately, for every contender alike
(:mod:`accounts_check`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from accounts_workload import DRIFT_DELETED, FLOOR_READ, Workload

__all__ = [
    "Ansible",
    "Contender",
    "Floor",
    "JcstateInside",
    "JcstateRoot",
    "Output",
    "Pyinfra",
    "Salt",
]

VENV_PYTHON = str(Path(sys.prefix, "bin", "python"))  # the project's venv; bound into hosts
JCSTATE = str(Path(sys.prefix, "bin", "jcstate"))
POLICY = "/tmp/bench-accounts.yaml"  # paths inside the host
HASHES = "/tmp/bench-accounts.hashes"
DRIFT_HASHES = "/tmp/bench-accounts-drift.hashes"
PLAYBOOK = "/tmp/bench-accounts-playbook.yml"
SALT = "/tmp/bench-salt"  # config dir conf/, states/, and root/ for Salt's cache, pki and logs
SALT_STATE = "bench-accounts"
PYINFRA_DEPLOY = "/tmp/bench-accounts-deploy.py"


@dataclass(frozen=True)
class Output:
    """What a timed command printed, and its exit code."""

    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 15) -> str:
        return "\n".join((self.stdout + self.stderr).strip().splitlines()[-lines:])


class Contender(Protocol):
    name: str
    inside: bool  # timed inside the host (nsenter) rather than from outside it

    def setup(self, host: Any, workload: Workload) -> None: ...

    def argv(self, scenario: str) -> list[str]: ...

    def env(self) -> dict[str, str]: ...

    def confirm(self, scenario: str, out: Output) -> list[str]: ...


def _exited_zero(out: Output) -> list[str]:
    return [] if out.returncode == 0 else [f"exited {out.returncode}: {out.tail()}"]


@dataclass
class Floor:
    """shadow-utils in a shell loop, one chpasswd -e for all hashes; a bare Python read (no-op)."""

    name: str = "floor"
    inside: bool = True

    def setup(self, host: Any, workload: Workload) -> None:
        host.path(HASHES).write_text(workload.floor_hashes())
        host.path(HASHES).chmod(0o600)
        gone = workload.user(DRIFT_DELETED)
        host.path(DRIFT_HASHES).write_text(workload.floor_hashes([gone]))
        host.path(DRIFT_HASHES).chmod(0o600)
        host.path("/tmp/bench-floor-first.sh").write_text(workload.floor_first(HASHES))
        host.path("/tmp/bench-floor-drift.sh").write_text(
            workload.floor_drift(VENV_PYTHON, DRIFT_HASHES)
        )

    def argv(self, scenario: str) -> list[str]:
        if scenario == "noop":
            return [VENV_PYTHON, "-c", FLOOR_READ]
        return ["/bin/sh", f"/tmp/bench-floor-{scenario}.sh"]

    def env(self) -> dict[str, str]:
        return {}

    def confirm(self, scenario: str, out: Output) -> list[str]:
        return _exited_zero(out)


@dataclass
class JcstateInside:
    """``jcstate apply`` run inside the host, as on a device (the project's venv bound in)."""

    name: str = "jcstate"
    inside: bool = True
    policy: str = POLICY
    accounts: int = 0  # groups + users: what the first apply must create

    def setup(self, host: Any, workload: Workload) -> None:
        host.path(POLICY).write_text(workload.policy())
        self.accounts = workload.n_groups + workload.n_users
        # Inside the host the source tree is bound read-only, so a module edited since its
        # .pyc was written would be compiled on every run; an installed agent has its .pyc
        # files. A read-only plan from outside writes them (and changes nothing in the host).
        subprocess.run(
            [JCSTATE, "plan", "--root", str(host.root), str(host.path(POLICY))],
            capture_output=True,
            check=False,
        )

    def argv(self, scenario: str) -> list[str]:
        return [JCSTATE, "apply", self.policy, "--output", "json"]

    def env(self) -> dict[str, str]:
        return {}

    def confirm(self, scenario: str, out: Output) -> list[str]:
        problems = _exited_zero(out)
        try:
            report = json.loads(out.stdout)
        except json.JSONDecodeError:
            return problems + [f"no JSON report: {out.tail()}"]
        counts = report.get("counts", {})
        done = {k: counts.get(k, 0) for k in ("create", "update", "remove", "refused")}
        want = {
            "create": self.accounts if scenario == "first" else 0,
            "update": 0,
            "remove": 0,
            "refused": 0,
        }
        if scenario == "drift":  # one user re-created, one user's shell changed back
            want.update(create=1, update=1)
        if done != want:
            problems.append(f"planned {done}, expected {want}")
        if scenario == "noop" and report.get("results"):
            problems.append(f"the no-op ran {len(report['results'])} change(s)")
        if not report.get("ok"):
            problems.append(f"report not ok: {report.get('errors')}")
        return problems


@dataclass
class JcstateRoot(JcstateInside):
    """``jcstate apply --root ROOT`` from outside the host (how the end-to-end tests drive it)."""

    name: str = "jcstate --root"
    inside: bool = False
    root: str = ""

    def setup(self, host: Any, workload: Workload) -> None:
        super().setup(host, workload)
        self.root = str(host.root)
        self.policy = str(host.path(POLICY))

    def argv(self, scenario: str) -> list[str]:
        return [JCSTATE, "apply", "--root", self.root, self.policy, "--output", "json"]


@dataclass
class Ansible:
    """ansible-playbook -c local inside the host, from its own venv bound in read-only."""

    venv: str
    name: str = "ansible"
    inside: bool = True
    bound: list[str] = field(default_factory=list)

    def setup(self, host: Any, workload: Workload) -> None:
        bind_readonly(host, self.venv)
        host.path("/tmp/ansible-home/tmp").mkdir(parents=True, exist_ok=True)
        host.path(PLAYBOOK).write_text(workload.playbook())

    def argv(self, scenario: str) -> list[str]:
        return [
            f"{self.venv}/bin/ansible-playbook",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={self.venv}/bin/python",
            PLAYBOOK,
        ]

    def env(self) -> dict[str, str]:
        # A writable home and temp dirs inside the host; nothing that reaches for the network.
        return {
            "HOME": "/tmp/ansible-home",
            "LC_ALL": "C.UTF-8",  # ansible-core refuses to run under a non-UTF-8 locale
            "LANG": "C.UTF-8",
            "ANSIBLE_LOCAL_TEMP": "/tmp/ansible-home/tmp",
            "ANSIBLE_REMOTE_TEMP": "/tmp/ansible-home/tmp",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_GALAXY_DISABLE_GPG_VERIFY": "1",
            "ANSIBLE_COLLECTIONS_PATH": "/tmp/ansible-home/collections",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_PIPELINING": "1",  # the usual tuning; fewer temp files per task item
        }

    def confirm(self, scenario: str, out: Output) -> list[str]:
        problems = _exited_zero(out)
        recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+).*?failed=(\d+)", out.stdout)
        if recap is None:
            return problems + [f"no PLAY RECAP: {out.tail()}"]
        changed, failed = int(recap.group(2)), int(recap.group(3))
        want = {"first": 2, "noop": 0, "drift": 1}[scenario]  # tasks that report a change
        if changed != want or failed:
            problems.append(f"changed={changed} failed={failed}, expected changed={want}")
        return problems


@dataclass
class Salt:
    """``salt-call --local state.apply`` inside the host, from its own venv bound in read-only.

    Masterless: ``file_client: local`` with the state tree in the host's /tmp; Salt's root
    dir (cache, pki, logs) there too. ``enable_fqdns_grains: False``: that grain resolves the
    host's addresses by reverse DNS, and the bench reaches no network.
    """

    venv: str
    name: str = "salt"
    inside: bool = True
    states: int = 0  # groups + users: every state changes on the first apply

    def setup(self, host: Any, workload: Workload) -> None:
        self.states = workload.n_groups + workload.n_users
        bind_readonly(host, self.venv)
        for sub in ("conf", "states", "root"):
            host.path(f"{SALT}/{sub}").mkdir(parents=True, exist_ok=True)
        host.path(f"{SALT}/conf/minion").write_text(
            "file_client: local\n"
            f"file_roots:\n  base:\n    - {SALT}/states\n"
            f"root_dir: {SALT}/root\n"
            "enable_fqdns_grains: False\n"
        )
        host.path(f"{SALT}/states/{SALT_STATE}.sls").write_text(workload.salt_state())

    def argv(self, scenario: str) -> list[str]:
        return [
            f"{self.venv}/bin/salt-call",
            "--local",
            f"--config-dir={SALT}/conf",
            "--out=json",
            "--retcode-passthrough",
            "state.apply",
            SALT_STATE,
        ]

    def env(self) -> dict[str, str]:
        return {"HOME": "/tmp", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def confirm(self, scenario: str, out: Output) -> list[str]:
        problems = _exited_zero(out)
        try:
            states = json.loads(out.stdout)["local"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return problems + [f"no JSON state result: {out.tail()}"]
        if not isinstance(states, dict):
            return problems + [f"state.apply failed: {str(states)[:300]}"]
        changed = sum(1 for r in states.values() if r.get("changes"))
        failed = sum(1 for r in states.values() if r.get("result") is not True)
        # first: every state; drift: the user re-created and the user whose shell changed
        want = {"first": self.states, "noop": 0, "drift": 2}[scenario]
        if len(states) != self.states:
            problems.append(f"{len(states)} states ran, expected {self.states}")
        if changed != want or failed:
            problems.append(f"{changed} states changed, {failed} failed; expected {want} changed")
        return problems


@dataclass
class Pyinfra:
    """``pyinfra @local deploy.py --yes`` inside the host, from its own venv bound in read-only."""

    venv: str
    name: str = "pyinfra"
    inside: bool = True

    operations: int = 0  # groups + users: one operation each

    def setup(self, host: Any, workload: Workload) -> None:
        self.operations = workload.n_groups + workload.n_users
        bind_readonly(host, self.venv)
        host.path("/tmp/pyinfra-home").mkdir(parents=True, exist_ok=True)
        host.path(PYINFRA_DEPLOY).write_text(workload.pyinfra_deploy())

    def argv(self, scenario: str) -> list[str]:
        return [f"{self.venv}/bin/pyinfra", "@local", PYINFRA_DEPLOY, "--yes"]

    def env(self) -> dict[str, str]:
        return {"HOME": "/tmp/pyinfra-home", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def confirm(self, scenario: str, out: Output) -> list[str]:
        problems = _exited_zero(out)
        # print_results' last row: "Grand total  HOSTS  SUCCESS  ERROR  NO-CHANGE" ("-" is 0),
        # where SUCCESS counts the operations that changed something
        text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
        total = re.search(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
        if total is None:
            return problems + [f"no results table: {out.tail()}"]
        hosts, changed, failed, unchanged = (0 if v == "-" else int(v) for v in total.groups())
        want = {"first": self.operations, "noop": 0, "drift": 2}[scenario]
        if (hosts, changed, failed, unchanged) != (
            self.operations,
            want,
            0,
            self.operations - want,
        ):
            problems.append(
                f"{hosts} operations: {changed} changed, {failed} failed, {unchanged} unchanged;"
                f" expected {want} changed of {self.operations}"
            )
        return problems


def bind_readonly(host: Any, src: str) -> None:
    """Bind ``src`` read-only at the same path inside the host's mount namespace only."""
    host.path(src).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "nsenter",
            "--target",
            str(host.pid),
            "--mount",
            "--",
            "mount",
            "--bind",
            "-o",
            "ro",
            src,
            str(host.path(src)),
        ],
        check=True,
        capture_output=True,
        env={"PATH": os.defpath + ":/usr/sbin:/sbin"},
    )
