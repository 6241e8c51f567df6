"""Action ``elevate``: queued by the server only, checked like every command."""

from __future__ import annotations

import datetime as dt

import pytest

from jcstate.errors import PlanError
from jcstate.modules.commands import MAX_ELEVATION, parse, parse_command


def test_an_elevation_round_trips_and_a_revoke_takes_no_time() -> None:
    cmd = parse_command(
        {
            "id": "c-1",
            "action": "elevate",
            "elevate": {
                "user": "alice",
                "until": "2027-01-31T19:00:00+01:00",
                "seconds": 7200,
                "reason": "INC-4711",
            },
        }
    )
    assert cmd.elevate is not None
    assert cmd.elevate.until == dt.datetime(2027, 1, 31, 18, tzinfo=dt.UTC)
    assert cmd.to_dict()["elevate"] == {
        "user": "alice",
        "until": "2027-01-31T18:00:00Z",
        "seconds": 7200,
        "reason": "INC-4711",
    }
    assert parse_command(cmd.to_dict()) == cmd
    revoke = parse_command(
        {"id": "c-2", "action": "elevate", "elevate": {"user": "alice", "revoke": True}}
    )
    assert revoke.elevate is not None and revoke.elevate.revoke and revoke.elevate.until is None


@pytest.mark.parametrize(
    ("elevate", "words"),
    [
        (None, "needs an 'elevate' mapping"),
        ({"user": "alice", "seconds": 60}, "needs until"),
        ({"user": "alice", "until": "2027-01-31T18:00:00", "seconds": 60}, "needs a time zone"),
        ({"user": "alice", "until": "2027-01-31T18:00:00Z"}, "elevate.seconds"),
        (
            {"user": "alice", "until": "2027-01-31T18:00:00Z", "seconds": MAX_ELEVATION + 1},
            "30 days",
        ),
        ({"user": "../etc", "until": "2027-01-31T18:00:00Z", "seconds": 60}, "account name"),
        ({"user": "alice", "revoke": True, "seconds": 60}, "takes no until"),
        ({"user": "alice", "when": "now"}, "unknown field"),
    ],
)
def test_a_bad_elevation_is_refused_with_what_is_wrong(elevate: object, words: str) -> None:
    item: dict[str, object] = {"id": "c-1", "action": "elevate"}
    if elevate is not None:
        item["elevate"] = elevate
    with pytest.raises(PlanError, match=words):
        parse_command(item)


def test_a_policy_cannot_elevate() -> None:
    with pytest.raises(PlanError, match=r"admin: \{until"):
        parse([{"id": "x", "action": "elevate", "elevate": {"user": "a", "revoke": True}}])
