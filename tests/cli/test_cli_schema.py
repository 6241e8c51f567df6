"""``jcstate schema --output DIR``: the shipped schemas, written byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jcstate.cli import main
from jcstate.document.schema import SCHEMA_FILES

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schema_writes_every_shipped_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "editor" / "schemas"
    assert main(["schema", "--output", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(SCHEMA_FILES)
    for name in written:
        assert (out / name).read_bytes() == (SCHEMAS / name).read_bytes()
        assert json.loads((out / name).read_text())["$id"].endswith(name)
    assert "7 schemas written" in capsys.readouterr().out


def test_schema_replaces_its_own_files_and_nothing_else(tmp_path: Path):
    (tmp_path / "policy.schema.json").write_text("{}")  # an older copy
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["schema", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "policy.schema.json").read_bytes() == (
        SCHEMAS / "policy.schema.json"
    ).read_bytes()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_schema_output_that_is_a_file_is_refused(tmp_path: Path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    assert main(["schema", "--output", str(target)]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "x"
