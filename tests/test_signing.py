import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import LinkExpired, LinkInvalid
from gateway.signing import PageTokens, link_id, link_sig, make_link, verify_link

SECRET = "cabinet-secret"
NOW = 1764300000 - 600


def args(query):
    return {key: [value] for key, value in query.items()}


def test_link_signature_matches_hand_worked_vectors():
    # printf 'dem001\n6\n1000.00\n1764300000' | openssl dgst -sha256 -hmac cabinet-secret
    assert link_sig(SECRET, "dem001", "6", "1000.00", 1764300000) == (
        "3940104bb00b50a89cbe7510cf39474953c0d98e82f95af6901fa8a4bbe11f8e")
    # without an amount the line is empty: 'dem001\n6\n\n1764300000'
    assert link_sig(SECRET, "dem001", "6", None, 1764300000) == (
        "c784da1aa2bbbc86c52ec1681ee56fc3090c04c5743919ccc81b6763bf8d4595")


def test_valid_link_yields_its_fields():
    query = make_link(SECRET, "dem001", "6", "1000.00", 1764300000)
    got = verify_link(args(query), SECRET, NOW, 1800)
    assert (got.login, got.account, got.amount) == ("dem001", "6", "1000.00")


def test_link_without_amount_is_valid():
    query = make_link(SECRET, "dem001", "6", None, 1764300000)
    assert "amount" not in query
    assert verify_link(args(query), SECRET, NOW, 1800).amount is None


@pytest.mark.parametrize("field, value", [
    ("login", "dem002"), ("account", "7"), ("amount", "1000.01"), ("expires", "1764300001"),
    ("sig", "0" * 64),
])
def test_each_edited_field_breaks_the_link(field, value):
    query = make_link(SECRET, "dem001", "6", "1000.00", 1764300000)
    query[field] = value
    with pytest.raises(LinkInvalid):
        verify_link(args(query), SECRET, NOW, 1800)


def test_dropping_the_amount_breaks_the_link():
    query = make_link(SECRET, "dem001", "6", "1000.00", 1764300000)
    del query["amount"]
    with pytest.raises(LinkInvalid):
        verify_link(args(query), SECRET, NOW, 1800)


def test_link_signed_with_another_key_is_refused():
    query = make_link("another-secret", "dem001", "6", "1000.00", 1764300000)
    with pytest.raises(LinkInvalid):
        verify_link(args(query), SECRET, NOW, 1800)


def test_expired_by_one_second_is_expired_not_invalid():
    query = make_link(SECRET, "dem001", "6", None, NOW - 1)
    with pytest.raises(LinkExpired):
        verify_link(args(query), SECRET, NOW, 1800)
    assert verify_link(args(make_link(SECRET, "dem001", "6", None, NOW)), SECRET, NOW, 1800)


def test_link_from_too_far_in_the_future_is_refused():
    with pytest.raises(LinkInvalid):
        verify_link(args(make_link(SECRET, "dem001", "6", None, NOW + 1801)), SECRET, NOW, 1800)
    assert verify_link(args(make_link(SECRET, "dem001", "6", None, NOW + 1800)), SECRET, NOW,
                       1800)


@pytest.mark.parametrize("login, account", [
    ("", "6"), ("a" * 65, "6"), ("dem 001", "6"), ("dem001\n", "6"), ("дем001", "6"),
    ("dem001", ""), ("dem001", "6a"), ("dem001", "1" * 21), ("dem001", "-6"), ("dem001", "٦"),
])
def test_malformed_login_or_account_is_refused_even_if_signed(login, account):
    query = make_link(SECRET, login, account, None, 1764300000)
    with pytest.raises(LinkInvalid):
        verify_link(args(query), SECRET, NOW, 1800)


def test_repeated_parameter_is_refused():
    query = args(make_link(SECRET, "dem001", "6", "1000.00", 1764300000))
    query["amount"] = ["1000.00", "1.00"]
    with pytest.raises(LinkInvalid):
        verify_link(query, SECRET, NOW, 1800)


@pytest.mark.parametrize("missing", ["login", "account", "expires", "sig"])
def test_missing_field_is_refused(missing):
    query = make_link(SECRET, "dem001", "6", None, 1764300000)
    del query[missing]
    with pytest.raises(LinkInvalid):
        verify_link(args(query), SECRET, NOW, 1800)


@given(st.text(min_size=1, max_size=1), st.sampled_from(["login", "account", "amount",
                                                        "expires", "sig"]))
def test_any_single_character_change_is_caught(char, field):
    query = make_link(SECRET, "dem001", "6", "1000.00", 1764300000)
    original = query[field]
    query[field] = original[:-1] + char
    if query[field] == original:
        return
    with pytest.raises((LinkInvalid, LinkExpired)):
        verify_link(args(query), SECRET, NOW, 1800)


