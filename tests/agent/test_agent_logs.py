"""The agent's log without ``logging``: the same lines, the same file, and a clean handover.

The resident agent writes its log through :mod:`jcstate.agent.logs` while ``logging`` is not
loaded (pytest loads it: these tests hide it from ``sys.modules`` for the part that must run
without it). Lines must be exactly what ``logging.Formatter`` writes, the file must survive
logrotate, and once ``logging`` takes over (commands, the worker) everything goes through it to
the same file.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jcstate.agent import logs

CREATED = 1767270896.0421


@pytest.fixture
def light(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``jcstate.agent.logs`` in a fresh state, in a process that has not loaded logging."""
    for name, value in (("_file", None), ("_level", logs.WARNING), ("_echo", None)):
        monkeypatch.setattr(logs, name, value)
    monkeypatch.setattr(logs, "_std", None)
    monkeypatch.delitem(sys.modules, "logging")
    monkeypatch.setattr(logs.time, "time", lambda: CREATED)
    yield
    if logs._file is not None:
        logs._file.close()
    root = logging.getLogger("jcstate")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.NOTSET)


def _expected(fmt: str, level: int, name: str, msg: str, args: tuple[object, ...]) -> str:
    record = logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": msg,
            "args": args,
            "created": CREATED,
            "msecs": int((CREATED - int(CREATED)) * 1000) + 0.0,
        }
    )
    return logging.Formatter(fmt).format(record)


def test_lines_are_what_logging_writes(light, tmp_path):
    path = tmp_path / "log" / "jcstate.log"
    logs.setup(str(path), logs.INFO)
    log = logs.getLogger("jcstate.agent")
    log.info("enrolled as device %s (%s)", "d-1", "active")
    log.warning("server unreachable: %s", "refused")
    log.error("plain %s")
    log.debug("not at INFO")
    assert "logging" not in sys.modules
    expected = [
        _expected(
            logs.FORMAT,
            logging.INFO,
            "jcstate.agent",
            "enrolled as device %s (%s)",
            ("d-1", "active"),
        ),
        _expected(
            logs.FORMAT, logging.WARNING, "jcstate.agent", "server unreachable: %s", ("refused",)
        ),
        _expected(logs.FORMAT, logging.ERROR, "jcstate.agent", "plain %s", ()),
    ]
    assert path.read_text().splitlines() == expected
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"


def test_the_file_is_reopened_after_logrotate_moves_it(light, tmp_path):
    path = tmp_path / "jcstate.log"
    logs.setup(str(path))
    log = logs.getLogger("jcstate.agent")
    log.info("before rotation")
    os.rename(path, tmp_path / "jcstate.log.1")
    log.info("after rotation")
    assert "after rotation" in path.read_text() and "before" not in path.read_text()
    assert "before rotation" in (tmp_path / "jcstate.log.1").read_text()


def test_without_a_file_warnings_reach_stderr_as_logging_last_resort_writes_them(light, capsys):
    logs.setup(None)
    log = logs.getLogger("jcstate.agent")
    log.info("quiet")
    log.warning("loud %d", 1)
    assert capsys.readouterr().err == "loud 1\n"


def test_the_jcstate_command_echoes_the_log_on_stderr(light, tmp_path, capsys):
    logs.setup(str(tmp_path / "jcstate.log"), logs.INFO, echo=logs.WARNING)
    logs.getLogger("jcstate.agent").info("starting %s", "now")
    assert capsys.readouterr().err == "INFO jcstate.agent: starting now\n"
    assert (tmp_path / "jcstate.log").read_text().endswith("INFO jcstate.agent: starting now\n")


def test_logging_takes_over_with_the_same_file_and_level(light, tmp_path, monkeypatch):
    path = tmp_path / "jcstate.log"
    logs.setup(str(path), logs.INFO)
    log = logs.getLogger("jcstate.agent")
    log.info("first, without logging")
    monkeypatch.setitem(sys.modules, "logging", logging)
    logs.use_logging()  # what the command machinery does before it loads
    logging.getLogger("jcstate.modules.commands.execution").info("command c1: lock")
    logging.getLogger("jcstate.host").debug("below the level")
    log.info("then through logging")
    lines = path.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO jcstate.agent: first, without logging",
        "INFO jcstate.modules.commands.execution: command c1: lock",
        "INFO jcstate.agent: then through logging",
    ]
    assert logs._file is None and logs.level() == logging.INFO


def test_logging_loaded_unannounced_takes_over_at_the_next_line(light, tmp_path, monkeypatch):
    path = tmp_path / "jcstate.log"
    logs.setup(str(path), logs.INFO)
    monkeypatch.setitem(sys.modules, "logging", logging)  # some module imported it
    logs.getLogger("jcstate.agent").info("one line")
    logging.getLogger("jcstate.host").info("from logging")
    assert logs._std is logging
    assert [line.split(" ", 2)[2] for line in path.read_text().splitlines()] == [
        "INFO jcstate.agent: one line",
        "INFO jcstate.host: from logging",
    ]


