"""The gateway's storage: nothing above this package knows which database runs.

`open_store(url, busy_timeout)` returns the store for a DATABASE_URL; every backend raises
only our own errors (gateway.errors.StoreBusy, StoreUnavailable, StoreConflict), never its
driver's. SQLite (`sqlite:///path`) is the one backend today.
"""

from .sqlite import UNSIGNED_MARK, Store, Tx

__all__ = ["UNSIGNED_MARK", "Store", "Tx", "open_store"]


def open_store(url, busy_timeout=30):
    """The store a DATABASE_URL names; a URL of no known backend stops the start."""
    return Store(url, busy_timeout=busy_timeout)
