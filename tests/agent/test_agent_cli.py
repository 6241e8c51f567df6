"""``jcstate agent``'s plain options are read without argparse, into what argparse would give.

:func:`jcstate.cli.agent.parse_run` spares the resident agent argparse (0.9 MB with what its
help formatter imports); every namespace it returns must be the one argparse makes of the same
words, and everything it does not read (help, --version, abbreviations, mistakes) must be left
to argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jcstate.cli import help_formatter
from jcstate.cli.agent import parse_run, register


def _argparse(words: list[str]) -> dict[str, object] | None:
    """What ``python -m jcstate.agent WORDS`` parses (None: argparse refuses or exits)."""
    parser = argparse.ArgumentParser(prog="python -m jcstate.agent")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    register(parser.add_subparsers(dest="command"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return vars(parser.parse_args(["agent", *words]))
    except SystemExit:
        return None


def _comparable(values: dict[str, object] | None) -> dict[str, object] | None:
    """Floats by their repr: nan is a float argparse takes too, and nan != nan."""
    if values is None:
        return None
    return {k: repr(v) if isinstance(v, float) else v for k, v in values.items()}


PLAIN = [
    [],
    ["--server", "https://jcstate.example:8443", "--connect-key", "jck_1"],
    ["--server=https://h", "--once", "--wait", "0", "--max-backoff=2.5", "--reconverge", "1e3"],
    ["--worker-timeout", "inf", "--wait", " 7 ", "--reconverge", "1_000", "--max-backoff", "nan"],
    ["--log-file", "", "--ca-file", "/x y/ca.pem", "--state-dir", "/s", "--install-dir=/o"],
    ["--root", "/r", "--server", "a", "--server", "b", "--once", "--once"],
    ["--connect-key=a=b", "--log-file="],
    ["--connect-key-file", "/etc/jcstate/connect-key", "--server", "https://h"],
]


@pytest.mark.parametrize("words", PLAIN)
def test_plain_options_are_what_argparse_makes_of_them(words):
    fast = parse_run(words)
    assert fast is not None
    assert _comparable(vars(fast)) == _comparable(_argparse(words))


@pytest.mark.parametrize(
    "words",
    [
        ["--help"],
        ["-h"],
        ["--version"],
        ["install", "--server", "x"],
        ["--serv", "x"],  # an abbreviation argparse accepts
        ["--server"],
        ["--wait", "soon"],
        ["--wait", "-1"],
        ["--server", "-x"],
        ["--once=yes"],
        ["--bogus"],
        ["-v"],
        ["--", "x"],
        ["x"],
    ],
)
def test_anything_else_is_left_to_argparse(words):
    assert parse_run(words) is None


WORDS = st.sampled_from(
    ["--server", "--server=", "--wait", "--wait=", "--once", "--once=1", "--log-file", "--ser"]
    + ["--max-backoff", "--worker-timeout", "--root", "--version", "install", "-h", "--", "-v"]
    + ["", "x", "1", "-1", "2.5", "nan", "-x", "/a b", "=", "1e9", "--once"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=7))
def test_whatever_it_reads_argparse_reads_the_same(words):
    fast = parse_run(words)
    if fast is not None:
        assert _comparable(vars(fast)) == _comparable(_argparse(words))


def test_the_help_formatter_asks_the_width_as_shutil_does(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert help_formatter("x")._width == 58
    monkeypatch.setenv("COLUMNS", "bogus")
    import shutil

    assert help_formatter("x")._width == shutil.get_terminal_size().columns - 2


def test_the_connect_key_file_keeps_the_key_out_of_argv(tmp_path):
    from jcstate.cli.agent import connect_key

    key_file = tmp_path / "connect-key"
    key_file.write_text("jck_from_file\n")
    args = parse_run(["--connect-key-file", str(key_file)])
    assert connect_key(args) == "jck_from_file"
    # gone (an enrolled agent needs none): empty, and enrolling says what to give
    assert connect_key(parse_run(["--connect-key-file", str(tmp_path / "none")])) == ""
    with pytest.raises(SystemExit, match="not both"):
        connect_key(parse_run(["--connect-key", "k", "--connect-key-file", str(key_file)]))
    key_file.write_text("jck_a jck_b\n")
    with pytest.raises(SystemExit, match="not one connect key"):
        connect_key(args)
