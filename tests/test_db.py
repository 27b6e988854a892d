"""The store's write discipline: writers of one process queue, within the busy timeout."""

import sqlite3
import threading

import pytest

from gateway.db import Store


def test_a_queued_writer_gives_up_after_the_busy_timeout(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3", busy_timeout=0.05)
    store.init_schema()
    holding, release = threading.Event(), threading.Event()

    def hold():
        with store.write():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"), store.write():
            pass
    finally:
        release.set()
        holder.join()
    with store.write() as tx:  # the lock was released: the next writer goes through
        assert tx.count("orders") == 0
