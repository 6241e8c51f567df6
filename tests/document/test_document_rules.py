"""Semantic rules: one failing and one passing case per rule, and selector overlap."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jcstate.document import Device, Policy, Selector
from jcstate.document import rules as r

HEAD = "apiVersion: jcstate/v1\nkind: Policy\n"


def doc(name: str, selector: str, spec: str) -> str:
    return f"{HEAD}metadata: {{name: {name}}}\nselector: {selector}\nspec: {spec}\n"


def repo(*docs: str) -> str:
    return "---\n".join(docs)


CASES = [
    # (rule, failing repo, passing repo, message fragment of the failure)
    (
        r.timebound_admin_groups,
        doc(
            "a",
            "{}",
            "{users: [{name: x, admin: {until: '2027-01-31T18:00:00Z'}, groups: [wheel]}]}",
        ),
        doc(
            "a", "{}", "{users: [{name: x, admin: {until: '2027-01-31T18:00:00Z'}, groups: [dev]}]}"
        ),
        "groups lists 'wheel', an admin group, but admin is time-bound",
    ),
    (
        r.duplicate_policy_names,
        repo(doc("a", "{}", "{}"), doc("a", "{}", "{}")),
        repo(doc("a", "{}", "{}"), doc("b", "{}", "{}")),
        "policy name 'a' is already used",
    ),
    (
        r.duplicate_entries,
        doc("a", "{os: [linux]}", "{groups: [{name: g}, {name: g}]}"),
        doc("a", "{os: [linux]}", "{groups: [{name: g}, {name: h}]}"),
        "group 'g' is declared twice",
    ),
    (
        r.duplicate_ids,
        repo(
            doc("a", "{os: [linux]}", "{users: [{name: x, uid: 7}]}"),
            doc("b", "{os: [linux, darwin]}", "{users: [{name: y, uid: 7}]}"),
        ),
        repo(
            doc("a", "{os: [linux]}", "{users: [{name: x, uid: 7}]}"),
            doc("b", "{os: [darwin]}", "{users: [{name: y, uid: 7}]}"),
        ),
        "uid 7 of user 'y' is already used by 'x'",
    ),
    (
        r.groups_against_members,
        repo(
            doc("a", "{os: [linux]}", "{groups: [{name: g, members: [x]}]}"),
            doc("b", "{os: [linux]}", "{users: [{name: y, groups: [g]}]}"),
        ),
        repo(
            doc("a", "{os: [linux]}", "{groups: [{name: g, members: [x, y]}]}"),
            doc(
                "b",
                "{os: [linux]}",
                "{users: [{name: y, groups: [g]}, {name: z, state: absent, groups: [g]}]}",
            ),
        ),
        "user 'y' is put in group 'g'",
    ),
    (
        r.mfa_users_present,
        doc("a", "{os: [linux]}", "{users: [{name: x, state: absent}], sshMfa: {users: [x]}}"),
        doc("a", "{os: [linux]}", "{users: [{name: x, state: locked}], sshMfa: {users: [x]}}"),
        "sshMfa.users lists 'x'",
    ),
    (
        r.password_hash_os,
        doc("a", "{os: [linux, windows]}", "{users: [{name: x, password: {hash: h}}]}"),
        doc("a", "{os: [linux]}", "{users: [{name: x, password: {hash: h}}]}"),
        "password.hash works on Linux only",
    ),
    (
        r.names_per_os,
        doc("a", "{os: [linux]}", "{users: [{name: 'x y'}]}"),
        doc("a", "{os: [linux]}", "{users: [{name: 'x_y-1$'}]}"),
        "name 'x y' on linux",
    ),
    (
        r.commands,
        doc("a", "{devices: []}", "{commands: [{id: e, action: erase, confirm: erase}]}"),
        doc("a", "{devices: [d1]}", "{commands: [{id: e, action: erase, confirm: erase}]}"),
        "erase needs a non-empty selector.devices list",
    ),
    (
        r.templates,
        doc("a", "{hostnames: ['{{ x }}']}", "{users: [{name: x, shell: '{{ vars.s }}'}]}"),
        doc("a", "{hostnames: ['x-*']}", "{users: [{name: x, shell: '{{ vars.s }}'}]}"),
        "templates are not allowed here",
    ),
    (
        r.conflicts,
        repo(
            doc("a", "{os: [linux]}", "{users: [{name: x, home: /a}]}"),
            doc("b", "{hostnames: [web-1]}", "{users: [{name: x, home: /b}]}"),
        ),
        repo(
            doc("a", "{os: [linux]}", "{users: [{name: x, home: /a}]}"),
            doc("b", "{os: [windows]}", "{users: [{name: x, home: /b}]}"),
        ),
        "conflict: users/x field 'home'",
    ),
]


@pytest.mark.parametrize(
    ("rule", "failing", "passing", "fragment"), CASES, ids=lambda c: getattr(c, "__name__", "")
)
def test_rule_fails_and_passes(
    load_policies: Callable[..., list[Policy]],
    rule: r.Rule,
    failing: str,
    passing: str,
    fragment: str,
) -> None:
    problems = rule(load_policies(failing))
    assert len(problems) == 1 and fragment in problems[0].message, problems
    assert rule(load_policies(passing)) == []


def test_two_policies_that_list_a_user_with_different_on_removal_conflict(
    load_policies: Callable[..., list[Policy]],
) -> None:
    def policy(name: str, choice: str | None) -> str:
        head = f"{HEAD}metadata: {{name: {name}}}\n"
        chosen = f"onRemoval: {choice}\n" if choice else ""
        return head + chosen + "spec: {users: [{name: dana}]}\n"

    (problem,) = r.conflicts(load_policies(repo(policy("a", "delete"), policy("b", "keep"))))
    assert "conflict: users/dana field 'onRemoval'" in problem.message, problem
    assert r.conflicts(load_policies(repo(policy("a", "delete"), policy("b", None)))) == []


def test_every_rule_has_a_case() -> None:
    assert {case[0] for case in CASES} == set(r.RULES)


def test_all_rules_run_and_report_together(load_policies: Callable[..., list[Policy]]) -> None:
    failing = [case[1] for case in CASES if case[0] is not r.duplicate_policy_names]
    # rename so that the documents do not collide on policy names
    texts = [
        t.replace("{name: a}", f"{{name: a{i}}}").replace("{name: b}", f"{{name: b{i}}}")
        for i, t in enumerate(failing)
    ]
    problems = r.check_rules(load_policies("---\n".join(texts)))
    assert len(problems) >= len(failing)


S = Selector.from_data


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ({}, {}, True),
        ({"os": ["linux"]}, {"os": ["darwin"]}, False),
        ({"os": ["linux", "darwin"]}, {"os": ["darwin"]}, True),
        ({"labels": {"team": "a"}}, {"labels": {"team": "b"}}, False),
        ({"labels": {"team": "a"}}, {"labels": {"site": "b"}}, True),
        ({"devices": ["d1"]}, {"devices": ["d2"]}, False),
        ({"devices": ["d1", "d2"]}, {"devices": ["d2"]}, True),
        ({"devices": []}, {"devices": ["d2"]}, True),
        ({"hostnames": ["web-1"]}, {"hostnames": ["web-2"]}, False),
        ({"hostnames": ["web-1"]}, {"hostnames": ["web-*"]}, True),
        ({"hostnames": ["db-1"]}, {"hostnames": ["web-*"]}, False),
        ({"hostnames": ["WEB-1"]}, {"hostnames": ["web-?"]}, True),
        ({"hostnames": ["web-*"]}, {"hostnames": ["*-1"]}, True),  # globs: assume overlap
    ],
)
def test_selector_overlap(a: dict, b: dict, overlap: bool) -> None:
    assert S(a).can_overlap(S(b)) is overlap
    assert S(b).can_overlap(S(a)) is overlap


def test_selector_matches_a_device() -> None:
    device = Device(hostname="Web-1", os="linux", id="d1", labels={"team": "eng", "site": "x"})
    assert S({}).matches(device)
    assert S({"os": ["linux"], "labels": {"team": "eng"}, "hostnames": ["web-*"]}).matches(device)
    assert S({"devices": ["d1"]}).matches(device)
    assert not S({"devices": ["d2"]}).matches(device)
    assert not S({"labels": {"team": "ops"}}).matches(device)
    assert not S({"labels": {"owner": "x"}}).matches(device)
    assert not S({"os": ["darwin"]}).matches(device)
    assert not S({"hostnames": ["db-*"]}).matches(device)
