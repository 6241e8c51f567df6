"""``jcstate command lock|restart|shutdown|erase|run|show|list|cancel`` against a live server."""

from __future__ import annotations

import io
import json

from jcstate.cli import main


def jcstate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_issue_show_list_cancel(sqlite_server, capsys, monkeypatch):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("manager"))
    client, device_id = server.device("web1")

    code, out, err = jcstate(capsys, "command", "lock", "web1")
    assert code == 0, err
    lock_id = out.strip()  # the new command's id, alone on stdout
    assert lock_id.startswith("c-") and "queued lock for web1" in err
    code, out, err = jcstate(capsys, "command", "run", "--timeout", "30", "web1", "--", "id", "-u")
    run_id = out.strip()
    code, out, _ = jcstate(
        capsys,
        "command",
        "restart",
        "--delay",
        "5",
        "--message",
        "patch",
        device_id,
        "--output",
        "json",
    )
    restart = json.loads(out)
    assert (restart["action"], restart["delay"], restart["warning"]) == ("restart", 5, "patch")

    [lock, run, _] = client.work("", 0, 0)["commands"]
    assert run["run"] == {"argv": ["id", "-u"], "timeout": 30}
    client.command_results(
        [
            {
                "id": run_id,
                "action": "run",
                "status": "succeeded",
                "exitCode": 0,
                "stdout": "0\n",
                "duration": 0.01,
            },
        ]
    )
    code, out, _ = jcstate(capsys, "command", "show", run_id)
    assert code == 0
    assert "state:     succeeded" in out and "exit code: 0" in out
    assert "action:    run: id -u" in out and "stdout (last 1 lines):\n  0" in out

    code, out, _ = jcstate(capsys, "command", "list", "--device", "web1", "--output", "json")
    assert [c["id"] for c in json.loads(out)] == [restart["id"], run_id, lock_id]
    code, out, _ = jcstate(capsys, "command", "list")
    assert out.splitlines()[0].split() == [
        "ID",
        "DEVICE",
        "ACTION",
        "STATE",
        "EXIT",
        "CREATED",
        "FINISHED",
    ]
    assert run_id in out and "succeeded" in out

    code, out, _ = jcstate(capsys, "command", "show", lock_id)
    assert "state:     queued (sent, awaiting device)" in out  # sent, not acknowledged
    client.work("", 0, restart["seq"])  # the device's next request acknowledges what it has
    code, out, _ = jcstate(capsys, "command", "cancel", lock_id)
    assert out.strip() == f"{lock_id}: cancel-requested"

    code, out, _ = jcstate(capsys, "device", "show", "web1")
    assert "activity:     restarting" in out
    assert "commands (newest first):" in out and run_id in out
    [run_line] = [line for line in out.splitlines() if run_id in line]
    assert run_line.split()[-1] == "0"  # the output's tail

    code, out, err = jcstate(capsys, "command", "erase", "web1", "--confirm", device_id)
    assert code == 1 and "administrator" in err


def test_erase_asks_for_the_device_id_typed_back(sqlite_server, capsys, monkeypatch):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.token("administrator"))
    _, device_id = server.device("stolen")
    monkeypatch.setattr("sys.stdin", io.StringIO("stolen\n"))  # the hostname is not enough
    code, out, err = jcstate(capsys, "command", "erase", "stolen")
    assert code == 1 and out == ""
    assert f"Type the device id ({device_id})" in err and "confirm" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = jcstate(capsys, "command", "erase", "stolen")
    assert code == 1 and "nothing typed" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(device_id + "\n"))
    code, out, err = jcstate(capsys, "command", "erase", "stolen")
    assert code == 0, err
    erase_id = out.strip()
    rows = server.ctx.queue.list(device_id)
    assert [(r["id"], r["action"]) for r in rows] == [(erase_id, "erase")]
    outcomes = [
        a["outcome"]
        for a in reversed(server.ctx.store.list_audit())
        if a["action"].endswith("/commands/erase")
    ]
    assert outcomes == ["refused", "ok"]  # the mistyped attempt is in the audit log too
