"""Model prices, and the cost of an api_request that reported none.

Prices come from the ``genai-prices`` package (maintained price data for every major
provider, with each model's price history, long-context tiers and cache prices),
installed with telemetryd: nothing is fetched at run time. ``[pricing.models."NAME"]``
in config.toml gives a model's prices itself, and wins over the package.
`telemetryctl pricing` shows the data's version and date.

genai-prices imports pydantic (and its data, ~40 MB of memory): this module imports
it only when a price is first asked for, and only the store worker (which prices
each request as it loads it, store/pricing.py), `telemetryctl import` and
`telemetryctl pricing` ask. The daemon, `send`, `hook` and `statusline` never do.

A request is priced **as of its own time** (``ts``): the package's prices for the
model on that UTC day, or, for the few models whose price depends on the time of day,
that minute. The model is looked up by name with the request's provider
(``agent.provider``) when the package knows that provider and the model there, else by
the name alone; a name the package does not match as it is is tried again without a
provider prefix (``anthropic/``, ``us.anthropic.``), a ``@``/``:`` suffix and a date
suffix. A model found nowhere has no price: its cost is unknown, never a guess.

The cost of one request, with the tokens of the event model (input excludes the
cache)::

    input * input + output * output + cache_read * cache_read
      + (cache_creation - long) * cache_write + long * cache_write_1h + per_request

in USD per million tokens, where ``long`` is the 1-hour cache writes the transcript
reported (``attrs.cache_creation_1h``), a missing cache price is the input price (a
missing 1-hour price the 5-minute one), as genai-prices has it. A tiered price
(Claude Sonnet 4 / 4.5 above 200k prompt tokens, Gemini Pro above 200k, GPT-5.4 above
272k, ...) applies to **every** token of a request whose prompt (input + cache read +
cache write) is over the tier's start: the whole request at the long-context rate, as
the providers bill it. Anthropic's fast mode (``attrs.speed == "fast"``) is the
package's ``speed: fast`` price variant.

``attrs`` is free-form, so the two hints are read only when they have their type:
``cache_creation_1h`` a whole number from 0 to 2^53 - 1, ``speed`` a string; anything
else is ignored for pricing and never makes an event fail.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

log = logging.getLogger(__name__)

PACKAGE = "genai-prices"
OVERRIDE = "override"  # the price source of a model priced by the config file
PER_TOKEN = 1e-6  # prices are per million tokens
MAX_TIERS = 3  # tiers a price may have (the package's have at most 2); more: unpriced
KINDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
# The package's names of the token prices (genai_prices.types.ModelPrice)
_MTOK = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
_CACHE = 4096  # model names and days whose lookup is remembered (producers choose names)
_tier_starts: tuple[Any, tuple[int, ...]] | None = None  # (the data, its tier starts)
_MAX_COUNT = 2**53 - 1  # events.MAX_INT, without importing msgspec here
_PREFIXES = ("anthropic/", "openai/", "gemini/", "google/", "vertex_ai/", "bedrock/",
             "us.anthropic.", "eu.anthropic.", "apac.anthropic.", "anthropic.")  # fmt: skip


@dataclass(frozen=True)
class Rate:
    """One token kind's price: ``base`` USD per million tokens, and ``tiers``, (start,
    price) pairs in ascending order: a request whose prompt is over ``start`` tokens
    pays ``price`` for every token of this kind."""

    base: float
    tiers: tuple[tuple[int, float], ...] = ()

    def at(self, prompt: int) -> float:
        price = self.base
        for start, tier in self.tiers:
            if prompt > start:
                price = tier
        return price


_Prices = tuple[float, float, float, float, float]  # input, output, cache read, write, 1h write


@dataclass(frozen=True)
class Rates:
    """A model's prices at one time, and where they come from (``source``:
    ``genai-prices 0.2.5`` or ``override``; ``entry``: the provider and model of the
    package, or the override's name)."""

    source: str
    entry: str
    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    cache_write_1h: Rate
    per_request: float = 0.0
    # The five base prices when none has tiers (set from the rates: never given)
    flat: _Prices | None = field(default=None, init=False, repr=False, compare=False)
    # With tiers: the tiers' starts (every kind's, in order, once) and the five prices in
    # each band they make: a prompt over n of the starts pays band n's (set likewise)
    bands: tuple[tuple[int, ...], tuple[_Prices, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        kinds = (self.input, self.output, self.cache_read, self.cache_write, self.cache_write_1h)
        if not any(rate.tiers for rate in kinds):
            object.__setattr__(self, "flat", tuple(rate.base for rate in kinds))
        elif all(start.__class__ is int for rate in kinds for start, _ in rate.tiers):
            starts = sorted({start for rate in kinds for start, _ in rate.tiers})
            # one prompt of each band: at most the first start, then just over each start
            prompts = [starts[0]] + [start + 1 for start in starts]
            object.__setattr__(self, "bands", (tuple(starts), tuple(map(self._at, prompts))))

    def _at(self, prompt: int) -> _Prices:
        """The five prices for a request of ``prompt`` tokens (see :meth:`Rate.at`)."""
        return (
            self.input.at(prompt),
            self.output.at(prompt),
            self.cache_read.at(prompt),
            self.cache_write.at(prompt),
            self.cache_write_1h.at(prompt),
        )

    def prices_at(self, prompt: int) -> _Prices:
        """The five prices a request whose prompt is ``prompt`` tokens pays."""
        if self.flat is not None:
            return self.flat
        if self.bands is not None:
            starts, bands = self.bands
            return bands[bisect.bisect_left(starts, prompt)]  # (the starts below it)
        return self._at(prompt)

    def cost(
        self, inp: int, out: int, cache_read: int = 0, cache_creation: int = 0, long: int = 0
    ) -> float:
        """USD for one request's tokens (``long``: the 1-hour part of ``cache_creation``)."""
        long = min(max(long, 0), cache_creation)
        prompt = inp + cache_read + cache_creation
        return self.sum_cost(prompt, 1, inp, out, cache_read, cache_creation, long)

    def sum_cost(
        self,
        prompt: int,
        n: int,
        inp: int,
        out: int,
        cache_read: int,
        cache_creation: int,
        long: int,
    ) -> float:
        """USD for ``n`` requests whose prompts all pay what one of ``prompt`` tokens pays,
        from their summed tokens (``long``: the 1-hour part of ``cache_creation``, at
        most that in each request): the cost is linear in the tokens."""
        price_in, price_out, price_read, price_write, price_1h = self.prices_at(prompt)
        return (
            inp * price_in
            + out * price_out
            + cache_read * price_read
            + (cache_creation - long) * price_write
            + long * price_1h
        ) * PER_TOKEN + n * self.per_request


def version() -> str:
    """The installed genai-prices version (read without importing it)."""
    from importlib import metadata  # (~18 ms: only when a price is asked for)

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "not installed"


def data_source() -> str:
    """How a computed cost names the package's data: ``genai-prices 0.2.5``."""
    return f"{PACKAGE} {version()}"


def whole(value: Any) -> int:
    """A count read from free-form data: a whole number from 0 to 2^53 - 1, else 0."""
    if value.__class__ is int or (value.__class__ is float and value.is_integer()):
        return int(value) if 0 <= value <= _MAX_COUNT else 0
    return 0


def hints(attrs: Any) -> tuple[int, str | None]:
    """The pricing hints in an event's ``attrs``: 1-hour cache writes and the speed."""
    if not isinstance(attrs, dict):
        return 0, None
    speed = attrs.get("speed")
    return whole(attrs.get("cache_creation_1h")), speed if isinstance(speed, str) else None


def normalized(name: str) -> str:
    """``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` -> ``claude-sonnet-4-5``: without
    a provider prefix, a ``@``/``:`` suffix, ``-v1`` and a date suffix; lower case, and
    without spaces around it."""
    name = name.strip().lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    name = name.split("@")[0].split(":")[0]
    if name.startswith("claude"):
        name = name.replace(".", "-").removesuffix("-v1")
    parts = name.split("-")
    if len(parts) > 1 and len(parts[-1]) == 8 and parts[-1].isdigit():
        return "-".join(parts[:-1])
    tail = parts[-3:]
    if len(parts) > 3 and [len(p) for p in tail] == [4, 2, 2] and all(p.isdigit() for p in tail):
        return "-".join(parts[:-3])
    return name


def _override_rates(name: str, prices: Mapping[str, Any]) -> Rates:
    inp = Rate(float(prices["input"]))
    write = Rate(float(prices["cache_write"])) if prices.get("cache_write") is not None else inp
    return Rates(
        source=OVERRIDE,
        entry=name,
        input=inp,
        output=Rate(float(prices["output"])),
        cache_read=Rate(float(prices["cache_read"]))
        if prices.get("cache_read") is not None
        else inp,
        cache_write=write,
        cache_write_1h=Rate(float(prices["cache_write_1h"]))
        if prices.get("cache_write_1h") is not None
        else write,
    )


class Pricer:
    """genai-prices' data with ``overrides`` (model name -> prices per million tokens:
    input, output, cache_read, cache_write, cache_write_1h) on top."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.source = data_source()
        self.overrides: dict[str, Rates] = {}
        for name, prices in (overrides or {}).items():
            rates = _override_rates(name, prices)
            self.overrides[name] = rates
            self.overrides.setdefault(normalized(name), rates)
        self._models: dict[tuple[str, str | None], Any] = {}
        self._rates: dict[tuple[Any, ...], Rates | None] = {}
        self._varies: dict[tuple[str, str | None], bool] = {}
        # (model, provider, UTC day, speed) -> the day's rates (minute_rates)
        self._days: dict[tuple[str, str | None, str, str | None], Rates | None] = {}
        self._snapshot: Any = None

    # -- the package's data, imported on first use -------------------------------------

    def _data(self) -> Any:
        if self._snapshot is None:
            from genai_prices import data_snapshot

            self._snapshot = data_snapshot.get_snapshot()
        return self._snapshot

    def _find(self, model: str, provider: str | None) -> list[Any]:
        """The package's (provider, model info) pairs for ``model``, best first."""
        key = (model, provider)
        if key not in self._models:
            if len(self._models) >= _CACHE:
                self._models.clear()
            self._models[key] = self._lookup(model, provider)
        found: list[Any] = self._models[key]
        return found

    def _lookup(self, model: str, provider: str | None) -> list[Any]:
        snapshot = self._data()
        names = [model]
        if normalized(model) != model.lower():
            names.append(normalized(model))
        hits: list[Any] = []
        for name in names:
            for provider_id in ([provider] if provider else []) + [None]:
                try:
                    hit = snapshot.find_provider_model(name, None, provider_id, None)
                except LookupError:
                    continue
                if all(hit[1] is not seen[1] for seen in hits):
                    hits.append(hit)
        return hits

    def override(self, model: str | None) -> Rates | None:
        if not model or not self.overrides:
            return None
        return self.overrides.get(model) or self.overrides.get(normalized(model))

    def priced_as(self, model: str, provider: str | None = None) -> str | None:
        """The entry ``model`` is priced with: an override's name, ``provider/model`` of
        the package, or None."""
        found = self.override(model) or self.rates(model, provider, datetime.now(UTC))
        return None if found is None else found.entry

    def varies_within_a_day(self, model: str, provider: str | None) -> bool:
        """Whether the package prices ``model`` by the time of day (off-peak hours)."""
        key = (model, provider)
        found = self._varies.get(key)
        if found is None:
            if len(self._varies) >= _CACHE:
                self._varies.clear()
            found = self._varies[key] = self._varies_within_a_day(model, provider)
        return found

    def _varies_within_a_day(self, model: str, provider: str | None) -> bool:
        if self.override(model) is not None:
            return False
        from genai_prices import types

        for _, info in self._find(model, provider):
            prices = info.prices if isinstance(info.prices, list) else []
            constraints = [p.constraint for p in prices]
            constraints += [v.constraint for v in info.price_variants or ()]
            if any(isinstance(c, types.TimeOfDateConstraint) for c in constraints):
                return True
        return False

    def rates(
        self,
        model: str | None,
        provider: str | None,
        when: datetime,
        speed: str | None = None,
        *,
        exact_time: bool = False,
    ) -> Rates | None:
        """``model``'s prices at ``when`` (UTC; the day's prices unless ``exact_time``),
        or None when it has no price."""
        if not model:
            return None
        found = self.override(model)
        if found is not None:
            return found
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        moment: Any = when if exact_time else when.astimezone(UTC).date()
        # The first entry with token prices: a provider's own listing of a model it
        # serves without a per-token rate falls back to the model's maker's.
        for hit in self._find(model, provider):
            key = (hit[0].id, hit[1].id, moment, speed)
            if key not in self._rates:
                if len(self._rates) >= _CACHE:
                    self._rates.clear()
                day = when.astimezone(UTC)
                at = when if exact_time else datetime(day.year, day.month, day.day, tzinfo=UTC)
                self._rates[key] = self._convert(hit, at, speed)
            rates = self._rates[key]
            if rates is not None:
                return rates
        return None

    def _convert(self, hit: Any, when: datetime, speed: str | None) -> Rates | None:
        from genai_prices import types

        provider, info = hit
        if isinstance(info.prices, list) and not info.prices:
            return None
        prices = info.get_prices(when, {"speed": speed} if speed else None)

        def rate(value: Any) -> Rate | None:
            if value is None:
                return None
            if isinstance(value, types.TieredPrices):
                tiers = tuple((int(t.start), float(t.price)) for t in value.tiers)
                return Rate(float(value.base), tiers)
            return Rate(float(value))

        inp = rate(prices.input_mtok)
        if inp is None:  # not priced by the token (images, audio, search)
            return None
        rates = {
            "input": inp,
            "output": rate(prices.output_mtok) or Rate(0.0),
            "cache_read": rate(prices.cache_read_mtok) or inp,
            "cache_write": rate(prices.cache_write_mtok) or inp,
        }
        rates["cache_write_1h"] = rate(prices.cache_write_1h_mtok) or rates["cache_write"]
        if any(len(r.tiers) > MAX_TIERS for r in rates.values()):
            log.warning("%s/%s: over %d price tiers, unpriced", provider.id, info.id, MAX_TIERS)
            return None
        per_request = prices.requests_kcount
        return Rates(
            source=self.source,
            entry=f"{provider.id}/{info.id}",
            per_request=float(per_request) / 1000 if per_request is not None else 0.0,
            **rates,
        )

    # -- requests by the minute -----------------------------------------------------------

    def minute_rates(
        self, model: str, provider: str | None, minute: str, speed: str | None
    ) -> Rates | None:
        """The rates of a request made in ``minute`` (``YYYY-MM-DDTHH:MM``, UTC): its
        day's, kept per (model, provider, day, speed), or, for a model priced by the time
        of day, those of that minute."""
        when = time_of(minute + "Z")
        if self.varies_within_a_day(model, provider):
            return self.rates(model, provider, when, speed, exact_time=True)
        key = (model, provider, minute[:10], speed)
        if key not in self._days:
            if len(self._days) >= _CACHE:
                self._days.clear()
            self._days[key] = self.rates(model, provider, when, speed)
        return self._days[key]

    def tier_starts(self) -> tuple[int, ...]:
        """Every tier start of the package's prices, in order: a prompt's size pays the
        same tier of every model between two of them (:meth:`Rate.at`). As
        :meth:`_convert` does, a start is taken to the whole number at or below it
        (prompts are whole numbers: the tiers they pay are the same)."""
        global _tier_starts
        snapshot = self._data()
        if _tier_starts is None or _tier_starts[0] is not snapshot:
            from genai_prices import types

            found: set[int] = set()
            for provider in snapshot.providers:
                for info in provider.models:
                    prices = info.prices if isinstance(info.prices, list) else [info.prices]
                    listed = [getattr(p, "prices", p) for p in prices]
                    listed += [v.prices for v in info.price_variants or ()]
                    for model_prices in listed:
                        for name in _MTOK:
                            value = getattr(model_prices, name, None)
                            if isinstance(value, types.TieredPrices):
                                found.update(int(t.start) for t in value.tiers)
            _tier_starts = (snapshot, tuple(sorted(found)))  # (kept for every Pricer)
        return _tier_starts[1]

    # -- what the data is ----------------------------------------------------------------

    def info(self, today: date | None = None) -> dict[str, Any]:
        """The data's version, its date (the newest price change it records, at or
        before ``today``), the newest scheduled change after it, and its size."""
        from genai_prices import types

        today = today or datetime.now(UTC).date()
        dates: set[date] = set()
        models = 0
        providers = self._data().providers
        for provider in providers:
            for info in provider.models:
                models += 1
                if isinstance(info.prices, list):
                    for price in info.prices:
                        if isinstance(price.constraint, types.StartDateConstraint):
                            dates.add(price.constraint.start_date)
        past = [d for d in dates if d <= today]
        future = [d for d in dates if d > today]
        return {
            "source": self.source,
            "package": PACKAGE,
            "version": version(),
            "date": max(past).isoformat() if past else None,
            "scheduled": max(future).isoformat() if future else None,
            "providers": len(providers),
            "models": models,
            "overrides": sorted(name for name, r in self.overrides.items() if r.entry == name),
        }


def time_of(value: Any) -> datetime:
    """A request's time: ``value`` (ISO 8601, UTC when it names no zone), else now."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return datetime.now(UTC)


def overrides_of(pricing: Any) -> dict[str, dict[str, Any]]:
    """The overrides of a ``config.Pricing`` section, as plain dicts."""
    import msgspec

    return {name: msgspec.structs.asdict(price) for name, price in pricing.models.items()}


def from_config(pricing: Any) -> Pricer:
    """The package's prices with the overrides of a ``config.Pricing`` section."""
    return Pricer(overrides_of(pricing))


def configured() -> Pricer:
    """The package's prices with the overrides of the configuration file."""
    from telemetryd import config, paths

    return from_config(config.load(paths.resolve().config_file)[0].pricing)