def test_the_resident_agent_logs_without_importing_logging(tmp_path):
    code = (
        "import sys\n"
        "from jcstate.agent.loop import setup_logging, log\n"
        f"setup_logging({str(tmp_path / 'a.log')!r})\n"
        "log.info('hello %s', 'there')\n"
        "print('logging' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert (tmp_path / "a.log").read_text().endswith(" INFO jcstate.agent: hello there\n")


COMMAND_AGENT = """\
import json, sys
sys.path.insert(0, sys.argv[5])
from recording_actions import RecordingActions
from jcstate.agent.loop import Agent, AgentConfig, setup_logging

url, key, base, root = sys.argv[1:5]
setup_logging(base + "/agent.log")
config = AgentConfig(server=url, connect_key=key, state_dir=base + "/state",
                     log_file=base + "/agent.log", install_dir=base + "/opt", root=root,
                     wait=0.0, once=True)
before = "logging" in sys.modules
code = Agent(config, actions=RecordingActions()).run()
print(json.dumps({"code": code, "before": before, "after": "logging" in sys.modules}))
"""


def test_a_command_hands_the_agent_log_over_to_logging(sqlite_server, tmp_path):
    """A real agent process: no logging until a command runs; then the command machinery's
    lines (it logs with logging) and the agent's own land in the same file."""
    from recording_actions import prepare_root

    server = sqlite_server
    root = prepare_root(str(tmp_path / "root"))
    argv = [sys.executable, "-c", COMMAND_AGENT, server.url, server.connect_key, str(tmp_path)]
    argv += [root, str(Path(__file__).parent)]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"code": 0, "before": False, "after": False}
    [device] = server.ctx.store.list_devices()
    admin = server.admin("administrator")
    command = admin.call("POST", f"/api/v1/devices/{device['id']}/commands/lock", {})
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"code": 0, "before": False, "after": True}
    text = (tmp_path / "agent.log").read_text()
    assert f" INFO jcstate.modules.commands.execution: command {command['id']}: lock\n" in text
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "jcstate.agent: jcstate agent" in line]
    assert len(starts) == 2 and all(line.count(" INFO ") == 1 for line in lines)


def test_json_lines_without_logging_and_through_it(light, tmp_path, monkeypatch):
    path = tmp_path / "jcstate.log"
    logs.setup(str(path), logs.INFO, json_lines=True)
    logs.getLogger("jcstate.agent").info("converged %s", "r1")
    monkeypatch.setitem(sys.modules, "logging", logging)
    logs.use_logging()
    logging.getLogger("jcstate.host").warning('quote " and\nnewline')
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # one object per line, a newline in a message included
    first, second = (json.loads(line) for line in lines)
    assert first == {
        "time": "2026-01-01T12:34:56.042Z",
        "level": "INFO",
        "logger": "jcstate.agent",
        "message": "converged r1",
    }
    assert (second["level"], second["logger"]) == ("WARNING", "jcstate.host")
    assert second["message"] == 'quote " and\nnewline'
    assert logs.line_format() == "json"


def test_the_agent_process_logs_json_and_no_secret(sqlite_server, tmp_path):
    """A real agent (``python -m jcstate.agent --log-format json --once``): enrolls, runs a
    command (the worker logs through ``logging``), every line of its log is a JSON object, and
    neither the connect key nor its private key appears."""
    server = sqlite_server
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\n")
    empty = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: base}\nspec: {}\n"
    server.admin().call("POST", "/api/v1/revisions", {"files": {"base.yaml": empty}})
    log_file = tmp_path / "agent.log"
    argv = [sys.executable, "-m", "jcstate.agent", "--server", server.url]
    argv += ["--connect-key", server.connect_key, "--state-dir", str(tmp_path / "state")]
    argv += ["--log-file", str(log_file), "--install-dir", str(tmp_path / "opt")]
    argv += ["--root", str(root), "--once", "--log-format", "json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(line["message"].startswith("enrolled as device") for line in lines)
    assert any(line["message"].startswith("converged") for line in lines)
    assert {line["logger"] for line in lines} >= {"jcstate.agent"}
    text = log_file.read_text() + out.stderr
    assert server.connect_key not in text
    key = (tmp_path / "state" / "key.pem").read_text()
    assert key.strip().splitlines()[1] not in text
    bad = subprocess.run([*argv[:-1], "yaml"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--log-format yaml" in bad.stderr


def test_a_full_disk_loses_lines_but_stops_nothing(light, tmp_path, monkeypatch, capsys):
    """The log file on a full disk: each line fails (said on stderr), and neither a flush nor
    the handover to logging raises with the refused lines still buffered (the agent would
    die at its first queued command)."""
    path = tmp_path / "jcstate.log"
    logs.setup(str(path), logs.INFO)
    assert logs._file is not None
    logs._file.stream.close()
    logs._file.stream = open("/dev/full", "a", encoding="utf-8")  # every write: ENOSPC
    log = logs.getLogger("jcstate.agent")
    log.error("refused by the disk")
    assert "No space left on device" in capsys.readouterr().err
    logs.flush()
    monkeypatch.setitem(sys.modules, "logging", logging)
    logs.use_logging()  # what the command machinery does before it loads
    log.info("space is back")
    assert path.read_text().splitlines()[-1].endswith("INFO jcstate.agent: space is back")
