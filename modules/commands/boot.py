"""When the managed system booted: how a ``restart`` is known to have happened.

Read from ``/proc/stat`` (``btime``, seconds since the epoch) through the host, so a root
prefix reads that system's view; on the running machine psutil answers when /proc is not
readable (macOS, Windows). None when neither can tell (an image that is not running).
"""

from __future__ import annotations

from jcstate.errors import HostError
from jcstate.host import Host

__all__ = ["boot_time", "rebooted_since"]

# btime is whole seconds; psutil's float can differ by a fraction between calls.
_TOLERANCE = 1.0


def boot_time(host: Host) -> float | None:
    """Seconds since the epoch at which ``host`` booted, or None when unknown."""
    try:
        text = host.read_text("/proc/stat")
    except HostError:
        text = None
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "btime" and value.strip().isdigit():
            return float(value.strip())
    if host.root == "/":
        import psutil  # only here: reading /proc/stat is enough on Linux

        return float(psutil.boot_time())
    return None


def rebooted_since(before: float | None, now: float | None) -> bool:
    """True when the boot time moved: the system has restarted since ``before`` was read."""
    if before is None or now is None:
        return False
    return abs(now - before) > _TOLERANCE
