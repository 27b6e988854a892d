"""Where one scenario's time goes in the gateway: py-spy samples it under load.

`python -m bench.profile [callback|pay|confirm|duplicate] [concurrency] [seconds] [--cpu]
[--no-worker]`
prints, for the request threads and for the billing worker thread, the share of samples in
which each function was on the stack. Without --cpu it samples wall time (waiting included:
where latency goes); with --cpu only the thread holding the GIL (where Python CPU goes).
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

from . import orders, servers
from .load import drive

PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")
THREADS = {"requests": "WSGITask.execute", "billing worker": "Deliverer.run_forever"}


def supplies(gateway):
    """A request supply per scenario (confirm uses pages harvested first, untimed)."""
    config = gateway.config
    store = orders.open_store(config)
    fresh, paid = orders.pending_orders(store, 60000), orders.pending_orders(store, 1)[0]
    store.close()
    link = orders.link_request(config)
    duplicate = orders.callback(config, paid, "t-duplicate")
    pool = collections.deque()

    def confirm():
        if not pool:
            run = drive(gateway.port, lambda: ("pay", link), 8, 5, keep=True)
            pool.extend(orders.confirmation(head, page) for _, head, page in run.kept)
        return "confirm", pool.popleft()

    return {"callback": orders.callbacks(config, fresh), "pay": lambda: ("pay", link),
            "confirm": confirm, "duplicate": lambda: ("dup", duplicate)}


def main(scenario="callback", concurrency="8", seconds="8", *flags):
    workdir = tempfile.mkdtemp(prefix="gateway-profile-")
    receiver = servers.receiver(workdir).start()
    gateway = servers.gateway(workdir, "gateway", f"http://127.0.0.1:{receiver.port}/hook")
    if "--no-worker" in flags:  # the request path alone, without billing delivery
        gateway.env["GATEWAY_BILLING_WORKER"] = "false"
    store = orders.open_store(gateway.config)
    store.init_schema()
    store.close()
    gateway.start()
    supply = supplies(gateway)[scenario]
    if scenario == "duplicate":
        drive(gateway.port, supply, 1, 0)
    out = f"{workdir}/samples.txt"
    try:
        drive(gateway.port, supply, int(concurrency), 1)  # warm up
        mode = ["--gil"] if "--cpu" in flags else ["--idle"]
        spy = subprocess.Popen(
            [PY_SPY, "record", "-p", str(gateway.process.pid), "-d", seconds, "-r", "250",
             "-f", "raw", "-o", out, "--nonblocking", *mode],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = drive(gateway.port, supply, int(concurrency), float(seconds) + 1)
        spy.wait()
    finally:
        gateway.stop()
        receiver.stop()
    print(f"{scenario} c={concurrency}: {run.rate:.0f} req/s while sampled")
    top = int(os.environ.get("PROFILE_TOP", "25"))
    for name, marker in THREADS.items():
        share, lines = summarize(out, marker, top)
        print(f"\n{name} ({share:.0f} % of all samples):\n{lines}")
    shutil.rmtree(workdir, ignore_errors=True)


def summarize(path, marker, top=25):
    """The functions most often on the stacks that contain marker, by share of samples."""
    inclusive, total, everything = collections.Counter(), 0, 0
    with open(path) as samples:
        for line in samples:
            stack, _, count = line.rstrip().rpartition(" ")
            everything += int(count)
            if marker not in stack:
                continue
            total += int(count)
            for frame in {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}:
                inclusive[frame] += int(count)
    if not total:
        return 0.0, "  (no samples)"
    return total / everything * 100, "\n".join(
        f"  {count / total * 100:5.1f}%  {frame}" for frame, count in inclusive.most_common(top))


if __name__ == "__main__":
    main(*sys.argv[1:])
