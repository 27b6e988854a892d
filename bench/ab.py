"""Paired A/B of two checkouts of the gateway: `python -m bench.ab OTHER_ROOT [scenario ...]`.

Runs this checkout's gateway (ours) and the one in OTHER_ROOT (theirs) side by side, each
with its own database and billing worker, in alternating rounds like make bench; prints
req/s, p50, p99 and the paired ratio per scenario and concurrency. For judging a change by
what it does to the figures, before adopting it. BENCH_AB_HISTORY=N first fills each database
with N served orders (as make bench's growth measurement does).
"""

import collections
import os
import sys
import tempfile
import time

from . import delivery, measure, orders, servers
from .load import drive
from .stats import median, paired_ratio

HISTORY = int(os.environ.get("BENCH_AB_HISTORY", "0"))  # served orders already in each database


def gateway_at(root, workdir, name, hook):
    server = servers.gateway(workdir, name, hook)
    server.argv = [sys.executable, os.path.join(root, "wsgi.py")]
    return server


def main(other, scenarios):
    workdir = tempfile.mkdtemp(prefix="gateway-ab-", dir=os.environ.get("BENCH_TMP"))
    receiver = servers.receiver(workdir).start()
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    ours = gateway_at(servers.ROOT, workdir, "ours", hook)
    theirs = gateway_at(os.path.abspath(other), workdir, "theirs", hook)
    count = int(2000 * measure.DURATION * measure.ROUNDS * len(measure.CONCURRENCY)) + 1000
    supplies = {}
    for server in (ours, theirs):
        store = orders.open_store(server.config)
        store.init_schema()
        orders.history(store, HISTORY)
        fresh, paid = orders.pending_orders(store, count), orders.pending_orders(store, 1)[0]
        store.close()
        server.start()
        duplicate = orders.callback(server.config, paid, "t-duplicate")
        link = orders.link_request(server.config)
        measure.timed(server, lambda d=duplicate: ("first", d), 1, 0.2)
        pool = collections.deque()
        if "confirm" in scenarios:  # first POSTs need fresh pages: harvest them untimed
            while len(pool) < 600 * measure.DURATION * measure.ROUNDS * len(measure.CONCURRENCY):
                run = drive(server.port, lambda link=link: ("pay", link), 8, 3, keep=True)
                pool.extend(filter(None, (orders.confirmation(head, page)
                                          for _, head, page in run.kept)))
        supplies[server.name] = {
            "callback": orders.callbacks(server.config, fresh),
            "duplicate": lambda d=duplicate: ("dup", d),
            "pay": lambda link=link: ("pay", link),
            "confirm": lambda pool=pool: ("confirm", pool.popleft()) if pool else None,
        }
    arrivals = delivery.Arrivals(receiver.arrivals_path)
    try:
        print("| scenario | c | ours req/s | theirs req/s | ratio | ours p50/p99 ms | "
              "theirs p50/p99 ms | CPU ms/req | settled req/s |")
        print("|---" * 9 + "|")
        for scenario in scenarios:
            for c in measure.CONCURRENCY:
                a, b, ratio, settled = pair(ours, theirs, supplies, scenario, c, arrivals)
                print(f"| {scenario} | {c} | {a['rate']:.0f} | {b['rate']:.0f} | {ratio:.2f} "
                      f"| {a['p50']:.1f} / {a['p99']:.1f} | {b['p50']:.1f} / {b['p99']:.1f} "
                      f"| {a['cpu_ms']:.2f} / {b['cpu_ms']:.2f} "
                      f"| {median(settled[0]) if settled[0] else 0:.0f} / "
                      f"{median(settled[1]) if settled[1] else 0:.0f} |", flush=True)
    finally:
        for server in (ours, theirs, receiver):
            server.stop()


def pair(ours, theirs, supplies, scenario, concurrency, arrivals):
    """measure.pair, except that each side's billing backlog drains before the next run; for
    callbacks also each side's settled rate (delivery.Lags) and the CPU per callback including
    its delivery."""
    sides = (measure.Side(), measure.Side())
    lags = (delivery.Lags(arrivals), delivery.Lags(arrivals))
    for round_ in range(measure.ROUNDS):
        for index in (0, 1) if round_ % 2 == 0 else (1, 0):
            server = (ours, theirs)[index]
            before = server.cpu()
            run, cpu = measure.timed(server, supplies[server.name][scenario], concurrency,
                                     measure.DURATION)
            if scenario == "callback":
                lags[index].after(run)
                cpu = server.cpu() - before
            sides[index].add(run, cpu, 200)
            time.sleep(0.2)
    return (sides[0].summary(), sides[1].summary(),
            paired_ratio(sides[0].rates, sides[1].rates), (lags[0].settled, lags[1].settled))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["callback"])
