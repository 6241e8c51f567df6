"""Properties on the shadow-utils simulator (shadow_sim), with plans applied by the real engine.

For generated current systems and desired states: plan, apply through ``engine.execute`` (phases,
and the ``chpasswd`` batch at the end of each phase, exactly as on a machine), then check the
account files field by field against what the document asks for — an oracle written from the
document, not from the planner — and plan again: no changes. ``test_every_state_transition``
walks every move between present / locked / absent, with and without a hash, several users at
once so their chpasswd lines share one batch.
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any

from account_cases import facts_from
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shadow_sim import SimHost, System, _Group, _Node, _User

from jcstate import engine
from jcstate.host import Host
from jcstate.modules.groups import parse as parse_groups
from jcstate.modules.groups.linux import BACKEND as GROUPS
from jcstate.modules.users import parse as parse_users
from jcstate.modules.users.linux import BACKEND as USERS
from jcstate.plan import Change, Plan
from jcstate.resource import PlanContext

NAMES = st.from_regex(r"[a-z_][a-z0-9_-]{0,6}", fullmatch=True).filter(
    lambda n: n not in ("root", "sudo", "users")
)
HASHES = ["$6$a$firstHash", "$6$b$secondHash"]
SHELLS = ["/bin/sh", "/bin/bash", "/usr/sbin/nologin"]
KEYS = ["ssh-ed25519 AAAAkey1 a@x", "ssh-rsa AAAAkey2 b@y"]


@st.composite
def systems(draw: Any) -> System:
    """A current system: root (an admin, so lock-out safety stays out of the way), sudo, users."""
    sys_ = System()
    sys_.users["root"] = _User(0, 0, "root", "/root", "/bin/bash", "$6$r$rootHash")
    sys_.groups.update(root=_Group(0), sudo=_Group(27), users=_Group(100))
    names = draw(st.lists(NAMES, unique=True, max_size=4))
    uids = draw(
        st.lists(st.integers(1000, 1012), unique=True, min_size=len(names), max_size=len(names))
    )
    for name, uid in zip(names, uids, strict=True):
        gid = uid if name not in sys_.groups else 100
        if name not in sys_.groups and all(g.gid != uid for g in sys_.groups.values()):
            sys_.groups[name] = _Group(uid)
        else:
            gid = 100
        home = f"/home/{name}"
        sys_.users[name] = _User(
            uid,
            gid,
            draw(st.sampled_from(["", "Someone", "Some One,,,"])),
            home,
            draw(st.sampled_from(SHELLS)),
            draw(st.sampled_from(["!", "*", HASHES[0], "!" + HASHES[0]])),
            draw(st.sampled_from([None, None, 1, 20999])),
        )
        if draw(st.booleans()):
            sys_.nodes[home] = _Node(0o755, uid, gid)
            if draw(st.booleans()):
                sys_.nodes[home + "/.ssh"] = _Node(draw(st.sampled_from([0o700, 0o755])), uid, gid)
                sys_.nodes[home + "/.ssh/authorized_keys"] = _Node(
                    draw(st.sampled_from([0o600, 0o644])),
                    uid,
                    gid,
                    text="".join(k + "\n" for k in draw(st.lists(st.sampled_from(KEYS)))),
                )
    for name in names:  # sometimes a directory is already where a new home may go
        if draw(st.booleans()):
            sys_.nodes.setdefault(f"/srv/{name}", _Node(0o755, 0, 0))
    for gname in draw(st.lists(NAMES, unique=True, max_size=3)):
        if gname not in sys_.groups:
            members = draw(st.lists(st.sampled_from(["root", *names]), unique=True))
            sys_.groups[gname] = _Group(2000 + len(sys_.groups), members)
    for name in names:
        if draw(st.booleans()):
            sys_.groups["sudo"].members.append(name)
    return sys_


def _opt(strategy: Any) -> Any:
    return st.one_of(st.none(), strategy)


@st.composite
def documents(draw: Any, sys_: System) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    existing = [n for n in sys_.users if n != "root"]
    pool = st.one_of(NAMES, st.sampled_from(existing)) if existing else NAMES
    user_names = draw(st.lists(pool, unique=True, max_size=4))
    group_pool = st.one_of(
        NAMES,
        st.sampled_from([g for g in sys_.groups if g not in ("root", "sudo", "users")] or ["devs"]),
    )
    group_names = draw(st.lists(group_pool, unique=True, max_size=3))
    member_pool = st.sampled_from(sorted(set(existing) | set(user_names)) or ["root"])
    groups = []
    for name in group_names:
        entry: dict[str, Any] = {
            "name": name,
            "state": draw(st.sampled_from(["present", "present", "absent"])),
        }
        if (gid := draw(_opt(st.integers(2000, 2006)))) is not None:
            entry["gid"] = gid
        if (members := draw(_opt(st.lists(member_pool, unique=True, max_size=3)))) is not None:
            entry["members"] = members
        groups.append(entry)
    group_choice = st.sampled_from(sorted({*group_names, *sys_.groups} - {"root"}))
    users = []
    for name in user_names:
        entry = {
            "name": name,
            "state": draw(st.sampled_from(["present", "present", "locked", "absent"])),
        }
        fields = {
            "uid": _opt(st.integers(1000, 1012)),
            "fullName": _opt(st.sampled_from(["Someone", "Other Person"])),
            "shell": _opt(st.sampled_from(SHELLS)),
            "home": _opt(st.sampled_from([f"/home/{name}", f"/srv/{name}"])),
            "primaryGroup": _opt(group_choice),
            "groups": _opt(st.lists(group_choice, unique=True, max_size=2)),
            "admin": _opt(st.booleans()),
            "password": _opt(st.sampled_from(HASHES).map(lambda h: {"hash": h})),
            "sshAuthorizedKeys": _opt(st.lists(st.sampled_from(KEYS), unique=True)),
            "expires": _opt(st.sampled_from(["2027-06-30", "2031-01-01"])),
            "removeHome": _opt(st.booleans()),
        }
        for key, strategy in fields.items():
            if (value := draw(strategy)) is not None:
                entry[key] = value
        users.append(entry)
    return users, groups


def _plan(sys_: System, users: list[Any], groups: list[Any]) -> list[Change]:
    facts = sys_.facts(facts_from)
    ctx = PlanContext(host=Host(root="/", os_name="linux"))
    ctx.facts = {"users": facts, "groups": facts}
    ctx.desired = {"users": parse_users(users), "groups": parse_groups(groups)}
    return GROUPS.plan(ctx.desired["groups"], ctx) + USERS.plan(ctx.desired["users"], ctx)


def _consistent(users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> bool:
    """What validation guarantees: a user's groups never contradict authoritative members."""
    members = {g["name"]: set(g["members"]) for g in groups if "members" in g}
    return all(
        u["name"] in members[g]
        for u in users
        if u["state"] != "absent"
        for g in u.get("groups", [])
        if g in members
    )


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(st.data())
def test_plan_apply_plan_is_empty(data: Any) -> None:
    sys_ = data.draw(systems())
    users, groups = data.draw(documents(sys_))
    assume(_consistent(users, groups))
    before = _snapshot(sys_)
    first = _plan(sys_, users, groups)
    assume(not any(c.error for c in first))
    _apply(sys_, first)
    check_accounts(sys_, before, users, groups)
    second = _plan(sys_, users, groups)
    assert [c.to_dict() for c in second] == []


