"""Orders and what ChronoPay's callbacks do to them: the money rules, free of Flask."""

import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass

from . import billing, chronopay
from .errors import AmountError
from .faults import crash_point
from .money import format_wire, parse_wire

log = logging.getLogger(__name__)

# Verdicts that answer ChronoPay 200: it must stop re-sending, whatever we thought of it.
ACCEPTED = ("applied", "duplicate", "ignored", "held", "review", "replay")
# Statuses that are final for the subscriber's result page.
FINAL = ("paid", "refunded", "chargeback", "declined")


@dataclass(frozen=True)
class Decision:
    """What one verified callback does: the verdict, and the order's change if any."""

    verdict: str
    reason: str = ""
    effect: str | None = None
    status: str | None = None
    review: str | None = None
    record: bool = True


def new_order_id(now):
    """A unique, unguessable order id that still sorts and reads by date."""
    return time.strftime("%Y%m%d", time.gmtime(now)) + "-" + secrets.token_hex(6)


def create_order(store, *, nonce, login, account, amount, now):
    """The order for one confirmation; the same nonce always yields the same order."""
    with store.write() as tx:
        order = tx.order_by_nonce(nonce)
        if order is None:
            tx.insert_order({
                "order_id": new_order_id(now), "nonce": nonce, "login": login,
                "account": account, "amount": format_wire(amount), "created_at": now,
            })
            order = tx.order_by_nonce(nonce)
    return order


def decide(order, prior, cb, product_id, held=None):
    """The effect of a verified callback on an order, given the transaction already seen and
    the reversal (if any) held for the order's purchase."""
    if prior is not None:
        key = (prior["transaction_id"], prior["transaction_type"])
        if key != (cb.transaction_id, cb.transaction_type):
            return Decision("replay", f"signed fields of transaction {key[0][:64]!r} re-split",
                            record=False)
        if prior["order_id"] == cb.order_id:
            return Decision("duplicate", "transaction already recorded", record=False)
        return Decision("replay", f"transaction belongs to order {prior['order_id']}",
                        record=False)
    if order is None:
        return Decision("review", "unknown order", record=False)
    problems = mismatches(order, cb, product_id)
    kind = kind_of(cb.transaction_type)
    if kind is None:
        problems.append(f"unknown transaction type {cb.transaction_type[:40]!r}")
    if problems:
        return Decision("review", "; ".join(problems), review="; ".join(problems))
    return transition(order, kind, held)


def mismatches(order, cb, product_id):
    """What in the unsigned fields disagrees with our order."""
    problems = []
    if cb.product_id != product_id:
        problems.append("product_id does not match")
    if cb.currency.upper() != "RUB":
        problems.append("currency is not RUB")
    try:
        if format_wire(parse_wire(cb.total)) != order["amount"]:
            problems.append(f"total {cb.total[:20]!r} differs from the order's {order['amount']}")
    except AmountError:
        problems.append("total is not an amount")
    return problems


def kind_of(transaction_type):
    """Which of our transitions a ChronoPay transaction type asks for, or None if unknown."""
    for kind, names in (("paid", chronopay.PAID), ("refunded", chronopay.REFUND),
                        ("chargeback", chronopay.CHARGEBACK), ("declined", chronopay.DECLINE),
                        ("neutral", chronopay.NEUTRAL)):
        if transaction_type in names:
            return kind
    return None


# From which statuses each kind of transaction moves an order, and to where.
TRANSITIONS = {
    "paid": ({"pending", "declined"}, "paid"),
    "refunded": ({"paid"}, "refunded"),
    "chargeback": ({"paid"}, "chargeback"),
    "declined": ({"pending"}, "declined"),
}


REVERSALS = ("refunded", "chargeback")
UNPAID = ("pending", "declined")


def transition(order, kind, held=None):
    """The state machine: a consistent transaction moves the order, waits for its purchase,
    or asks review. ChronoPay's callbacks come in any order, so the outcome depends on the
    set of an order's transactions, not on the order they arrive in; review asks a person
    to look and never stops a consistent purchase from crediting."""
    if kind == "neutral":
        return Decision("ignored", "no effect on an order")
    sources, target = TRANSITIONS[kind]
    status = order["status"]
    if status in sources:
        return Decision("applied", f"{status} -> {target}", effect=kind, status=target)
    if kind == "declined":
        return Decision("ignored", f"decline for a {status} order")
    if kind in REVERSALS and status in UNPAID and held is None:
        # A refund that overtook its purchase: recorded with its effect, applied with it.
        return Decision("held", f"{kind} transaction for a {status} order, held for its"
                        " purchase", effect=kind)
    reason = f"{kind} transaction for a {status} order" + (
        " that has a reversal held already" if held else "")
    return Decision("review", reason, review=reason)


def result_state(order, outcome):
    """What the return page shows: paid, reversed, failed, review or waiting."""
    if order["status"] == "paid":
        return "paid"
    if order["status"] in ("refunded", "chargeback"):
        return "reversed"
    if order["review"]:
        return "review"
    if order["status"] == "declined" or outcome == "decline":
        # ChronoPay sent the browser to decline_url; a later Purchase would still pay it.
        return "failed"
    return "waiting"


