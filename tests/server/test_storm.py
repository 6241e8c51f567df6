"""Load that comes back all at once: 1,000 simulated agents after a 10-minute outage, and 1,000
clones of one machine enrolling. Loopback only, a real ``jcstate server`` process.

The simulated agents are ``bench/server_load.py``'s (one keep-alive connection each, every
request signed). The outage is on a simulated clock: each agent's retries during the 600 s
follow the agent's own backoff (``jcstate.agent.loop.backoff_delay``: full jitter, base 1 s,
cap 300 s, as ``jcstate agent`` runs it); the server is really killed (SIGKILL) and restarted,
and the agents come back in the order and spacing of their simulated return times, compressed
100 times so that the test takes seconds.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path
from typing import Any

import live

from jcstate.agent.loop import backoff_delay

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import server_load  # noqa: E402

AGENTS = 1000
OUTAGE = 600.0  # seconds, simulated
POLL = 55.0  # the agent's long-poll wait: in steady state each agent asks once per POLL s
WINDOW = 10.0  # seconds over which request rates are compared
COMPRESS = 100.0  # simulated seconds per real second when the agents come back


def return_times(agents: int, outage: float) -> list[float]:
    """When each agent's first retry after the end of the outage happens (simulated s), every
    agent's held poll having failed at 0 and each retry failing until ``outage``."""
    times = []
    for _ in range(agents):
        t, failures = 0.0, 0
        while t < outage:
            t += backoff_delay(failures, 1.0, 300.0)
            failures += 1
        times.append(t)
    return times


def peak_rate(times: list[float], window: float) -> float:
    """The most requests per second in any ``window`` starting at a request."""
    times = sorted(times)
    peak, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        peak = max(peak, j - i)
    return peak / window


def _server(tmp: Path, port: int) -> live.ServerProcess:
    return live.ServerProcess(
        ["--data", str(tmp / "data"), "--enroll-burst", "5000", "--max-in-flight", "0"], port
    ).start(timeout=60)


async def _enroll_all(port: int, key: str, hostname_of: Any) -> list[server_load.SimAgent]:
    agents = [server_load.SimAgent(port) for _ in range(AGENTS)]
    gate = asyncio.Semaphore(32)

    async def enroll(i: int, agent: server_load.SimAgent) -> None:
        async with gate:
            await agent.enroll(key, hostname_of(i))

    await asyncio.gather(*(enroll(i, a) for i, a in enumerate(agents)))
    for agent in agents:  # a connection belongs to this event loop: the next one reconnects
        agent.conn.close()
    return agents


