"""Kubernetes quantities are parsed to exact amounts and formatted back losslessly."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.quantity import QuantityError, format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("500m", Decimal("0.5")),
        ("1000m", Decimal(1)),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("12e-3", Decimal("0.012")),
        ("1Ki", Decimal(1024)),
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1G", Decimal(10**9)),
        ("1k", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("8Ei", Decimal(8 * 2**60)),
        ("250u", Decimal("0.00025")),
        ("7n", Decimal("7e-9")),
        ("+3", Decimal(3)),
        ("-1", Decimal(-1)),
        (2, Decimal(2)),
        (0.25, Decimal("0.25")),
    ],
    ids=repr,
)
def test_parse_quantity_gives_exact_amount(text: str | int | float, amount: Decimal) -> None:
    assert parse_quantity(text) == amount


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Gi",
        "1.5.0",
        "2 Gi",
        "1gi",
        "1KiB",
        "1e",
        "1e3Gi",
        "abc",
        "--1",
        "1e99999999999",
        True,
        None,
        float("nan"),
    ],
    ids=repr,
)
def test_parse_quantity_rejects_non_quantities(text: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("left", "right"),
    [("1Gi", "1G"), ("1001m", "1"), ("2", "1500m"), ("1Mi", "1000Ki"), ("1e3", "999")],
    ids=str,
)
def test_quantities_compare_numerically(left: str, right: str) -> None:
    assert parse_quantity(left) > parse_quantity(right)


@pytest.mark.parametrize(
    ("amount", "binary", "text"),
    [
        (Decimal("0.5"), False, "500m"),
        (Decimal(0), False, "0"),
        (Decimal(2), False, "2"),
        (Decimal(1500), False, "1500"),
        (Decimal(2000), False, "2k"),
        (Decimal(3 * 10**9), False, "3G"),
        (Decimal("0.00025"), False, "250u"),
        (Decimal("1.5"), False, "1500m"),
        (Decimal("1e-10"), False, "1n"),
        (Decimal("0.9999999999"), False, "1"),
        (Decimal(2**31), True, "2Gi"),
        (Decimal(1536 * 2**20), True, "1536Mi"),
        (Decimal(1000), True, "1000"),
        (Decimal(-2048), True, "-2Ki"),
    ],
    ids=str,
)
def test_format_quantity_picks_largest_exact_suffix(
    amount: Decimal, binary: bool, text: str
) -> None:
    assert format_quantity(amount, binary=binary) == text


@given(
    amount=st.decimals(
        min_value=-(2**63), max_value=2**63, places=9, allow_nan=False, allow_infinity=False
    ),
    binary=st.booleans(),
)
def test_formatted_quantity_parses_back_to_same_amount(amount: Decimal, binary: bool) -> None:
    assert parse_quantity(format_quantity(amount, binary=binary)) == amount
