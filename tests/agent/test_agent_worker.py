"""Converges run in a worker process: the resident agent stays small and survives its failures.

A real agent process converges a policy (the worker creates a user under ``--root``) and, idle
afterwards, has imported none of the engine, the document model, YAML, Jinja2 or cryptography.
Workers that crash, hang, print garbage or answer with a non-zero status are failed converges
with a clear error in the report, and the loop goes on; the document's secrets reach the worker
through stdin only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from recording_actions import prepare_root

from jcstate.agent import worker
from jcstate.agent.loop import Agent, AgentConfig, WorkerError

USER = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: team}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/sh}
"""
FORBIDDEN = ("jcstate.engine", "jcstate.document", "yaml", "jinja2", "cryptography")
# what the resident agent does without, for its memory (docs/agent.md, "Memory and imports")
LEAN = (
    "http",
    "email",
    "logging",
    "subprocess",
    "random",
    "argparse",
    "nacl.signing",
    "unicodedata",
)

IDLE_AGENT = """\
import json, sys
from jcstate.agent.loop import Agent, AgentConfig

url, key, base, root = sys.argv[1:5]
config = AgentConfig(server=url, connect_key=key, state_dir=base + "/state", log_file=None,
                     install_dir=base + "/opt", root=root, wait=0.0, once=True)
agent = Agent(config)
code = agent.run()
agent.step()  # idle: one more (empty) poll after the converge
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def make_agent(server: Any, tmp_path: Path, **kw: Any) -> Agent:
    config = AgentConfig(
        server=server.url,
        connect_key=server.connect_key,
        state_dir=str(tmp_path / "state"),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=prepare_root(str(tmp_path / "root")),
        once=True,
        **kw,
    )
    agent = Agent(config)
    server.opened.append(agent.client)
    return agent


def passwd(tmp_path: Path) -> str:
    return (tmp_path / "root" / "etc" / "passwd").read_text()


def test_the_idle_agent_has_not_imported_the_engine(sqlite_server, tmp_path):
    server = sqlite_server
    server.admin("manager").call("POST", "/api/v1/revisions", {"files": {"team.yaml": USER}})
    root = prepare_root(str(tmp_path / "root"))
    out = subprocess.run(
        [sys.executable, "-c", IDLE_AGENT, server.url, server.connect_key, str(tmp_path), root],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["code"] == 0
    # the converge really happened, in the worker: the user exists and the report says so
    assert "alice:x:1501:" in passwd(tmp_path)
    [device] = server.ctx.store.list_devices()
    report = server.ctx.store.last_report(device["id"])["body"]
    assert report["ok"] is True and report["changed"] is True
    assert report["facts"]["hostname"] == "root" and "agentVersion" in report["facts"]
    modules = answer["modules"]
    assert "jcstate.agent.loop" in modules and "nacl._sodium" in modules  # the check works
    loaded = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert loaded == []
    assert [m for m in modules if any(m == f or m.startswith(f + ".") for f in LEAN)] == []
    # no command ever ran here: the command machinery was not loaded either
    assert "jcstate.modules.commands.execution" not in modules


def test_the_agent_looks_for_journal_records_where_the_journal_keeps_them():
    from jcstate.agent.commands import JOURNAL_DIR
    from jcstate.modules.commands.journal import DEFAULT_DIR

    assert JOURNAL_DIR == DEFAULT_DIR


def test_a_worker_that_crashes_is_a_failed_converge_and_the_loop_goes_on(
    sqlite_server, tmp_path, monkeypatch
):
    server = sqlite_server
    agent = make_agent(server, tmp_path)
    device_id = agent.enroll()
    agent._document, agent._etag = {"apiVersion": "jcstate/v1", "spec": {}}, "e1"
    crash = tmp_path / "crash.py"
    crash.write_text("import os, sys\nsys.stdin.read()\nos.abort()\n")
    monkeypatch.setattr(sys, "executable", _wrapper(tmp_path, crash))
    agent.converge()
    report = server.ctx.store.last_report(device_id)["body"]
    assert report["ok"] is False and "killed by SIGABRT" in report["error"]
    assert report["facts"] == {"error": report["error"]}
    monkeypatch.undo()
    agent.converge()  # the next converge works again
    report = server.ctx.store.last_report(device_id)["body"]
    assert report["ok"] is True and server.ctx.store.count_reports(device_id) == 2


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("sys.stdin.read(); print('hello, not json')", "something else than JSON: 'hello"),
        ("sys.stdin.read(); sys.exit(7)", "exited with status 7"),
        (
            "sys.stdin.read(); print(json.dumps({'error': 'module exploded'})); sys.exit(1)",
            "module exploded",
        ),
        ("sys.stdin.read(); print('[1, 2]')", "something else than JSON"),
    ],
)
def test_garbage_or_a_bad_status_is_a_clear_error(tmp_path, monkeypatch, script, error):
    agent = Agent(_offline_config(tmp_path))
    program = tmp_path / "w.py"
    program.write_text(f"import json, sys\n{script}\n")
    monkeypatch.setattr(sys, "executable", _wrapper(tmp_path, program))
    with pytest.raises(WorkerError, match=error.replace("(", r"\(")):
        agent._work({"mode": "facts"})
    agent.close()


def test_a_stuck_worker_is_killed_with_everything_it_started(tmp_path, monkeypatch):
    agent = Agent(_offline_config(tmp_path, worker_timeout=1.0))
    pids = tmp_path / "pids"
    program = tmp_path / "stuck.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess, sys, time
            sys.stdin.read()
            child = subprocess.Popen(["sleep", "300"])
            open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(300)
            """
        )
    )
    monkeypatch.setattr(sys, "executable", _wrapper(tmp_path, program))
    started = time.monotonic()
    with pytest.raises(WorkerError, match="ran longer than 1 s and was killed"):
        agent._work({"mode": "facts"})
    assert time.monotonic() - started < 15
    for pid in map(int, pids.read_text().split()):
        _assert_gone(pid)
    agent.close()


