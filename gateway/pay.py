"""The subscriber's pages: amount, confirmation, hand-off to ChronoPay, and the result."""

import secrets
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, StringField
from wtforms.validators import ValidationError

from . import chronopay, csrf, payments
from .errors import AmountError, LinkExpired, OrderNotFound, OrderRefExpired
from .money import format_human, format_wire, parse_typed, parse_wire
from .signing import verify_link

bp = Blueprint("pay", __name__, url_prefix="/pay")

# The time of day on the «already paid» warning: the subscribers' (and billing's) zone.
MOSCOW = ZoneInfo("Europe/Moscow")


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
    again = BooleanField("Да, я хочу заплатить еще раз")


def ext(name):
    return current_app.extensions[name]


def now():
    return ext("clock")()


@bp.get("")
def start():
    """Open a cabinet link: ask for the amount, or confirm the one it carries."""
    cfg = current_app.config
    link = verify_link(request.args.to_dict(flat=False), cfg["CABINET_SECRET"], now(),
                       cfg["LINK_MAX_AGE"])
    # What every later token of this link carries: who, until when, and which link.
    origin = {"l": link.login, "a": link.account, "e": link.expires, "k": link.link_id}
    if link.amount is None:
        return render_amount(origin, AmountForm(formdata=None))
    try:
        amount = parse_wire(link.amount, cfg["AMOUNT_MIN"], cfg["AMOUNT_MAX"])
    except AmountError as exc:
        form = AmountForm(formdata=None)
        form.amount.errors = [exc.message]
        return render_amount(origin, form)
    return render_confirm(origin, amount)


@bp.post("/amount")
def amount():
    """Take the typed amount and show the confirmation, or the form again with the error."""
    form = AmountForm()
    ticket = load_within_link("ticket", form.ticket.data)
    if not form.validate_on_submit():
        return render_amount(ticket, form), 422
    return render_confirm(ticket, form.amount.parsed)


@bp.post("/confirm")
def confirm():
    """Create the order once per confirmation and send the browser to ChronoPay."""
    # CSRFProtect has checked the CSRF token before this view runs; the form is only read
    # here, so it need not make a fresh token (simpler; no measurable speed-up, bench/ab.py).
    form = ConfirmForm(meta={"csrf": False})
    data = load_within_link("confirm", form.token.data)
    store = ext("store")
    recent = recent_payment(data["a"])
    if recent is not None and not form.again.data and store.read().order_by_nonce(
            data["n"]) is None:
        # Paying again after a recent payment takes a deliberate tick, checked here and not
        # only by the browser's `required`.
        form.again.errors = ["Отметьте «Да, я хочу заплатить еще раз», если это не ошибка."]
        return confirm_page(form, data, Decimal(data["m"]), recent), 422
    order = payments.create_order(
        store, nonce=data["n"], login=data["l"], account=data["a"],
        amount=Decimal(data["m"]), now=now(), link_id=data["k"],
        max_orders=current_app.config["LINK_MAX_ORDERS"],
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
    try:
        order_id = ext("tokens").loads("order", ref,
                                       max_age=current_app.config["ORDER_REF_MAX_AGE"])
    except LinkExpired as exc:
        raise OrderRefExpired("order reference expired") from exc
    order = ext("store").read().order(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    state = payments.result_state(order, outcome)
    return render_template("pay/result.html", order=order, state=state,
                           amount=format_human(Decimal(order["amount"])))


def load_within_link(purpose, token):
    """A page token's data, refused once the cabinet link that started it has expired."""
    data = ext("tokens").loads(purpose, token)
    if "e" not in data or "k" not in data:
        # A token made before tokens carried their link's lifetime: it cannot be bounded.
        raise LinkExpired("token without link lifetime")
    if data["e"] < now():
        raise LinkExpired("link expired")
    return data


def origin_of(data):
    """The link's part of a token: login, account, expiry and link id (not re-timed)."""
    return {key: data[key] for key in ("l", "a", "e", "k")}


def render_amount(origin, form):
    form.ticket.data = ext("tokens").dumps("ticket", origin_of(origin))
    cfg = current_app.config
    return render_template("pay/amount.html", form=form, login=origin["l"],
                           account=origin["a"], minimum=format_human(cfg["AMOUNT_MIN"]),
                           maximum=format_human(cfg["AMOUNT_MAX"]))


def render_confirm(origin, amount):
    form = ConfirmForm(formdata=None)
    data = dict(origin_of(origin), m=format_wire(amount), n=secrets.token_urlsafe(16))
    form.token.data = ext("tokens").dumps("confirm", data)
    return confirm_page(form, data, amount, recent_payment(origin["a"]))


def confirm_page(form, data, amount, recent):
    """The confirmation; with the «already paid» warning when the account paid recently."""
    warning = None
    if recent is not None:
        when = datetime.fromtimestamp(recent["paid_at"], MOSCOW).strftime("%H:%M")
        warning = f"Платеж на {format_human(Decimal(recent['amount']))} руб. уже принят в {when}."
    return render_template("pay/confirm.html", form=form, login=data["l"], account=data["a"],
                           amount=format_human(amount), warning=warning)


def recent_payment(account):
    """The account's latest order paid within RECENT_PAYMENT_WARNING seconds, or None."""
    window = current_app.config["RECENT_PAYMENT_WARNING"]
    if window <= 0:  # 0 turns the warning off
        return None
    since = now() - window
    return ext("store").read().recent_paid_order(account, since)


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
