"""ChronoPay's server-to-server callback: verified, journaled, applied once, answered fast."""

from flask import Blueprint, current_app, request

from . import csrf, payments
from .chronopay import verify_callback
from .errors import CallbackRejected

bp = Blueprint("callback", __name__)
PLAIN = {"Content-Type": "text/plain; charset=utf-8"}


@bp.route("/chronopay/callback", methods=["GET", "POST"])
@csrf.exempt  # ChronoPay cannot carry our CSRF token; the sign and the address stand for it.
def receive():
    """Journal the callback with its verdict before answering; 200 stops ChronoPay re-sending.

    ChronoPay POSTs a form (cb_type=P) or sends the same fields as a GET query (cb_type=G);
    both are verified and applied alike. Fields in both the query and the body are refused:
    which would be the callback?
    """
    cfg = current_app.config
    store = current_app.extensions["store"]
    now = current_app.extensions["clock"]()
    body = request.get_data(as_text=True)  # first: it keeps the raw body for the form
    query = request.args.to_dict(flat=False)
    form = request.form.to_dict(flat=False)
    if request.method == "GET" or not (body or form):
        body, form = request.query_string.decode("utf-8", "replace"), query
    remote = request.remote_addr
    try:
        if remote not in cfg["CHRONOPAY_CALLBACK_IPS"]:
            # Anyone can send this: counted, and sampled only up to a cap an hour, truncated.
            fields = {name: values[0] for name, values in form.items() if values}
            payments.sample_stranger(store, now, remote or "", body, fields,
                                     cfg["CALLBACK_SAMPLE_CAP"])
            return "403 Forbidden\n", 403, PLAIN
        if query and form is not query:
            raise CallbackRejected("malformed", "fields in both the query and the body")
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
