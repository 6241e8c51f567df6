"""Driving jcstate against a test host from outside, the way an admin runs it on a device.

End-to-end scenarios read as: write a policy, ``apply_policy(host, yaml)``, then check the host
with testinfra (or ``verify_policy``). The engine runs as a subprocess of the project's own
``jcstate`` command with ``--root ROOT``, so a scenario exercises the real CLI, exit codes
and JSON report, and the engine never touches the machine running the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testhost import TestHost

__all__ = ["CliResult", "apply_policy", "jcstate_argv", "plan_policy", "verify_policy"]


@dataclass(frozen=True)
class CliResult:
    """What one ``jcstate`` run did: exit code, output, and the JSON report when there is one."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> Any:
        """The parsed ``--output json`` report (raises with the output shown when it is not)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"{' '.join(self.argv)} exited {self.returncode} without a JSON report\n"
                f"stdout: {self.stdout}\nstderr: {self.stderr}"
            ) from exc


def jcstate_argv() -> list[str]:
    """The project's own jcstate command: the venv's script, else ``python -m jcstate``."""
    script = Path(sys.prefix, "bin", "jcstate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jcstate"]


def _run_with_policy(args: list[str], yaml_text: str, timeout: float) -> CliResult:
    with tempfile.TemporaryDirectory(prefix="jcstate-policy-") as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(yaml_text)
        argv = [*jcstate_argv(), *[str(policy) if a == "{policy}" else a for a in args]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("JCSTATE_")}
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    return CliResult(argv, proc.returncode, proc.stdout, proc.stderr)


def apply_policy(host: TestHost, yaml_text: str, *extra: str, timeout: float = 120) -> CliResult:
    """``jcstate apply --root ROOT POLICY --output json`` against the host."""
    return _run_with_policy(
        ["apply", "--root", str(host.root), "{policy}", "--output", "json", *extra],
        yaml_text,
        timeout,
    )


def plan_policy(host: TestHost, yaml_text: str, *extra: str, timeout: float = 120) -> CliResult:
    """``jcstate plan --root ROOT POLICY --output json`` against the host (exit 0 or 2)."""
    return _run_with_policy(
        ["plan", "--root", str(host.root), "{policy}", "--output", "json", *extra],
        yaml_text,
        timeout,
    )


def verify_policy(host: TestHost, yaml_text: str, *extra: str, timeout: float = 120) -> CliResult:
    """``jcstate verify POLICY --hosts chroot://ROOT --output json`` against the host."""
    return _run_with_policy(
        ["verify", "{policy}", "--hosts", f"chroot://{host.root}", "--output", "json", *extra],
        yaml_text,
        timeout,
    )
