"""The safe YAML loader: plain data, true positions, and every refusal (fast)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jcstate.document.loader import (
    MAX_ALIAS_NODES,
    MAX_BYTES,
    MAX_DEPTH,
    discover,
    load_file,
    load_text,
)


def test_positions_of_values_and_keys() -> None:
    text = "a: 1\nb:\n  - x\n  - {c: 'd'}\n"
    (doc,), problems = load_text(text, "f.yaml")
    assert problems == []
    assert doc.data == {"a": 1, "b": ["x", {"c": "d"}]}
    pos = doc.positions
    assert pos.of(("a",)) == (1, 4)
    assert pos.of(("a",), key=True) == (1, 1)
    assert pos.of(("b", 0)) == (3, 5)
    assert pos.of(("b", 1, "c")) == (4, 9)
    assert pos.of(("b", 1, "c"), key=True) == (4, 6)
    # a path with no entry falls back to its nearest ancestor
    assert pos.of(("b", 1, "missing")) == (4, 5)
    assert str(pos.problem(("b", 0), "m")) == "f.yaml:3:5: m"


def test_scalars_resolve_like_safe_load_but_dates_stay_text() -> None:
    text = "d: 2027-06-30\nt: 2026-12-01T00:00:00Z\ni: 0x1F\nf: 1.5\nb: yes\nn: ~\nq: '12'\non: x\n"
    (doc,), _ = load_text(text, "f.yaml")
    assert doc.data == {
        "d": "2027-06-30",
        "t": "2026-12-01T00:00:00Z",
        "i": 31,
        "f": 1.5,
        "b": True,
        "n": None,
        "q": "12",
        "on": "x",  # keys are always the text written
    }


def test_several_documents_and_empty_ones() -> None:
    docs, problems = load_text("a: 1\n---\n# nothing\n---\nb: 2\n", "f.yaml")
    assert problems == []
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert docs[1].positions.of(("b",)) == (5, 4)
    assert load_text("# only a comment\n", "f.yaml") == ([], [])


def test_anchors_and_merge_keys_within_limits() -> None:
    text = "base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n"
    (doc,), problems = load_text(text, "f.yaml")
    assert problems == []
    assert doc.data["item"] == {"x": 1, "y": 3}
    assert doc.data["list"] == [{"x": 1, "y": 2}, {"x": 1, "y": 2}]
    doc.data["list"][0]["x"] = 9  # aliases give independent copies, not shared objects
    assert doc.data["base"]["x"] == 1


def _laughs(levels: int) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels):
        prev, name = chr(96 + i), chr(97 + i)
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text


def test_billion_laughs_is_refused_fast() -> None:
    start = time.perf_counter()
    docs, problems = load_text(_laughs(10), "laughs.yaml")
    assert time.perf_counter() - start < 0.5
    assert docs == []
    assert len(problems) == 1
    assert f"aliases expand to more than {MAX_ALIAS_NODES} values" in problems[0].message


def test_small_alias_expansion_is_accepted() -> None:
    docs, problems = load_text(_laughs(3), "ok.yaml")  # 9 * 9 = 81 expanded values
    assert problems == [] and len(docs[0].data["c"]) == 9


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
def test_deep_nesting_is_refused(depth: int) -> None:
    start = time.perf_counter()
    docs, problems = load_text("[" * depth + "]" * depth, "deep.yaml")
    assert time.perf_counter() - start < 0.5
    assert docs == [] and len(problems) == 1
    assert "nesting" in problems[0].message


def test_nesting_at_the_limit_is_accepted() -> None:
    docs, problems = load_text("[" * MAX_DEPTH + "]" * MAX_DEPTH, "deep.yaml")
    assert problems == [] and len(docs) == 1


def test_duplicate_keys_are_refused_at_the_second_key() -> None:
    _, problems = load_text("users:\n  alice: 1\n  bob: 2\n  alice: 3\n", "dup.yaml")
    assert [str(p) for p in problems] == [
        "dup.yaml:4:3: duplicate key 'alice' (first given at line 2)"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system [id]\n",
        "a: !!python/name:os.system\n",
        "a: !custom x\n",
        "a: !!binary aGk=\n",
        "a: !!set {x}\n",
        "a: !!omap [{x: 1}]\n",
        "a: !local {x: 1}\n",
    ],
)
def test_tags_outside_the_core_schema_are_refused(text: str) -> None:
    docs, problems = load_text(text, "tag.yaml")
    assert docs == []
    assert len(problems) == 1 and "not allowed" in problems[0].message
    assert (problems[0].line, problems[0].column) == (1, 4)


def test_core_tags_are_accepted() -> None:
    (doc,), problems = load_text("a: !!str 12\nb: !!int '7'\nc: !!float 1\nd: !!bool true\n", "t")
    assert problems == []
    assert doc.data == {"a": "12", "b": 7, "c": 1.0, "d": True}


def test_complex_keys_are_refused() -> None:
    _, problems = load_text("? [a, b]\n: 1\n", "k.yaml")
    assert len(problems) == 1 and "keys must be plain strings" in problems[0].message


def test_syntax_error_has_a_position() -> None:
    _, problems = load_text("a: [1, 2\nb: 3\n", "syntax.yaml")
    assert len(problems) == 1
    assert problems[0].message.startswith("YAML syntax error")
    assert problems[0].line >= 2


def test_oversized_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * MAX_BYTES + "\n")
    start = time.perf_counter()
    docs, problems = load_file(str(path))
    assert time.perf_counter() - start < 0.2
    assert docs == [] and "limit is" in problems[0].message


def test_non_utf8_is_refused_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("a: 1\nname: Jos\xe9\n".encode("latin-1"))
    docs, problems = load_file(str(path))
    assert docs == []
    assert (problems[0].line, problems[0].column) == (2, 10)
    assert "UTF-8" in problems[0].message


def test_utf8_bom_and_non_ascii_text_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffname: José\n".encode())
    (doc,), problems = load_file(str(path))
    assert problems == [] and doc.data == {"name": "José"}


def test_control_characters_are_refused() -> None:
    _, problems = load_text('a: "\x07"\n', "ctl.yaml")
    assert len(problems) == 1 and "control characters" in problems[0].message


def test_discover_finds_yaml_recursively_and_skips_hidden(tmp_path: Path) -> None:
    for name in ["a.yaml", "sub/b.yml", "sub/deeper/c.yaml", ".git/x.yaml", "sub/.d.yaml", "n.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    files, problems = discover([str(tmp_path), str(tmp_path / "a.yaml")])
    assert problems == []
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == [
        "a.yaml",
        "sub/b.yml",
        "sub/deeper/c.yaml",
    ]
    _, problems = discover([str(tmp_path / "missing")])
    assert problems[0].message == "no such file or folder"


def test_pure_python_parser_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml, the pure-Python composer is used; refusals and positions hold."""
    import yaml

    from jcstate.document import loader

    monkeypatch.setattr(loader, "_Parser", yaml.SafeLoader)
    (doc,), problems = load_text("a:\n  - {b: 2027-06-30}\n", "p.yaml")
    assert problems == [] and doc.data == {"a": [{"b": "2027-06-30"}]}
    assert doc.positions.of(("a", 0, "b")) == (2, 9)
    assert "billion laughs" in load_text(_laughs(10), "l.yaml")[1][0].message
    assert "nesting" in load_text("[" * 400 + "]" * 400, "d.yaml")[1][0].message
    assert "duplicate key" in load_text("a: 1\na: 2\n", "k.yaml")[1][0].message
