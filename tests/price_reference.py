"""Costs computed by genai-prices' own ``calc_price``, for tests to compare telemetryd's
costs with (telemetryd computes them in SQL from the rates: store/pricing.py).

``calc_price`` takes the total prompt as ``input_tokens`` (cache reads and writes are parts
of it, priced at their own rates), applies a tier to every token of a request whose prompt
is over the tier's start, and picks the prices of the request's time: an independent
computation of the same published prices.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def genai_cost(
    tokens: dict[str, Any],
    model: str | None,
    when: datetime,
    *,
    provider: str | None = None,
    long_writes: int = 0,
    speed: str | None = None,
) -> float | None:
    """USD for one request's ``actual`` tokens (the event model's: input without the
    cache), or None when genai-prices does not know the model."""
    from genai_prices import Usage, calc_price

    if not model or tokens.get("source", "actual") != "actual":
        return None
    inp = tokens.get("input") or 0
    read = tokens.get("cache_read") or 0
    write = tokens.get("cache_creation") or 0
    usage = Usage(
        input_tokens=inp + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(long_writes, write),
        output_tokens=tokens.get("output") or 0,
    )
    context = {"speed": speed} if speed else None
    for provider_id in ([provider] if provider else []) + [None]:
        try:
            found = calc_price(
                usage,
                model,
                provider_id=provider_id,
                genai_request_timestamp=when,
                price_context=context,  # type: ignore[arg-type]
            )
        except LookupError:
            continue
        return float(found.total_price)
    return None
