"""Coverage-guided fuzz targets: `python fuzz_targets.py TARGET [libFuzzer flags] [corpus]`.

Each target turns bytes into what the app would receive and runs one of our parsers and
verifiers on it. Only our own refusals may come out; anything else, or a result that breaks
the target's invariant, is a crash libFuzzer reports. test_hostile.py runs them with atheris,
or drives the same functions with Hypothesis where atheris is not installed.
"""

import hmac
import io
import sys
from decimal import Decimal

if __name__ == "__main__":
    import atheris

    with atheris.instrument_imports(include=["gateway"]):
        from gateway import chronopay, money, signing
else:
    from gateway import chronopay, money, signing

from werkzeug.formparser import parse_form_data  # noqa: E402
from werkzeug.wrappers import Request  # noqa: E402

from gateway.errors import AmountError, CallbackRejected, LinkExpired, LinkInvalid  # noqa: E402

SECRET = "fuzz-chronopay-sharedsec-0123456789abcdef"
CABINET = "fuzz-cabinet-secret-0123456789abcdef0123"
NOW, MAX_AGE = 1_764_300_000, 1800
LOW, HIGH = Decimal("10.00"), Decimal("15000.00")


def callback_body(customer_id="c-42", transaction_id="70001", transaction_type="Purchase",
                  total="1000.00"):
    """A genuine callback body, the seed the fuzzer mutates."""
    sign = chronopay.callback_sign(SECRET, customer_id, transaction_id, transaction_type, total)
    return (f"transaction_type={transaction_type}&transaction_id={transaction_id}&customer_id="
            f"{customer_id}&total={total}&currency=RUB&order_id=20261128-abc&product_id=p"
            f"&sign={sign}").encode()


def link_query():
    """A genuine cabinet link's query string, the seed the fuzzer mutates."""
    from urllib.parse import urlencode

    return urlencode(signing.make_link(CABINET, "dem001", "6", "1000.00", NOW + 600)).encode()


def fuzz_callback(data):
    """The callback's form parsing and sign check, as the view runs them."""
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)}
    _, form, _ = parse_form_data(environ)
    try:
        cb = chronopay.verify_callback(form.to_dict(flat=False), SECRET)
    except CallbackRejected:
        return
    expected = chronopay.callback_sign(SECRET, cb.customer_id, cb.transaction_id,
                                       cb.transaction_type, cb.total)
    if not hmac.compare_digest(expected, cb.fields["sign"]):
        raise AssertionError("a callback with a wrong sign was accepted")
    if not all(part.isascii() and part.isprintable() and " " not in part for part in (
            cb.customer_id, cb.transaction_id, cb.transaction_type, cb.total)):
        raise AssertionError("a signed field outside printable ASCII was accepted")


def fuzz_amount(data):
    """Both amount grammars: what a machine sends and what a person types."""
    text = data.decode("utf-8", errors="replace")
    for parse in (lambda t: money.parse_wire(t), lambda t: money.parse_wire(t, LOW, HIGH),
                  lambda t: money.parse_typed(t, LOW, HIGH)):
        try:
            amount = parse(text)
        except AmountError:
            continue
        if not isinstance(amount, Decimal) or amount.as_tuple().exponent != -2:
            raise AssertionError(f"{text!r} parsed to {amount!r}, not Decimal cents")
        if not amount.is_finite() or money.parse_wire(money.format_wire(amount)) != amount:
            raise AssertionError(f"{text!r} parsed to {amount!r}, which does not round-trip")
    try:
        amount = money.parse_wire(text)
    except AmountError:
        return
    if Decimal(text) != amount:  # the wire grammar never rounds: 2 decimals at most
        raise AssertionError(f"{text!r} was rounded to {amount}")


def fuzz_link(data):
    """The cabinet link's query parsing and signature check, as the /pay view runs them."""
    if not data.isascii():
        return  # waitress and nginx answer 400 to other bytes in a request line (rawhttp.py)
    environ = {"REQUEST_METHOD": "GET", "QUERY_STRING": data.decode("ascii")}
    args = Request(environ).args.to_dict(flat=False)
    try:
        link = signing.verify_link(args, CABINET, NOW, MAX_AGE)
    except (LinkInvalid, LinkExpired):
        return
    expires = args["expires"][0]
    expected = signing.link_sig(CABINET, link.login, link.account, link.amount, expires)
    if not hmac.compare_digest(expected, args["sig"][0]):
        raise AssertionError("a link with a wrong signature was accepted")
    if not NOW <= int(expires) <= NOW + MAX_AGE:
        raise AssertionError("a link outside its lifetime was accepted")


TARGETS = {"callback": fuzz_callback, "amount": fuzz_amount, "link": fuzz_link}
SEEDS = {"callback": [callback_body(), callback_body(total="10.00")],
         "amount": [b"1000.00", b"1 000,50", b"15000", b"0.01"],
         "link": [link_query()]}


if __name__ == "__main__":
    target = sys.argv[1]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[target])
    atheris.Fuzz()
