"""Orders and what ChronoPay's callbacks do to them: the money rules, free of Flask."""

import logging
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal

from . import billing, chronopay
from .billing import iso
from .errors import AmountError, LinkExhausted
from .faults import crash_point
from .money import format_wire, parse_wire
from .states import CLEAN_VERDICTS, REVERSALS, UNPAID

log = logging.getLogger(__name__)
# Both reversals of one order: the card holder may have had the money back twice.
BOTH_REVERSALS = "refund and chargeback both: the subscriber may have been refunded twice"


@dataclass(frozen=True)
class Decision:
    """What one verified callback does: the verdict, and the order's change if any.

    `status` is the order's new status, `event` whether billing hears of it (a second
    reversal moves the status but debits nobody twice), `review` a reason to append to the
    order's review, `record` whether the transaction is recorded.
    """

    verdict: str
    reason: str = ""
    effect: str | None = None
    status: str | None = None
    review: str | None = None
    record: bool = True
    event: bool = False
    refunded: Decimal | None = None  # the order's refunded sum after a refund


def new_order_id(now):
    """A unique, unguessable order id that still sorts and reads by date."""
    return time.strftime("%Y%m%d", time.gmtime(now)) + "-" + secrets.token_hex(6)


def create_order(store, *, nonce, login, account, amount, now, link_id=None,
                 max_orders=None):
    """The order for one confirmation; the same nonce always yields the same order, and one
    cabinet link yields at most max_orders of them."""
    with store.write() as tx:
        order = tx.order_by_nonce(nonce)
        if order is None:
            if max_orders is not None and tx.orders_of_link(link_id) >= max_orders:
                raise LinkExhausted(f"the link already made {max_orders} orders")
            tx.insert_order({
                "order_id": new_order_id(now), "nonce": nonce, "login": login,
                "account": account, "amount": format_wire(amount), "created_at": now,
                "link_id": link_id,
            })
            order = tx.order_by_nonce(nonce)
    return order


def decide(order, prior, cb, product_id, held=()):
    """The effect of a verified callback on an order, given the transaction already seen and
    the order's reversals recorded so far (held for its purchase while it is unpaid)."""
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
    kind = kind_of(cb.transaction_type)
    problems = mismatches(order, cb, product_id, kind)
    if kind == "rebill":
        problems.append(f"{cb.transaction_type!r}: recurring payments are not supported yet")
    elif kind is None:
        problems.append(f"unknown transaction type {cb.transaction_type[:40]!r}")
    if problems:
        return Decision("review", "; ".join(problems), review="; ".join(problems))
    return transition(order, kind, held, parse_wire(cb.total))


def mismatches(order, cb, product_id, kind=None):
    """What in the unsigned fields disagrees with our order (and, for a refund, whether its
    total can be a part of the order's amount)."""
    problems = []
    if cb.product_id != product_id:
        problems.append("product_id does not match")
    # A product is one currency at ChronoPay: with product_id ours, no currency means rubles.
    if cb.currency and cb.currency.upper() not in chronopay.RUBLES:
        problems.append("currency is not RUB")
    if cb.order_conflict:
        problems.append("order_id and cs1 name different orders")
    try:
        total = parse_wire(cb.total)
    except AmountError:
        return problems + ["total is not an amount"]
    amount = Decimal(order["amount"])  # total parsed: a wire amount of 15 characters at most
    if kind == "refunded":  # a refund may be partial: more than nothing, at most the amount
        if not 0 < total <= amount:
            problems.append(f"refund total {cb.total!r} is not within the order's"
                            f" {order['amount']}")
    elif total != amount:
        problems.append(f"total {cb.total!r} differs from the order's {order['amount']}")
    return problems


def kind_of(transaction_type):
    """Which of our transitions a ChronoPay transaction type asks for, or None if unknown."""
    for kind, names in (("paid", chronopay.PAID), ("refunded", chronopay.REFUND),
                        ("chargeback", chronopay.CHARGEBACK), ("declined", chronopay.DECLINE),
                        ("neutral", chronopay.NEUTRAL), ("rebill", chronopay.REBILL)):
        if transaction_type.lower() in names:
            return kind
    return None