def test_a_thousand_agents_come_back_from_a_ten_minute_outage_gently(tmp_path: Path) -> None:
    # the rate at which the fleet comes back, from the agent's own backoff
    returns = return_times(AGENTS, OUTAGE)
    steady = AGENTS / POLL
    after = [t for t in returns if t >= OUTAGE]
    assert len(after) == AGENTS
    assert peak_rate(after, WINDOW) <= 2 * steady, (peak_rate(after, WINDOW), steady)

    port = live.free_port()
    server = _server(tmp_path, port)
    try:
        key = (tmp_path / "data" / "connect-key").read_text().strip()
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        agents = asyncio.run(_enroll_all(port, key, lambda i: i))
        # 100 commands, delivered and run just before the outage; the results never got out
        targets = agents[:100]
        issued = [server_load._admin_command(server.url, token, a.device_id) for a in targets]
        journal: dict[str, dict[str, Any]] = {}  # device id → {command id: result}
        ran: collections.Counter[str] = collections.Counter()

        async def poll_and_run(agent: server_load.SimAgent) -> None:
            query = f"etag={agent.etag}&wait=0&commands={agent.cursor}"
            status, work, _ = await agent.call("GET", f"/api/v1/device/work?{query}")
            assert status == 200, work
            agent.etag = work["etag"]
            for command in work["commands"]:
                agent.cursor = max(agent.cursor, int(command["seq"]))
                done = journal.setdefault(agent.device_id, {})
                if command["id"] not in done:  # the agent's journal: at most once
                    ran[command["id"]] += 1
                    done[command["id"]] = {"id": command["id"], "status": "succeeded"}

        async def before() -> None:
            await asyncio.gather(*(poll_and_run(a) for a in targets))
            for agent in agents:
                agent.conn.close()

        asyncio.run(before())
        assert sorted(ran) == sorted(issued) and set(ran.values()) == {1}
        server.kill()  # the outage: no answer, no goodbye

        server = _server(tmp_path, port)

        async def come_back() -> list[float]:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            seen: list[float] = []

            async def back(agent: server_load.SimAgent, at: float) -> None:
                await asyncio.sleep((at - OUTAGE) / COMPRESS)
                seen.append(OUTAGE + (loop.time() - t0) * COMPRESS)
                # a restarted agent process sends its journal's unacknowledged results first
                # and polls with its cursor back at 0 (commands are redelivered until acked)
                agent.cursor = 0
                pending = list(journal.get(agent.device_id, {}).values())
                if pending:
                    status, answer, _ = await agent.call(
                        "POST", "/api/v1/device/commands/results", {"results": pending}
                    )
                    assert status == 200, answer
                await poll_and_run(agent)
                if pending:  # what was redelivered is still unacknowledged: send it again
                    await agent.call(
                        "POST", "/api/v1/device/commands/results", {"results": pending}
                    )

            await asyncio.gather(*(back(a, t) for a, t in zip(agents, returns, strict=True)))
            for agent in agents:
                agent.conn.close()
            return seen

        seen = asyncio.run(come_back())
        # the fleet really came back spread out (simulated seconds, as sent)
        assert peak_rate(seen, WINDOW) <= 2 * steady, (peak_rate(seen, WINDOW), steady)
        # nobody enrolled twice: 1,000 devices, 1,000 successful enrollments in the audit
        import sqlite3

        db = sqlite3.connect(tmp_path / "data" / "jcstate.db")
        try:
            assert db.execute("SELECT count(*) FROM devices").fetchone()[0] == AGENTS
            enrolled = db.execute(
                "SELECT count(*) FROM audit WHERE action = 'POST /api/v1/enroll' AND outcome='ok'"
            ).fetchone()[0]
            assert enrolled == AGENTS
            states = dict(
                db.execute(
                    "SELECT state, count(*) FROM commands WHERE source = 'admin' GROUP BY state"
                ).fetchall()
            )
        finally:
            db.close()
        # no command ran twice, and every one is stored finished once
        assert set(ran.values()) == {1} and len(ran) == len(issued)
        assert states == {"succeeded": len(issued)}, states
    finally:
        server.kill()


def test_a_thousand_clones_enroll_as_a_thousand_devices_and_take_nothing_over(
    tmp_path: Path,
) -> None:
    port = live.free_port()
    server = _server(tmp_path, port)
    try:
        key = (tmp_path / "data" / "connect-key").read_text().strip()

        async def clones() -> tuple[list[server_load.SimAgent], list[str]]:
            # every clone has the same host name (sim00007): an image copied 1,000 times
            agents = await _enroll_all(port, key, lambda i: 7)
            # each enrolls again (a restart that lost its state file): its own record back
            again = []
            for agent in agents[:50]:
                first, agent.device_id = agent.device_id, ""  # enrolling is signed without one
                await agent.enroll(key, 7)
                again.append(first == agent.device_id)
            for agent in agents:
                agent.conn.close()
            return agents, [str(a) for a in again]

        agents, again = asyncio.run(clones())
        ids = {a.device_id for a in agents}
        assert len(ids) == AGENTS  # 1,000 distinct devices
        assert set(again) == {"True"}  # the same key gets its own record, never another's
        import sqlite3

        db = sqlite3.connect(tmp_path / "data" / "jcstate.db")
        try:
            rows = db.execute("SELECT id, hostname, public_key FROM devices").fetchall()
        finally:
            db.close()
        assert len(rows) == AGENTS and {r[1] for r in rows} == {"sim00007"}
        assert len({r[2] for r in rows}) == AGENTS  # every device keeps its own key
    finally:
        server.kill()
