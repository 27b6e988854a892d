"""The baselines, served exactly like the gateway: waitress on LISTEN with THREADS threads.

`python bench/apps.py ok` answers "OK" to anything: what bare Flask costs.
`python bench/apps.py insert DB` makes one durable SQLite insert per request (WAL,
synchronous=FULL, BEGIN IMMEDIATE, a connection per thread, writers queued on one in-process
lock), exactly as the gateway's Store writes: the floor that a callback, which must be
durable before its 200, cannot beat.
"""

import os
import sqlite3
import sys
import threading
import time

from flask import Flask, request
from waitress import serve

PLAIN = {"Content-Type": "text/plain; charset=utf-8"}


def ok_app():
    app = Flask("ok")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def ok(path):
        return "OK", 200, PLAIN

    return app


def insert_app(path):
    app = Flask("insert")
    local = threading.local()
    write_lock = threading.RLock()  # the Store's write discipline, see gateway/store/sqlite.py
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                  " received_at REAL NOT NULL, body TEXT NOT NULL)")
    setup.close()

    def connection():
        if getattr(local, "conn", None) is None:
            local.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                         check_same_thread=False)
            local.conn.execute("PRAGMA journal_mode=WAL")
            local.conn.execute("PRAGMA synchronous=FULL")
            local.conn.execute("PRAGMA busy_timeout=30000")
        return local.conn

    @app.route("/", defaults={"path": ""}, methods=["POST"])
    @app.route("/<path:path>", methods=["POST"])
    def insert(path):
        conn = connection()
        with write_lock:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO hits (received_at, body) VALUES (?, ?)",
                         (time.time(), request.get_data(as_text=True)))
            conn.execute("COMMIT")
        return "OK", 200, PLAIN

    return app


if __name__ == "__main__":
    app = ok_app() if sys.argv[1] == "ok" else insert_app(sys.argv[2])
    serve(app, listen=os.environ["LISTEN"], threads=int(os.environ["THREADS"]), ident="bench")
