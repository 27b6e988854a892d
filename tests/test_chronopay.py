from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import chronopay
from gateway.errors import CallbackRejected


def test_request_sign_with_order_id_matches_hand_worked_vector():
    # printf '%s' 001234-0001-0001-1000.00-20261128-abc-sharedsec | md5sum
    assert chronopay.request_sign("001234-0001-0001", "1000.00", "20261128-abc", "sharedsec",
                                  True) == "05f61a37ece4f2ee578b0d04af8565ca"


def test_request_sign_without_order_id_matches_hand_worked_vector():
    # printf '%s' 001234-0001-0001-1000.00-sharedsec | md5sum
    assert chronopay.request_sign("001234-0001-0001", "1000.00", "20261128-abc", "sharedsec",
                                  False) == "1b12ac51dbd5868bc622a59ee768b0b4"


def test_callback_sign_puts_the_secret_first_without_separators():
    # printf '%s' sharedsec0012345678Purchase1000.00 | md5sum
    assert chronopay.callback_sign("sharedsec", "001", "2345678", "Purchase", "1000.00") == (
        "b2e10ab6684ed615f0cb2d8e2b96a61b")


def test_the_two_recipes_differ():
    assert chronopay.request_sign("a", "b", "c", "s") != chronopay.callback_sign(
        "s", "a", "b", "c", "")


def test_handoff_url_percent_encodes_every_value():
    fields = chronopay.handoff_fields(
        product_id="001234-0001-0001", price="1000.00", order_id="20261128-abc",
        product_name="Пополнение лицевого счета 6", secret="sharedsec", sign_order_id=True,
        urls={"cb_url": "https://pay.test/chronopay/callback",
              "success_url": "https://pay.test/pay/success/a.b?x=1&y=2",
              "decline_url": "https://pay.test/pay/decline/a.b"})
    url = chronopay.handoff_url("https://payments.chronopay.com/", fields)
    assert url.startswith("https://payments.chronopay.com/?product_id=001234-0001-0001&")
    assert "success_url=https%3A%2F%2Fpay.test%2Fpay%2Fsuccess%2Fa.b%3Fx%3D1%26y%3D2" in url
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == fields
    assert query["sign"] == "05f61a37ece4f2ee578b0d04af8565ca"
    assert query["cb_type"] == "P" and query["language"] == "ru"
    assert query["product_price_currency"] == "RUB"


def signed_form(secret="sharedsec", **override):
    fields = {"customer_id": "001", "transaction_id": "2345678",
              "transaction_type": "Purchase", "total": "1000.00", "order_id": "o1",
              "product_id": "p", "currency": "RUB", "unknown_field": "kept"}
    fields.update(override)
    fields.setdefault("sign", chronopay.callback_sign(
        secret, fields["customer_id"], fields["transaction_id"], fields["transaction_type"],
        fields["total"]))
    return {key: [value] for key, value in fields.items()}


def test_valid_callback_keeps_unknown_fields():
    cb = chronopay.verify_callback(signed_form(), "sharedsec")
    assert (cb.transaction_id, cb.total, cb.order_id) == ("2345678", "1000.00", "o1")
    assert cb.fields["unknown_field"] == "kept"


@pytest.mark.parametrize("field, value", [
    ("customer_id", "002"), ("transaction_id", "2345679"), ("transaction_type", "purchase"),
    ("total", "1000.0"), ("total", "10000.00"),
])
def test_altering_a_signed_field_breaks_the_sign(field, value):
    form = signed_form()
    form[field] = [value]
    with pytest.raises(CallbackRejected) as exc:
        chronopay.verify_callback(form, "sharedsec")
    assert exc.value.verdict == "bad_sign"


def test_request_recipe_sign_is_not_accepted_on_a_callback():
    sign = chronopay.request_sign("p", "1000.00", "o1", "sharedsec")
    with pytest.raises(CallbackRejected):
        chronopay.verify_callback(signed_form(sign=sign), "sharedsec")


def test_upper_case_sign_is_refused():
    form = signed_form()
    form["sign"] = [form["sign"][0].upper()]
    with pytest.raises(CallbackRejected):
        chronopay.verify_callback(form, "sharedsec")


@pytest.mark.parametrize("missing", ["customer_id", "transaction_id", "transaction_type",
                                     "total", "sign"])
