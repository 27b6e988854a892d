"""Test-only crash points: the reliability suite SIGKILLs the service at named places.

`crash_point(name)` does nothing unless the environment variable GATEWAY_CRASH_AT names that
place (`name`, or `name:n` for its n-th pass); production never sets it. Then the process
kills itself with SIGKILL, as a power cut or the OOM killer would: no cleanup, no rollback
but SQLite's own, so the suite can prove what survives a crash at exactly that point.
"""

import functools
import itertools
import os
import signal


@functools.cache
def _armed():
    """(name, n) from GATEWAY_CRASH_AT, read once, or None when unset (always in production)."""
    value = os.environ.get("GATEWAY_CRASH_AT", "")
    if not value:
        return None
    name, _, nth = value.partition(":")
    return name, int(nth or 1), itertools.count(1)


def crash_point(name):
    """Die here, at once, if the suite asked for a crash at this place and pass."""
    armed = _armed()
    if armed is not None and armed[0] == name and next(armed[2]) == armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
