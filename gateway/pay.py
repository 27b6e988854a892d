"""The subscriber's pages: amount, confirmation, hand-off to ChronoPay, and the result."""

import secrets
from decimal import Decimal

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import ValidationError

from . import chronopay, csrf, payments
from .errors import AmountError, OrderNotFound
from .money import format_human, format_wire, parse_typed, parse_wire
from .signing import verify_link

bp = Blueprint("pay", __name__, url_prefix="/pay")


class AmountForm(FlaskForm):
    """«Сумма» for an account named by a signed ticket."""

    ticket = HiddenField()
    amount = StringField("Сумма, руб.")

    def validate_amount(self, field):
        cfg = current_app.config
        try:
            field.parsed = parse_typed(field.data, cfg["AMOUNT_MIN"], cfg["AMOUNT_MAX"])
        except AmountError as exc:
            raise ValidationError(exc.message) from exc


class ConfirmForm(FlaskForm):
    """«Заплатить»: everything it needs travels in one signed token."""

    token = HiddenField()


def ext(name):
    return current_app.extensions[name]


def now():
    return ext("clock")()


@bp.get("")
def start():
    """Open a cabinet link: ask for the amount, or confirm the one it carries."""
    cfg = current_app.config
    link = verify_link(request.args.to_dict(flat=False), cfg["CABINET_SECRET"], int(now()),
                       cfg["LINK_MAX_AGE"])
    if link.amount is None:
        return render_amount(link.login, link.account, AmountForm(formdata=None))
    try:
        amount = parse_wire(link.amount, cfg["AMOUNT_MIN"], cfg["AMOUNT_MAX"])
    except AmountError as exc:
        form = AmountForm(formdata=None)
        form.amount.errors = [exc.message]
        return render_amount(link.login, link.account, form)
    return render_confirm(link.login, link.account, amount)


@bp.post("/amount")
def amount():
    """Take the typed amount and show the confirmation, or the form again with the error."""
    form = AmountForm()
    ticket = ext("tokens").loads("ticket", form.ticket.data)
    if not form.validate_on_submit():
        return render_amount(ticket["l"], ticket["a"], form), 422
    return render_confirm(ticket["l"], ticket["a"], form.amount.parsed)


@bp.post("/confirm")
def confirm():
    """Create the order once per confirmation and send the browser to ChronoPay."""
    # CSRFProtect has checked the CSRF token before this view runs; the form is only read
    # here, so it need not make a fresh token (simpler; no measurable speed-up, bench/ab.py).
    form = ConfirmForm(meta={"csrf": False})
    data = ext("tokens").loads("confirm", form.token.data)
    order = payments.create_order(
        ext("store"), nonce=data["n"], login=data["l"], account=data["a"],
        amount=Decimal(data["m"]), now=now(),
    )
    if order["status"] != "pending":
        return redirect(result_url(order, "success"), 303)
    return redirect(handoff(order), 303)


@bp.route("/success/<ref>", methods=["GET", "POST"], defaults={"outcome": "success"})
@bp.route("/decline/<ref>", methods=["GET", "POST"], defaults={"outcome": "decline"})
@csrf.exempt  # read-only: a POST is only redirected to the GET; no state can change here.
def result(ref, outcome):
    """Show the state the callback set; never change it. POST (ChronoPay's) becomes a GET."""
    if request.method == "POST":
        return redirect(url_for("pay.result", ref=ref, outcome=outcome), 303)
    order_id = ext("tokens").loads("order", ref, max_age=None)
    order = ext("store").read().order(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    state = payments.result_state(order, outcome)
    return render_template("pay/result.html", order=order, state=state,
                           amount=format_human(Decimal(order["amount"])))


def render_amount(login, account, form):
    form.ticket.data = ext("tokens").dumps("ticket", {"l": login, "a": account})
    cfg = current_app.config
    return render_template("pay/amount.html", form=form, login=login, account=account,
                           minimum=format_human(cfg["AMOUNT_MIN"]),
                           maximum=format_human(cfg["AMOUNT_MAX"]))


def render_confirm(login, account, amount):
    form = ConfirmForm(formdata=None)
    form.token.data = ext("tokens").dumps("confirm", {
        "l": login, "a": account, "m": format_wire(amount), "n": secrets.token_urlsafe(16),
    })
    return render_template("pay/confirm.html", form=form, login=login, account=account,
                           amount=format_human(amount))


def result_url(order, outcome):
    ref = ext("tokens").dumps("order", order["order_id"])
    return current_app.config["PUBLIC_URL"] + url_for("pay.result", ref=ref, outcome=outcome)


def handoff(order):
    """ChronoPay's hosted page for this order, with our callback and return addresses."""
    cfg = current_app.config
    fields = chronopay.handoff_fields(
        product_id=cfg["CHRONOPAY_PRODUCT_ID"], price=order["amount"],
        order_id=order["order_id"],
        product_name=f"Пополнение лицевого счета {order['account']} ({order['login']})",
        secret=cfg["CHRONOPAY_SHARED_SECRET"], sign_order_id=cfg["CHRONOPAY_SIGN_ORDER_ID"],
        urls={"cb_url": cfg["PUBLIC_URL"] + url_for("callback.receive"),
              "success_url": result_url(order, "success"),
              "decline_url": result_url(order, "decline")},
    )
    return chronopay.handoff_url(cfg["CHRONOPAY_URL"], fields)