def test_missing_signed_field_is_malformed(missing):
    form = signed_form()
    del form[missing]
    with pytest.raises(CallbackRejected) as exc:
        chronopay.verify_callback(form, "sharedsec")
    assert exc.value.verdict == "malformed"


def test_repeated_field_is_refused():
    form = signed_form()
    form["order_id"] = ["o1", "o2"]
    with pytest.raises(CallbackRejected):
        chronopay.verify_callback(form, "sharedsec")


@given(st.sampled_from(["customer_id", "transaction_id", "transaction_type", "total"]),
       st.text(min_size=1, max_size=20))
def test_any_change_to_a_signed_field_is_rejected(field, value):
    form = signed_form()
    if form[field] == [value]:
        return
    form[field] = [value]
    with pytest.raises(CallbackRejected):
        chronopay.verify_callback(form, "sharedsec")


@pytest.mark.parametrize("field", ["customer_id", "transaction_id", "transaction_type", "total"])
@pytest.mark.parametrize("value", ["1000.00\x80\x00\x00", "10 00", "1000.00\n", "Ｐurchase"])
def test_signed_field_outside_printable_ascii_is_malformed_even_if_signed(field, value):
    # An MD5 length extension appends padding bytes (0x80, 0x00...) and keeps the sign valid.
    with pytest.raises(CallbackRejected) as caught:
        chronopay.verify_callback(signed_form(**{field: value}), "sharedsec")
    assert caught.value.verdict == "malformed"


def _signed(**extra):
    fields = {"customer_id": "001", "transaction_id": "2345678", "transaction_type": "Purchase",
              "total": "1000.00"}
    fields["sign"] = chronopay.callback_sign("sharedsec", *fields.values())
    fields.update(extra)
    return {name: [value] for name, value in fields.items()}


@pytest.mark.parametrize("form, verdict, reason", [
    ({None: ["x"]}, "malformed", "a field without a name"),
    ({"customer_id": ["1", "2"]}, "malformed", "field 'customer_id' repeated or oversize"),
    ({"total": ["1.00"]}, "malformed",
     "missing customer_id, transaction_id, transaction_type, sign"),
    (_signed(sign="A" * 32), "bad_sign", "sign is not 32 lower-case hex digits"),
    (_signed(sign="0" * 32), "bad_sign", "sign mismatch"),
])
def test_callback_rejections_name_their_verdict_and_reason(form, verdict, reason):
    with pytest.raises(CallbackRejected) as exc:
        chronopay.verify_callback(form, "sharedsec")
    assert (exc.value.verdict, exc.value.reason) == (verdict, reason)


def test_callback_field_of_exactly_max_field_is_accepted_and_unsigned_ones_default_empty():
    got = chronopay.verify_callback(_signed(extra="x" * chronopay.MAX_FIELD), "sharedsec")
    assert (got.order_id, got.product_id, got.currency) == ("", "", "")
    assert got.fields["extra"] == "x" * chronopay.MAX_FIELD


def test_handoff_fields_carry_chronopay_names_and_sign_as_asked():
    urls = {"cb_url": "https://g/cb", "success_url": "https://g/s", "decline_url": "https://g/d"}
    got = chronopay.handoff_fields(product_id="p", price="1.00", order_id="o", product_name="n",
                                   secret="s", sign_order_id=False, urls=urls)
    assert got["product_name"] == "n" and got["cb_url"] == "https://g/cb"
    assert got["decline_url"] == "https://g/d"
    assert got["sign"] == chronopay.request_sign("p", "1.00", "o", "s", False)
    assert chronopay.request_sign("p", "1.00", "o", "s") == chronopay.md5_hex("p-1.00-o-s")
    assert chronopay.handoff_url("https://c/?a=1", {"b": "2"}) == "https://c/?a=1&b=2"


def test_callback_reasons_name_the_field_cut_at_forty_characters():
    with pytest.raises(CallbackRejected) as exc:
        chronopay.verify_callback({"f" * 50: ["1", "2"]}, "sharedsec")
    assert exc.value.reason == f"field {'f' * 40!r} repeated or oversize"
    fields = {"customer_id": "001", "transaction_id": "23 45", "transaction_type": "Purchase",
              "total": "1000.00"}
    fields["sign"] = chronopay.callback_sign("sharedsec", *fields.values())
    with pytest.raises(CallbackRejected) as exc:
        chronopay.verify_callback({k: [v] for k, v in fields.items()}, "sharedsec")
    assert (exc.value.verdict, exc.value.reason) == ("malformed", "transaction_id malformed")
