"""ChronoPay's hosted page, simulated: it checks the request sign as the real one does
(../shared/chronopay.md), and a paid card makes a signed callback over real HTTP before the
browser returns.
"""

import hmac
import secrets
import time
from decimal import Decimal

from flask import Blueprint, current_app, redirect, render_template, request
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeSerializer
from wtforms import HiddenField, StringField

from ..chronopay import callback_sign, request_sign
from ..errors import LinkInvalid, TransportError
from ..http import HttpClient
from ..money import format_human

bp = Blueprint("sandbox_chronopay", __name__, url_prefix="/sandbox/chronopay")
PAYING_CARD = "4111111111111111"
DECLINED_CARD = "4000000000000002"


class CardForm(FlaskForm):
    """The simulated ChronoPay page's card form."""

    handoff = HiddenField()
    email = StringField("E-mail")
    country = StringField("Страна")
    card = StringField("Номер карты")
    expiry = StringField("Срок действия (ММ/ГГ)")
    cvc = StringField("CVC")


def _handoffs():
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="sandbox.handoff")


@bp.get("/")
def page():
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
    expected = request_sign(fields["product_id"], fields["product_price"], fields["order_id"],
                            cfg["CHRONOPAY_SHARED_SECRET"], cfg["CHRONOPAY_SIGN_ORDER_ID"])
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
    if current_app.extensions["sandbox_ledger"].paid_at(fields["order_id"]) is None:
        return None
    return paid_twice(fields["order_id"])


def paid_twice(order_id):
    return f"Заказ {order_id} уже оплачен. Повторная оплата заказа невозможна."


@bp.post("/pay")
def pay():
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
    # Booked before the callback, once by the ledger's key: of two payments of one order that
    # race past the check above, one goes through and the other is refused as a second one.
    first = paid and current_app.extensions["sandbox_ledger"].pay_once(fields["order_id"],
                                                                       time.time())
    if paid and not first and current_app.config["CHRONOPAY_SIGN_ORDER_ID"]:
        return render_template("sandbox/chronopay_error.html",
                               problem=paid_twice(fields["order_id"])), 409
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
        "sign": callback_sign(secret, customer_id, transaction_id, transaction_type, total),
    }
