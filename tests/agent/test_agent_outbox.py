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