def transition(order, kind, held=(), total=None):
    """The state machine. ChronoPay's callbacks come in any order, so the outcome depends on
    the set of an order's transactions, not on the order they arrive in:

    - a purchase pays a pending or declined order once; a decline marks a pending one;
    - a refund takes back its total, once per transaction, several up to the amount (partial
      refunds; the order is `refunded` when nothing is left); a chargeback takes back what is
      left; each with its billing event; one that overtook its purchase is held and applied
      with it;
    - refund and chargeback both: the status ends `chargeback` (the bank's word is final),
      billing is debited the amount once in all, and the order goes to review;
    - anything else asks review, which never stops a consistent purchase from crediting.

    `held` has the order's reversals recorded so far, `total` the callback's as a Decimal.
    """
    status = order["status"]
    if kind == "neutral":
        return Decision("ignored", "no effect on an order")
    if kind == "paid":
        if status in UNPAID:
            return Decision("applied", f"{status} -> paid", effect="paid", status="paid",
                            event=True)
        return _review(f"paid transaction for a {status} order")
    if kind == "declined":
        if status == "pending":
            return Decision("applied", "pending -> declined", effect="declined",
                            status="declined")
        return Decision("ignored", f"decline for a {status} order")
    charged_back = status == "chargeback" or any(r["effect"] == "chargeback" for r in held)
    if kind == "chargeback":
        if charged_back:
            return _review(f"second chargeback transaction for a {status} order")
        return chargeback(order)
    if charged_back and status not in UNPAID:
        return Decision("review", f"{status} -> chargeback: {BOTH_REVERSALS}",
                        effect="refunded", status="chargeback", review=BOTH_REVERSALS)
    return refund(order, held, total)


def refund(order, held, total):
    """A refund of `total`: held while unpaid, else taken from what is left of the amount."""
    amount, status = Decimal(order["amount"]), order["status"]
    before = sum((Decimal(r["total"]) for r in held if r["effect"] == "refunded"), Decimal(0)) \
        if status in UNPAID else Decimal(order["refunded"] or 0)
    if before + total > amount:
        return _review(f"refund of {format_wire(total)} over the remaining"
                       f" {format_wire(amount - before)} of a {status} order")
    if status in UNPAID:
        # Overtook its purchase: recorded with its effect, applied with the purchase.
        return Decision("held", f"refunded transaction for a {status} order, held for its"
                        " purchase", effect="refunded")
    after = before + total
    target = "refunded" if after == amount else None
    return Decision("applied", f"paid -> {target or 'paid'}: refunded {format_wire(after)} of"
                    f" {order['amount']}", effect="refunded", status=target, event=True,
                    refunded=after)


def chargeback(order):
    """A chargeback takes back what is left; after a refund it is also a case for review."""
    status = order["status"]
    if status in UNPAID:
        return Decision("held", f"chargeback transaction for a {status} order, held for its"
                        " purchase", effect="chargeback")
    refunded = Decimal(order["refunded"] or 0)
    review = BOTH_REVERSALS if refunded else None
    left = Decimal(order["amount"]) - refunded
    return Decision("review" if review else "applied", f"{status} -> chargeback" + (
        f": {BOTH_REVERSALS}" if review else ""), effect="chargeback", status="chargeback",
        review=review, event=left > 0)


def _review(reason):
    return Decision("review", reason, review=reason)


def result_state(order, outcome):
    """What the return page shows: paid, reversed, failed, review or waiting."""
    if order["status"] == "paid":
        return "paid"
    if order["status"] in REVERSALS:
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
        "reason": reason, "order_id": fields.get("order_id") or fields.get("cs1") or None,
        "transaction_id": fields.get("transaction_id") or None,
        "transaction_type": fields.get("transaction_type") or None,
    }


def reject(store, entry):
    """Journal a callback that failed before it could touch an order."""
    with store.write() as tx:
        tx.journal(entry)
    log_verdict(entry)


def apply_callback(store, cb, *, product_id, now, remote_addr, body, retry_for):
    """Record a verified callback, its effect and its billing event in one transaction.

    The look-ups and the writes share one write transaction (BEGIN IMMEDIATE, writers
    serialised), so no racing writer can record the same transaction in between; the unique
    indexes stand behind that, and a violation is a bug that rolls everything back.
    """
    with store.write() as tx:
        order = tx.order(cb.order_id)  # None for an empty order_id too: ids are never empty
        prior = tx.transaction(cb.transaction_id, cb.transaction_type, cb.signed_text)
        # Only an unpaid order's reversals matter (held for its purchase); a paid one carries
        # its refunded sum and status, so the hot path of a paid order reads no more.
        held = tx.reversals(order["order_id"]) if order and order["status"] in UNPAID else []
        decision = decide(order, prior, cb, product_id, held)
        transaction = {
            "transaction_id": cb.transaction_id, "transaction_type": cb.transaction_type,
            "order_id": cb.order_id, "effect": decision.effect, "total": cb.total,
            "created_at": now, "signed_text": cb.signed_text,
        }
        reason = decision.reason
        if decision.verdict == "replay":
            reason += flag_replay(tx, order, prior, decision.reason, now)
        elif order is not None:
            if decision.record:
                tx.insert_transaction(transaction)
            reason += change(tx, order, decision, transaction, held, now, retry_for)
        entry = journal_entry(now, remote_addr, body, decision.verdict, reason, cb)
        tx.journal(entry)
        crash_point("callback.before_commit")
    crash_point("callback.after_commit")
    log_verdict(entry)
    return decision


