"""Fleet operations through the ``jcstate`` CLI against a live server (issue 12): filters and
labels in text, bulk commands with confirmation, ``--wait`` exit codes, revisions and rollback,
audit text, tokens, TOTP, and the scripting conventions (closed pipe, Ctrl-C, completion,
an example in every ``--help``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jcstate.cli import build_parser, main
from jcstate.cli.completion import command_paths

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""
FACTS = {"users": [{"name": "alice", "uid": 1501, "shell": "/bin/bash", "home": "/home/alice"}]}


def jcstate(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def fleet(sqlite_server, monkeypatch):
    server = sqlite_server
    monkeypatch.setenv("JCSTATE_SERVER", server.url)
    monkeypatch.setenv("JCSTATE_TOKEN", server.admin_token)
    clients = {}
    for name, labels in (("web1", "team=eng"), ("web2", "team=eng"), ("db1", "team=ops")):
        clients[name], device_id = server.device(name)
        clients[name].work("", 0)
        server.admin().call("PUT", f"/api/v1/devices/{device_id}/labels", {"labels": {}})
        key, value = labels.split("=")
        server.admin().call("PATCH", f"/api/v1/devices/{name}/labels", {"add": {key: value}})
    return server, clients


def test_devices_filters_and_labels_in_text(fleet, capsys):
    code, out, _ = jcstate(capsys, "devices", "--label", "team=eng")
    lines = out.splitlines()
    assert code == 0 and "LABELS" in lines[0] and len(lines) == 3
    assert "team=eng" in lines[1] and "{" not in out  # never a Python dict
    code, out, _ = jcstate(capsys, "device", "label", "web1", "add", "site=paris", "ring=canary")
    assert code == 0 and "ring=canary,site=paris,team=eng" in out
    code, out, _ = jcstate(capsys, "device", "label", "web1", "remove", "ring")
    assert "site=paris,team=eng" in out and "ring" not in out
    code, out, _ = jcstate(capsys, "device", "show", "web1")
    assert "labels:       site=paris,team=eng" in out
    code, out, _ = jcstate(capsys, "devices", "--search", "web", "--sort=-hostname")
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["web2", "web1"]
    code, out, _ = jcstate(capsys, "devices", "--limit", "1", "--page", "2", "--output", "json")
    assert [d["hostname"] for d in json.loads(out)] == ["web1"]
    # the old replace-all form still works, and says what to use instead
    code, out, err = jcstate(capsys, "device", "labels", "db1", "team=ops", "site=lyon")
    assert code == 0 and "deprecated" in err and "site=lyon,team=ops" in out
    code, out, _ = jcstate(capsys, "device", "label", "db1", "set", "team=ops")
    assert "site" not in out
    # bulk: refused without a terminal unless --yes
    code, _, err = jcstate(capsys, "device", "label", "--where", "team=eng", "add", "x=1")
    assert code == 1 and "--yes" in err
    code, out, _ = jcstate(
        capsys, "device", "label", "--where", "team=eng", "add", "site=lyon", "--yes"
    )
    assert code == 0 and "2 devices" in out
    code, out, _ = jcstate(capsys, "devices", "--label", "site=lyon", "--output", "json")
    assert sorted(d["hostname"] for d in json.loads(out)) == ["web1", "web2"]


def test_bulk_command_batch_and_erase_refused(fleet, capsys):
    server, clients = fleet
    code, _, err = jcstate(capsys, "command", "lock", "--where", "team=eng")
    assert code == 1 and "web1, web2" in err and "--yes" in err
    assert server.admin().call("GET", "/api/v1/commands") == []
    code, out, err = jcstate(
        capsys, "command", "run", "--where", "team=eng", "--yes", "--", "uname", "-a"
    )
    batch = out.strip()
    assert code == 0 and batch.startswith("b-") and "2 devices" in err
    for name in ("web1", "web2"):
        [cmd] = clients[name].work("", 0, 0)["commands"]
        assert cmd["run"]["argv"] == ["uname", "-a"]
        status = "succeeded" if name == "web1" else "failed"
        clients[name].command_results(
            [{"id": cmd["id"], "action": "run", "status": status, "exitCode": int(name[-1]) - 1}]
        )
    code, out, _ = jcstate(capsys, "command", "show", batch)
    assert code == 1 and "1 failed, 1 succeeded" in out
    code, out, _ = jcstate(capsys, "command", "list", "--batch", batch, "--state", "failed")
    assert "web2" in out and "web1" not in out
    code, _, err = jcstate(capsys, "command", "erase", "--where", "team=eng", "--yes")
    assert code == 1 and "one device at a time" in err
    for argv in (["web1", "--where", "team=eng"], ["--where", "team=eng", "web1"]):
        code, _, err = jcstate(capsys, "command", "run", *argv, "--yes", "--", "uname")
        assert code == 1 and "not both" in err


def _answer_later(client, status, stdout="", stderr="", delay=0.5):
    def run():
        time.sleep(delay)
        [cmd] = client.work("", 0, 0)["commands"]
        client.command_results(
            [
                {
                    "id": cmd["id"],
                    "action": cmd["action"],
                    "status": status,
                    "exitCode": 0 if status == "succeeded" else 3,
                    "stdout": stdout,
                    "stderr": stderr,
                }
            ]
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_wait_exits_with_the_commands_outcome(fleet, capsys):
    server, clients = fleet
    waiter = _answer_later(clients["web1"], "succeeded", stdout="Linux web1\n")
    code, out, err = jcstate(capsys, "command", "run", "web1", "--wait", "--", "uname", "-a")
    waiter.join()
    assert code == 0 and out == "Linux web1\n" and "succeeded (exit 0)" in err
    waiter = _answer_later(clients["web2"], "failed", stderr="boom\n")
    code, out, err = jcstate(capsys, "command", "run", "web2", "--wait", "--", "false")
    waiter.join()
    assert code == 1 and "boom" in err and "failed (exit 3)" in err
    code, _, err = jcstate(capsys, "command", "lock", "db1", "--wait", "--timeout", "0.5")
    assert code == 124 and "still queued" in err
    [lock] = server.admin().call("GET", "/api/v1/commands", device="db1")
    clients["db1"].work("", 0, 0)
    clients["db1"].command_results([{"id": lock["id"], "action": "lock", "status": "failed"}])
    code, out, _ = jcstate(capsys, "command", "show", lock["id"])
    assert code == 1 and "state:     failed" in out


def test_revisions_diff_rollback_and_push_exit_codes(fleet, tmp_path, capsys):
    server, clients = fleet
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "base.yaml").write_text(POLICY)
    code, out, _ = jcstate(capsys, "push", str(repo), "-m", "alice", "--commit", "0123456789abcdef")
    assert code == 0 and "stored revision 1 (3 devices)" in out
    for n, client in enumerate(clients.values()):
        answer = client.work("", 0)
        client.report(
            {"reportId": f"report-{n:04}", "etag": answer["etag"], "ok": True, "facts": FACTS}
        )
    code, out, _ = jcstate(capsys, "push", str(repo), "--dry-run")
    assert code == 0 and out.count("(no change)") == 3  # nothing would change: exit 0
    (repo / "base.yaml").write_text(POLICY.replace("1501", "1502"))
    code, out, _ = jcstate(capsys, "push", str(repo), "--dry-run")
    assert code == 2 and "uid 1501 → 1502" in out  # like `plan`: 2 = changes
    code, out, _ = jcstate(capsys, "push", str(repo), "-m", "new uid")
    assert code == 0
    code, out, _ = jcstate(capsys, "revisions")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "WHEN", "WHO"]
    assert lines[2].startswith("1 ") and "0123456789ab" in lines[2] and "base.yaml" in lines[2]
    code, out, _ = jcstate(capsys, "revision", "diff", "1", "2")
    assert code == 1 and "-    - {name: alice, uid: 1501" in out and "+++ 2/base.yaml" in out
    code, out, _ = jcstate(capsys, "revision", "show", "1")
    assert "commit:    0123456789abcdef" in out and "base.yaml" in out
    code, out, _ = jcstate(capsys, "revision", "rollback", "1", "--dry-run")
    assert code == 0 and out.count("(no change)") == 3  # the devices still report uid 1501
    code, _, err = jcstate(capsys, "revision", "rollback", "1")
    assert code == 1 and "--yes" in err  # no terminal to confirm on
    code, out, _ = jcstate(capsys, "revision", "rollback", "1", "--yes")
    assert code == 0 and "stored revision 3 (the files of revision 1" in out
    code, out, _ = jcstate(capsys, "revision", "diff", "1", "3")
    assert code == 0 and out == ""


def test_audit_tokens_and_totp_in_text(fleet, capsys):
    server, _ = fleet
    code, out, _ = jcstate(
        capsys, "token", "create", "--role", "manager", "--name", "ci", "--expires", "30d"
    )
    token = out.splitlines()[-1]
    assert code == 0 and "ci (manager, expires 20" in out
    code, out, _ = jcstate(capsys, "token", "list")
    assert "LAST USED" in out and "ci" in out
    token_id = [line.split()[0] for line in out.splitlines() if " ci " in line][0]
    jcstate(capsys, "token", "revoke", token_id)
    code, _, err = jcstate(capsys, "devices", "--token", token)
    assert code == 1 and "was revoked at" in err
    code, out, _ = jcstate(capsys, "audit", "--actor", "ci")
    assert "denied (revoked)" in out and " ci " in out
    code, out, _ = jcstate(capsys, "audit", "--action", "token.revoke", "--output", "json")
    assert [a["target"] for a in json.loads(out)] == [token_id]
    code, _, err = jcstate(capsys, "totp", "enroll", "alice")
    assert code == 1 and "--force" not in err and "force=true" in err
    code, out, err = jcstate(capsys, "totp", "enroll", "alice", "--force")
    assert code == 0 and "devices that get this secret: none yet" in err
    code, _, err = jcstate(capsys, "totp", "enroll", "alice")
    assert code == 1 and "already has a TOTP secret" in err
    code, out, err = jcstate(capsys, "totp", "enroll", "alice", "--rotate")
    assert code == 0 and "rotated" in err
    code, out, _ = jcstate(capsys, "totp", "list")
    assert out.splitlines()[1].startswith("alice ")
    code, out, _ = jcstate(capsys, "totp", "remove", "alice")
    assert code == 0 and "removed alice's TOTP secret" in out
    code, out, _ = jcstate(capsys, "totp", "list", "--output", "json")
    assert json.loads(out) == []


def _cli(*argv: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jcstate", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        **kw,
    )


def _interactive_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_closed_pipe_and_ctrl_c_end_without_a_traceback(fleet, tmp_path):
    server, _ = fleet
    env = {"JCSTATE_SERVER": server.url, "JCSTATE_TOKEN": server.admin_token}
    for _ in range(30):  # enough lines that the writer outlives its reader
        server.admin().call("POST", "/api/v1/commands/batch/lock", {"where": {"team": "eng"}})
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f"set -o pipefail; {sys.executable} -m jcstate command list --limit 1000 | head -1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert shell.stdout.startswith("ID ") and "Traceback" not in shell.stderr, shell.stderr
    # Ctrl-C as a terminal delivers it: the shell starts a foreground job with SIGINT at its
    # default and unblocked, whatever the test process (pytest, after hundreds of tests) has
    proc = _cli("command", "lock", "db1", "--wait", env=env, preexec_fn=_interactive_sigint)
    time.sleep(3)  # queued, and never answered: --wait polls
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        proc.kill()
        masks = [line for line in status.splitlines() if line.startswith(("Sig", "State"))]
        raise AssertionError(f"still running 30 s after SIGINT: {masks}") from None
    assert proc.returncode == 130 and "Traceback" not in err.decode(), err.decode()


def test_bash_completion_loads_and_completes_subcommands(tmp_path):
    script = tmp_path / "jcstate.bash"
    proc = _cli("completion", "bash")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    script.write_bytes(out)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        run = subprocess.run(
            [
                "bash",
                "-c",
                f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
                '_jcstate; printf "%s\\n" "${COMPREPLY[@]}"',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 0 and not run.stderr, run.stderr
        return run.stdout.split()

    assert complete("jcstate", "rev") == ["revisions", "revision"]
    assert complete("jcstate", "device", "la") == ["labels", "label"]
    assert complete("jcstate", "--verbose", "command", "run", "--wa") == [
        "--wait",
        "--wait-timeout",
    ]
    assert "--where" in complete("jcstate", "device", "label", "--")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed (.ci/run installs it)")
def test_zsh_completion_loads_and_offers_subcommands(tmp_path):
    script = tmp_path / "_jcstate"
    script.write_bytes(_cli("completion", "zsh").communicate(timeout=60)[0])
    # compadd stands in for the completion system, printing what it was offered
    run = subprocess.run(
        [
            "zsh",
            "-f",
            "-c",
            f"autoload -U compinit; compinit -u -d {tmp_path}/zcompdump; source {script}; "
            "print -r -- $_comps[jcstate]; compadd() {{ print -r -- $@ }}; "
            "words=(jcstate device la); CURRENT=3; _jcstate; "
            "words=(jcstate command run --wa); CURRENT=4; _jcstate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and not run.stderr, run.stderr
    registered, subs, opts = run.stdout.splitlines()
    assert registered == "_jcstate"
    assert {"labels", "label", "show"} <= set(subs.split())
    assert {"--wait", "--wait-timeout", "--where"} <= set(opts.split())


def test_every_subcommand_has_help_with_an_example(capsys):
    parser = build_parser()
    leaves = [(p, sub) for p, sub in command_paths(parser) if p and sub.get_default("handler")]
    assert len(leaves) > 40
    missing = [" ".join(p) for p, sub in leaves if not (sub.epilog or "").startswith("example:")]
    assert not missing, f"no example in --help of: {missing}"
    for path, sub in leaves:
        text = sub.format_help()
        assert "example:\n  jcstate " in text or "example:\n  source <(" in text, path
        # the example names the command it is the example of
        assert " ".join(path) in sub.epilog, path


@pytest.mark.parametrize("doc", ["docs/cli.md"])
def test_exit_codes_are_documented_per_command(doc):
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    for command in ("push --dry-run", "command show", "--wait", "revision diff", "plan"):
        assert command in text, command
    for code in ("124", "130", "141"):
        assert code in text