def _apply(sys_: System, changes: list[Change]) -> None:
    """Through the engine, as a machine would: every change must succeed."""
    results = engine.execute(Plan(changes), SimHost(sys_))
    assert [(r.change.name, r.status, r.message) for r in results if r.status != "ok"] == []


# -- the oracle: the account files, field by field ---------------------------------------------
def _rows(text: str) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in text.splitlines()}


def _snapshot(sys_: System) -> dict[str, dict[str, list[str]]]:
    """The four account files by name, plus the directories on disk (under "dirs")."""
    out = {name: _rows(text) for name, text in sys_.files().items()}
    out["dirs"] = {p: [] for p, node in sys_.nodes.items() if node.text is None}
    return out


def _days(text: str) -> str:
    return str((datetime.date.fromisoformat(text) - datetime.date(1970, 1, 1)).days)


def _real(field: str) -> bool:
    return field.lstrip("!") not in ("", "*")


def check_accounts(
    sys_: System,
    before: dict[str, dict[str, list[str]]],
    users: list[dict[str, Any]],
    groups: list[dict[str, Any]],
) -> None:
    """/etc/passwd, /etc/shadow, /etc/group and /etc/gshadow after apply, field by field."""
    now = _snapshot(sys_)
    passwd, shadow, group, gshadow = now["passwd"], now["shadow"], now["group"], now["gshadow"]
    gids = {name: int(row[2]) for name, row in group.items()}
    for name, row in group.items():  # gshadow lists the same members as group
        assert gshadow[name][3] == row[3], name
    for g in groups:
        if g["state"] == "absent":
            assert g["name"] not in group and g["name"] not in gshadow, g
            continue
        row = group[g["name"]]
        if "gid" in g:
            assert int(row[2]) == g["gid"], g
        if "members" in g:
            assert set(filter(None, row[3].split(","))) == set(g["members"]), (g, row)
    for u in users:
        name = u["name"]
        member_of = {n for n, row in group.items() if name in row[3].split(",")}
        if u["state"] == "absent":
            assert name not in passwd and name not in shadow and not member_of, (u, member_of)
            continue
        pw, sh = passwd[name], shadow[name]
        assert len(pw) == 7 and len(sh) == 9, (pw, sh)
        old_pw, old_sh = before["passwd"].get(name), before["shadow"].get(name)
        # passwd: name:x:uid:gid:gecos:home:shell
        assert pw[1] == "x"
        if "uid" in u:
            assert int(pw[2]) == u["uid"], (u, pw)
        elif old_pw is not None:
            assert pw[2] == old_pw[2], (u, pw)
        if "primaryGroup" in u:
            assert int(pw[3]) == gids[u["primaryGroup"]], (u, pw)
        if "fullName" in u:
            assert pw[4] == u["fullName"] or pw[4].split(",")[0] == u["fullName"], (u, pw)
        home = u.get("home") or (old_pw[5] if old_pw else f"/home/{name}")
        assert pw[5] == home, (u, pw)
        if old_pw is None or home != old_pw[5]:  # created or moved: pwck finds the directory
            node = sys_.nodes.get(home)
            assert node is not None and node.text is None, (u, home)
            if home not in before["dirs"]:  # made or moved here: the user's; else left as found
                assert node.uid == int(pw[2]), (u, node)
        if "shell" in u:
            assert pw[6] == u["shell"], (u, pw)
        # supplementary groups are additive; admin is membership of sudo
        assert set(u.get("groups", ())) - {n for n in group if int(group[n][2]) == int(pw[3])} <= (
            member_of
        ), (u, member_of)
        if u.get("admin") is True:
            assert "sudo" in member_of or int(pw[3]) == gids["sudo"], u
        if u.get("admin") is False:
            assert "sudo" not in member_of, u
        _check_shadow(u, sh, old_sh)
        if "sshAuthorizedKeys" in u:
            keys = sys_.nodes.get(home + "/.ssh/authorized_keys")
            text = "".join(k + "\n" for k in u["sshAuthorizedKeys"])
            assert keys is not None and keys.text == text and keys.mode == 0o600, (u, keys)
            assert keys.uid == int(pw[2]), (u, keys)


