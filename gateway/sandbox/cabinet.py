"""The provider's cabinet, simulated: the demo subscriber's «Платежи → ChronoPay» tab, which
sends the subscriber to the gateway with a signed link, and the balance billing keeps."""

from flask import Blueprint, current_app, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import StringField

from ..errors import AmountError
from ..money import format_human, format_wire, parse_typed
from ..signing import make_link
from .billing import balance

bp = Blueprint("sandbox_cabinet", __name__, url_prefix="/sandbox/cabinet")
SUBSCRIBER = {"login": "dem001", "account": "6", "name": "Иванов Иван Иванович"}


class CabinetForm(FlaskForm):
    """The cabinet's «Платежи → ChronoPay» tab."""

    amount = StringField("Сумма")


@bp.route("/", methods=["GET", "POST"])
def page():
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
    return render_template(
        "sandbox/cabinet.html", form=form, subscriber=SUBSCRIBER,
        balance=format_human(balance(current_app.extensions["sandbox_ledger"]))), status


def cabinet_link(amount):
    """The signed link (amount "1000.00" or None) the cabinet sends the subscriber to."""
    cfg = current_app.config
    expires = int(current_app.extensions["clock"]()) + min(900, cfg["LINK_MAX_AGE"])
    query = make_link(cfg["CABINET_SECRET"], SUBSCRIBER["login"], SUBSCRIBER["account"],
                      amount, expires)
    return url_for("pay.start", **query)