def flag_replay(tx, order, prior, reason, now):
    """A genuine sign re-used or re-split: both orders go to review, so a genuine payment
    that lost the race to a replay is never left silently pending."""
    flagged = []
    for involved in (order, tx.order(prior["order_id"])):
        if involved is not None and involved["order_id"] not in flagged:
            note = f"replay: {reason}"
            tx.update_order(involved["order_id"], now,
                            review=append_review(involved["review"], now, note))
            flagged.append(involved["order_id"])
    # Never empty: the prior transaction's order exists (transactions.order_id REFERENCES it).
    return f"; review for {', '.join(flagged)}"


def append_review(review, now, reason):
    """An order's review keeps every reason, each on its own line with its time."""
    line = f"{iso(now)} {reason}"
    return f"{review}\n{line}" if review else line


def change(tx, order, decision, transaction, held, now, retry_for):
    """Move the order as decided, with its outbox rows; returns a note for the journal."""
    apply_decision(tx, order, decision, transaction, now, retry_for)
    if decision.status != "paid" or not held:
        return ""
    # Reversals that came first (held: the order was unpaid) take effect now, as if they had
    # come after the purchase, each seeing only those before it.
    notes = []
    for i, reversal in enumerate(held):
        current = tx.order(order["order_id"])
        step = transition(current, reversal["effect"], held[:i], Decimal(reversal["total"]))
        apply_decision(tx, current, step, reversal, now, retry_for)
        notes.append(f" -> {step.status or current['status']} by the held"
                     f" {reversal['transaction_type']!r}")
    return "".join(notes)


def apply_decision(tx, order, decision, transaction, now, retry_for):
    """Write one decision's change of the order and, when billing must hear, its event."""
    changes = {}
    if decision.review:
        changes["review"] = append_review(order["review"], now, decision.review)
    if decision.status:
        changes["status"] = decision.status
    if decision.status == "paid":
        changes.update(paid_at=now, transaction_id=transaction["transaction_id"])
    if decision.refunded is not None:
        changes["refunded"] = format_wire(decision.refunded)
    if changes:
        tx.update_order(order["order_id"], now, **changes)
    if decision.event:
        emit(tx, decision.effect, order["order_id"], transaction, now, retry_for)


def emit(tx, effect, order_id, transaction, now, retry_for):
    """The outbox row of an effect; it commits with the state change, so billing hears of
    each outcome or of nothing."""
    order = tx.order(order_id)
    tx.insert_event({
        "event_id": billing.new_event_id(), "order_id": order_id,
        "type": billing.EVENT_TYPES[effect], "created_at": now,
        "body": billing.event_body(effect, order, transaction, now, taken_back(effect, order,
                                                                               transaction)),
        "retry_until": now + retry_for, "transaction_id": transaction["transaction_id"],
    })


def taken_back(effect, order, transaction):
    """For a reversal's event: (what it takes back, what stays credited), as wire strings."""
    amount, refunded = Decimal(order["amount"]), Decimal(order["refunded"] or 0)
    if effect == "refunded":
        return format_wire(Decimal(transaction["total"])), format_wire(amount - refunded)
    if effect == "chargeback":
        return format_wire(amount - refunded), format_wire(Decimal(0))
    return None


def log_verdict(entry):
    """One line per callback: ERROR for what ops must look at. Never the sign or secrets."""
    what = "callback %s: %s (order %r, transaction %r %r, from %s)"
    args = (entry["verdict"], _unsigned(entry["reason"]), _short(entry["order_id"]),
            _short(entry["transaction_id"]), _short(entry["transaction_type"]),
            entry["remote_addr"])
    if entry["verdict"] in CLEAN_VERDICTS:
        log.info(what, *args)
    elif entry["verdict"] == "held":  # settles itself when the purchase comes
        log.warning(what, *args)
    else:
        log.error(what, *args)


def _short(value):
    return _unsigned(value[:64]) if isinstance(value, str) else value


# A sign (32 hex) or a link signature (64) copied by a sender into any field we log: a log
# line never carries one, whoever put it there.
_DIGEST = re.compile(r"[0-9a-fA-F]{32,}")


def _unsigned(text):
    return _DIGEST.sub("<hex>", text)


# What is kept of a stranger's callback body: enough to see what it was, not what it weighs.
SAMPLE_BYTES = 512


def sample_stranger(store, now, remote_addr, body, fields, cap):
    """Count a callback from an address not allowed; journal a truncated sample while the
    hour's cap lasts. Returns whether it was sampled."""
    with store.write() as tx:
        refused = tx.count_stranger(int(now // 3600))
        sampled = refused <= cap
        if sampled:
            entry = journal_entry(
                now, _short(remote_addr), body.encode()[:SAMPLE_BYTES].decode(errors="ignore"),
                "forbidden_ip", "address not in CHRONOPAY_CALLBACK_IPS",
                fields={k: _short(v) for k, v in fields.items()})
            tx.journal(entry)
    if sampled:
        log_verdict(entry)
    if refused == cap + 1:  # one line per hour once the cap is reached, not one per request
        log.error("callback forbidden_ip: CALLBACK_SAMPLE_CAP (%d) reached this hour; further"
                  " strangers' callbacks are only counted (stranger_hours)", cap)
    return sampled