def test_a_worker_stops_when_the_agent_dies(tmp_path):
    """kill -9 of the agent mid-converge: its worker must not go on applying on its own."""
    program = textwrap.dedent(
        """
        import json, os, subprocess, sys
        read, keep = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time; from jcstate.agent import worker;"
             "worker._watch_agent(int(sys.argv[1])); time.sleep(300)", str(read)],
            pass_fds=(read,),
        )
        print(proc.pid, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert out.returncode == -9
    _assert_gone(int(out.stdout.split()[0]))


def test_secrets_reach_the_worker_through_stdin_only(tmp_path, monkeypatch):
    agent = Agent(_offline_config(tmp_path))
    agent._secrets = {"passwords": {"alice": "hunter2-very-secret"}}
    seen = tmp_path / "seen.json"
    program = tmp_path / "spy.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import json, os, sys
            request = json.load(sys.stdin)
            json.dump({{"request": request, "argv": sys.argv, "env": dict(os.environ)}},
                      open({str(seen)!r}, "w"))
            print(json.dumps({{"ok": True, "changed": False, "report": {{}}, "facts": {{}}}}))
            """
        )
    )
    monkeypatch.setattr(sys, "executable", _wrapper(tmp_path, program))
    answer = agent._work({"mode": "converge", "secrets": agent._secrets})
    assert answer["ok"] is True
    got = json.loads(seen.read_text())
    assert got["request"]["secrets"] == {"passwords": {"alice": "hunter2-very-secret"}}
    assert "hunter2" not in json.dumps(got["argv"]) + json.dumps(got["env"])
    agent.close()


def test_the_worker_answers_facts_and_keeps_stdout_for_the_answer(tmp_path):
    root = prepare_root(str(tmp_path / "host-a"))
    request = {"mode": "facts", "root": root, "logFile": None}
    out = subprocess.run(
        [sys.executable, "-m", "jcstate.agent.worker"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["facts"]["hostname"] == "host-a"
    bad = subprocess.run(
        [sys.executable, "-m", "jcstate.agent.worker"],
        input="{not json",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == worker.EXIT_BAD_REQUEST
    assert "bad request" in json.loads(bad.stdout)["error"]


def _offline_config(tmp_path: Path, **kw: Any) -> AgentConfig:
    return AgentConfig(
        server="http://127.0.0.1:9",
        state_dir=str(tmp_path / "state"),
        log_file=None,
        install_dir=str(tmp_path / "opt"),
        root=prepare_root(str(tmp_path / "root")),
        once=True,
        **kw,
    )


def _wrapper(tmp_path: Path, program: Path) -> str:
    """An "interpreter" that runs ``program`` whatever module it is asked to run."""
    wrapper = tmp_path / f"python-{program.stem}"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {program}\n")
    os.chmod(wrapper, 0o755)
    return str(wrapper)


def _assert_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return  # dead, waiting to be reaped by its parent
        except FileNotFoundError:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} still runs")


def test_the_worker_keeps_the_ledger_in_the_state_dir_and_reports_its_names(
    tmp_path: Path,
) -> None:
    root = prepare_root(str(tmp_path / "root"))
    state = tmp_path / "state"
    state.mkdir()
    request = {
        "mode": "converge",
        "root": root,
        "document": {"spec": {"users": [{"name": "alice", "uid": 1501, "shell": "/bin/sh"}]}},
        "stateDir": str(state),
    }
    answer = worker.run(request)
    assert answer["ok"] is True, answer
    owned = json.loads((state / "ledger.json").read_text())
    assert owned["users"]["alice"]["created"] is True
    assert oct((state / "ledger.json").stat().st_mode & 0o777) == "0o600"
    assert answer["facts"]["ledger"]["users"]["alice"]["created"] is True

    # a damaged ledger: the converge fails with the reason and changes nothing
    (state / "ledger.json").write_text('{"version": 1, "users": [')
    before = passwd(tmp_path)
    answer = worker.run(request | {"document": {"spec": {}}})
    assert answer["ok"] is False and "ownership ledger" in answer["error"], answer
    assert "nothing was changed" in answer["error"]
    assert passwd(tmp_path) == before
    assert "ownership ledger" in answer["facts"]["ledger"]["error"]