def _check_shadow(u: dict[str, Any], sh: list[str], old: list[str] | None) -> None:
    """The password field (hash and lock marker on their own) and the expiry field."""
    field, expire = sh[1], sh[7]
    wanted = u.get("password", {}).get("hash")
    had = "!" if old is None else old[1]  # useradd leaves "!"
    if u["state"] == "locked":
        assert field.startswith("!"), (u, sh)
        assert field[1:] == (wanted if wanted is not None else had.removeprefix("!")), (u, sh)
        assert expire == "1", (u, sh)
        return
    if wanted is not None:
        assert field == wanted, (u, sh)
    elif _real(had):
        assert field == had.removeprefix("!"), (u, sh)  # unlocked, the hash kept
    else:
        assert field == had, (u, sh)  # "!" or "*": nothing to unlock
    expires = u.get("expires")
    if expires == "never" or (expires is None and (old is None or old[7] == "1")):
        assert expire == "", (u, sh)
    elif expires is None:
        assert expire == old[7], (u, sh)  # type: ignore[index]
    else:
        assert expire == _days(expires), (u, sh)


# -- every move between present / locked / absent, with and without a hash ----------------------
# (password field, expiry field) of an account before the run; None: no such account
BEFORE = [
    None,
    ("!", None),  # created without a password
    ("*", None),
    (HASHES[0], None),
    ("!" + HASHES[0], 1),  # locked
    ("!", 1),  # locked, no password
    ("!" + HASHES[0], None),  # half locked: the hash only
    (HASHES[0], 1),  # half locked: the expiry only (what the old re-read took for locked)
]
WANTED = list(
    itertools.product(
        ["present", "locked", "absent"],
        [None, HASHES[0], HASHES[1]],
        [None, "2031-01-01", "never"],
    )
)


