"""The outbox worker: sends each billing event until billing acknowledges it with a 2xx.

Workers in any number of threads or processes claim due events with a lease in one write
transaction, so no two send the same event at once; a worker that dies simply lets its leases
run out. An order's events go first-in-first-out: one is claimed only once every earlier event
of its order is delivered. The event id and body never change between attempts, so billing
de-duplicates on `webhook-id` whatever we re-send after a crash.
"""

import email.utils
import logging
import os
import random
import re
import secrets
import socket
import threading
import time

from . import billing
from .errors import StoreError, TransportError
from .faults import crash_point

log = logging.getLogger(__name__)
MAX_WAIT = 3600.0
JITTER = 0.2
BATCH = 50  # events claimed per transaction
SEND_WINDOW = 2.5  # seconds after its claim in which a batch may start a send
LEASE_MARGIN = 5.0  # seconds of lease left after the last possible end of a batch's sends
BOOT_ID = "/proc/sys/kernel/random/boot_id"
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)


def boot_id(path=BOOT_ID):
    """This boot's id (processes sharing it share CLOCK_MONOTONIC), or None if unknown."""
    try:
        with open(path) as file:
            return file.read().strip() or None
    except OSError:
        return None


def backoff(base, attempts, rng=random.random):
    """The wait after the n-th failed attempt: doubling from base, ±20 % jitter, ≤ 1 hour."""
    delay = min(base * 2 ** max(attempts - 1, 0), MAX_WAIT)
    return min(delay * (1 - JITTER + 2 * JITTER * rng()), MAX_WAIT)


def retry_after(value, now):
    """Seconds billing asked us to wait (delta-seconds or an HTTP date), or None."""
    value = (value or "").strip()
    if _DELTA_SECONDS.fullmatch(value):  # not str.isdigit(): "²" is a digit to it
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0) if when.tzinfo else None


def classify(reply, now):
    """An attempt's outcome from billing's answer: (outcome, error, wait asked for)."""
    if 200 <= reply.status < 300:
        return "delivered", None, None
    if reply.status == 410:
        return "gone", "HTTP 410: billing refuses this event for good", None
    asked = retry_after(reply.headers.get("Retry-After"), now) if reply.status in (
        429, 503) else None
    return "failed", f"HTTP {reply.status}", asked


def settle(event, outcome, error, asked, now, base, rng=random.random):
    """The event's next state after an attempt."""
    if outcome == "delivered":
        return {"status": "delivered", "delivered_at": now, "last_error": None}
    if outcome == "gone" or now >= event["retry_until"]:
        return {"status": "dead", "last_error": error}
    wait = asked if asked is not None else backoff(base, event["attempts"], rng)
    wait = max(wait, min(base, 1.0))  # a "Retry-After: 0" must not become a busy loop
    return {"next_attempt_at": min(now + wait, event["retry_until"]), "last_error": error}


