"""How figures are rounded for people: a half away from zero, on the float's exact value."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

from telemetryd.client import reports, statusline
from telemetryd.client.output import fixed


def half_up(value: float, digits: int) -> str:
    """The same rounding by another route: Decimal holds the float's exact value."""
    exact = Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{exact:,.{digits}f}" if exact else f"{abs(exact):,.{digits}f}"


VALUES = [
    0.0, 0.125, 0.135, 0.145, 2.675, 1.005, 0.5, 1.5, 2.5, 12.5, 99.5, 0.004999, 0.005,
    1234567.125, 1e-12, 123456789012.345, -0.125, -2.5, -0.001, 61.0, 33.3333,
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("digits", [0, 2])
def test_fixed_rounds_a_half_away_from_zero(value: float, digits: int) -> None:
    assert fixed(value, digits) == half_up(value, digits)


def test_what_python_would_round_to_even_is_rounded_up() -> None:
    assert f"{0.125:.2f}" == "0.12" and f"{12.5:.0f}" == "12"  # (what changed)
    assert reports.money(0.125) == statusline.money(0.125) == "$0.13"
    assert reports.money(1234567.125) == "$1,234,567.13"
    assert fixed(12.5, 0) == "13" and fixed(2.5, 0) == "3" and fixed(0.5, 0) == "1"
    # 2.675 is stored as 2.67499999...: it rounds down, as JavaScript's toFixed does
    assert fixed(2.675, 2) == "2.67"


def test_not_a_number_and_infinities_are_shown_as_such() -> None:
    assert fixed(float("nan"), 2) == "nan"
    assert fixed(float("inf"), 0) == "inf"
    assert fixed(float("-inf"), 2) == "-inf"
