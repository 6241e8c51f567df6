"""Select → render → merge for one device; conflicts; the Document sent to agents."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from jcstate.document import Device, Document, DocumentError, Policy, Repo
from jcstate.document.merge import entry_conflicts

REPO = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: base}
selector: {os: [linux]}
vars: {shell: /bin/bash}
spec:
  groups:
    - {name: admins, gid: 2000, members: [ops]}
  users:
    - name: ops
      shell: "{{ vars.shell }}"
      groups: [admins]
      sshAuthorizedKeys: [key-a]
    - {name: mallory, state: absent}
  sshMfa: {enabled: true, users: [ops]}
---
apiVersion: jcstate/v1
kind: Policy
metadata: {name: eng}
selector: {os: [linux], labels: {team: eng}}
vars: {shell: /bin/bash}
spec:
  groups:
    - {name: devs}
  users:
    - name: alice
      uid: 1501
      home: "/home/{{ device.hostname }}/alice"
    - name: ops
      shell: /bin/bash
      groups: [devs]
      sshAuthorizedKeys: [key-b, key-a]
      admin: true
  sshMfa: {users: [alice]}
  commands:
    - {id: lock-1, action: lock}
---
apiVersion: jcstate/v1
kind: Policy
metadata: {name: macs}
selector: {os: [darwin]}
spec:
  users: [{name: ops, shell: /bin/zsh, password: {secretRef: ops}}]
"""

ENG_1 = Device(hostname="eng-1", os="linux", id="d1", labels={"team": "eng"})


@pytest.fixture
def repo(load_policies: Callable[..., list[Policy]]) -> Repo:
    return Repo(load_policies(REPO, file="repo.yaml"))


def test_select_by_os_and_labels(repo: Repo) -> None:
    assert [p.name for p in repo.select(ENG_1)] == ["base", "eng"]
    assert [p.name for p in repo.select(Device(hostname="x", os="linux"))] == ["base"]
    assert [p.name for p in repo.select(Device(hostname="x", os="darwin"))] == ["macs"]
    assert repo.select(Device(hostname="x", os="windows")) == []


def test_merge_per_resource_name_with_unions(repo: Repo) -> None:
    document = repo.document_for(ENG_1)
    assert document.policies == ["base", "eng"]
    spec = document.spec
    assert [g["name"] for g in spec["groups"]] == ["admins", "devs"]
    assert [u["name"] for u in spec["users"]] == [
        "ops",
        "mallory",
        "alice",
    ]  # first order, then new
    ops = spec["users"][0]
    assert ops == {
        "name": "ops",
        "shell": "/bin/bash",  # rendered in base, literal in eng: equal, no conflict
        "groups": ["admins", "devs"],
        "sshAuthorizedKeys": ["key-a", "key-b"],
        "admin": True,
    }
    assert spec["users"][2]["home"] == "/home/eng-1/alice"
    assert spec["sshMfa"] == {"enabled": True, "users": ["ops", "alice"]}
    assert spec["commands"] == [{"id": "lock-1", "action": "lock"}]
    assert "fileVault" not in spec  # absent key = not managed
    assert document.sources["users/ops"] == "repo.yaml:10, repo.yaml:29"
    assert document.sources["users/alice"] == "repo.yaml:26"
    assert document.sources["sshMfa"] == "repo.yaml:15, repo.yaml:34"


def test_document_is_plain_data_and_round_trips(repo: Repo) -> None:
    document = repo.document_for(ENG_1)
    data = json.loads(json.dumps(document.to_dict()))
    assert Document.from_dict(data) == document
    assert "{{" not in json.dumps(data)  # the agent gets data, never templates


def test_a_device_without_policies_gets_an_empty_document(repo: Repo) -> None:
    document = repo.document_for(Device(hostname="w", os="windows"))
    assert document == Document(spec={}, sources={}, policies=[])


def test_rendered_conflict_is_an_error_for_that_device(
    load_policies: Callable[..., list[Policy]],
) -> None:
    policies = load_policies(
        """\
        apiVersion: jcstate/v1
        kind: Policy
        metadata: {name: a}
        selector: {os: [linux]}
        vars: {shell: /bin/bash}
        spec:
          users: [{name: alice, shell: "{{ vars.shell }}"}]
        ---
        apiVersion: jcstate/v1
        kind: Policy
        metadata: {name: b}
        selector: {os: [linux], labels: {team: eng}}
        vars: {shell: /bin/zsh}
        spec:
          users: [{name: alice, shell: "{{ vars.shell }}"}]
        """,
        file="c.yaml",
    )
    repo = Repo(policies)
    assert repo.document_for(Device(hostname="x", os="linux")).spec["users"][0]["shell"] == (
        "/bin/bash"
    )
    with pytest.raises(DocumentError) as caught:
        repo.document_for(Device(hostname="x", os="linux", labels={"team": "eng"}))
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:15:32: conflict: users/alice field 'shell' is '/bin/zsh' here but '/bin/bash' "
        "in policy 'a' (c.yaml:7); policies that can match the same device must agree"
    ]


