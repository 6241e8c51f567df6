"""The agent imports nothing of the server and no web or database framework."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "jcstate.server",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "requests",
)


def test_agent_imports_nothing_of_the_server():
    code = (
        "import sys, json\n"
        "import jcstate.agent.loop, jcstate.agent.client, jcstate.agent.install\n"
        "import jcstate.cli.agent\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    assert "jcstate.agent.loop" in modules  # the check itself works
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN or m.startswith("jcstate.server")]
    assert leaked == []
