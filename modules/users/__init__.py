"""Local user accounts: the model lives in ``model``, one backend per OS beside it."""

from __future__ import annotations

from jcstate.modules.users.model import UserSpec, parse
from jcstate.resource import Resource

__all__ = ["RESOURCE", "UserSpec", "parse"]

RESOURCE = Resource(
    key="users",
    parse=parse,
    backends={
        "linux": "jcstate.modules.users.linux:BACKEND",
        "darwin": "jcstate.modules.users.darwin:BACKEND",
        "windows": "jcstate.modules.users.windows:BACKEND",
    },
    checks="jcstate.modules.users.verify:checks",
)
