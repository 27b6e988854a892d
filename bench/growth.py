"""How callback cost grows with the database: gateways on 1k, 10k and 100k past orders,
measured in alternating rounds, and the query plan of every statement a callback runs."""

import os
import time

from gateway import chronopay, payments

from . import measure, orders, servers
from .delivery import Lags
from .stats import median, paired_ratio, percentile

SIZES = tuple(int(n) for n in os.environ.get("BENCH_GROWTH", "1000,10000,100000").split(","))
CONCURRENCY = int(os.environ.get("BENCH_GROWTH_CONCURRENCY", "8"))
# More rounds than the paired scenarios: a 1.2x bound on a p99 needs them on a noisy machine.
ROUNDS = int(os.environ.get("BENCH_GROWTH_ROUNDS", "6"))


def prepare(workdir, hook, size):
    """A gateway whose database holds `size` served orders, plus fresh ones to pay."""
    gateway = servers.gateway(workdir, f"growth-{size}", hook)
    store = orders.open_store(gateway.config)
    store.init_schema()
    orders.history(store, size)
    gateway.fresh = orders.pending_orders(store, int(1500 * measure.DURATION * ROUNDS))
    store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return gateway


def measure_growth(workdir, hook, arrivals):
    """Rows (size, req/s, p50, p99) and p99/p50 ratios to the smallest, and the plans."""
    gateways = [prepare(workdir, hook, size) for size in SIZES]
    figures = {size: ([], [], []) for size in SIZES}
    lags = Lags(arrivals)
    try:
        for gateway in gateways:
            gateway.start()
            gateway.supply = orders.callbacks(gateway.config, gateway.fresh)
        for round_ in range(ROUNDS):
            shift = round_ % len(gateways)  # each size goes first in turn
            pairs = list(zip(gateways, SIZES, strict=True))
            for gateway, size in pairs[shift:] + pairs[:shift]:
                run, _ = measure.timed(gateway, gateway.supply, CONCURRENCY, measure.DURATION)
                lags.after(run)  # billing catches up before the next run
                latencies = [record[2] * 1000 for record in run.records]
                rates, p50s, p99s = figures[size]
                rates.append(run.rate)
                p50s.append(percentile(latencies, 50))
                p99s.append(percentile(latencies, 99))
                time.sleep(0.2)
    finally:
        for gateway in gateways:
            gateway.stop()
    smallest = figures[SIZES[0]]
    rows = [(size, median(rates), median(p50s), median(p99s), paired_ratio(p50s, smallest[1]),
             paired_ratio(p99s, smallest[2])) for size, (rates, p50s, p99s) in figures.items()]
    return rows, plans(gateways[-1])


def plans(gateway):
    """Each statement one callback runs on the largest database, with SQLite's plan for it."""
    store = orders.open_store(gateway.config)
    conn = store.connection()
    order_id = next(order for order in reversed(gateway.fresh)
                    if store.read().order(order)["status"] == "pending")
    form = orders.callback_fields(gateway.config, order_id, "t-plan")
    cb = chronopay.verify_callback({k: [v] for k, v in form.items()},
                                   gateway.config["CHRONOPAY_SHARED_SECRET"])
    statements = []
    conn.set_trace_callback(statements.append)
    payments.apply_callback(store, cb, product_id=servers.PRODUCT, now=time.time(),
                            remote_addr="127.0.0.1", body="", retry_for=3600.0)
    conn.set_trace_callback(None)
    found = []
    for sql in dict.fromkeys(statements):  # a statement re-prepared is traced twice
        if sql.split()[0].upper() in ("SELECT", "UPDATE", "INSERT"):
            steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            found.append((" ".join(sql.split())[:90], "; ".join(steps) or "(insert)"))
    store.close()
    return found
