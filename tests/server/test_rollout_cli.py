"""``jcstate push --canary`` and ``jcstate rollout status|promote|abort`` against a live server
(issue 15), with simulated devices that report converges on the etag they were sent."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import live
import pytest

from jcstate.cli import main

V1 = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
spec:
  users:
    - {name: alice, uid: 1501, shell: /bin/bash}
"""


def jcstate(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _report(client: Any, ok: bool) -> int:
    work = client.work("", 0)
    client.report({"reportId": os.urandom(8).hex(), "etag": work["etag"], "ok": ok})
    return work["revision"]


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: Any) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    with live.live_server(f"sqlite:///{tmp_path}/j.db", str(tmp_path), rollout_check=0.2) as srv:
        monkeypatch.setenv("JCSTATE_SERVER", srv.url)
        monkeypatch.setenv("JCSTATE_TOKEN", srv.token("manager"))
        clients = {}
        for name in ("web1", "web2", "web3"):
            clients[name], device_id = srv.device(name)
            ring = "0" if name == "web1" else "1"
            srv.admin().call(
                "PUT", f"/api/v1/devices/{device_id}/labels", {"labels": {"ring": ring}}
            )
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "base.yaml").write_text(V1)
        assert main(["push", str(repo)]) == 0
        for client in clients.values():
            _report(client, True)
        (repo / "base.yaml").write_text(V1.replace("/bin/bash", "/bin/zsh"))
        yield srv, clients, repo


def test_push_canary_status_and_abort(fleet, capsys):
    server, clients, repo = fleet
    code, out, err = jcstate(capsys, "push", str(repo), "--wait", "5m")
    assert code == 1 and "--wait and --halt-on go with --canary" in err
    code, out, err = jcstate(capsys, "push", str(repo), "--canary", "label:ring=0", "--dry-run")
    assert code == 2
    lines = out.splitlines()
    wave1 = lines.index("== wave 1, canary (label:ring=0): 1 devices, at once")
    assert lines[wave1 + 1].startswith("web1 (")
    assert any(line.startswith("== wave 2, the rest: 2 devices") for line in lines)
    code, out, err = jcstate(capsys, "push", str(repo), "--canary", "label:ring=0", "--wait", "1m")
    assert code == 0, err
    assert "stored revision 2" in out and "staged rollout 1" in out
    assert "the rest stays on revision 1 until every canary has converged ok for 1m" in out
    assert [_report(c, True) for c in clients.values()] == [2, 1, 1]

    code, out, _ = jcstate(capsys, "rollout", "status")
    assert code == 0 and "rollout:   1 (canary)" in out
    table = [line.split() for line in out.splitlines() if line.startswith(("canary ", "rest "))]
    assert table == [
        ["canary", "2", "1", "0", "1", "0", "0"],
        ["rest", "1", "2", "0", "2", "0", "0"],
    ]
    code, out, err = jcstate(capsys, "push", str(repo))
    assert code == 1 and "rollout 1 of revision 2 is in progress" in err
    assert "jcstate rollout abort" in err

    _report(clients["web1"], False)
    deadline = time.monotonic() + 10
    while jcstate(capsys, "rollout", "status")[0] != 1:  # exit 1: halted
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, out, _ = jcstate(capsys, "rollout", "status", "--output", "json")
    assert code == 1 and json.loads(out)["state"] == "halted"
    code, out, err = jcstate(capsys, "rollout", "promote", "--yes")
    assert code == 1 and "force=true" in err
    code, out, _ = jcstate(capsys, "rollout", "abort", "-m", "zsh missing")
    assert code == 0
    assert "every device, canaries included, goes back to revision 1" in out
    assert [_report(c, True) for c in clients.values()] == [1, 1, 1]


def test_promote_asks_unless_yes(fleet, capsys):
    server, clients, repo = fleet
    assert jcstate(capsys, "push", str(repo), "--canary", "34%", "--wait", "1h")[0] == 0
    code, out, err = jcstate(capsys, "rollout", "promote")  # no terminal to ask on
    assert code == 1 and "add --yes" in err
    code, out, _ = jcstate(capsys, "rollout", "promote", "--yes", "-m", "window")
    assert code == 0 and "every device gets revision 2" in out
    assert {_report(c, True) for c in clients.values()} == {2}
    code, out, _ = jcstate(capsys, "rollout", "status")
    assert code == 0 and "(promoted)" in out and "reason:    window" in out
