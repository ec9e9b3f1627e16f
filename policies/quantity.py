"""Kubernetes resource quantities (``500m``, ``1Gi``, ``2``, ``1e3``, ``1.5``) as exact Decimals.

Quantities are compared numerically, never as strings: ``1000m`` and ``1`` are the same CPU, and
``1Gi`` is more than ``1G``. The grammar is Kubernetes' own (``resource.Quantity``):

    <quantity>  ::= <signedNumber><suffix>
    <suffix>    ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>  ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI> ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>

YAML authors also write bare numbers (``nvidia.com/gpu: 1``); ints and finite floats are
accepted as their decimal value.
"""

from __future__ import annotations

import functools
import re
from decimal import ROUND_CEILING, Context, Decimal

BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
DECIMAL_SUFFIXES: dict[str, Decimal] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

# Wide enough that no quantity Kubernetes accepts (int64 scaled by up to 2**60) is rounded.
_EXACT = Context(prec=80)

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)"
)


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """The exact amount a quantity stands for (``"500m"`` -> ``Decimal("0.5")``).

    Raises QuantityError for anything Kubernetes would reject (``"1.5.0"``, ``"2 Gi"``, ``""``,
    booleans, NaN) and for what is no quantity at all (None, a list): ``value`` comes from the
    object under review as it is.
    """
    if isinstance(value, str):  # first: what resources hold, and what the policies give
        return _parse_text(value)
    # NOTE: bool is an int subclass; `true` in YAML is not a quantity.
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        amount = Decimal(repr(value))
        if not amount.is_finite():
            raise QuantityError(f"not a quantity: {value!r}")
        return amount
    raise QuantityError(f"not a quantity: {value!r}")


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str) -> Decimal:
    """``parse_quantity`` of a string, remembered: a request parses the same few quantities
    (the policy's defaults and budgets, the containers' values) ten times over (bench/)."""
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise QuantityError(f"not a quantity: {value!r}")
    try:
        number = Decimal(match["number"])
        if match["exponent"] is not None:
            return number.scaleb(int(match["exponent"][1:]), context=_EXACT)
    except (ArithmeticError, ValueError) as error:  # e.g. an exponent too large for Decimal
        raise QuantityError(f"not a quantity: {value!r}") from error
    suffix = match["suffix"] or ""
    if suffix in BINARY_SUFFIXES:
        return _EXACT.multiply(number, BINARY_SUFFIXES[suffix])
    return _EXACT.multiply(number, DECIMAL_SUFFIXES[suffix])


def format_quantity(amount: Decimal | int, *, binary: bool = False) -> str:
    """A canonical quantity string for ``amount`` that parses back to exactly it.

    With ``binary`` (memory), whole amounts use the largest binary suffix that divides them
    (``2147483648`` -> ``2Gi``); otherwise the largest decimal suffix does (``1500`` ->
    ``1500``, ``2000`` -> ``2k``, ``0.5`` -> ``500m``). Amounts finer than a nano-unit are rounded
    up to the next nano-unit, as Kubernetes does.
    """
    value = Decimal(amount)
    if not value.is_finite():
        raise QuantityError(f"not a finite amount: {amount!r}")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value != value.to_integral_value():
        nanos = int(_EXACT.multiply(value, 10**9).to_integral_value(rounding=ROUND_CEILING))
        for suffix, factor in (("", 10**9), ("m", 10**6), ("u", 10**3), ("n", 1)):
            if nanos % factor == 0:  # "" first: rounding up may reach a whole unit
                return f"{sign}{nanos // factor}{suffix}"
    whole = int(value)
    if binary:
        for suffix, factor in reversed(BINARY_SUFFIXES.items()):
            if whole % factor == 0:
                return f"{sign}{whole // factor}{suffix}"
        return f"{sign}{whole}"
    for suffix in ("E", "P", "T", "G", "M", "k"):
        factor = int(DECIMAL_SUFFIXES[suffix])
        if whole % factor == 0:
            return f"{sign}{whole // factor}{suffix}"
    return f"{sign}{whole}"
