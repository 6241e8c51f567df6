"""``Repo.document_for`` with facts given as a function: gathered only for a template that
names ``facts``, and then rendered exactly as with facts given up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from jcstate.document import Device, load_repo
from jcstate.document.render import names

POLICY = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {{name: {name}}}
selector: {{os: [linux]}}
vars: {{shell: /bin/bash}}
spec:
  users:
    - name: {user}
      shell: "{shell}"
"""


def _repo(tmp_path: Path, *policies: tuple[str, str, str]):
    for name, user, shell in policies:
        (tmp_path / f"{name}.yaml").write_text(POLICY.format(name=name, user=user, shell=shell))
    return load_repo([str(tmp_path)])


DEVICE = Device(hostname="h1", os="linux", id="d1")


def test_facts_not_gathered_when_no_template_names_them(tmp_path: Path):
    repo = _repo(tmp_path, ("a", "alice", "{{ vars.shell }}"))
    calls: list[int] = []
    doc = repo.document_for(DEVICE, facts=lambda: calls.append(1) or {"x": 1})
    assert calls == []
    assert doc.spec["users"][0]["shell"] == "/bin/bash"


@pytest.mark.parametrize(
    "shell",
    [
        "{{ facts.shell }}",  # the fast path
        "{% if facts %}{{ facts['shell'] }}{% endif %}",  # through the sandbox
    ],
)
def test_facts_gathered_once_for_a_template_that_names_them(tmp_path: Path, shell: str):
    repo = _repo(tmp_path, ("a", "alice", "{{ vars.shell }}"), ("b", "bob", shell))
    calls: list[int] = []
    doc = repo.document_for(DEVICE, facts=lambda: calls.append(1) or {"shell": "/bin/zsh"})
    assert calls == [1]
    eager = repo.document_for(DEVICE, facts={"shell": "/bin/zsh"})
    assert doc.spec == eager.spec
    assert {u["name"]: u["shell"] for u in doc.spec["users"]} == {
        "alice": "/bin/bash",
        "bob": "/bin/zsh",
    }


def test_names_finds_the_variable_only_in_templates():
    assert names({"users": [{"shell": "{{ facts.x }}"}]}, "facts")
    assert names({"a": ["{%- set f = facts -%}{{ f }}"]}, "facts")
    assert not names({"users": [{"fullName": "facts"}]}, "facts")  # not a template
    assert not names({"a": "{{ vars.factsheet }}"}, "facts")  # another name
    assert not names({}, "facts")
