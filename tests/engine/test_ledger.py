"""The ownership ledger file: atomic writes, a damaged file is an error that changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jcstate import engine
from jcstate.document import Document
from jcstate.errors import LedgerError
from jcstate.host import Host
from jcstate.ledger import Ledger, UserRecord


def _ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.load(Host(root=str(tmp_path)), "/var/lib/jcstate/ledger.json")
    ledger.users["dana"] = UserRecord(created=True, on_removal="delete", groups={"dev"})
    ledger.users["erin"] = UserRecord(admin_before=False)
    ledger.ssh_mfa_config = True
    ledger.totp_files = {"dana"}
    return ledger


def test_no_file_is_an_empty_ledger_and_loading_writes_nothing(tmp_path: Path) -> None:
    ledger = Ledger.load(Host(root=str(tmp_path)), "/var/lib/jcstate/ledger.json")
    assert ledger.users == {} and not ledger.ssh_mfa_config
    assert not (tmp_path / "var").exists()


def test_save_then_load_round_trips_mode_0600(tmp_path: Path) -> None:
    _ledger(tmp_path).save()
    path = tmp_path / "var/lib/jcstate/ledger.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = Ledger.load(Host(root=str(tmp_path)), "/var/lib/jcstate/ledger.json")
    assert again.to_dict() == _ledger(tmp_path).to_dict()
    assert again.users["dana"].on_removal == "delete"
    assert again.users["erin"].admin_before is False
    # atomic: no temporary file is left beside it
    assert os.listdir(path.parent) == ["ledger.json"]


def test_a_failed_write_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _ledger(tmp_path)
    ledger.save()
    path = tmp_path / "var/lib/jcstate/ledger.json"
    old = path.read_text()
    ledger.users.clear()

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(LedgerError, match="cannot write the ownership ledger"):
        ledger.save()
    assert path.read_text() == old
    assert os.listdir(path.parent) == ["ledger.json"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"version": 1, "users": {', "line 1 column"),
        ("[]", "not a version 1 ledger"),
        ('{"version": 1, "users": {"dana": {"onRemoval": "burn"}}}', "users.dana.onRemoval"),
        ('{"version": 1, "users": {"dana": {"groups": "dev"}}}', "users.dana.groups"),
        ('{"version": 1, "sshMfa": {"config": "yes"}}', "sshMfa"),
    ],
)
def test_a_damaged_ledger_is_a_clear_error(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "var/lib/jcstate/ledger.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(LedgerError) as caught:
        Ledger.load(Host(root=str(tmp_path)), "/var/lib/jcstate/ledger.json")
    message = str(caught.value)
    assert "/var/lib/jcstate/ledger.json" in message
    assert why in message and "nothing was changed" in message


def test_a_damaged_ledger_changes_nothing_end_to_end(tmp_path: Path) -> None:
    """The CLI loads the ledger before planning: a damaged one stops the run with exit 1."""
    from jcstate.cli import main

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name, text in {
        "passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "group": "root:x:0:\nsudo:x:27:\n",
        "shadow": "root:*:19000:0:99999:7:::\n",
        "gshadow": "root:*::\nsudo:*::\n",
        "os-release": "ID=debian\n",
    }.items():
        (root / "etc" / name).write_text(text)
    state = tmp_path / "ledger.json"
    state.write_text("{ not json")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: p}\n"
        "spec:\n  users:\n    - name: dana\n"
    )
    before = {p: p.read_text() for p in (root / "etc").iterdir()}
    code = main(["apply", str(policy), "--root", str(root), "--state", str(state)])
    assert code == 1
    assert {p: p.read_text() for p in (root / "etc").iterdir()} == before
    assert state.read_text() == "{ not json"


def test_plan_never_writes_the_ledger(tmp_path: Path) -> None:
    host = Host(root=str(tmp_path))
    ledger = Ledger.load(host, "/var/lib/jcstate/ledger.json")
    ledger.users["ghost"] = UserRecord(created=True)
    engine.plan(Document(spec={}), host, ledger=ledger)
    assert not (tmp_path / "var").exists()
    assert json.loads(ledger.text())["users"]["ghost"]["created"] is True
