"""Windows backends against data fixtures, pyinfra style: facts + desired → exactly these changes,
with these argv lists and stdin, in this order.

A case file ``tests/modules/windows/<kind>/<case>.windows.json`` holds::

    {"description": "...",
     "desired": [...],                spec.<kind> exactly as in a document
     "users": [...], "groups": [...]  (optional) the other section of the same document
     "facts": {"Users": [...], "Groups": [...]},   added to the base workstation below
     "secrets": {"passwords": {...}},
     "expected": {"changes": [...], "warnings"?: [...]}}

Facts are objects in the shape the facts script's ``ConvertTo-Json`` prints (Windows PowerShell
5.1: DateTime as ``/Date(ms)/``, member names ``WS01\\alice``); the loader serialises them to
JSON text and parses that with the backend's own parser. A group in the case with the name of a
base group adds members to it. In expected argv the base64 ``-EncodedCommand`` argument is written
``<script:NAME>`` (NAME a key of ``powershell.SCRIPTS``); stdin is the JSON line, or ``(secret)``
when it carries a password. The base workstation: Administrator (disabled, RID 500), Guest
(disabled), ``it-admin`` (enabled, an administrator), Administrators (S-1-5-32-544) and Users.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jcstate.host import Host
from jcstate.modules.users.powershell import POWERSHELL, SCRIPTS, decode
from jcstate.modules.users.winfacts import parse
from jcstate.plan import Change, Plan
from jcstate.registry import resource
from jcstate.resource import PlanContext
from jcstate.secrets import MappingSecrets

HERE = Path(__file__).parent
KINDS = ("users", "groups")
SID = "S-1-5-21-1004336348-1177238915-682003330"
BASE: dict[str, Any] = {
    "Users": [
        {
            "Name": "Administrator",
            "FullName": "",
            "Enabled": False,
            "SID": f"{SID}-500",
            "AccountExpires": None,
        },
        {
            "Name": "Guest",
            "FullName": "",
            "Enabled": False,
            "SID": f"{SID}-501",
            "AccountExpires": None,
        },
        {
            "Name": "it-admin",
            "FullName": "IT Admin",
            "Enabled": True,
            "SID": f"{SID}-1001",
            "AccountExpires": None,
        },
    ],
    "Groups": [
        {
            "Name": "Administrators",
            "SID": "S-1-5-32-544",
            "Members": [
                {
                    "Name": "WS01\\Administrator",
                    "SID": f"{SID}-500",
                    "ObjectClass": "User",
                    "PrincipalSource": "Local",
                },
                {
                    "Name": "WS01\\it-admin",
                    "SID": f"{SID}-1001",
                    "ObjectClass": "User",
                    "PrincipalSource": "Local",
                },
            ],
        },
        {"Name": "Users", "SID": "S-1-5-32-545", "Members": []},
    ],
}


def cases() -> list[tuple[str, Path]]:
    return [(kind, p) for kind in KINDS for p in sorted((HERE / kind).glob("*.windows.json"))]


def facts_text(given: dict[str, Any]) -> str:
    data = copy.deepcopy(BASE)
    data["Users"] += given.get("Users", [])
    groups = {g["Name"]: g for g in data["Groups"]}
    for group in given.get("Groups", []):
        if group["Name"] in groups:
            groups[group["Name"]]["Members"] += group.get("Members", [])
        else:
            data["Groups"].append(group)
    return json.dumps(data, separators=(",", ":"))


def plan(case: dict[str, Any], kind: str) -> tuple[list[Change], list[str]]:
    ctx = PlanContext(host=Host(os_name="windows"), secrets=MappingSecrets(case.get("secrets")))
    sections = {k: case.get(k) for k in KINDS} | {kind: case["desired"]}
    ctx.desired = {k: resource(k).parse(v) for k, v in sections.items() if v is not None}
    facts = parse(facts_text(case["facts"]))
    ctx.facts = {"users": facts, "groups": facts}
    backend = resource(kind).backend("windows")
    assert backend is not None
    return backend.plan(ctx.desired[kind], ctx), ctx.warnings


def _script_name(encoded: str) -> str:
    text = decode(encoded)
    return next(name for name, script in SCRIPTS.items() if script == text)


def as_expected(change: Change, expected: dict[str, Any] | None) -> dict[str, Any]:
    out = change.to_dict()
    out.pop("source", None)
    out["phase"] = change.phase
    for step in out["steps"]:
        argv = step.get("run", [])
        if tuple(argv[:-1]) == POWERSHELL:
            step["run"] = [*argv[:-1], f"<script:{_script_name(argv[-1])}>"]
    want = (expected or {}).get("error")
    if want and out.get("error") and want in out["error"]:
        out["error"] = want
    return out


CASES = cases()
IDS = [f"{k}/{p.name.split('.')[0]}" for k, p in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fixture(case: tuple[str, Path]) -> None:
    kind, path = case
    data = json.loads(path.read_text())
    changes, warnings = plan(data, kind)
    expected = data["expected"]["changes"]
    got = [
        as_expected(c, expected[i] if i < len(expected) else None) for i, c in enumerate(changes)
    ]
    assert got == expected, data["description"]
    assert warnings == data["expected"].get("warnings", []), data["description"]


def test_every_kind_has_a_no_change_case() -> None:
    for kind in KINDS:
        data = json.loads((HERE / kind / "no_change.windows.json").read_text())
        assert data["expected"]["changes"] == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_passwords_and_names_never_in_argv(case: tuple[str, Path]) -> None:
    kind, path = case
    data = json.loads(path.read_text())
    secrets = set((data.get("secrets") or {}).get("passwords", {}).values())
    names = {e["name"] for e in data["desired"] + (data.get("users") or [])}
    changes, _ = plan(data, kind)
    shown = json.dumps(Plan(changes).to_dict()) + "".join(f"{c!r}" for c in changes)
    for c in changes:
        for step in c.steps:
            argv = getattr(step, "argv", ())
            assert argv[:-1] == POWERSHELL
            script = decode(argv[-1])
            for value in secrets | names:  # names are data on stdin, never script text
                assert value not in script and value not in argv[:-1]
    for secret in secrets:
        assert secret not in shown


def test_new_user_stdin_really_carries_the_password() -> None:
    """The redaction above can fail: the password is on stdin's second line, only hidden."""
    data = json.loads((HERE / "users" / "create_full.windows.json").read_text())
    changes, _ = plan(data, "users")
    step = changes[0].steps[0]
    first, second = step.stdin.reveal().splitlines()
    assert json.loads(first)["name"] == "alice"
    assert second == data["secrets"]["passwords"]["alice-pw"]


def test_parser_reads_both_powershell_date_forms() -> None:
    """5.1 writes "\\/Date(ms)\\/", 7 writes ISO 8601; a lone object is not wrapped in a list."""
    legacy = (
        '{"Users":{"Name":"a","FullName":"","Enabled":true,"SID":"S-1",'
        '"AccountExpires":"\\/Date(1814313600000)\\/"},"Groups":[]}'
    )
    modern = (
        '{"Users":[{"Name":"a","FullName":"","Enabled":true,"SID":"S-1",'
        '"AccountExpires":"2027-06-30T00:00:00"}],"Groups":[]}'
    )
    assert parse(legacy).user("A").expires == parse(modern).user("a").expires  # type: ignore[union-attr]
    assert str(parse(modern).user("a").expires) == "2027-06-30"  # type: ignore[union-attr]
