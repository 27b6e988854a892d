"""The outbox and its worker, with a fake billing that records calls and a clock we move."""

import contextlib
import email.utils
import json
import logging
import threading

import pytest
from conftest import NOW, callback_fields, hand_off, pay_order, send_callback

from gateway import billing
from gateway.delivery import SEND_WINDOW, Deliverer, backoff, boot_id, retry_after, settle
from gateway.errors import StoreBusy, TransportError
from gateway.http import Reply


class FakeBilling:
    """Answers from a script (a status, a Reply, or an exception) and records every call."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    def post(self, url, *, data=None, headers=None, timeout=None):
        self.calls.append({"url": url, "body": data.decode(), "headers": headers,
                           "timeout": timeout})
        answer = self.script.pop(0) if self.script else 204
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Reply) else Reply(answer, {}, "")


@pytest.fixture
def deliverer(app):
    deliverer = app.extensions["deliverer"]
    deliverer.rng = lambda: 0.5  # no jitter: the schedule is exact
    return deliverer


def use(deliverer, fake):
    deliverer.http = fake
    return fake


def events(store, **kwargs):
    return store.read().events(**kwargs)


def test_payment_writes_one_event_in_the_callbacks_transaction(client, app, store):
    query = pay_order(client, app)
    [event] = events(store)
    body = json.loads(event["body"])
    assert event["status"] == "pending" and event["type"] == "payment.succeeded"
    assert body["data"] == {
        "order_id": query["order_id"], "login": "dem001", "account": "6", "amount": "1000.00",
        "currency": "RUB", "transaction_id": "70001", "transaction_type": "Purchase",
        "paid_at": billing.iso(app.extensions["clock"]()), "external_id": "CP:70001"}


def test_duplicate_callbacks_write_no_second_event(client, app, store):
    query = pay_order(client, app)
    for _ in range(3):
        send_callback(client, callback_fields(app, query))
    assert len(events(store)) == 1


def test_delivered_on_first_2xx_with_signed_headers(client, app, store, deliverer):
    fake = use(deliverer, FakeBilling(200))
    query = pay_order(client, app)
    assert deliverer.drain() == {events(store)[0]["event_id"]: "delivered"}
    call = fake.calls[0]
    assert call["url"] == "https://billing.test/hook"
    assert billing.verify(deliverer.keys, call["headers"], call["body"], app.extensions["clock"]())
    order = store.read().order(query["order_id"])
    assert order["paid_at"] and order["billed_at"] == app.extensions["clock"]()
    assert deliverer.drain() == {} and len(fake.calls) == 1


def test_billing_failing_then_recovering_is_told_exactly_once(client, app, store, deliverer,
                                                            clock):
    fake = use(deliverer, FakeBilling(500, TransportError("ConnectTimeout"), 503, 204))
    pay_order(client, app)
    outcomes = []
    for _ in range(6):
        outcomes += deliverer.drain().values()
        clock.advance(3600)
    assert outcomes == ["failed", "failed", "failed", "delivered"]
    assert len({c["headers"]["webhook-id"] for c in fake.calls}) == 1
    assert len({c["body"] for c in fake.calls}) == 1
    assert len({c["headers"]["webhook-timestamp"] for c in fake.calls}) == 4
    [event] = events(store)
    assert event["status"] == "delivered" and event["attempts"] == 4


@pytest.mark.parametrize("status", [300, 301, 302, 307, 400, 401, 403, 404, 409, 422, 429,
                                    500, 502, 503, 504])
def test_every_non_2xx_but_410_is_retried(client, app, store, deliverer, clock, status):
    use(deliverer, FakeBilling(Reply(status, {"Location": "https://evil.test/"}, "")))
    pay_order(client, app)
    assert list(deliverer.drain().values()) == ["failed"]
    [event] = events(store)
    assert event["status"] == "pending" and event["last_error"] == f"HTTP {status}"
    assert event["next_attempt_at"] - clock() == pytest.approx(10)


def test_410_makes_the_event_dead_with_one_error_line(client, app, store, deliverer, caplog):
    use(deliverer, FakeBilling(410))
    query = pay_order(client, app)
    with caplog.at_level(logging.ERROR, logger="gateway.delivery"):
        deliverer.drain()
    [event] = events(store)
    # "HTTP <status>" first, as for every other status: ops filter last_error on it
    assert event["status"] == "dead" and event["last_error"].startswith("HTTP 410")
    [line] = [r for r in caplog.records if "dead" in r.getMessage()]
    assert line.levelname == "ERROR"
    for carried in (event["event_id"], query["order_id"], event["last_error"]):
        assert carried in line.getMessage()


def test_backoff_doubles_from_the_base_capped_at_an_hour(client, app, store, deliverer,
                                                        clock):
    use(deliverer, FakeBilling(*[500] * 12))
    pay_order(client, app)
    waits = []
    for _ in range(12):
        deliverer.drain()
        event = events(store)[0]
        waits.append(round(event["next_attempt_at"] - clock()))
        clock.advance(event["next_attempt_at"] - clock())
    assert waits == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]


def test_jitter_stays_within_a_fifth_and_under_an_hour():
    assert backoff(10, 1, lambda: 0.0) == 8 and backoff(10, 1, lambda: 0.999999) < 12
    assert backoff(10, 30, lambda: 0.999999) == 3600


@pytest.mark.parametrize("value", ["120", email.utils.formatdate(NOW + 120, usegmt=True)])
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(client, app, store, deliverer, clock, status, value):
    use(deliverer, FakeBilling(Reply(status, {"Retry-After": value}, "")))
    pay_order(client, app)
    deliverer.drain()
    assert events(store)[0]["next_attempt_at"] - clock() == pytest.approx(120)


@pytest.mark.parametrize("value, now, wait", [
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412420, 60),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412540, 0),  # a date gone by means now
    # no zone ("-0000" or none at all): a local time somewhere, not a moment we can place
    ("Wed, 21 Oct 2015 07:28:00 -0000", 1445412420, None),
    ("Wed, 21 Oct 2015 07:28:00", 1445412420, None),
    ("soon", 0, None),
    (None, 0, None),
])
def test_retry_after_as_a_date(value, now, wait):
    assert retry_after(value, now) == wait


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1\u00b9", "-5", "1.5"])
def test_retry_after_that_is_not_ascii_delta_seconds_or_a_date_is_ignored(value):
    # "²".isdigit() is true but float("²") raises: it used to kill the worker thread.
    assert retry_after(value, 0) is None


def test_worker_survives_a_retry_after_it_cannot_read(client, app, store, deliverer, clock):
    use(deliverer, FakeBilling(Reply(503, {"Retry-After": "\u00b2"}, ""), 204))
    pay_order(client, app)
    assert list(deliverer.drain().values()) == ["failed"]
    clock.advance(60)
    assert list(deliverer.drain().values()) == ["delivered"]


def test_after_the_retry_window_the_event_is_dead(client, app, store, deliverer, clock,
                                                  caplog):
    use(deliverer, FakeBilling(*[TransportError("ReadTimeout")] * 200))
    pay_order(client, app)
    with caplog.at_level(logging.ERROR):
        for _ in range(200):
            deliverer.drain()
            clock.advance(3600)
    [event] = events(store)
    assert event["status"] == "dead"
    # hourly attempts for three days, the last one at the window's end
    assert 70 <= event["attempts"] <= 90
    assert event["next_attempt_at"] <= event["retry_until"]
    assert sum("is dead" in r.getMessage() for r in caplog.records) == 1


def test_a_leased_event_is_not_claimed_by_another_worker(client, app, store, deliverer, clock):
    pay_order(client, app)
    now = clock()
    with store.write() as tx:
        assert tx.claim_events(now, "worker-a", now + deliverer.lease, 10, deliverer.boot,
                               clock.monotonic(), clock.monotonic() + deliverer.lease)
    other = Deliverer(store, FakeBilling(), url="x", keys=deliverer.keys, clock=clock,
                      retry_base=10, timeout=10, monotonic=clock.monotonic)
    assert other.run_batch() == {}
    clock.advance(deliverer.lease)  # worker-a died: its lease runs out
    assert list(other.run_batch().values()) == ["delivered"]
    with store.write() as tx:  # worker-a's late result cannot overwrite the delivery
        assert not tx.settle_event(events(store)[0]["event_id"], "worker-a", 0, status="dead")
    assert events(store)[0]["status"] == "delivered"


def test_refund_after_payment_emits_its_own_event_once(client, app, store, deliverer):
    use(deliverer, FakeBilling())
    query = pay_order(client, app)
    for _ in range(2):
        send_callback(client, callback_fields(app, query, "80001", "Refund"))
    types = sorted(e["type"] for e in events(store))
    assert types == ["payment.refunded", "payment.succeeded"]
    refund = json.loads(next(e for e in events(store) if e["type"] == "payment.refunded")["body"])
    assert refund["data"]["transaction_id"] == "80001"
    assert refund["data"]["transaction_type"] == "Refund"


def test_chargeback_of_a_paid_order_emits_once(client, app, store):
    query = pay_order(client, app)
    send_callback(client, callback_fields(app, query, "90001", "chargeback"))
    send_callback(client, callback_fields(app, query, "90002", "chargeback"))
    assert sorted(e["type"] for e in events(store)) == ["payment.chargeback",
                                                        "payment.succeeded"]
    order = store.read().order(query["order_id"])
    assert order["status"] == "chargeback" and "chargeback" in order["review"]


@pytest.mark.parametrize("ttype", ["Refund", "refund", "chargeback"])
def test_reversal_of_an_unpaid_order_is_held_never_an_event(client, app, store, ttype):
    query = hand_off(client, app)
    assert send_callback(client, callback_fields(app, query, "80001", ttype)).status_code == 200
    order = store.read().order(query["order_id"])
    assert order["status"] == "pending" and order["review"] is None
    assert events(store) == []


def test_refused_connection_is_a_transport_error():
    from gateway.http import HttpClient

    with pytest.raises(TransportError):
        HttpClient(timeout=0.5).post("http://127.0.0.1:9/", data=b"x")


def test_worker_thread_survives_an_unexpected_error_and_delivers_later(client, app, store,
                                                                       clock):
    import threading

    fake = FakeBilling(ValueError("a bug"), 204)
    deliverer = Deliverer(store, fake, url="x", keys=app.extensions["deliverer"].keys,
                          clock=clock, retry_base=10, timeout=1, monotonic=clock.monotonic)
    pay_order(client, app)
    thread = threading.Thread(target=deliverer.run_forever, kwargs={"poll": 0.01}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(fake.calls) == 1)
        clock.advance(deliverer.lease)  # the lease of the crashed attempt runs out
        deliverer.wake()
        wait_for(lambda: events(store)[0]["status"] == "delivered")
        assert thread.is_alive() and len(fake.calls) == 2
    finally:
        deliverer.stop()
        thread.join(5)


def wait_for(condition, timeout=10):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)  # waiting for the worker thread, not timing it


def pay_orders(client, app, count):
    for n in range(count):
        pay_order(client, app, transaction_id=f"7{n:04d}")


class CountingStore:
    """The real store, counting the write transactions taken through it."""

    def __init__(self, store):
        self.store, self.writes = store, 0

    def write(self):
        self.writes += 1
        return self.store.write()

    def read(self):
        return self.store.read()


def test_a_backlog_is_claimed_and_settled_in_two_transactions(client, app, store, deliverer):
    fake = use(deliverer, FakeBilling())
    pay_orders(client, app, 5)
    deliverer.store = counting = CountingStore(store)
    assert list(deliverer.drain().values()) == ["delivered"] * 5
    # one batch (claim + settle), then one empty claim that ends the drain
    assert counting.writes == 3 and len(fake.calls) == 5
    assert [e["status"] for e in events(store)] == ["delivered"] * 5
    assert all(len(store.read().attempts(e["event_id"])) == 1 for e in events(store))


def test_batches_are_bounded(client, app, store, deliverer, monkeypatch):
    monkeypatch.setattr("gateway.delivery.BATCH", 2)
    use(deliverer, FakeBilling())
    pay_orders(client, app, 5)
    assert [len(deliverer.run_batch()) for _ in range(4)] == [2, 2, 1, 0]


def test_a_batch_stops_at_the_first_failure_and_gives_the_rest_back(client, app, store,
                                                                    deliverer, clock):
    fake = use(deliverer, FakeBilling(204, TransportError("ReadTimeout"), 204))
    pay_orders(client, app, 3)
    first, second, third = sorted(events(store), key=lambda e: e["next_attempt_at"])
    assert deliverer.run_batch() == {first["event_id"]: "delivered",
                                     second["event_id"]: "failed"}
    untried = store.read().event(third["event_id"])
    assert untried["attempts"] == 0 and untried["lease_owner"] is None
    assert untried["status"] == "pending" and store.read().attempts(third["event_id"]) == []
    assert deliverer.run_batch() == {third["event_id"]: "delivered"}  # the failed one waits
    assert len(fake.calls) == 3


@pytest.mark.parametrize("seconds", [2, SEND_WINDOW])
def test_a_batch_starts_no_send_after_its_window(client, app, store, deliverer, clock,
                                                 seconds):
    class SlowBilling(FakeBilling):
        def post(self, url, **kwargs):
            clock.advance(seconds)  # each send takes this long
            return super().post(url, **kwargs)

    fake = use(deliverer, SlowBilling())
    pay_orders(client, app, 3)
    # the second send starts within the window (or at its very end); the third is past it
    assert len(deliverer.run_batch()) == 2
    assert len(fake.calls) == 2
    assert deliverer.run_batch() and len(fake.calls) == 3


def test_attempt_rows_record_when_each_send_really_started(client, app, store, deliverer,
                                                           clock):
    class SlowBilling(FakeBilling):
        def post(self, url, **kwargs):
            clock.advance(1)
            return super().post(url, **kwargs)

    use(deliverer, SlowBilling())
    pay_orders(client, app, 2)
    start = clock()
    deliverer.drain()
    rows = [store.read().attempts(e["event_id"])[0] for e in
            sorted(events(store), key=lambda e: e["next_attempt_at"])]
    assert [(r["started_at"] - start, r["finished_at"] - start) for r in rows] == [
        (0, 1), (1, 2)]


def sent_types(fake):
    return [json.loads(call["body"])["type"] for call in fake.calls]


def refund(client, app, query, transaction_id="80001"):
    response = send_callback(client, callback_fields(app, query, transaction_id, "Refund"))
    assert response.status_code == 200


def test_a_refund_is_not_sent_while_its_payment_is_in_backoff(client, app, store, deliverer,
                                                             clock):
    fake = use(deliverer, FakeBilling(500))
    query = pay_order(client, app)
    refund(client, app, query)
    deliverer.drain()
    assert deliverer.drain() == {}  # the payment waits 10 s; its refund waits behind it
    assert sent_types(fake) == ["payment.succeeded"]
    clock.advance(10)
    assert list(deliverer.drain().values()) == ["delivered", "delivered"]
    assert sent_types(fake) == ["payment.succeeded", "payment.succeeded", "payment.refunded"]


def test_a_refund_is_not_sent_while_its_payment_is_dead_or_leased(client, app, store,
                                                                  deliverer, clock, runner):
    fake = use(deliverer, FakeBilling(410))
    query = pay_order(client, app)
    refund(client, app, query)
    deliverer.drain()
    clock.advance(3600)
    assert deliverer.drain() == {} and sent_types(fake) == ["payment.succeeded"]
    assert store.read().next_due() is None  # nothing the worker could send: it sleeps
    [succeeded] = events(store, status="dead")
    assert runner.invoke(args=["events", "retry", succeeded["event_id"]]).exit_code == 0
    now = clock()
    with store.write() as tx:  # another worker holds the payment's lease
        assert [e["event_id"] for e in tx.claim_events(now, "worker-a", now + 60, 10)] == [
            succeeded["event_id"]]
    assert deliverer.drain() == {} and sent_types(fake) == ["payment.succeeded"]


def test_one_orders_failing_event_does_not_hold_up_another_order(client, app, store,
                                                                 deliverer, clock):
    fake = use(deliverer, FakeBilling(500))
    first = pay_order(client, app, transaction_id="70001")
    refund(client, app, first)
    clock.advance(1)
    second = pay_order(client, app, transaction_id="70002")
    deliverer.drain()  # the first order's payment fails; the drain stops there
    deliverer.drain()
    orders = [json.loads(call["body"])["data"]["order_id"] for call in fake.calls]
    assert orders == [first["order_id"], second["order_id"]]
    assert sent_types(fake) == ["payment.succeeded", "payment.succeeded"]


def test_with_billing_down_a_drain_stops_at_the_first_refused_event(client, app, store,
                                                                   deliverer):
    fake = use(deliverer, FakeBilling(*[TransportError("ConnectionError")] * 5))
    pay_orders(client, app, 5)
    assert list(deliverer.drain().values()) == ["failed"]
    assert len(fake.calls) == 1


def test_every_failed_attempt_is_one_warning_and_a_dead_event_one_error(client, app, store,
                                                                        deliverer, clock,
                                                                        caplog):
    use(deliverer, FakeBilling(500, TransportError("ConnectTimeout"), 410))
    query = pay_order(client, app)
    [event] = events(store)
    lines = []
    for _ in range(3):
        caplog.clear()
        deliverer.drain()
        lines.append([(r.levelname, r.getMessage()) for r in caplog.records
                      if r.name == "gateway.delivery"])
        clock.advance(3600)
    first, second, third = lines
    assert first == [("WARNING", f"event {event['event_id']} for order {query['order_id']}:"
                      f" attempt 1 failed: HTTP 500; next attempt at"
                      f" {billing.iso(NOW + 10)}")]
    assert len(second) == 1 and second[0][0] == "WARNING" and "ConnectTimeout" in second[0][1]
    assert billing.iso(NOW + 3600 + 20) in second[0][1]
    assert [level for level, _ in third] == ["ERROR"] and "is dead" in third[0][1]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_retry_after_is_ignored_on_other_statuses(client, app, store, deliverer, clock,
                                                  status):
    use(deliverer, FakeBilling(Reply(status, {"Retry-After": "120"}, "")))
    pay_order(client, app)
    deliverer.drain()
    # the difference, not the epoch: approx's relative tolerance on 1.7e9 is half an hour
    assert events(store)[0]["next_attempt_at"] - clock() == pytest.approx(10)


def test_an_event_is_dead_exactly_at_the_end_of_its_window(client, app, store, deliverer,
                                                           clock):
    use(deliverer, FakeBilling(*[500] * 200))
    pay_order(client, app)
    [event] = events(store)
    until = event["retry_until"]
    for _ in range(200):
        if events(store)[0]["status"] != "pending":
            break
        due = events(store)[0]["next_attempt_at"]
        assert due <= until  # the last wait is cut to the window's end, not an hour past it
        clock.advance(due - clock())
        deliverer.drain()
    [event] = events(store)
    attempts = store.read().attempts(event["event_id"])
    assert event["status"] == "dead" and attempts[-1]["finished_at"] == until
    assert attempts[-2]["finished_at"] < until


def test_the_lease_outlasts_every_send_a_batch_may_make(client, app, store, deliverer, clock):
    from gateway.delivery import LEASE_MARGIN, SEND_WINDOW

    assert deliverer.lease >= deliverer.timeout + SEND_WINDOW + LEASE_MARGIN
    other = Deliverer(store, FakeBilling(), url="x", keys=deliverer.keys, clock=clock,
                      retry_base=10, timeout=deliverer.timeout, monotonic=clock.monotonic)
    seen = {}

    class SlowestBilling(FakeBilling):
        def post(self, url, **kwargs):
            seen["budget"] = kwargs["timeout"]
            # this send started at the end of the window and used its whole deadline
            clock.advance(SEND_WINDOW + kwargs["timeout"])
            seen["other"] = other.run_batch()
            return super().post(url, **kwargs)

    use(deliverer, SlowestBilling())
    pay_order(client, app)
    assert list(deliverer.drain().values()) == ["delivered"]
    assert seen == {"budget": deliverer.timeout, "other": {}}
    assert other.http.calls == []


def test_a_wall_clock_step_does_not_free_a_lease_in_flight(client, app, store, deliverer,
                                                           clock):
    same_boot = Deliverer(store, FakeBilling(), url="x", keys=deliverer.keys, clock=clock,
                          retry_base=10, timeout=10, monotonic=clock.monotonic,
                          boot=deliverer.boot)
    seen = {}

    class SteppingBilling(FakeBilling):
        def post(self, url, **kwargs):
            clock.step(3600)  # NTP or an operator moves the wall clock an hour on
            seen["same boot"] = same_boot.run_batch()
            return super().post(url, **kwargs)

    deliverer.boot = "boot-a"
    same_boot.boot = "boot-a"
    use(deliverer, SteppingBilling())
    pay_order(client, app)
    assert list(deliverer.drain().values()) == ["delivered"]
    assert seen == {"same boot": {}} and same_boot.http.calls == []


def test_a_claimer_of_another_boot_judges_the_lease_by_the_wall_clock(client, app, store,
                                                                      deliverer, clock):
    pay_order(client, app)
    now, mono = clock(), clock.monotonic()
    with store.write() as tx:
        assert tx.claim_events(now, "worker-a", now + 60, 10, "boot-a", mono, mono + 60)
    other_boot = Deliverer(store, FakeBilling(), url="x", keys=deliverer.keys, clock=clock,
                           retry_base=10, timeout=10, monotonic=lambda: 0.0, boot="boot-b")
    assert other_boot.run_batch() == {}
    clock.step(60)
    assert list(other_boot.run_batch().values()) == ["delivered"]


@pytest.mark.parametrize("text, expected", [("8d2f-41\n", "8d2f-41"), ("", None), (None, None)])
def test_boot_id_is_the_files_text_or_none(tmp_path, text, expected):
    path = tmp_path / "boot_id"
    if text is not None:
        path.write_text(text)
    assert boot_id(str(path)) == expected


UNTIL = NOW + 3 * 86400  # the event's retry window ends here


@pytest.mark.parametrize("outcome, error, asked, now, base, changes", [
    ("delivered", None, None, NOW, 10,
     {"status": "delivered", "delivered_at": NOW, "last_error": None}),
    ("gone", "HTTP 410", None, NOW, 10, {"status": "dead", "last_error": "HTTP 410"}),
    ("failed", "HTTP 500", None, UNTIL, 10, {"status": "dead", "last_error": "HTTP 500"}),
    ("failed", "HTTP 500", None, NOW, 10, {"next_attempt_at": NOW + 10,
                                           "last_error": "HTTP 500"}),
    ("failed", "HTTP 503", 120, NOW, 10, {"next_attempt_at": NOW + 120,
                                          "last_error": "HTTP 503"}),
    # "Retry-After: 0" waits a second (or the base, if shorter), never a busy loop
    ("failed", "HTTP 503", 0, NOW, 10, {"next_attempt_at": NOW + 1, "last_error": "HTTP 503"}),
    ("failed", "HTTP 503", 0, NOW, 0.2, {"next_attempt_at": NOW + 0.2,
                                         "last_error": "HTTP 503"}),
    ("failed", "HTTP 503", 7200, UNTIL - 60, 10, {"next_attempt_at": UNTIL,
                                                  "last_error": "HTTP 503"}),
])
def test_an_attempts_outcome_decides_the_columns_its_event_gets(outcome, error, asked, now,
                                                                base, changes):
    event = {"attempts": 1, "retry_until": UNTIL}
    assert settle(event, outcome, error, asked, now, base, lambda: 0.5) == changes


@pytest.mark.parametrize("boot", ["boot-a", None])
def test_a_claim_leases_the_event_by_both_clocks_of_its_boot(client, app, store, clock, boot):
    seen = {}

    class Peeking(FakeBilling):
        def post(self, url, **kwargs):
            seen.update(store.read().events()[0])
            return super().post(url, **kwargs)

    sender = Deliverer(store, Peeking(), url="x", keys=app.extensions["deliverer"].keys,
                       clock=clock, retry_base=10, timeout=10, monotonic=clock.monotonic,
                       boot=boot)
    pay_order(client, app)
    now, mono = clock(), clock.monotonic()
    assert list(sender.drain().values()) == ["delivered"]
    assert seen["lease_owner"].startswith(sender.name + "/")
    assert (seen["lease_until"], seen["lease_boot"], seen["lease_mono"]) == (
        now + sender.lease, boot or boot_id(), mono + sender.lease)


def test_a_batch_passes_its_crash_points_in_order(client, app, deliverer, monkeypatch):
    passed = []
    monkeypatch.setattr("gateway.delivery.crash_point", passed.append)
    use(deliverer, FakeBilling())
    pay_orders(client, app, 2)
    deliverer.run_batch()
    assert passed == ["delivery.claim", "delivery.after_post", "delivery.after_post"]
    passed.clear()
    assert deliverer.run_batch() == {} and passed == []  # nothing claimed, no crash point


@pytest.mark.parametrize("answer, columns", [
    (500, (500, "failed", "HTTP 500")),
    (TransportError("ConnectTimeout"), (None, "failed", "ConnectTimeout")),
    (204, (204, "delivered", None)),
])
def test_an_attempt_row_records_its_status_outcome_and_error(client, app, store, deliverer,
                                                            answer, columns):
    use(deliverer, FakeBilling(answer))
    pay_order(client, app)
    deliverer.drain()
    [row] = store.read().attempts(events(store)[0]["event_id"])
    assert (row["http_status"], row["outcome"], row["error"]) == columns


class SlowCommits:
    """The real store, whose claim transaction takes `seconds` of the clock to commit."""

    def __init__(self, store, clock, seconds):
        self.store, self.clock, self.seconds = store, clock, seconds

    @contextlib.contextmanager
    def write(self):
        with self.store.write() as tx:
            yield tx
        self.clock.advance(self.seconds)
        self.seconds = 0  # the settle afterwards is quick

    def read(self):
        return self.store.read()


@pytest.mark.parametrize("commit, budget", [(0, 10), (5, 7.5), (10 + SEND_WINDOW, None),
                                            (20, None)])
def test_a_late_first_send_gets_only_the_time_left_in_its_lease(client, app, store, deliverer,
                                                               clock, commit, budget):
    fake = use(deliverer, FakeBilling())
    pay_order(client, app)
    deliverer.timeout = 10  # the lease is 17.5 s; every send must end 5 s before it
    deliverer.lease = 10 + SEND_WINDOW + 5
    deliverer.store = SlowCommits(store, clock, commit)
    outcomes = list(deliverer.run_batch().values())
    assert [call["timeout"] for call in fake.calls] == ([] if budget is None else [budget])
    [row] = store.read().attempts(events(store)[0]["event_id"])
    assert outcomes == [row["outcome"]] == ["delivered" if budget else "failed"]
    if budget is None:  # nothing sent: an ordinary failed attempt, retried after the backoff
        [event] = events(store)
        assert event["status"] == "pending" and event["next_attempt_at"] == clock() + 10
        assert row["http_status"] is None and event["last_error"] == row["error"]


def paused_past_its_lease(deliverer, clock, runner, answer, times):
    """A billing whose first `times` sends outlast the lease while ops retry the event."""

    class Paused(FakeBilling):
        def post(self, url, **kwargs):
            if len(self.calls) < times:
                clock.advance(deliverer.lease + 1)  # the worker was stopped (SIGSTOP, swap)
                event_id = kwargs["headers"]["webhook-id"]
                assert runner.invoke(args=["events", "retry", event_id]).exit_code == 0
            return super().post(url, **kwargs)

    return use(deliverer, Paused(*[answer] * 10))


def test_a_lost_lease_is_one_warning_naming_event_and_order(client, app, store, deliverer,
                                                            clock, runner, caplog):
    paused_past_its_lease(deliverer, clock, runner, 410, times=1)
    query = pay_order(client, app)
    [event] = events(store)
    caplog.clear()
    deliverer.run_batch()
    lines = [r for r in caplog.records if r.name == "gateway.delivery"]
    # the retry's fresh generation wins: not dead, and no "dead" line either
    assert events(store)[0]["status"] == "pending"
    assert [r.levelname for r in lines] == ["WARNING"] and "lease lost" in lines[0].getMessage()
    assert event["event_id"] in lines[0].getMessage()
    assert query["order_id"] in lines[0].getMessage()


def test_a_drain_ends_when_an_event_it_attempted_comes_back(client, app, store, deliverer,
                                                            clock, runner):
    # each send outlives its lease and is retried by ops: the event is due again at once
    fake = paused_past_its_lease(deliverer, clock, runner, 204, times=5)
    pay_order(client, app)
    assert list(deliverer.drain().values()) == ["delivered"]
    assert len(fake.calls) == 2  # it ends where it meets the event again, not 6 sends later


class OneRound:
    """The worker's wake-up event: records how long the worker would sleep, then stops it."""

    def __init__(self, deliverer):
        self.deliverer, self.waits = deliverer, []
        deliverer._wake = self

    def wait(self, timeout):
        self.waits.append(timeout)
        self.deliverer.stop()

    def set(self):
        pass

    def clear(self):
        pass


