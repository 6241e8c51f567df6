"""The outbox keeps reports on disk, oldest first, until acknowledged."""

from __future__ import annotations

import os
import stat

from jcstate.agent.outbox import Outbox


def test_reports_survive_a_new_process_and_leave_only_when_done(tmp_path):
    box = Outbox(str(tmp_path / "outbox"))
    box.put({"reportId": "first", "ok": True})
    box.put({"reportId": "second", "ok": False})
    again = Outbox(str(tmp_path / "outbox"))  # as after kill -9 and restart
    pending = list(again.pending())
    assert [p["reportId"] for _, p in pending] == ["first", "second"]
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f, _ in pending)
    again.done(pending[0][0])
    assert [p["reportId"] for _, p in again.pending()] == ["second"]
    assert len(again) == 1


def test_a_torn_file_is_set_aside_not_resent(tmp_path):
    box = Outbox(str(tmp_path / "outbox"))
    (tmp_path / "outbox" / "00000000000000000001-torn.json").write_text('{"reportId": "x"')
    box.put({"reportId": "good"})
    assert [p["reportId"] for _, p in box.pending()] == ["good"]
    assert (tmp_path / "outbox" / "00000000000000000001-torn.json.bad").exists()
