"""`make bench`: the gateway against bare Flask baselines, delivery lag, memory and growth.

Every server runs under identical waitress settings (8 threads, loopback) in this run; every
figure is a median over ROUNDS alternating rounds, every ratio the median of per-round ratios.
"""

import collections
import os
import shutil
import tempfile
import time

from . import delivery, growth, measure, orders, report, servers
from .stats import median

TARGETS = {"callback": 0.8, "pay": 0.7, "confirm": 0.7, "duplicate": 1.0}
# Enough fresh orders that no callback run runs out (rates stay well under 2,000/s here).
ORDERS = int(2000 * measure.DURATION * measure.ROUNDS * len(measure.CONCURRENCY)) + 1000


def main():
    workdir = tempfile.mkdtemp(prefix="gateway-bench-", dir=os.environ.get("BENCH_TMP"))
    receiver = servers.receiver(workdir).start()
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    gateway = servers.gateway(workdir, "gateway", hook)
    ok, insert = servers.bare(workdir, "ok"), servers.bare(workdir, "insert")
    store = orders.open_store(gateway.config)
    store.init_schema()
    fresh = orders.pending_orders(store, ORDERS)
    paced_orders = orders.pending_orders(store, int(delivery.PACE * delivery.PACED_SECONDS) + 50)
    [paid] = orders.pending_orders(store, 1)
    store.close()
    started = [server.start() for server in (gateway, ok, insert)]
    arrivals = delivery.Arrivals(receiver.arrivals_path)
    try:
        rows, lags = scenarios(gateway, ok, insert, fresh, paid, arrivals)
        paced = delivery.paced(gateway, orders.callbacks(gateway.config, paced_orders), arrivals)
        rss = gateway.peak_rss_mb()
        for server in started:
            server.stop()
        curve, plans = growth.measure_growth(workdir, hook, arrivals)
    finally:
        for server in started + [receiver]:
            server.stop()
    text = report.render(rows, TARGETS, paced, lags, rss, curve, plans, workdir)
    print(text)
    report.write(text)
    shutil.rmtree(workdir, ignore_errors=True)


def scenarios(gateway, ok, insert, fresh, paid, arrivals):
    """The four request kinds at each concurrency; rows for the table, and delivery lags."""
    config, rows = gateway.config, []
    lags = delivery.Lags(arrivals)
    ours = orders.callbacks(config, fresh)
    theirs = orders.callbacks(config, [f"baseline-{i}" for i in range(len(fresh))])
    link = orders.link_request(config)
    pool = collections.deque()

    def harvest(run):
        pool.extend(filter(None, (orders.confirmation(head, page) for _, head, page in run.kept)))

    def confirmations():
        return ("confirm", pool.popleft()) if pool else None

    warm_up(gateway, ok, insert, config)
    for c in measure.CONCURRENCY:
        lags.settled.clear()
        row = measure.pair((gateway, ours), (insert, theirs), c, 200, after=lags.after)
        row[0]["settled"] = median(lags.settled) if lags.settled else None
        rows.append(("callback", "new order, vs durable insert", c) + row)
    for c in measure.CONCURRENCY:
        row = measure.pair((gateway, lambda: ("pay", link)), (ok, lambda: ("ok", link)), c, 200,
                           keep=harvest)
        rows.append(("pay", "GET /pay, vs bare app", c) + row)
    sample = pool[0]
    for c in measure.CONCURRENCY:
        row = measure.pair((gateway, confirmations), (ok, lambda: ("ok", sample)), c, (303, 200))
        rows.append(("confirm", "first POST /pay/confirm, vs bare app", c) + row)
    duplicate = orders.callback(config, paid, "t-duplicate")
    first = iter([("first", duplicate)])
    measure.timed(gateway, lambda: next(first, None), 1, 0)  # pays the order
    for c in measure.CONCURRENCY:
        row = measure.pair((gateway, lambda: ("dup", duplicate)),
                           (insert, lambda: ("dup", duplicate)), c, 200)
        rows.append(("duplicate", "paid order again, vs durable insert", c) + row)
    return rows, lags


def warm_up(gateway, ok, insert, config):
    """Import, compile and connect everything once, untimed."""
    link = orders.link_request(config)
    for server, data in ((gateway, link), (ok, link), (insert, orders.callback(
            config, "warm-up", "t-warm-up"))):
        measure.timed(server, lambda data=data: ("warm", data), 8, 1.0)
    time.sleep(0.5)


if __name__ == "__main__":
    main()
