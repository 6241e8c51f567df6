"""The JSON Schemas in schemas/: well-formed, editor-friendly, and mapped to exact positions."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from jcstate.document.loader import load_text
from jcstate.document.schema import (
    SCHEMA_FILES,
    check_schema,
    describe_path,
    precheck,
    schemas,
    validator,
)

ROOT = Path(__file__).resolve().parents[2]


def _objects(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _objects(value, f"{path}/{i}")


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12_with_id_and_title(name: str) -> None:
    schema = json.loads((ROOT / "schemas" / name).read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/" + name)
    assert schema["title"] and schema["description"]


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_property_is_documented_and_objects_are_closed(name: str) -> None:
    schema = json.loads((ROOT / "schemas" / name).read_text())
    for path, node in _objects(schema):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
        for prop, sub in node.get("properties", {}).items() if "properties" in node else []:
            if not isinstance(sub, dict) or "$ref" in sub or path.endswith("/if/properties"):
                continue
            if "/if" in path:
                continue
            assert sub.get("title") and sub.get("description"), f"{path}/{prop}"


def test_policy_schema_refers_to_each_kind_by_id() -> None:
    refs = {node["$ref"] for _, node in _objects(schemas()["policy.schema.json"]) if "$ref" in node}
    assert refs == {
        "selector.schema.json",
        "group.schema.json",
        "user.schema.json",
        "sshMfa.schema.json",
        "fileVault.schema.json",
        "command.schema.json",
    }


def _doc(text: str) -> Any:
    (doc,), problems = load_text(text, "p.yaml")
    assert problems == []
    return doc


def test_unknown_field_points_at_the_key_and_suggests() -> None:
    doc = _doc(
        "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: p}\n"
        "spec:\n  users:\n    - name: a\n      fullname: A\n      zzz: 1\n"
    )
    problems, _ = check_schema(doc)
    assert [str(p) for p in sorted(problems)] == [
        "p.yaml:7:7: unknown field 'fullname' in users[0]; did you mean 'fullName'?",
        "p.yaml:8:7: unknown field 'zzz' in users[0]; allowed: admin, allowLockout, expires, "
        "fullName, groups, hidden, home, name, password, primaryGroup, removeHome, shell, "
        "sshAuthorizedKeys, state, uid",
    ]


def test_missing_required_fields_point_at_the_mapping() -> None:
    doc = _doc("apiVersion: jcstate/v1\nkind: Policy\nmetadata:\n  description: x\n")
    problems, _ = check_schema(doc)
    assert sorted(str(p) for p in problems) == [
        "p.yaml:1:1: missing required field 'spec' in the document",
        "p.yaml:4:3: missing required field 'name' in metadata",
    ]


def test_uid_accepts_integers_and_templates_only() -> None:
    base = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  users:\n"
    ok = _doc(base + "    - {name: a, uid: 1501}\n    - {name: b, uid: '{{ vars.uid }}'}\n")
    assert check_schema(ok) == ([], [])
    bad = _doc(base + "    - {name: a, uid: -1}\n    - {name: b, uid: '15x'}\n")
    messages = sorted(p.message for p in check_schema(bad)[0])
    assert messages == [
        "users[0].uid: must be at least 0, got -1",
        "users[1].uid: uid must be an integer (or a template that renders to one)",
    ]


def test_describe_path() -> None:
    assert describe_path(("spec", "users", 0, "shell")) == "users[0].shell"
    assert describe_path(("selector", "labels", "team")) == "selector.labels.team"
    assert describe_path(()) == "the document"


def _valid_policy() -> dict[str, Any]:
    return copy.deepcopy(
        {
            "apiVersion": "jcstate/v1",
            "kind": "Policy",
            "metadata": {"name": "p", "description": "d"},
            "selector": {"os": ["linux"], "labels": {"team": "eng"}, "hostnames": ["a-*"]},
            "vars": {"shell": "/bin/bash"},
            "spec": {
                "groups": [{"name": "g", "gid": 10, "members": ["a"], "state": "present"}],
                "users": [
                    {
                        "name": "a",
                        "uid": 1,
                        "shell": "{{ vars.shell }}",
                        "groups": ["g"],
                        "password": {"hash": "$6$x"},
                        "expires": "2027-06-30",
                        "state": "locked",
                    }
                ],
                "sshMfa": {"enabled": True, "users": ["a"]},
                "fileVault": {"enabled": True, "users": ["a"], "escrowRecoveryKey": True},
                "commands": [
                    {"id": "c1", "action": "run", "run": {"argv": ["true"], "timeout": 5}},
                    {"id": "c2", "action": "lock", "notAfter": "2026-01-01T00:00:00Z"},
                ],
            },
        }
    )


def _mutations() -> Iterator[tuple[str, dict[str, Any]]]:
    """Valid and invalid variants that the fast precheck must judge like jsonschema."""
    yield "valid", _valid_policy()
    edits: list[tuple[str, Any]] = [
        ("spec.users.0.uid", 1.0),
        ("spec.users.0.uid", True),
        ("spec.users.0.uid", "12"),
        ("spec.users.0.uid", "{% if x %}1{% endif %}"),
        ("spec.users.0.uid", 4294967295),
        ("spec.users.0.groups", ["g", "g"]),
        ("spec.users.0.groups", [1, 1.0]),
        ("spec.users.0.state", "gone"),
        ("spec.users.0.expires", "2027-02-30"),
        ("spec.users.0.password", {}),
        ("spec.users.0.password", {"hash": "x", "extra": 1}),
        ("spec.users.0.name", ""),
        ("spec.users.0.name", None),
        ("spec.commands.0.run", {"argv": ["a"], "command": "b"}),
        ("spec.commands.0.run", {"shell": "/bin/sh"}),
        ("spec.commands.0.run", None),
        ("spec.commands.0.action", "reboot"),
        ("spec.commands.1.notAfter", "2026-01-01"),
        ("spec.commands.1.id", "-bad"),
        ("selector.os", []),
        ("selector.os", ["linux", "linux"]),
        ("selector.os", "linux"),
        ("selector.labels", {"team": 1}),
        ("selector.labels", {"bad key": "x"}),
        ("selector.devices", ["d", "d"]),
        ("vars", {"1x": 1}),
        ("metadata.name", "Bad_Name"),
        ("apiVersion", "v1"),
        ("spec.sshMfa.enabled", "true"),
        ("spec.fileVault.extra", True),
        ("spec.unknown", []),
    ]
    for dotted, value in edits:
        doc = _valid_policy()
        *parents, last = dotted.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None and isinstance(target, dict):
            target.pop(last)
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        yield dotted + "=" + repr(value), doc


@pytest.mark.parametrize("case", list(_mutations()), ids=lambda c: c[0])
def test_fast_precheck_agrees_with_jsonschema(case: tuple[str, dict[str, Any]]) -> None:
    _, doc = case
    fast = precheck()
    assert fast is not None, "the schema uses a keyword precheck.py cannot compile"
    reference = not any(validator().iter_errors(doc))
    # The precheck may be stricter (costs only time) but must never accept an invalid doc;
    # for the documents here it must agree exactly.
    assert fast(doc) == reference
