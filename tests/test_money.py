from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import AmountError
from gateway.money import format_human, format_wire, parse_typed, parse_wire

LOW, HIGH = Decimal("10.00"), Decimal("15000.00")


@pytest.mark.parametrize("typed, expected", [
    ("1000", "1000.00"),
    ("1000.5", "1000.50"),
    ("1000,50", "1000.50"),
    ("1 000", "1000.00"),
    ("1\u00a0000,5", "1000.50"),
    ("12 345,67", "12345.67"),
    ("  250  ", "250.00"),
    ("10", "10.00"),
    ("15000.00", "15000.00"),
    ("0100", "100.00"),
])
def test_typed_amounts_people_write_are_accepted(typed, expected):
    amount = parse_typed(typed, LOW, HIGH)
    assert isinstance(amount, Decimal)
    assert format_wire(amount) == expected


@pytest.mark.parametrize("typed", [
    "", "   ", "abc", "1e3", "+100", "-1", "NaN", "Infinity", "1000.001", "1000,555",
    "1.000,50", "1,000.50", "10 00", "1000.", ",50", "١٠٠٠", "１０００", "9.99", "15000.01",
    "99999999999999999999999", "0x10", "1_000",
])
def test_typed_amounts_that_are_not_rubles_are_refused(typed):
    with pytest.raises(AmountError) as exc:
        parse_typed(typed, LOW, HIGH)
    assert exc.value.message  # a Russian sentence for the page


def test_out_of_range_message_names_the_limits():
    with pytest.raises(AmountError, match="от 10,00 до 15\u00a0000,00\u00a0руб"):
        parse_typed("5", LOW, HIGH)


@pytest.mark.parametrize("wire", [
    "1000 ", " 100.00", "1e3", "+100", "-1", "NaN", "1,00", "1000.001", "1 000", "١٠٠",
    "", "100.", "Infinity", "9" * 20,
])
def test_wire_amounts_are_strict(wire):
    with pytest.raises(AmountError):
        parse_wire(wire)


def test_wire_amount_limits_apply_only_when_given():
    assert parse_wire("5") == Decimal("5.00")
    with pytest.raises(AmountError):
        parse_wire("5", LOW, HIGH)


def test_format_refuses_floats():
    with pytest.raises(TypeError):
        format_wire(1000.0)


@given(st.decimals(min_value=LOW, max_value=HIGH, places=2))
def test_wire_format_round_trips(amount):
    assert parse_wire(format_wire(amount), LOW, HIGH) == amount


@given(st.decimals(min_value=LOW, max_value=HIGH, places=2))
def test_what_we_show_people_reads_back(amount):
    assert parse_typed(format_human(amount), LOW, HIGH) == amount


@pytest.mark.parametrize("digits", [13, 14, 15])
def test_wire_amount_has_at_most_twelve_whole_digits_with_or_without_cents(digits):
    # "22222222222222" passed the length check that "22222222222222.00" failed.
    for text in ("2" * digits, "2" * digits + ".00"):
        with pytest.raises(AmountError):
            parse_wire(text)
    assert parse_wire("2" * 12) == parse_wire("2" * 12 + ".00")


@pytest.mark.parametrize("text, message", [
    (None, "Введите сумму."),
    ("  ", "Введите сумму."),
    ("abc", "Введите сумму цифрами, например 1000 или 1000,50."),
])
def test_typed_amount_errors_say_exactly_what_to_fix(text, message):
    with pytest.raises(AmountError) as exc:
        parse_typed(text, LOW, HIGH)
    assert exc.value.message == message


def test_wire_amount_error_is_one_russian_sentence():
    with pytest.raises(AmountError) as exc:
        parse_wire("1e3")
    assert exc.value.message == "Сумма указана неверно."


def test_typed_amount_of_twenty_characters_is_read_and_of_twenty_one_refused():
    assert parse_typed("0" * 16 + "1000", LOW, HIGH) == Decimal("1000.00")
    with pytest.raises(AmountError) as exc:
        parse_typed("0" * 17 + "1000", LOW, HIGH)
    assert "цифрами" in exc.value.message


def test_format_refusal_says_why():
    with pytest.raises(TypeError, match="^amounts are Decimal$"):
        format_wire(1000)
