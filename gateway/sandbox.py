"""Simulators for SANDBOX mode: ChronoPay's hosted page and the provider's cabinet.

They behave as the real parties do (../shared/chronopay.md): the page checks the request
sign, and a paid card makes a signed callback over real HTTP before the browser returns.
"""

import hmac
import secrets
import time
from decimal import Decimal

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeSerializer
from wtforms import HiddenField, StringField

from . import chronopay
from .errors import AmountError, LinkInvalid, TransportError
from .http import HttpClient
from .money import format_human, format_wire, parse_typed
from .sandbox_billing import balance
from .signing import make_link

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")
PAYING_CARD = "4111111111111111"
DECLINED_CARD = "4000000000000002"
SUBSCRIBER = {"login": "dem001", "account": "6", "name": "Иванов Иван Иванович"}


class CardForm(FlaskForm):
    """The simulated ChronoPay page's card form."""

    handoff = HiddenField()
    email = StringField("E-mail")
    country = StringField("Страна")
    card = StringField("Номер карты")
    expiry = StringField("Срок действия (ММ/ГГ)")
    cvc = StringField("CVC")


class CabinetForm(FlaskForm):
    """The cabinet's «Платежи → ChronoPay» tab."""

    amount = StringField("Сумма")


def _handoffs():
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="sandbox.handoff")


@bp.get("/chronopay/")
def chronopay_page():
    """ChronoPay's hosted page: refuse a badly signed hand-off, as the real one does."""
    fields = {name: request.args.get(name, "") for name in request.args}
    problem = handoff_problem(fields, current_app.config) or already_paid(fields)
    if problem:
        return render_template("sandbox/chronopay_error.html", problem=problem), 400
    form = CardForm(formdata=None, country="RUS")
    form.handoff.data = _handoffs().dumps(fields)
    return render_template("sandbox/chronopay.html", form=form, fields=fields,
                           amount=format_human(Decimal(fields["product_price"])))


def handoff_problem(fields, cfg):
    """Why ChronoPay would refuse this hand-off, or None."""
    for name in ("product_id", "product_price", "order_id", "sign"):
        if not fields.get(name):
            return f"Не передано поле {name}."
    if fields["product_id"] != cfg["CHRONOPAY_PRODUCT_ID"]:
        return "Неизвестный продукт."
    expected = chronopay.request_sign(fields["product_id"], fields["product_price"],
                                      fields["order_id"], cfg["CHRONOPAY_SHARED_SECRET"],
                                      cfg["CHRONOPAY_SIGN_ORDER_ID"])
    if not hmac.compare_digest(expected, fields["sign"]):
        return "Неверная подпись запроса (sign)."
    for name in ("cb_url", "success_url", "decline_url"):
        # Only addresses of this gateway: the simulator must not post or redirect elsewhere.
        if not fields.get(name, "").startswith(cfg["PUBLIC_URL"] + "/"):
            return f"Адрес {name} не принадлежит магазину."
    return None


def already_paid(fields):
    """With payment uniqueness control (order_id signed), ChronoPay pays an order_id once."""
    if not current_app.config["CHRONOPAY_SIGN_ORDER_ID"]:
        return None
    if current_app.extensions["store"].read().sandbox_paid(fields["order_id"]) is None:
        return None
    return f"Заказ {fields['order_id']} уже оплачен. Повторная оплата заказа невозможна."


@bp.post("/chronopay/pay")
def chronopay_pay():
    """Pay or decline by the test card; a payment is called back before the browser returns."""
    form = CardForm()
    try:
        fields = _handoffs().loads(form.handoff.data or "")
    except BadSignature as exc:
        raise LinkInvalid("sandbox hand-off") from exc
    problem = already_paid(fields)
    if problem:
        return render_template("sandbox/chronopay_error.html", problem=problem), 409
    card = "".join((form.card.data or "").split())
    if card not in (PAYING_CARD, DECLINED_CARD):
        form.card.errors = ["Используйте тестовую карту 4111 1111 1111 1111 или "
                            "4000 0000 0000 0002."]
        return render_template("sandbox/chronopay.html", form=form, fields=fields,
                               amount=format_human(Decimal(fields["product_price"]))), 422
    paid = card == PAYING_CARD
    if paid:
        with current_app.extensions["store"].write() as tx:
            tx.record_sandbox_paid(fields["order_id"], time.time())
    callback = purchase_callback(fields, form.email.data or "", card,
                                 current_app.config["CHRONOPAY_SHARED_SECRET"],
                                 "Purchase" if paid else "decline")
    try:
        HttpClient(timeout=10).post(fields["cb_url"], data=callback)
    except TransportError:
        current_app.logger.warning("sandbox: callback to the gateway failed")
    return redirect(fields["success_url" if paid else "decline_url"], 303)


def purchase_callback(fields, email, card, secret, transaction_type="Purchase"):
    """The form ChronoPay posts to cb_url for a paid (or declined) order, signed its way."""
    customer_id = "sbx" + secrets.token_hex(4)
    transaction_id = str(secrets.randbelow(10**12))
    total = fields["product_price"]
    return {
        "transaction_type": transaction_type, "transaction_id": transaction_id,
        "customer_id": customer_id, "total": total, "currency": "RUB",
        "order_id": fields["order_id"], "product_id": fields["product_id"], "site_id": "sbx",
        "email": email, "country": "RUS", "language": "ru", "payment_type": "1",
        "creditcardnumber": card[:6] + "XXXXXX" + card[-4:],
        "date": time.strftime("%m/%d/%Y"), "time": time.strftime("%H:%M:%S"),
        "sign": chronopay.callback_sign(secret, customer_id, transaction_id, transaction_type,
                                        total),
    }


@bp.route("/cabinet/", methods=["GET", "POST"])
def cabinet():
    """The provider's cabinet of the demo subscriber: «Платежи → ChronoPay»."""
    form = CabinetForm()
    status = 200
    if form.validate_on_submit():
        cfg = current_app.config
        typed = (form.amount.data or "").strip()
        try:
            # The gateway's own rule and words, so the typed text stays and the message is clear.
            amount = format_wire(parse_typed(typed, cfg["AMOUNT_MIN"], cfg["AMOUNT_MAX"])
                                 ) if typed else None  # nothing typed: the gateway asks
        except AmountError as exc:
            form.amount.errors = [exc.message]
            status = 422
        else:
            return redirect(cabinet_link(amount), 303)
    return render_template("sandbox/cabinet.html", form=form, subscriber=SUBSCRIBER,
                           balance=format_human(balance(current_app.extensions["store"]))), status


def cabinet_link(amount):
    """The signed link (amount "1000.00" or None) the cabinet sends the subscriber to."""
    cfg = current_app.config
    expires = int(current_app.extensions["clock"]()) + min(900, cfg["LINK_MAX_AGE"])
    query = make_link(cfg["CABINET_SECRET"], SUBSCRIBER["login"], SUBSCRIBER["account"],
                      amount, expires)
    return url_for("pay.start", **query)
