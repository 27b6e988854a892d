"""How fast billing hears of a payment: the callback's 200 against the receiver's arrival log."""

import time

from .load import drive
from .stats import percentile

PACE = 20.0  # callbacks per second in the paced measurement: far below saturation
PACED_SECONDS = 5.0
QUIET = 5.0  # seconds without a new arrival after which we stop waiting


class Arrivals:
    """The receiver's log, read incrementally: order_id -> arrival (perf_counter)."""

    def __init__(self, path):
        self.path, self.offset, self.seen = path, 0, {}

    def poll(self):
        with open(self.path) as log:
            log.seek(self.offset)
            for line in log:
                if not line.endswith("\n"):
                    break
                self.offset += len(line)
                order_id, arrived = line.split()
                self.seen[order_id] = float(arrived)
        return self.seen

    def wait_for(self, order_ids, timeout=120.0):
        """Wait until every order's event arrived, or none arrived for QUIET seconds."""
        deadline, last, count = time.monotonic() + timeout, time.monotonic(), -1
        while time.monotonic() < deadline:
            seen = self.poll()
            missing = sum(1 for order_id in order_ids if order_id not in seen)
            if missing == 0:
                return 0
            if missing != count:
                count, last = missing, time.monotonic()
            elif time.monotonic() - last > QUIET:
                return missing
            time.sleep(0.05)
        return missing


class Lags:
    """Delivery lags (ms) collected from callback runs; `after` is measure.pair's hook."""

    def __init__(self, arrivals):
        self.arrivals, self.lags_ms, self.missing, self.catch_up = arrivals, [], 0, []
        # Callbacks per second counted until billing had every one of the run's events.
        self.settled = []

    def after(self, run):
        done = {tag: at for tag, at, _, status in run.records if status == 200}
        if self.missing and not self.arrivals.seen:  # no worker: waiting again is pointless
            self.missing += len(done)
            return
        started = time.perf_counter()
        self.missing += self.arrivals.wait_for(done)
        self.catch_up.append(time.perf_counter() - started)
        seen = self.arrivals.seen
        self.lags_ms += [(seen[tag] - at) * 1000 for tag, at in done.items() if tag in seen]
        if done and all(tag in seen for tag in done):
            self.settled.append(len(done) / (max(seen[tag] for tag in done) - run.started))

    def summary(self):
        if not self.lags_ms:
            return None
        return {"n": len(self.lags_ms), "p50": percentile(self.lags_ms, 50),
                "p99": percentile(self.lags_ms, 99), "missing": self.missing,
                "catch_up": max(self.catch_up, default=0.0)}


def paced(server, supply, arrivals):
    """PACE callbacks a second on one connection for PACED_SECONDS; their delivery lags."""
    slot = [time.perf_counter()]

    def next_request():
        time.sleep(max(slot[0] - time.perf_counter(), 0))
        slot[0] += 1 / PACE
        return supply()

    lags = Lags(arrivals)
    lags.after(drive(server.port, next_request, 1, PACED_SECONDS))
    return lags.summary()
