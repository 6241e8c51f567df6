"""Simulated devices for the at-most-once stress test: real agents, in threads of one process.

``python sim_agents.py BASE URL CONNECT_KEY FIRST COUNT`` runs agents FIRST … FIRST+COUNT-1,
each the project's own :class:`~jcstate.agent.loop.Agent` with its own state directory, key,
journal and system root under ``BASE/agent-NNN/`` and the recording stand-in for the OS's
actions. The test SIGKILLs this whole process at random moments and starts it again: every
agent then restarts from what it had made durable, exactly as after a crash or a power cut.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recording_actions import RecordingActions, prepare_root  # noqa: E402

from jcstate.agent.loop import Agent, AgentConfig  # noqa: E402


def _run(agent: Agent, name: str) -> None:
    try:
        agent.run()
    except BaseException:  # an agent that stops loses its commands: say why, loudly
        sys.stderr.write(f"agent {name} stopped:\n{traceback.format_exc()}")
        sys.stderr.flush()


def main(argv: list[str]) -> None:
    base, url, key, first, count = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    threads = []
    for i in range(first, first + count):
        name = f"agent-{i:03d}"
        home = os.path.join(base, name)
        root = prepare_root(os.path.join(home, name))  # the hostname is the root's name
        config = AgentConfig(
            server=url,
            connect_key=key,
            state_dir=os.path.join(home, "state"),
            log_file=None,
            install_dir=os.path.join(home, "opt"),
            root=root,
            wait=5.0,
            max_backoff=0.5,
        )
        agent = Agent(config, actions=RecordingActions())
        threads.append(threading.Thread(target=_run, args=(agent, name), daemon=True))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