def journal_entry(now, remote_addr, body, verdict, reason, cb=None, fields=None):
    """One row of the callback journal; the raw body keeps every field, known or not."""
    fields = fields or (cb.fields if cb else {})
    return {
        "received_at": now, "remote_addr": remote_addr, "body": body, "verdict": verdict,
        "reason": reason, "order_id": (fields.get("order_id") or None),
        "transaction_id": fields.get("transaction_id") or None,
        "transaction_type": fields.get("transaction_type") or None,
    }


def reject(store, entry):
    """Journal a callback that failed before it could touch an order."""
    with store.write() as tx:
        tx.journal(entry)
    log_verdict(entry)


def apply_callback(store, cb, *, product_id, now, remote_addr, body, retry_for):
    """Record a verified callback, its effect and its billing event in one transaction."""
    for attempt in (1, 2):
        try:
            return _apply_once(store, cb, product_id, now, remote_addr, body, retry_for)
        except sqlite3.IntegrityError:
            # A racing writer recorded the same transaction first; deciding again sees it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _apply_once(store, cb, product_id, now, remote_addr, body, retry_for):
    with store.write() as tx:
        order = tx.order(cb.order_id) if cb.order_id else None
        prior = tx.transaction(cb.transaction_id, cb.transaction_type, cb.signed_text)
        held = tx.reversal(order["order_id"]) if order and order["status"] in UNPAID else None
        decision = decide(order, prior, cb, product_id, held)
        transaction = {
            "transaction_id": cb.transaction_id, "transaction_type": cb.transaction_type,
            "order_id": cb.order_id, "effect": decision.effect, "total": cb.total,
            "created_at": now, "signed_text": cb.signed_text,
        }
        reason = decision.reason
        if order is not None:
            if decision.record:
                tx.insert_transaction(transaction)
            reason += change(tx, order, decision, transaction, held, now, retry_for)
        entry = journal_entry(now, remote_addr, body, decision.verdict, reason, cb)
        tx.journal(entry)
        crash_point("callback.before_commit")
    crash_point("callback.after_commit")
    log_verdict(entry)
    return decision


def change(tx, order, decision, transaction, held, now, retry_for):
    """Move the order as decided, with its outbox rows; returns a note for the journal."""
    if decision.status or decision.review != order["review"]:
        changes = {"review": decision.review or order["review"]}
        if decision.status:
            changes["status"] = decision.status
        if decision.status == "paid":
            changes.update(paid_at=now, transaction_id=transaction["transaction_id"])
        tx.update_order(order["order_id"], now, **changes)
    if decision.status in billing.EVENT_TYPES:
        emit(tx, decision.status, order["order_id"], transaction, now, retry_for)
    if decision.status != "paid" or held is None:
        return ""
    # The reversal that came first takes effect now, as if the two had come in order.
    tx.update_order(order["order_id"], now, status=held["effect"])
    emit(tx, held["effect"], order["order_id"], held, now, retry_for)
    return f" -> {held['effect']} by the held {held['transaction_type']!r}"


def emit(tx, effect, order_id, transaction, now, retry_for):
    """The outbox row of an effect; it commits with the state change, so billing hears of
    each outcome or of nothing."""
    tx.insert_event({
        "event_id": billing.new_event_id(), "order_id": order_id,
        "type": billing.EVENT_TYPES[effect], "created_at": now,
        "body": billing.event_body(effect, tx.order(order_id), transaction, now),
        "retry_until": now + retry_for,
    })


def log_verdict(entry):
    """One line per callback: ERROR for what ops must look at. Never the sign or secrets."""
    what = "callback %s: %s (order %r, transaction %r %r, from %s)"
    args = (entry["verdict"], entry["reason"], _short(entry["order_id"]),
            _short(entry["transaction_id"]), _short(entry["transaction_type"]),
            entry["remote_addr"])
    if entry["verdict"] in ("applied", "duplicate", "ignored"):
        log.info(what, *args)
    elif entry["verdict"] == "held":  # settles itself when the purchase comes
        log.warning(what, *args)
    else:
        log.error(what, *args)


def _short(value):
    return value[:64] if isinstance(value, str) else value


def create_link_order(store, *, nonce, login, account, amount, now, link_id, max_orders):
    """create_order for a cabinet link that may create at most max_orders orders; None past
    that. The count and the insert share one write transaction, so racing tabs cannot pass."""
    with store.write() as tx:
        order = tx.order_by_nonce(nonce)
        if order is None:
            if tx.count_link_orders(link_id) >= max_orders:
                return None
            tx.insert_order({
                "order_id": new_order_id(now), "nonce": nonce, "login": login,
                "account": account, "amount": format_wire(amount), "created_at": now,
            })
            tx.set_link_id(nonce, link_id)
            order = tx.order_by_nonce(nonce)
    return order