def test_page_tokens_are_bound_to_their_purpose_and_lifetime():
    clock = [1000.0]
    tokens = PageTokens("k" * 32, 60, lambda: clock[0])
    token = tokens.dumps("ticket", {"l": "dem001"})
    assert tokens.loads("ticket", token) == {"l": "dem001"}
    with pytest.raises(LinkInvalid):
        tokens.loads("confirm", token)
    clock[0] += 61
    with pytest.raises(LinkExpired):
        tokens.loads("ticket", token)
    assert tokens.loads("ticket", token, max_age=None) == {"l": "dem001"}
    with pytest.raises(LinkInvalid):
        tokens.loads("ticket", token[:-2])


def test_expires_is_compared_with_the_float_clock():
    query = make_link(SECRET, "dem001", "6", None, NOW)
    assert verify_link(args(query), SECRET, NOW + 0.0, 1800)
    with pytest.raises(LinkExpired):  # pay.start used to pass int(now), accepting this
        verify_link(args(query), SECRET, NOW + 0.5, 1800)


def test_link_carries_its_expiry_and_an_id_of_its_signature():
    one = verify_link(args(make_link(SECRET, "dem001", "6", None, NOW + 60)), SECRET, NOW, 1800)
    other = verify_link(args(make_link(SECRET, "dem001", "6", None, NOW + 61)), SECRET, NOW,
                        1800)
    assert one.expires == NOW + 60 and one.link_id and one.link_id != other.link_id


def test_link_id_is_the_first_128_bits_of_the_signatures_sha256():
    # Orders store it and LINK_MAX_ORDERS counts by it: it must not change between releases.
    # printf %s 3940…1f8e | sha256sum | cut -c1-32
    sig = "3940104bb00b50a89cbe7510cf39474953c0d98e82f95af6901fa8a4bbe11f8e"
    assert link_id(sig) == "f0f72354ef0be95ba5b1b2ebdf4422a0"


def signed(login="dem001", account="6", amount=None, expires=NOW + 60):
    """A correctly signed query, even for values make_link would not produce."""
    query = {"login": login, "account": account, "expires": str(expires)}
    if amount is not None:
        query["amount"] = amount
    query["sig"] = link_sig(SECRET, login, account, amount, expires)
    return args(query)


def test_each_refusal_says_why_for_the_log():
    # The reason is what gateway_error logs; the page shows only invalid or expired.
    cases = [
        ({**signed(), "login": ["dem001", "dem001"]}, LinkInvalid, "repeated login"),
        ({**signed(), "sig": ["a", "b"]}, LinkInvalid, "repeated sig"),
        (signed(login="dem 001"), LinkInvalid, "malformed login"),
        (signed(account="6a"), LinkInvalid, "malformed account"),
        ({**signed(), "expires": ["soon"]}, LinkInvalid, "malformed expires"),
        ({**signed(), "sig": ["F" * 64]}, LinkInvalid, "malformed sig"),
        (signed(amount=""), LinkInvalid, "malformed amount"),
        (signed(amount="1" * 33), LinkInvalid, "malformed amount"),
        ({**signed(), "sig": ["0" * 64]}, LinkInvalid, "signature mismatch"),
        (signed(expires=NOW - 1), LinkExpired, "link expired"),
        (signed(expires=NOW + 1801), LinkInvalid, "link expires too far in the future"),
    ]
    for query, error, reason in cases:
        with pytest.raises(error) as raised:
            verify_link(query, SECRET, NOW, 1800)
        assert str(raised.value) == reason


def test_an_empty_signed_amount_is_malformed_not_a_link_without_amount():
    # "" and no amount sign the same text; only the check of the value itself tells them apart.
    with pytest.raises(LinkInvalid, match="malformed amount"):
        verify_link(signed(amount=""), SECRET, NOW, 1800)


def test_a_signed_amount_of_32_characters_passes_to_the_amount_rules():
    assert verify_link(signed(amount="1" * 32), SECRET, NOW, 1800).amount == "1" * 32


def test_a_page_token_lives_the_links_lifetime_by_default():
    clock = [1000.0]
    tokens = PageTokens("k" * 32, 60, lambda: clock[0])
    token = tokens.dumps("confirm", {"l": "dem001"})
    clock[0] += 60
    assert tokens.loads("confirm", token) == {"l": "dem001"}
    clock[0] += 1
    with pytest.raises(LinkExpired) as raised:
        tokens.loads("confirm", token)
    assert str(raised.value) == "token expired"
    with pytest.raises(LinkInvalid) as raised:
        tokens.loads("confirm", None)
    assert str(raised.value) == "token invalid"
