"""The benchmark's one table and bench/results.md (whose hand-written tail is kept)."""

import os
import platform
import sqlite3
import time
from importlib.metadata import version

from .growth import CONCURRENCY
from .growth import ROUNDS as GROWTH_ROUNDS
from .measure import DURATION, ROUNDS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md")
MARKER = "<!-- Hand-written below this line; make bench keeps it. -->"
DELIVERY_P99_MS, RSS_MB, GROWTH_P99 = 250, 80, 1.2


def render(rows, targets, paced, lags, rss, curve, plans, workdir):
    """The whole report as Markdown."""
    out = ["# `make bench` results", "", machine(workdir), "",
           f"{ROUNDS} rounds x {DURATION:g} s per side and concurrency, alternating which side "
           "goes first; figures are medians over rounds, ratios medians of per-round ratios. "
           "CPU ms/req is the server process's own CPU time per request (from /proc); gen is "
           "the load generator's CPU use (share of one core) while driving that side.", "",
           "| scenario | c | gateway req/s | baseline req/s | ratio | target | "
           "gateway p50 / p99 ms | baseline p50 / p99 ms | CPU ms/req gw / base | gen gw / base |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, title, c, ours, theirs, ratio in rows:
        met = "met" if ratio >= targets[kind] else "MISSED"
        flags = "".join(f" ({name}: {side['errors']} unexpected statuses)" for name, side in
                        (("gw", ours), ("base", theirs)) if side["errors"])
        flags += " (ran out of prepared requests)" if ours["exhausted"] else ""
        out.append(
            f"| {title}{flags} | {c} | {ours['rate']:.0f} | {theirs['rate']:.0f} | "
            f"{ratio:.2f} | ≥ {targets[kind]} {met} | {ours['p50']:.1f} / {ours['p99']:.1f} | "
            f"{theirs['p50']:.1f} / {theirs['p99']:.1f} | {ours['cpu_ms']:.2f} / "
            f"{theirs['cpu_ms']:.2f} | {ours['client_cpu']:.2f} / {theirs['client_cpu']:.2f} |")
    out += settled_rows(rows, targets)
    out += ["", "| measure | value | target |", "|---|---|---|"]
    out += delivery_rows(paced, lags)
    out.append(f"| gateway peak RSS after the run (VmHWM) | {rss:.1f} MB | < {RSS_MB} MB "
               f"{'met' if rss < RSS_MB else 'MISSED'} |")
    out += ["", f"Growth: callbacks for new orders at c={CONCURRENCY} with N orders already "
            "served (each with its transaction, journal line and delivered event), "
            f"{GROWTH_ROUNDS} rounds, each size first in turn.", "",
            "| orders in DB | req/s | p50 ms | p99 ms | p50 / p50(first) | p99 / p99(first) |",
            "|---|---|---|---|---|---|"]
    out += [f"| {size:,} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {r50:.2f} | {r99:.2f} |"
            for size, rate, p50, p99, r50, r99 in curve]
    last = curve[-1][5]
    out += ["", f"p99 at {curve[-1][0]:,} within {GROWTH_P99}x of p99 at {curve[0][0]:,}: "
            f"{last:.2f}x, {'met' if last <= GROWTH_P99 else 'MISSED'}.", "",
            f"Every statement of one callback on the {curve[-1][0]:,}-order database, "
            "with SQLite's plan:", ""]
    out += [f"- `{sql}` → {plan}" for sql, plan in plans]
    return "\n".join(out) + "\n"


def settled_rows(rows, targets):
    """Callbacks counted until billing has them all: the burst rate alone would reward a
    billing worker that falls behind (its work then lands after the timed run)."""
    out = ["", "Callbacks for new orders counted until billing has received every event of the "
           "run (from the run's first request to the last event's arrival), against the "
           "baseline's rate: ratio of medians.", "",
           "| c | gateway settled req/s | baseline req/s | ratio | target |",
           "|---|---|---|---|---|"]
    for kind, _, c, ours, theirs, _ in rows:
        if kind == "callback" and ours.get("settled"):
            ratio = ours["settled"] / theirs["rate"]
            out.append(f"| {c} | {ours['settled']:.0f} | {theirs['rate']:.0f} | {ratio:.2f} | "
                       f"≥ {targets[kind]} {'met' if ratio >= targets[kind] else 'MISSED'} |")
    return out


def delivery_rows(paced, lags):
    """Delivery lag rows: paced (the target) and right after load (the backlog)."""
    if paced is None:
        return ["| delivery | not available (no billing worker) | p99 < 250 ms |"]
    verdict = "met" if paced["p99"] < DELIVERY_P99_MS else "MISSED"
    rows = [f"| delivery lag, 200 → billing receives, paced {paced['n']} callbacks at 20/s "
            f"| p50 {paced['p50']:.1f} ms, p99 {paced['p99']:.1f} ms | p99 < "
            f"{DELIVERY_P99_MS} ms {verdict} |"]
    loaded = lags.summary()
    if loaded:
        rows.append(f"| delivery lag during the callback runs above ({loaded['n']} events, "
                    f"backlog drained after each run, {loaded['missing']} never arrived) | "
                    f"p50 {loaded['p50']:.0f} ms, p99 {loaded['p99']:.0f} ms; longest catch-up "
                    f"{loaded['catch_up']:.1f} s | (information) |")
    return rows


def machine(workdir):
    """One paragraph that says on what this ran."""
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info
                    if line.startswith("model name")), platform.processor())
    with open("/proc/meminfo") as info:
        memory = int(info.readline().split()[1]) / 1024 / 1024
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}: "
            f"{os.cpu_count()} x {cpu}, {memory:.0f} GB RAM, {platform.platform()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"Flask {version('flask')}, waitress {version('waitress')}; databases in "
            f"{filesystem(workdir)}; load average before the report {load}. Server, "
            "generator and billing receiver share these CPUs.")


def filesystem(path):
    """The mount (type and device) holding path."""
    best = ("", "?", "?")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            if path.startswith(point) and len(point) > len(best[0]):
                best = (point, kind, device)
    return f"{path} ({best[1]} on {best[2]})"


def write(text):
    """Replace the generated part of results.md, keep what was written below MARKER."""
    tail = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as old:
            kept = old.read().partition(MARKER)
        tail = kept[2] if kept[1] else ""
    with open(RESULTS, "w") as out:
        out.write(text + "\n" + MARKER + tail)
