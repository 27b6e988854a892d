"""Sandbox billing: receives our calls, verifies them, credits the demo subscriber once.

A switch makes it fail (500) or hang, so a person can watch retries and recovery.
"""

import threading
from decimal import Decimal

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import RadioField
from wtforms.fields.choices import SelectChoice

from .. import csrf
from ..billing import parse_secrets, verify
from ..money import format_human

bp = Blueprint("sandbox_billing", __name__, url_prefix="/sandbox/billing")
SEED_BALANCE = Decimal("-150.00")  # the demo subscriber starts blocked, as many do
MODES = [SelectChoice("ok", "Отвечает 204"), SelectChoice("fail", "Отвечает 500"),
         SelectChoice("hang", "Зависает")]
SIGNS = {"payment.succeeded": 1, "payment.refunded": -1, "payment.chargeback": -1}


class ModeForm(FlaskForm):
    mode = RadioField("Поведение биллинга", choices=MODES, default="ok")


def switch():
    """This process's switch: the mode, and an event that frees hanging requests."""
    return current_app.extensions.setdefault(
        "sandbox_billing", {"mode": "ok", "release": threading.Event()})


def balance(ledger):
    """The demo subscriber's balance: the seed plus every booked call."""
    total = SEED_BALANCE
    for row in ledger.entries():
        total += SIGNS.get(row["type"], 0) * Decimal(row["amount"])
    return total


@bp.post("/")
@csrf.exempt  # a machine endpoint: the Standard Webhooks signature stands for CSRF
def receive():
    """Book a verified call once per webhook-id; answer 204 only after the commit."""
    state = switch()
    if state["mode"] == "hang":
        state["release"].wait(current_app.config["BILLING_TIMEOUT"] + 5)
    if state["mode"] != "ok":
        return "sandbox billing is switched to fail\n", 500, {"Content-Type": "text/plain"}
    body = request.get_data(as_text=True)
    keys = parse_secrets(current_app.config["BILLING_SECRET"])
    now = current_app.extensions["clock"]()
    payload = verify(keys, request.headers, body, now)
    current_app.extensions["sandbox_ledger"].book_once({
        "webhook_id": request.headers["webhook-id"], "type": payload["type"],
        "order_id": payload["data"]["order_id"], "amount": payload["data"]["amount"],
        "received_at": now})
    return "", 204


@bp.route("/", methods=["GET"])
def page():
    """The switch, the ledger and the gateway's outbox as a person watches them."""
    ledger = current_app.extensions["sandbox_ledger"]
    form = ModeForm(formdata=None, mode=switch()["mode"])
    return render_template(
        "sandbox/billing.html", form=form, ledger=ledger.entries(),
        events=current_app.extensions["store"].read().events(limit=20),
        balance=format_human(balance(ledger)))


@bp.post("/mode")
def set_mode():
    form = ModeForm()
    if form.validate_on_submit():
        state = switch()
        state["mode"] = form.mode.data
        if state["mode"] != "hang":
            state["release"].set()
            state["release"] = threading.Event()
    return redirect(url_for("sandbox_billing.page"), 303)