def _transition_case(
    sys_: System, name: str, uid: int, before: Any, wanted: tuple[Any, ...]
) -> dict[str, Any]:
    if before is not None:
        sys_.groups[name] = _Group(uid)
        sys_.users[name] = _User(uid, uid, "", f"/home/{name}", "/bin/sh", *before)
        sys_.nodes[f"/home/{name}"] = _Node(0o755, uid, uid)
    state, hashed, expires = wanted
    entry: dict[str, Any] = {"name": name, "state": state}
    if hashed is not None:
        entry["password"] = {"hash": hashed}
    if expires is not None:
        entry["expires"] = expires
    return entry


def _root_system() -> System:
    sys_ = System()
    sys_.users["root"] = _User(0, 0, "root", "/root", "/bin/bash", "$6$r$rootHash")
    sys_.groups.update(root=_Group(0), sudo=_Group(27), users=_Group(100))
    return sys_


def _converge(sys_: System, users: list[dict[str, Any]]) -> None:
    before = _snapshot(sys_)
    first = _plan(sys_, users, [])
    assert not [c.error for c in first if c.error]
    _apply(sys_, first)
    check_accounts(sys_, before, users, [])
    assert [c.to_dict() for c in _plan(sys_, users, [])] == []


def test_every_state_transition_alone() -> None:
    """Each (before, wanted) pair on its own: 8 x 27 runs."""
    for before, wanted in itertools.product(BEFORE, WANTED):
        sys_ = _root_system()
        entry = _transition_case(sys_, "acct", 1500, before, wanted)
        try:
            _converge(sys_, [entry])
        except AssertionError as exc:
            raise AssertionError(f"{before} -> {wanted}: {exc}") from exc


@settings(max_examples=150, deadline=None, database=None)
@given(
    st.lists(st.tuples(st.sampled_from(BEFORE), st.sampled_from(WANTED)), min_size=2, max_size=5)
)
def test_every_state_transition_batched(cases: list[tuple[Any, tuple[Any, ...]]]) -> None:
    """Several accounts in one run: their chpasswd lines share the phase's one batch."""
    sys_ = _root_system()
    users = [
        _transition_case(sys_, f"u{i}", 1500 + i, before, wanted)
        for i, (before, wanted) in enumerate(cases)
    ]
    _converge(sys_, users)


def test_home_changes_leave_no_account_without_its_directory() -> None:
    """Moved (with content, re-owned on a uid change), pointed at, or made: never missing."""
    sys_ = _root_system()
    for name, uid in (("mover", 1501), ("pointer", 1502), ("homeless", 1503)):
        _transition_case(sys_, name, uid, ("!", None), ("present", None, None))
    sys_.nodes["/home/mover/notes"] = _Node(0o644, 1501, 1501, text="x")
    del sys_.nodes["/home/homeless"]
    sys_.nodes["/srv/pointer"] = _Node(0o755, 0, 0)
    users = [
        {"name": "mover", "state": "present", "uid": 1601, "home": "/srv/mover"},
        {"name": "pointer", "state": "present", "home": "/srv/pointer"},
        {"name": "homeless", "state": "present", "home": "/srv/homeless"},
    ]
    _converge(sys_, users)
    assert "/home/mover" not in sys_.nodes and sys_.nodes["/srv/mover/notes"].uid == 1601
    assert sys_.nodes["/srv/pointer"].uid == 0 and "/home/pointer" in sys_.nodes
    assert sys_.nodes["/srv/homeless"].uid == 1503
