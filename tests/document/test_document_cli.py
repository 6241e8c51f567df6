"""``jcstate validate``: output forms and exit codes, in-process and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from jcstate.cli import main
from jcstate.document import Device
from jcstate.host import Host

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: good}
selector: {os: [linux]}
spec: {users: [{name: alice}]}
"""
BAD = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: bad}
spec:
  users:
    - name: bob
      shel: /bin/sh
  groups: [{name: g, gid: x}]
"""


def test_clean_repo_prints_a_summary_and_exits_0(
    write: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write("good.yaml", GOOD)
    write("more/other.yml", GOOD.replace("good", "other"))
    assert main(["validate", str(Path(path).parent)]) == 0
    assert capsys.readouterr().out == "2 policies in 2 files: ok\n"


def test_problems_are_printed_sorted_and_exit_1(
    write: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write("b.yaml", BAD)
    good = write("a.yaml", GOOD)
    assert main(["validate", bad, good]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"{bad}:7:7: unknown field 'shel' in users[0]; did you mean 'shell'?",
        f"{bad}:8:27: groups[0].gid: gid must be an integer (or a template that renders to one)",
    ]
    assert out.err == "2 problems\n"


def test_json_output(write: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    bad = write("b.yaml", BAD)
    assert main(["validate", "--output", "json", bad]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["problems"][0] == {
        "file": bad,
        "line": 7,
        "column": 7,
        "message": "unknown field 'shel' in users[0]; did you mean 'shell'?",
    }
    good = write("g.yaml", GOOD)
    assert main(["validate", "--output", "json", good]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "policies": 1,
        "files": 1,
        "problems": [],
    }


def test_missing_path_and_empty_folder_are_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "nope"), str(tmp_path / "empty")]) == 1
    out = capsys.readouterr().out
    assert "nope:1:1: no such file or folder" in out
    assert "empty:1:1: no *.yaml or *.yml files in this folder" in out


def test_as_a_process_on_the_example_repo() -> None:
    jcstate = os.path.join(os.path.dirname(sys.executable), "jcstate")
    proc = subprocess.run(
        [jcstate, "validate", str(ROOT / "examples" / "linux-workstations")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.endswith("files: ok\n")


def test_device_local_from_a_host_with_a_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("th1\n")
    (tmp_path / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    device = Device.local(Host(str(tmp_path), os_name="linux"))
    assert (device.hostname, device.os, device.osVersion) == ("th1", "linux", "12")
    assert device.arch and device.labels == {} and device.id == ""
