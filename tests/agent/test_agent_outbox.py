"""The outbox keeps reports on disk, oldest first, until acknowledged."""

from __future__ import annotations

import json
import os
import stat

from jcstate.agent.outbox import Outbox


def test_reports_survive_a_new_process_and_leave_only_when_done(tmp_path):
    box = Outbox(str(tmp_path / "outbox"))
    box.put({"reportId": "first", "ok": True})
    box.put({"reportId": "second", "ok": False})
    again = Outbox(str(tmp_path / "outbox"))  # as after kill -9 and restart
    pending = list(again.pending())
    assert [json.loads(p)["reportId"] for _, p in pending] == ["first", "second"]
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f, _ in pending)
    again.done(pending[0][0])
    assert [json.loads(p)["reportId"] for _, p in again.pending()] == ["second"]
    assert len(again) == 1


def test_a_torn_file_is_set_aside_not_resent(tmp_path):
    box = Outbox(str(tmp_path / "outbox"))
    (tmp_path / "outbox" / "00000000000000000001-torn.json").write_text('{"reportId": "x"')
    (tmp_path / "outbox" / "00000000000000000002-list.json").write_text("[1, 2]")
    box.put({"reportId": "good"})
    assert [json.loads(p)["reportId"] for _, p in box.pending()] == ["good"]
    assert (tmp_path / "outbox" / "00000000000000000001-torn.json.bad").exists()
    assert (tmp_path / "outbox" / "00000000000000000002-list.json.bad").exists()


def test_reports_are_sent_as_the_bytes_on_disk(tmp_path):
    """No parse and re-serialisation in the resident agent: what was written is what goes."""
    box = Outbox(str(tmp_path / "outbox"))
    written = box.put({"reportId": "r1", "report": {"changes": [{"name": "ü"}] * 3}})
    [(file, data)] = list(box.pending())
    with open(written, "rb") as f:
        assert file == written and data == f.read()


def test_a_report_the_disk_refuses_is_held_sent_and_written_later(tmp_path, monkeypatch):
    import errno

    box = Outbox(str(tmp_path / "outbox"))
    box.put({"reportId": "first"})
    real = Outbox._write

    def full(self, final, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Outbox, "_write", full)
    box.put({"reportId": "held"})  # does not raise
    assert [json.loads(p)["reportId"] for _, p in box.pending()] == ["first", "held"]
    assert len(box) == 2 and len(os.listdir(tmp_path / "outbox")) == 1
    monkeypatch.setattr(Outbox, "_write", real)
    assert [json.loads(p)["reportId"] for _, p in Outbox(str(tmp_path / "x")).pending()] == []
    pending = list(box.pending())  # space is back: the held report is written now
    assert len(os.listdir(tmp_path / "outbox")) == 2
    for file, _ in pending:
        box.done(file)
    assert len(box) == 0
