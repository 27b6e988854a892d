"""Rubles as Decimal: parsing what people and machines send, and formatting it back."""

import re
from decimal import Decimal

from .errors import AmountError

CENT = Decimal("0.01")
# What a person types: 1000, 1000.5, 1000,50, 1 000 (with any of the spaces Russian text uses
# between thousands). ASCII digits only: Decimal() would accept other scripts' digits.
_SPACES = " \u00a0\u202f\u2009"
_TYPED = re.compile(
    rf"(?:[0-9]{{1,3}}(?:[{_SPACES}][0-9]{{3}})+|[0-9]+)(?:[.,][0-9]{{1,2}})?", re.ASCII
)
# What a machine sends (the cabinet link, the ChronoPay callback): digits, a dot, two decimals
# at most, twelve whole digits at most. No sign, exponent, spaces or commas.
_WIRE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?", re.ASCII)


def parse_typed(text, minimum, maximum):
    """Read an amount a person typed into the form, within the limits."""
    text = (text or "").strip()
    if not text:
        raise AmountError("Введите сумму.")
    if len(text) > 20 or not _TYPED.fullmatch(text):
        raise AmountError("Введите сумму цифрами, например 1000 или 1000,50.")
    for space in _SPACES:
        text = text.replace(space, "")
    return _within(Decimal(text.replace(",", ".")), minimum, maximum)


def parse_wire(text, minimum=None, maximum=None):
    """Read an amount sent by a machine; limits are checked only when given."""
    if not isinstance(text, str) or not _WIRE.fullmatch(text):
        raise AmountError("Сумма указана неверно.")
    amount = Decimal(text).quantize(CENT)
    if minimum is None:
        return amount
    return _within(amount, minimum, maximum)


def _within(amount, minimum, maximum):
    amount = amount.quantize(CENT)
    if amount < minimum or amount > maximum:
        raise AmountError(
            f"Сумма должна быть от {format_human(minimum)} до {format_human(maximum)}\u00a0руб."
        )
    return amount


def format_wire(amount):
    """Rubles with a dot and two decimals, as ChronoPay and billing expect: 1000.00."""
    if not isinstance(amount, Decimal):
        raise TypeError("amounts are Decimal")
    return f"{amount.quantize(CENT):.2f}"


def format_human(amount):
    """Rubles as Russians read them: 1 000,50 (with a no-break space)."""
    whole, _, cents = format_wire(amount).partition(".")
    grouped = f"{int(whole):,}".replace(",", "\u00a0")
    return f"{grouped},{cents}"
