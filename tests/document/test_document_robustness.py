"""Whatever YAML comes in, validation reports problems; it never crashes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jcstate.document import validate_paths

WORDS = [
    "apiVersion", "kind", "metadata", "name", "selector", "os", "labels", "hostnames",
    "devices", "vars", "spec", "users", "groups", "members", "uid", "gid", "state", "password",
    "hash", "secretRef", "sshMfa", "fileVault", "commands", "id", "action", "run", "argv",
    "confirm", "erase", "linux", "darwin", "present", "absent", "{{ vars.x }}", "{% if %}",
]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5000), st.sampled_from(WORDS), st.text(max_size=8)
)
data = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(WORDS), inner, max_size=5)
    ),
    max_leaves=30,
)
policy_like = st.fixed_dictionaries(
    {"apiVersion": st.just("jcstate/v1"), "kind": st.just("Policy")},
    optional={
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "B", "{{x}}"])}),
        "selector": data,
        "spec": st.dictionaries(st.sampled_from(WORDS), data, max_size=4),
        "vars": data,
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(docs=st.lists(st.one_of(policy_like, data), min_size=1, max_size=3))
def test_validation_never_crashes(tmp_path: Path, docs: list[object]) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    repo, problems = validate_paths([str(path)])
    assert (repo is None) == bool(problems)
    for problem in problems:
        assert problem.file == str(path) and problem.line >= 1 and problem.column >= 1
    if repo is not None:  # a valid repo renders to JSON-able documents for a matching device
        json.dumps([p.spec for p in repo.policies])