class Deliverer:
    """Delivers due events from the store to billing over our HttpClient."""

    def __init__(self, store, http, *, url, keys, clock, retry_base, timeout, rng=None,
                 monotonic=None, boot=None):
        self.store, self.http, self.url, self.keys = store, http, url, keys
        self.clock, self.retry_base, self.timeout = clock, retry_base, timeout
        self.rng = rng or random.random
        self.monotonic = monotonic or time.monotonic
        self.boot = boot_id() if boot is None else boot
        # Every send has a total deadline of `timeout` (HttpClient) and starts within
        # SEND_WINDOW of the claim, so the batch's last send ends LEASE_MARGIN before the lease.
        self.lease = timeout + SEND_WINDOW + LEASE_MARGIN
        self.name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self):
        """Tell the worker an event was just written."""
        self._wake.set()

    def run_batch(self):
        """Claim up to BATCH due events in one transaction, attempt them in order, and settle
        them in one more; returns the outcomes by event id ({} if none was due).

        Two commits serve a whole backlog instead of two per event (make bench). The batch
        stops at the first event billing did not take (it is struggling: the rest would only
        queue behind its timeouts) and starts no send after SEND_WINDOW, so every send ends
        inside the lease; events it did not try go back untouched.
        """
        now, claimed = self.clock(), self.monotonic()
        token = f"{self.name}/{secrets.token_hex(4)}"
        with self.store.write() as tx:
            leased = [(event, tx.insert_attempt({"event_id": event["event_id"],
                                                 "worker": self.name, "started_at": now}))
                      for event in tx.claim_events(now, token, now + self.lease, BATCH,
                                                   self.boot, claimed, claimed + self.lease)]
            if not leased:
                return {}
            crash_point("delivery.claim")
        # Every send ends by then, whatever billing does: LEASE_MARGIN before the lease.
        ends = claimed + self.lease - LEASE_MARGIN
        results = []
        for event, _ in leased:
            if results and (results[-1][1] != "delivered"
                            or self.monotonic() - claimed > SEND_WINDOW):
                break
            started = self.clock()
            results.append((started, *self.attempt(event, ends), self.clock()))
            crash_point("delivery.after_post")
        outcomes, lost, failed, dead = {}, [], [], []
        with self.store.write() as tx:
            for (event, attempt_id), result in zip(leased, results, strict=False):
                started, outcome, status, error, asked, finished = result
                changes = settle(event, outcome, error, asked, finished, self.retry_base,
                                 self.rng)
                tx.finish_attempt(attempt_id, started, finished, status, outcome, error)
                if not tx.settle_event(event["event_id"], token, event["generation"],
                                       **changes):
                    lost.append(event)
                elif changes.get("status") == "dead":
                    dead.append((event, error))
                elif outcome != "delivered":
                    failed.append((event, error, changes["next_attempt_at"]))
                outcomes[event["event_id"]] = outcome
            for event, attempt_id in leased[len(results):]:  # not tried: give them back
                tx.release_event(event["event_id"], token, attempt_id)
        # Said once the outcome is on disk, not before.
        for event in lost:
            log.warning("event %s for order %s: lease lost (retried by ops or expired) before"
                        " the attempt ended", event["event_id"], event["order_id"])
        for event, error, due in failed:
            log.warning("event %s for order %s: attempt %d failed: %s; next attempt at %s",
                        event["event_id"], event["order_id"], event["attempts"], error,
                        billing.iso(due))
        for event, error in dead:
            log.error("event %s for order %s is dead after %d attempts: %s",
                      event["event_id"], event["order_id"], event["attempts"], error)
        return outcomes

    def attempt(self, event, ends):
        """One POST of the event, over by the monotonic time `ends`: (outcome, HTTP status,
        error, wait asked for)."""
        now = self.clock()
        budget = min(self.timeout, ends - self.monotonic())
        if budget <= 0:
            return "failed", None, "no time left in the lease to send", None
        headers = billing.headers(self.keys, event["event_id"], now, event["body"])
        try:
            reply = self.http.post(self.url, data=event["body"].encode(), headers=headers,
                                   timeout=budget)
        except TransportError as exc:
            return "failed", None, exc.args[0], None
        outcome, error, asked = classify(reply, now)
        return outcome, reply.status, error, asked

    def drain(self):
        """Attempt the events due now until billing refuses one (it is down or struggling:
        the rest wait for the next round) or an event comes round a second time (its lease was
        lost mid-send and it was claimed again: sent twice, which billing de-duplicates by
        webhook-id); returns each event's first outcome.
        """
        outcomes = {}
        while batch := self.run_batch():
            again = outcomes.keys() & batch.keys()
            for event_id, outcome in batch.items():
                outcomes.setdefault(event_id, outcome)
            if again or any(outcome != "delivered" for outcome in batch.values()):
                break
        return outcomes

    def run_forever(self, poll=1.0):
        """The worker loop: drain, then sleep until woken, the next due time, or poll."""
        while not self._stop.is_set():
            try:
                self.drain()
                due = self.store.read().next_due()
            except StoreError as exc:
                log.error("delivery worker: database error, retrying: %s", exc)
                due = None
            except Exception:  # noqa: BLE001 - the one deliberate catch-all, see below
                # A bug hit by one event must not silently stop every later delivery of this
                # process: say so loudly and go on; that event's lease runs out and it is
                # tried again (by us or another worker).
                log.exception("delivery worker: unexpected error, carrying on")
                due = None
            wait = poll if due is None else min(poll, max(due - self.clock(), 0.0))
            self._wake.wait(wait)
            self._wake.clear()

    def start(self):
        """Run the worker in a daemon thread of this process."""
        thread = threading.Thread(target=self.run_forever, name="billing-delivery", daemon=True)
        thread.start()
        return thread

    def stop(self):
        self._stop.set()
        self._wake.set()
