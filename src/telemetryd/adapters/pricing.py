"""Model prices, and the cost of an api_request that reported none.

The prices ship in ``prices.json`` next to this module (US dollars per million
tokens, with the table's date and source), so costs are computed offline;
nothing is ever fetched. ``[pricing.models."NAME"]`` in config.toml adds or
replaces a model's prices. `telemetryctl pricing` shows the table in use.

A model name is matched exactly, then without a provider prefix
(``anthropic/``, ``us.anthropic.``, ...) and a date suffix (``-20250929``),
then by the longest known name it starts with (``gemini-3.1-pro-preview-customtools``
is priced as ``gemini-3.1-pro-preview``). Claude names with dots
(``claude-sonnet-4.5``, as Copilot writes them) are read with dashes.

Cost of one request, with the tokens of the event model (input excludes the
cache): ``input * input + output * output + cache_read * cache_read +
cache_creation * cache_write``, where cache writes that the transcript says
were 1-hour ones (``attrs.cache_creation_1h``) use ``cache_write_1h``. When the
prompt (input + cache read + cache write) is larger than a model's ``above.tokens``
(200k for Claude Sonnet 4 / 4.5 and Gemini Pro, 272k for GPT-5.4 / 5.5), all of
the request's tokens take the ``above`` prices, as the providers bill them.
Anthropic's fast mode (``attrs.speed == "fast"``) multiplies by the model's ``fast``.

``attrs`` is free-form, so these two hints are read only when they have their type:
``cache_creation_1h`` a whole number from 0 to 2^53 - 1 (``12`` or ``12.0``), ``speed``
a string. Anything else (a list, a string of digits, ``true``, a negative number) is
ignored for pricing, kept in ``attrs`` as sent, and never makes an event fail; so are
token counts in :meth:`Table.cost`'s dicts that are not such whole numbers.

Refreshing the table: ``python -m telemetryd.adapters.pricing LITELLM_JSON``
rewrites the models listed here from a downloaded copy of LiteLLM's
``model_prices_and_context_window.json`` and sets today's date.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

TABLE_FILE = Path(__file__).with_name("prices.json")
PER_TOKEN = 1e-6  # the table is per million tokens
_CACHE_NAMES = 4096  # model names whose match is remembered (producers choose the names)
_MAX_COUNT = 2**53 - 1  # events.MAX_INT, without importing msgspec here
KINDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
_PREFIXES = ("anthropic/", "openai/", "gemini/", "google/", "vertex_ai/", "bedrock/",
             "us.anthropic.", "eu.anthropic.", "apac.anthropic.", "anthropic.")  # fmt: skip


def _whole(value: Any) -> int:
    """A count read from free-form data: a whole number from 0 to 2^53 - 1 (the event
    model's largest count), else 0 (not a count)."""
    if value.__class__ is int or (value.__class__ is float and value.is_integer()):
        return int(value) if 0 <= value <= _MAX_COUNT else 0
    return 0


def _hints(attrs: Any) -> tuple[int, str | None]:
    """The pricing hints in an event's ``attrs``: 1-hour cache writes and the speed."""
    if not isinstance(attrs, dict):
        return 0, None
    speed = attrs.get("speed")
    return _whole(attrs.get("cache_creation_1h")), speed if isinstance(speed, str) else None


def _strip_date(name: str) -> str:
    """Without a date suffix: ``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``,
    ``gpt-4o-2024-08-06`` -> ``gpt-4o``."""
    parts = name.split("-")
    if len(parts) > 1 and len(parts[-1]) == 8 and parts[-1].isdigit():
        return "-".join(parts[:-1])
    if (
        len(parts) > 3
        and all(p.isdigit() for p in parts[-3:])
        and [len(p) for p in parts[-3:]] == [4, 2, 2]
    ):
        return "-".join(parts[:-3])
    return name


class Table:
    """A price table: the bundled one with the configured overrides on top."""

    def __init__(self, data: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None):
        self.date: str = data.get("date", "unknown")
        self.source: str = data.get("source", "")
        self.refresh: str = data.get("refresh", "")
        self.models: dict[str, dict[str, Any]] = dict(data.get("models", {}))
        self.overridden: set[str] = set()
        for name, prices in (overrides or {}).items():
            entry = {k: v for k, v in prices.items() if v is not None}
            entry["src"] = "config"
            self.models[name] = entry
            self.overridden.add(name)
        self._cache: dict[str, str | None] = {}

    def lookup(self, model: str | None) -> tuple[str, dict[str, Any]] | None:
        """The table's name and prices for ``model``, or None when it is not priced."""
        if not model:
            return None
        if model not in self._cache:
            if len(self._cache) >= _CACHE_NAMES:
                self._cache.clear()  # bounded, whatever names producers send
            self._cache[model] = self._match(model)
        key = self._cache[model]
        return None if key is None else (key, self.models[key])

    def _match(self, model: str) -> str | None:
        if model in self.models:
            return model
        name = model.lower()
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        name = name.split("@")[0].split(":")[0]  # vertex "@20250929", bedrock ":0"
        if name.startswith("claude"):
            name = name.replace(".", "-").removesuffix("-v1")
        for candidate in (name, _strip_date(name)):
            if candidate in self.models:
                return candidate
        best = None
        for key in self.models:
            if (name.startswith(key + "-") or name == key) and (
                best is None or len(key) > len(best)
            ):
                best = key
        return best

    def cost(
        self,
        tokens: dict[str, Any],
        model: str | None,
        *,
        cache_creation_1h: int = 0,
        speed: str | None = None,
    ) -> float | None:
        """US dollars for one request's ``actual`` tokens; None when the model is unknown
        or the tokens are not actual counts."""
        found = self.lookup(model)
        if found is None or tokens.get("source") != "actual":
            return None
        prices = found[1]
        inp = _whole(tokens.get("input"))
        out = _whole(tokens.get("output"))
        read = _whole(tokens.get("cache_read"))
        write = _whole(tokens.get("cache_creation"))
        above = prices.get("above")
        if isinstance(above, dict) and inp + read + write > above.get("tokens", float("inf")):
            prices = {**prices, **{k: v for k, v in above.items() if k in KINDS}}
        long_writes = min(max(cache_creation_1h, 0), write)
        p_in = prices["input"]
        p_write = prices.get("cache_write", p_in)
        total: float = (
            inp * p_in
            + out * prices["output"]
            + read * prices.get("cache_read", p_in)
            + (write - long_writes) * p_write
            + long_writes * prices.get("cache_write_1h", p_write)
        ) * PER_TOKEN
        if speed == "fast" and prices.get("fast"):
            total *= float(prices["fast"])
        return total

    def price_request(self, event: Any) -> None:
        """:meth:`price_event` for a decoded ``events.ApiRequest`` (the daemon's ingest)."""
        if event.cost_usd is not None:
            if event.cost_source is None:
                event.cost_source = "reported"
            return
        tokens = event.tokens
        model = event.agent.model if event.agent is not None else None
        if tokens.source != "actual" or self.lookup(model) is None:
            event.cost_source = "unknown"
            return
        long_writes, speed = _hints(event.attrs)
        cost = self.cost(
            {
                "source": "actual",
                "input": tokens.input,
                "output": tokens.output,
                "cache_read": tokens.cache_read,
                "cache_creation": tokens.cache_creation,
            },
            model,
            cache_creation_1h=long_writes,
            speed=speed,
        )
        if cost is None:
            event.cost_source = "unknown"
        else:
            event.cost_usd = round(cost, 10)
            event.cost_source = "computed"

    def price_event(self, event: dict[str, Any]) -> None:
        """Give an api_request with actual tokens and no reported cost its ``cost_usd``
        (``cost_source`` computed), or ``cost_source`` unknown when its model has no price.
        A reported cost is kept and marked ``reported``."""
        if event.get("type") != "api_request":
            return
        if event.get("cost_usd") is not None:
            event.setdefault("cost_source", "reported")
            return
        tokens = event.get("tokens")
        if not isinstance(tokens, dict) or tokens.get("source") != "actual":
            event["cost_source"] = "unknown"
            return
        agent = event.get("agent")
        model = agent.get("model") if isinstance(agent, dict) else None
        long_writes, speed = _hints(event.get("attrs"))
        cost = self.cost(
            tokens,
            model if isinstance(model, str) else None,
            cache_creation_1h=long_writes,
            speed=speed,
        )
        if cost is None:
            event["cost_source"] = "unknown"
        else:
            event["cost_usd"] = round(cost, 10)
            event["cost_source"] = "computed"


def bundled() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    return data


def load(overrides: dict[str, dict[str, Any]] | None = None) -> Table:
    """The bundled table with ``overrides`` (model -> prices per million tokens)."""
    return Table(bundled(), overrides)


def configured() -> Table:
    """The bundled table with the overrides of the configuration file."""
    from telemetryd import config, paths

    return from_config(config.load(paths.resolve().config_file)[0].pricing)


def from_config(pricing: Any) -> Table:
    """The bundled table with the overrides of a ``config.Pricing`` section."""
    import msgspec

    overrides = {name: msgspec.structs.asdict(price) for name, price in pricing.models.items()}
    return load(overrides)


# -- refreshing the table from LiteLLM's file ------------------------------------------------


_LITELLM = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
}


def refresh(data: dict[str, Any], litellm: dict[str, Any], today: str) -> list[str]:
    """Update ``data``'s models (the ones it lists) from LiteLLM's entries of the same
    name; the names updated."""
    updated = []
    for name, entry in data["models"].items():
        source = litellm.get(name)
        if not isinstance(source, dict) or "input_cost_per_token" not in source:
            continue
        for kind, field in _LITELLM.items():
            if isinstance(source.get(field), (int, float)):
                entry[kind] = round(source[field] / PER_TOKEN, 6)
        above = {k: source.get(f"{f}_above_200k_tokens") for k, f in _LITELLM.items()}
        if isinstance(above.get("input"), (int, float)):
            entry["above"] = {"tokens": 200000} | {
                k: round(v / PER_TOKEN, 6) for k, v in above.items() if isinstance(v, (int, float))
            }
        entry["src"] = "litellm"
        updated.append(name)
    data["date"] = today
    return updated


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m telemetryd.adapters.pricing LITELLM_JSON\n")
        return 2
    data = bundled()
    litellm = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    names = refresh(data, litellm, time.strftime("%Y-%m-%d", time.gmtime()))
    TABLE_FILE.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(f"{TABLE_FILE}: {len(names)} models updated\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
