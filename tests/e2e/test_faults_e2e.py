"""The device under faults, in a real test host: shadow-utils run by hand while jcstate applies.

An admin's ``useradd``/``usermod``/``groupadd`` loop runs inside the host while ``jcstate apply
--root`` applies a policy of 60 users; both take shadow-utils' lock files, so some of jcstate's
runs find the lock taken and are retried (``Run.retry_on``). Both finish, every account of both
is there, and ``pwck -r``/``grpck -r`` find nothing new.
"""

from __future__ import annotations

import subprocess
import threading

import testhost as th
from harness import apply_policy
from test_accounts import document

USERS = 60
HAND = 40
# accounts made by hand, then usermod on them without pause until jcstate is done (the stop file)
LOOP = (
    "for i in $(seq 1 {n}); do "
    'groupadd hgrp$i; useradd -m -G hgrp$i hand$i; usermod -c "by hand $i" hand$i; '
    "done & while [ ! -e /tmp/stop ]; do usermod -c busy1 nobody; usermod -c busy2 nobody; "
    "groupadd -f hbusy; groupdel hbusy; done; wait"
)


def _policy() -> str:
    users = [{"name": f"fleet{i}", "groups": ["fleet"]} for i in range(USERS)]
    return document(users=users, groups=[{"name": "fleet", "gid": 3100}])


def _complaints(host: th.TestHost, tool: str) -> set[str]:
    res = host.run([tool, "-r"], check=False)
    return {line for line in (res.stdout + res.stderr).splitlines() if line.strip()}


def test_shadow_tools_by_hand_while_jcstate_applies(testhost: th.TestHost) -> None:
    baseline = (_complaints(testhost, "pwck"), _complaints(testhost, "grpck"))
    hand = subprocess.Popen(
        ["chroot", str(testhost.root), "sh", "-c", LOOP.format(n=HAND)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        result = apply_policy(testhost, _policy(), timeout=300)
    finally:
        testhost.path("/tmp/stop").write_text("")
        _, hand_err = hand.communicate(timeout=300)
    report = result.report
    failed = [r for r in report["results"] if r["status"] != "ok"]
    assert result.returncode == 0 and not failed, (result.stderr, failed)
    passwd = testhost.path("/etc/passwd").read_text()
    names = {line.split(":")[0] for line in passwd.splitlines()}
    assert {f"fleet{i}" for i in range(USERS)} <= names
    # the hand loop does not retry: whatever it lost to jcstate's lock it says so; all the rest
    # must be there
    lost = hand_err.count("try again later")
    made = {f"hand{i}" for i in range(1, HAND + 1)} & names
    assert len(made) >= HAND - lost, hand_err
    uids = [line.split(":")[2] for line in passwd.splitlines()]
    assert len(uids) == len(set(uids)), "duplicate uid"
    for name in ("passwd", "shadow", "group", "gshadow"):
        assert testhost.path(f"/etc/{name}").read_text().endswith("\n")
    assert _complaints(testhost, "pwck") <= baseline[0]
    assert _complaints(testhost, "grpck") <= baseline[1]
    again = apply_policy(testhost, _policy())
    assert again.report["results"] == [], again.stdout


def test_a_lock_held_by_another_tool_is_waited_out(testhost: th.TestHost) -> None:
    """``vipw`` or a stuck tool holds ``/etc/passwd.lock`` (its live pid inside) for about 2 s:
    shadow-utils' lckpwdf wait does not cover that file, so ``useradd`` says "cannot lock
    /etc/passwd; try again later."; jcstate tries again and the round succeeds."""
    holder = subprocess.Popen(["chroot", str(testhost.root), "sleep", "2"])
    reaper = threading.Thread(target=holder.wait)  # reaped at once: a zombie would look alive
    reaper.start()
    try:
        testhost.path("/etc/passwd.lock").write_text(f"{holder.pid}")
        result = apply_policy(testhost, document(users=[{"name": "held1"}]), timeout=120)
    finally:
        reaper.join(timeout=30)
    report = result.report
    assert result.returncode == 0, (result.stderr, report["results"])
    assert "held1:" in testhost.path("/etc/passwd").read_text()
    assert not testhost.path("/etc/passwd.lock").exists()


def test_kill_9_at_20_points_over_a_converge_of_100_users(testhost: th.TestHost) -> None:
    """``jcstate apply --state FILE`` SIGKILLed by the test-only hook (JCSTATE_TEST_KILL_AT_POINT:
    the Nth point between system changes) 20 times over a converge of 100 users; after each kill
    the account files are whole and no uid is doubled; after one more round the ledger matches
    the machine both ways."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from harness import jcstate_argv

    users = [{"name": f"k{i}", "groups": ["fleet"]} for i in range(100)]
    policy_text = document(users=users, groups=[{"name": "fleet", "gid": 3200}])
    baseline = (_complaints(testhost, "pwck"), _complaints(testhost, "grpck"))
    with tempfile.TemporaryDirectory(prefix="jcstate-kill-") as tmp:
        policy = os.path.join(tmp, "policy.yaml")
        ledger_path = os.path.join(tmp, "ledger.json")
        Path(policy).write_text(policy_text)
        argv = [*jcstate_argv(), "apply", "--root", str(testhost.root), policy]
        argv += ["--state", ledger_path, "--output", "json"]
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("JCSTATE_")}
        kills = 0
        for point in [3, 8, 5, 12, 2, 9, 6, 11, 4, 7] * 2:
            env = {**base_env, "JCSTATE_TEST_KILL_AT_POINT": str(point)}
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
            kills += 1
            for name in ("passwd", "shadow", "group", "gshadow"):
                text = testhost.path(f"/etc/{name}").read_text()
                assert text and text.endswith("\n"), f"/etc/{name} after kill {kills}"
            uids = [
                ln.split(":")[2] for ln in testhost.path("/etc/passwd").read_text().splitlines()
            ]
            assert len(uids) == len(set(uids)), f"duplicate uid after kill {kills}"
            assert _complaints(testhost, "pwck") <= baseline[0], f"pwck after kill {kills}"
            assert _complaints(testhost, "grpck") <= baseline[1], f"grpck after kill {kills}"
            # what jcstate made so far is in the ledger (claimed before the tool ran)
            names = {
                ln.split(":")[0] for ln in testhost.path("/etc/passwd").read_text().splitlines()
            }
            ledger = (
                json.loads(Path(ledger_path).read_text()) if os.path.exists(ledger_path) else {}
            )
            made = {n for n in names if n.startswith("k") and n[1:].isdigit()}
            assert made <= set(ledger.get("users", {})), f"unrecorded users after kill {kills}"
        assert kills == 20
        made_before_last = len(made)
        assert 0 < made_before_last < 100, "the kills must be spread over the converge"
        proc = subprocess.run(argv, env=base_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ledger = json.loads(Path(ledger_path).read_text())
    names = {ln.split(":")[0] for ln in testhost.path("/etc/passwd").read_text().splitlines()}
    wanted = {f"k{i}" for i in range(100)}
    assert wanted <= names
    assert set(ledger["users"]) == wanted  # every entry is on the machine, every creation in it
    assert all(rec["created"] for rec in ledger["users"].values())
    assert _complaints(testhost, "pwck") <= baseline[0]
    assert _complaints(testhost, "grpck") <= baseline[1]