def test_an_idle_worker_looks_again_every_second(app, deliverer):
    rounds = OneRound(deliverer)
    deliverer.run_forever()
    assert rounds.waits == [1.0]


@pytest.mark.parametrize("overdue, wait", [(0, 10), (5, 0)])
def test_the_worker_sleeps_until_the_next_event_is_due(client, app, deliverer, clock,
                                                       overdue, wait):
    # billing refuses the first order's event (10 s of backoff); the second order's, not
    # tried in that round, is due since it was written (overdue seconds ago)
    use(deliverer, FakeBilling(500))
    pay_order(client, app, transaction_id="70001")
    if overdue:
        pay_order(client, app, transaction_id="70002")
        clock.advance(overdue)
    rounds = OneRound(deliverer)
    deliverer.run_forever(poll=60)
    assert rounds.waits == [wait]


class LockedStore:
    """A store another process keeps locked."""

    def write(self):
        raise StoreBusy("database is locked")

    read = write


@pytest.mark.parametrize("fault, text", [("store", "database is locked"),
                                         ("bug", "ValueError: a bug")])
def test_a_worker_round_that_fails_is_one_error_line_and_the_worker_goes_on(
        client, app, deliverer, caplog, fault, text):
    if fault == "store":
        deliverer.store = LockedStore()
    else:
        use(deliverer, FakeBilling(ValueError("a bug")))
        pay_order(client, app)
    rounds = OneRound(deliverer)
    caplog.clear()
    deliverer.run_forever(poll=5)
    [line] = [r for r in caplog.records if r.name == "gateway.delivery"]
    assert line.levelname == "ERROR" and text in logging.Formatter().format(line)
    assert rounds.waits == [5]  # and it tries again after a poll


def test_start_runs_the_worker_in_a_daemon_thread_named_for_it(client, app, deliverer):
    sent_from = []

    class Stopping(FakeBilling):
        def post(self, url, **kwargs):
            sent_from.append(threading.current_thread())
            deliverer.stop()
            return super().post(url, **kwargs)

    use(deliverer, Stopping())
    pay_order(client, app)
    thread = deliverer.start()
    thread.join(10)
    assert not thread.is_alive() and sent_from == [thread]
    assert thread.daemon and thread.name == "billing-delivery"
