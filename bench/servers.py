"""The processes under test: each on its own loopback port, with its CPU and peak RSS."""

import os
import secrets
import socket
import subprocess
import sys
import time

from gateway import billing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = "8"
PRODUCT = "001234-0001-0001"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One subprocess listening on a loopback port; its output goes to a log file."""

    def __init__(self, name, argv, workdir, env=None):
        self.name, self.argv = name, argv
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.env = dict(os.environ, LISTEN=f"127.0.0.1:{self.port}", THREADS=THREADS,
                        PYTHONUNBUFFERED="1", **(env or {}))
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def cpu(self):
        """User + system CPU seconds the process has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def peak_rss_mb(self):
        """The process's peak resident set (VmHWM), in MiB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def gateway_config(workdir, name, billing_url):
    """A production config (long random secrets, https PUBLIC_URL) in workdir; its values."""
    values = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "CABINET_SECRET": secrets.token_urlsafe(32),
        "CHRONOPAY_SHARED_SECRET": secrets.token_urlsafe(32),
        "BILLING_SECRET": billing.new_secret(),
        "DATABASE_URL": f"sqlite:///{workdir}/{name}.sqlite3",
        "PUBLIC_URL": "https://pay.bench.local",
        "CABINET_URL": "https://cabinet.bench.local/",
        "CHRONOPAY_PRODUCT_ID": PRODUCT,
        "CHRONOPAY_CALLBACK_IPS": ["127.0.0.1"],
        "BILLING_URL": billing_url,
        "BILLING_TIMEOUT": 5.0,
        # The load opens one link (same fields, same second) for many orders of account 6.
        "LINK_MAX_ORDERS": 10**9,
        "RECENT_PAYMENT_WARNING": 0,
    }
    path = os.path.join(workdir, f"{name}.config.py")
    with open(path, "w") as out:
        out.writelines(f"{key} = {value!r}\n" for key, value in values.items())
    return path, values


def gateway(workdir, name, billing_url):
    """The gateway as ops run it: `python wsgi.py`, production config, 8 threads."""
    path, values = gateway_config(workdir, name, billing_url)
    server = Server(name, [sys.executable, "wsgi.py"], workdir, {"GATEWAY_CONFIG": path})
    server.config = values
    return server


def bare(workdir, kind):
    """A baseline from bench/apps.py: "ok" or "insert" (with its own database file)."""
    argv = [sys.executable, "bench/apps.py", kind]
    if kind == "insert":
        argv.append(os.path.join(workdir, "insert.sqlite3"))
    return Server(kind, argv, workdir)


def receiver(workdir):
    """The local billing receiver; its log has one "<order_id> <arrival>" line per call."""
    log = os.path.join(workdir, "arrivals.txt")
    server = Server("receiver", [sys.executable, "bench/receiver.py", log], workdir)
    server.arrivals_path = log
    return server