def test_rendered_uid_collision_and_name_rules_for_the_device(
    load_policies: Callable[..., list[Policy]],
) -> None:
    policies = load_policies(
        """\
        apiVersion: jcstate/v1
        kind: Policy
        metadata: {name: a}
        selector: {os: [linux]}
        spec:
          users:
            - {name: alice, uid: 1501}
            - {name: "{{ device.labels.owner }}", uid: "{{ device.labels.uid }}"}
        """,
        file="u.yaml",
    )
    repo = Repo(policies)
    ok = repo.document_for(Device("h", "linux", labels={"owner": "bob", "uid": "1502"}))
    assert ok.spec["users"][1] == {"name": "bob", "uid": 1502}
    with pytest.raises(DocumentError) as caught:
        repo.document_for(Device("h", "linux", labels={"owner": "Bob;", "uid": "1501"}))
    messages = [p.message for p in caught.value.problems]
    assert messages[0].startswith("rendered name 'Bob;' is not a valid name")
    assert messages[1] == "uid 1501 of 'Bob;' is already used by 'alice' (u.yaml:7) on this device"


@pytest.mark.parametrize(
    ("kind", "first", "second", "fields"),
    [
        ("users", {"name": "a", "shell": "x"}, {"name": "a", "shell": "y"}, [("shell",)]),
        ("users", {"name": "a", "shell": "x"}, {"name": "a", "home": "y"}, []),
        ("users", {"name": "a", "groups": ["x"]}, {"name": "a", "groups": ["y"]}, []),
        ("users", {"name": "a"}, {"name": "a", "state": "locked"}, [("state",)]),
        ("users", {"name": "a"}, {"name": "a", "state": "present"}, []),
        ("users", {"name": "a", "uid": 1}, {"name": "a", "uid": True}, [("uid",)]),
        (
            "users",
            {"name": "a", "password": {"hash": "h"}},
            {"name": "a", "password": {"secretRef": "r"}},
            [],
        ),
        (
            "users",
            {"name": "a", "password": {"hash": "h1"}},
            {"name": "a", "password": {"hash": "h2"}},
            [("password", "hash")],
        ),
        ("groups", {"name": "g", "members": ["a", "b"]}, {"name": "g", "members": ["b", "a"]}, []),
        ("groups", {"name": "g", "members": ["a"]}, {"name": "g", "members": []}, [("members",)]),
        ("groups", {"name": "g", "members": ["a"]}, {"name": "g"}, []),
        ("commands", {"id": "c", "action": "lock"}, {"id": "c", "action": "lock"}, []),
        ("commands", {"id": "c", "action": "lock"}, {"id": "c", "action": "restart"}, [()]),
        ("sshMfa", {"enabled": True, "users": ["a"]}, {"users": ["b"]}, []),
        ("sshMfa", {"enabled": True}, {"enabled": False}, [("enabled",)]),
    ],
)
def test_merge_rules(kind: str, first: dict, second: dict, fields: list[tuple[str, ...]]) -> None:
    assert [c.field for c in entry_conflicts(kind, first, second)] == fields


def test_templated_values_are_not_compared_before_rendering() -> None:
    first, second = {"name": "a", "shell": "{{ vars.s }}"}, {"name": "a", "shell": "/bin/sh"}
    assert entry_conflicts("users", first, second, literal_only=True) == []
    assert len(entry_conflicts("users", first, second)) == 1


def test_secrets_never_appear_in_conflict_messages(
    load_policies: Callable[..., list[Policy]],
) -> None:
    policies = load_policies(
        """\
        apiVersion: jcstate/v1
        kind: Policy
        metadata: {name: a}
        selector: {os: [linux]}
        spec: {users: [{name: alice, password: {hash: "$6$SECRET-ONE"}}]}
        ---
        apiVersion: jcstate/v1
        kind: Policy
        metadata: {name: b}
        selector: {os: [linux]}
        spec: {users: [{name: alice, password: {hash: "$6$SECRET-TWO"}}]}
        """
    )
    with pytest.raises(DocumentError) as caught:
        Repo(policies).document_for(Device("h", "linux"))
    assert "SECRET" not in str(caught.value)
    assert "password.hash" in str(caught.value)


def test_reprs_never_show_password_hashes(
    repo: Repo, load_policies: Callable[..., list[Policy]]
) -> None:
    (policy,) = load_policies(
        "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: p}\nselector: {os: [linux]}\n"
        "spec: {users: [{name: a, password: {hash: $6$TOPSECRET}}]}\n"
    )
    document = Repo([policy]).document_for(Device("h", "linux"))
    assert "TOPSECRET" in json.dumps(document.to_dict())  # the agent needs it
    assert "TOPSECRET" not in repr(document) and "TOPSECRET" not in repr(policy)
