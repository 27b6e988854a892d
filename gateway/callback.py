"""ChronoPay's server-to-server callback: verified, journaled, applied once, answered fast."""

from flask import Blueprint, current_app, request

from . import csrf, payments
from .chronopay import verify_callback
from .errors import CallbackRejected

bp = Blueprint("callback", __name__)
PLAIN = {"Content-Type": "text/plain; charset=utf-8"}


@bp.post("/chronopay/callback")
@csrf.exempt  # ChronoPay cannot carry our CSRF token; the sign and the address stand for it.
def receive():
    """Journal the callback with its verdict before answering; 200 stops ChronoPay re-sending."""
    cfg = current_app.config
    store = current_app.extensions["store"]
    now = current_app.extensions["clock"]()
    body = request.get_data(as_text=True)
    form = request.form.to_dict(flat=False)
    remote = request.remote_addr
    try:
        if remote not in cfg["CHRONOPAY_CALLBACK_IPS"]:
            # Anyone can send this: counted, and sampled only up to a cap an hour, truncated.
            fields = {name: values[0] for name, values in form.items() if values}
            payments.sample_stranger(store, now, remote or "", body, fields,
                                     cfg["CALLBACK_SAMPLE_CAP"])
            return "403 Forbidden\n", 403, PLAIN
        cb = verify_callback(form, cfg["CHRONOPAY_SHARED_SECRET"])
    except CallbackRejected as exc:
        fields = {name: values[0] for name, values in form.items() if values}
        payments.reject(store, payments.journal_entry(now, remote, body, exc.verdict,
                                                      exc.reason, fields=fields))
        return "403 Forbidden\n", 403, PLAIN
    decision = payments.apply_callback(
        store, cb, product_id=cfg["CHRONOPAY_PRODUCT_ID"], now=now, remote_addr=remote,
        body=body, retry_for=cfg["BILLING_RETRY_FOR"])
    if decision.effect and "deliverer" in current_app.extensions:
        current_app.extensions["deliverer"].wake()
    return "OK", 200, PLAIN
