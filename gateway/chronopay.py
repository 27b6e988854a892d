"""ChronoPay's two signature recipes, the hand-off query and the callback's parsing.

See ../shared/chronopay.md: the request sign puts the secret LAST and joins with "-"; the
callback sign puts the secret FIRST with no separators. They are never interchangeable.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from .errors import CallbackRejected

# Transaction types by what they do to an order, in lower case: ChronoPay has spelled them
# `Purchase` and `purchase` over the years, and matching ignores case. That forges nothing:
# the sign covers the exact text, so only ChronoPay can send another casing.
PAID = frozenset({"purchase", "onetime", "initial"})
REFUND = frozenset({"refund"})
CHARGEBACK = frozenset({"chargeback"})
DECLINE = frozenset({"decline"})
# Recorded without effect: the order stays as it is.
NEUTRAL = frozenset({"cancel", "expire"})
# Recurring payments: recorded and sent to review until the gateway supports them.
REBILL = frozenset({"rebill"})
# Currencies that are rubles: RUR is the code before 1998's redenomination, still seen.
RUBLES = frozenset({"RUB", "RUR"})
SIGNED_FIELDS = ("customer_id", "transaction_id", "transaction_type", "total", "sign")
MAX_FIELD = 512
_TOKEN = re.compile(r"[\x21-\x7e]{1,128}", re.ASCII)
_HEX32 = re.compile(r"[0-9a-f]{32}", re.ASCII)


def md5_hex(text):
    """Lower-case hex MD5 of UTF-8 text, ChronoPay's only digest."""
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - ChronoPay's protocol


def request_sign(product_id, price, order_id, secret, sign_order_id=True):
    """The hand-off sign: md5(product_id-price[-order_id]-secret)."""
    parts = [product_id, price] + ([order_id] if sign_order_id else []) + [secret]
    return md5_hex("-".join(parts))


def callback_sign(secret, customer_id, transaction_id, transaction_type, total):
    """The callback sign: md5(secret + customer_id + transaction_id + type + total)."""
    return md5_hex(secret + customer_id + transaction_id + transaction_type + total)


def handoff_url(base_url, fields):
    """ChronoPay's page with the hand-off fields percent-encoded into its query."""
    return base_url + ("&" if "?" in base_url else "?") + urlencode(fields)


def handoff_fields(*, product_id, price, order_id, product_name, secret, sign_order_id, urls):
    """The query ChronoPay's hosted page takes, signed; urls holds cb/success/decline."""
    return {
        "product_id": product_id,
        "product_price": price,
        "product_price_currency": "RUB",
        "order_id": order_id,
        "product_name": product_name,
        "cb_url": urls["cb_url"],
        "cb_type": "P",
        "success_url": urls["success_url"],
        "decline_url": urls["decline_url"],
        "language": "ru",
        # Echoed back in the callback: peers (nopCommerce, WHMCS) match orders by cs1.
        "cs1": order_id,
        "sign": request_sign(product_id, price, order_id, secret, sign_order_id),
    }


@dataclass(frozen=True)
class Callback:
    """A callback whose sign verified; only the signed fields are trustworthy."""

    customer_id: str
    transaction_id: str
    transaction_type: str
    total: str
    order_id: str
    product_id: str
    currency: str
    fields: dict = field(default_factory=dict, compare=False)

    @property
    def order_conflict(self):
        """Both order_id and cs1 sent, naming different orders (neither is signed)."""
        cs1 = self.fields.get("cs1", "")
        return bool(cs1 and self.fields.get("order_id") and cs1 != self.fields["order_id"])

    @property
    def signed_text(self):
        """What the sign covers after the secret: one value for every split of one sign."""
        return self.customer_id + self.transaction_id + self.transaction_type + self.total


def verify_callback(form, secret):
    """Check a callback's form (key -> list of values) and its sign; return the Callback."""
    fields = {}
    for name, values in form.items():
        if not isinstance(name, str):  # a multipart part without a name parses as None
            raise CallbackRejected("malformed", "a field without a name")
        if len(values) != 1 or len(values[0]) > MAX_FIELD:
            raise CallbackRejected("malformed", f"field {name[:40]!r} repeated or oversize")
        fields[name] = values[0]
    missing = [name for name in SIGNED_FIELDS if not fields.get(name)]
    if missing:
        raise CallbackRejected("malformed", "missing " + ", ".join(missing))
    if not _HEX32.fullmatch(fields["sign"]):
        raise CallbackRejected("bad_sign", "sign is not 32 lower-case hex digits")
    expected = callback_sign(secret, *(fields[name] for name in SIGNED_FIELDS[:4]))
    if not hmac.compare_digest(expected, fields["sign"]):
        raise CallbackRejected("bad_sign", "sign mismatch")
    # Printable ASCII only: an MD5 length extension has to append padding bytes (0x80, 0x00)
    # to the last signed field, and nothing real has spaces or other scripts in these.
    for name in SIGNED_FIELDS[:4]:
        if not _TOKEN.fullmatch(fields[name]):
            raise CallbackRejected("malformed", f"{name} malformed")
    return Callback(
        customer_id=fields["customer_id"],
        transaction_id=fields["transaction_id"],
        transaction_type=fields["transaction_type"],
        total=fields["total"],
        # Our order id travels as order_id and as cs1; a callback may carry either.
        order_id=fields.get("order_id") or fields.get("cs1", ""),
        product_id=fields.get("product_id", ""),
        currency=fields.get("currency", ""),
        fields=fields,
    )
