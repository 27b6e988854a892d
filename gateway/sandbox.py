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
    problem = handoff_problem(fields, current_app.config)
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


@bp.post("/chronopay/pay")
def chronopay_pay():
    """Pay or decline by the test card; a payment is called back before the browser returns."""
    form = CardForm()
    try:
        fields = _handoffs().loads(form.handoff.data or "")
    except BadSignature as exc:
        raise LinkInvalid("sandbox hand-off") from exc
    card = "".join((form.card.data or "").split())
    if card == DECLINED_CARD:
        return redirect(fields["decline_url"], 303)
    if card != PAYING_CARD:
        form.card.errors = ["Используйте тестовую карту 4111 1111 1111 1111 или "
                            "4000 0000 0000 0002."]
        return render_template("sandbox/chronopay.html", form=form, fields=fields,
                               amount=format_human(Decimal(fields["product_price"]))), 422
    callback = purchase_callback(fields, form.email.data or "", card,
                                 current_app.config["CHRONOPAY_SHARED_SECRET"])
    try:
        HttpClient(timeout=10).post(fields["cb_url"], data=callback)
    except TransportError:
        current_app.logger.warning("sandbox: callback to the gateway failed")
    return redirect(fields["success_url"], 303)


def purchase_callback(fields, email, card, secret):
    """The form ChronoPay posts to cb_url for a paid order, signed its way."""
    customer_id = "sbx" + secrets.token_hex(4)
    transaction_id = str(secrets.randbelow(10**12))
    total = fields["product_price"]
    return {
        "transaction_type": "Purchase", "transaction_id": transaction_id,
        "customer_id": customer_id, "total": total, "currency": "RUB",
        "order_id": fields["order_id"], "product_id": fields["product_id"], "site_id": "sbx",
        "email": email, "country": "RUS", "language": "ru", "payment_type": "1",
        "creditcardnumber": card[:6] + "XXXXXX" + card[-4:],
        "date": time.strftime("%m/%d/%Y"), "time": time.strftime("%H:%M:%S"),
        "sign": chronopay.callback_sign(secret, customer_id, transaction_id, "Purchase", total),
    }


@bp.route("/cabinet/", methods=["GET", "POST"])
def cabinet():
    """The provider's cabinet of the demo subscriber: «Платежи → ChronoPay»."""
    form = CabinetForm()
    if form.validate_on_submit():
        return redirect(cabinet_link(form.amount.data), 303)
    return render_template("sandbox/cabinet.html", form=form, subscriber=SUBSCRIBER,
                           balance=format_human(balance(current_app.extensions["store"])))


def cabinet_link(typed):
    """The signed link the cabinet sends the subscriber to, as the real cabinet would."""
    cfg = current_app.config
    try:
        amount = format_wire(parse_typed(typed, Decimal("0.01"), Decimal("99999999")))
    except AmountError:
        amount = (typed or "").strip()[:32] or None  # let the gateway explain the mistake
    expires = int(current_app.extensions["clock"]()) + min(900, cfg["LINK_MAX_AGE"])
    query = make_link(cfg["CABINET_SECRET"], SUBSCRIBER["login"], SUBSCRIBER["account"],
                      amount, expires)
    return url_for("pay.start", **query)
