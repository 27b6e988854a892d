"""Paired measurements: the gateway and a baseline in alternating rounds of the same run."""

import math
import os
import time
from dataclasses import dataclass, field

from .load import drive
from .stats import median, paired_ratio, percentile

DURATION = float(os.environ.get("BENCH_DURATION", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
CONCURRENCY = tuple(int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,8,32").split(","))


@dataclass
class Side:
    """One server's figures over the rounds of one scenario."""

    rates: list = field(default_factory=list)
    p50s: list = field(default_factory=list)
    p99s: list = field(default_factory=list)
    cpu_ms: list = field(default_factory=list)
    client_cpu: list = field(default_factory=list)
    errors: int = 0
    exhausted: bool = False

    def add(self, run, server_cpu, expect):
        latencies = [record[2] for record in run.records]
        self.rates.append(run.rate)
        self.p50s.append(percentile(latencies, 50) * 1000)
        self.p99s.append(percentile(latencies, 99) * 1000)
        self.cpu_ms.append(server_cpu / len(latencies) * 1000 if latencies else math.nan)
        self.client_cpu.append(run.client_cpu / run.elapsed if run.elapsed else math.nan)
        self.errors += sum(1 for record in run.records if record[3] != expect)
        self.exhausted |= run.exhausted

    def summary(self):
        return {"rate": median(self.rates), "p50": median(self.p50s), "p99": median(self.p99s),
                "cpu_ms": median(self.cpu_ms), "client_cpu": median(self.client_cpu),
                "errors": self.errors, "exhausted": self.exhausted}


def timed(server, supply, concurrency, duration, keep=False):
    """One run against one server: (the Run, server CPU seconds it took)."""
    cpu = server.cpu()
    run = drive(server.port, supply, concurrency, duration, keep=keep)
    return run, server.cpu() - cpu


def pair(ours, theirs, concurrency, expect, after=None, keep=None):
    """ROUNDS rounds of (ours, theirs), alternating which goes first; each side is
    (server, supply). after(run) runs untimed after each of our runs (e.g. let billing
    catch up); keep(run) receives our runs' responses. Returns both summaries, the ratio."""
    sides = (Side(), Side())
    for round_ in range(ROUNDS):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for index in order:
            server, supply = (ours, theirs)[index]
            run, cpu = timed(server, supply, concurrency, DURATION, keep=index == 0 and keep)
            sides[index].add(run, cpu, expect[index] if isinstance(expect, tuple) else expect)
            if index == 0:
                if keep:
                    keep(run)
                if after:
                    after(run)
            time.sleep(0.2)
    return sides[0].summary(), sides[1].summary(), paired_ratio(sides[0].rates, sides[1].rates)
