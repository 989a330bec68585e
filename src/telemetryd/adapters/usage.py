"""SDK usage objects -> the event model's tri-state ``tokens`` (plain dicts).

Every SDK reports token usage in its own shape, and they disagree on what
"input" means. This module finds the usage object inside whatever an SDK
returned and converts it to one convention (DESIGN §2):

- ``input`` counts uncached input only; cached input read goes to ``cache_read``
  and cache writes to ``cache_creation``. Where a provider's input count already
  includes cached tokens (OpenAI, Codex, Gemini, Copilot, LangChain), they are
  subtracted: a Codex turn with ``input_tokens`` 1000 of which
  ``cached_input_tokens`` 250 becomes input 750, cache_read 250.
- ``output`` includes reasoning tokens, also kept as ``reasoning``. Gemini counts
  thoughts apart from the candidates, so they are added to ``output``.
- ``total`` is input + output + cache_read + cache_creation.

Shapes recognized (camelCase keys are read as snake_case):

====================  ==========================================================
OpenAI chat           ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
                      ``prompt_tokens_details.cached_tokens``,
                      ``completion_tokens_details.reasoning_tokens``
OpenAI responses      ``input_tokens`` (+ ``input_tokens_details.cached_tokens``),
                      ``output_tokens`` (+ ``output_tokens_details.reasoning_tokens``)
Anthropic             ``input_tokens`` (uncached), ``output_tokens``,
                      ``cache_read_input_tokens``, ``cache_creation_input_tokens``
Codex                 ``input_tokens``, ``cached_input_tokens``, ``output_tokens``,
                      ``reasoning_output_tokens``, ``total_tokens``
Gemini API            ``usageMetadata``: ``promptTokenCount``, ``candidatesTokenCount``,
                      ``cachedContentTokenCount``, ``thoughtsTokenCount``,
                      ``toolUsePromptTokenCount``, ``totalTokenCount``
Gemini CLI            ``tokens``: ``input``, ``output``, ``cached``, ``thoughts``, ``tool``
Copilot, AI SDK       ``inputTokens`` (includes both caches), ``outputTokens``,
                      ``cacheReadTokens``, ``cacheWriteTokens``, ``reasoningTokens``
LangChain             ``input_tokens`` (all input), ``input_token_details.cache_read`` /
                      ``cache_creation``, ``output_token_details.reasoning``
====================  ==========================================================

The usage object may be the object itself or sit under ``usage``,
``usageMetadata``, ``message.usage``, ``result.usage``, ``response.usage``,
``item.usage``, ``data.usage``, ``metrics.usage``, ``info.last_token_usage`` and
a few more (:data:`PATHS`), else anywhere a few levels down. Nothing recognized
gives ``{"source": "unknown"}``: never an error.

This module runs on `telemetryctl send --usage-json` and in the Claude Code hook,
so it imports nothing (no msgspec, no ``re``) and works on plain dicts.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

UNKNOWN: dict[str, Any] = {"source": "unknown"}

# Where SDKs put their usage object, tried in order before a generic search.
PATHS: tuple[tuple[str, ...], ...] = (
    ("info", "last_token_usage"),  # Codex token_count event payload
    ("payload", "info", "last_token_usage"),  # the whole Codex rollout line
    ("message", "usage"),  # Anthropic message / Claude Code transcript line
    ("result", "usage"),
    ("response", "usage"),  # OpenAI Responses API stream events
    ("response", "usage_metadata"),
    ("item", "usage"),
    ("data", "usage"),  # Copilot
    ("metrics", "usage"),  # Copilot model metrics
    ("usage",),
    ("usage_metadata",),  # Gemini API (usageMetadata), LangChain
    ("tokens",),  # Gemini CLI chat records
    ("data",),  # Copilot assistant.usage events carry the counts in data itself
)
# Keys that hold a reported cost in US dollars (Copilot's `cost` is a premium-request
# multiplier, not dollars, and is not read).
COST_KEYS = ("cost_usd", "total_cost_usd", "costUSD", "costUsd", "total_cost")
MODEL_PATHS: tuple[tuple[str, ...], ...] = (
    ("model",),
    ("message", "model"),
    ("response", "model"),
    ("data", "model"),
    ("info", "model"),
    ("payload", "info", "model"),
    ("modelVersion",),
    ("model_version",),
)
_MAX_DEPTH = 4


def snake(name: str) -> str:
    """``promptTokenCount`` -> ``prompt_token_count``; snake_case names are unchanged."""
    if name.islower() or not any(c.isupper() for c in name):
        return name
    out = []
    for index, char in enumerate(name):
        if char.isupper():
            if index and name[index - 1] != "_":
                out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)


# The largest count the event model takes (events.MAX_INT, 2^53 - 1; a test ties them):
# a larger "count" is not one, and unknown tokens beat an event the daemon would reject.
MAX_COUNT = 2**53 - 1
MAX_COST = 1e9  # dollars: events.MAX_COST (a reported cost above it is not one)


def _count(value: Any) -> int | None:
    """A token count: a whole number from 0 to MAX_COUNT (``12`` or ``12.0``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    return None


def _keys(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with snake_case keys (one level)."""
    return {snake(key): value for key, value in obj.items() if isinstance(key, str)}


def _sub(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return _keys(value) if isinstance(value, dict) else {}


_MARKERS = (
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_token_count",
    "candidates_token_count",
    "total_token_count",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def is_usage(obj: Any) -> bool:
    """Whether ``obj`` is itself a usage object of a recognized shape."""
    if not isinstance(obj, dict):
        return False
    keys = _keys(obj)
    if any(_count(keys.get(marker)) is not None for marker in _MARKERS):
        return True
    # Gemini CLI: {"input", "output", "cached", "thoughts", "tool", "total"}
    return ("cached" in keys or "thoughts" in keys) and _count(keys.get("input")) is not None


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        value = obj.get(key)
        if value is None:
            value = next(
                (v for k, v in obj.items() if isinstance(k, str) and snake(k) == key), None
            )
        obj = value
    return obj


def find(obj: Any) -> dict[str, Any] | None:
    """The usage object in ``obj``: itself, at a known path, else the first one found
    breadth-first a few levels down."""
    if is_usage(obj):
        return obj  # type: ignore[no-any-return]
    for path in PATHS:
        candidate = _get(obj, path)
        if is_usage(candidate):
            return candidate  # type: ignore[no-any-return]
    level = [obj]
    for _ in range(_MAX_DEPTH):
        nxt = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            if not isinstance(node, (dict, list)):
                continue
            for child in children:
                if is_usage(child):
                    return child  # type: ignore[no-any-return]
                if isinstance(child, (dict, list)):
                    nxt.append(child)
        level = nxt
    return None


def _actual(
    *,
    input_all: int | None,
    cached: int = 0,
    cache_creation: int = 0,
    input_uncached: int | None = None,
    output: int | None,
    reasoning: int | None = None,
    reasoning_apart: bool = False,
    total: int | None = None,
    creation_in_input: bool = False,
) -> dict[str, Any]:
    """Assemble ``actual`` tokens from a provider's counts.

    ``input_all`` includes the cached tokens (and cache writes when
    ``creation_in_input``); ``input_uncached`` is given instead when the provider
    reports uncached input. ``reasoning_apart``: the provider counts reasoning
    outside ``output``. Otherwise a reported ``total`` that only adds up with the
    reasoning on top of ``output`` says the same; so does reasoning larger than
    ``output``.
    """
    if input_uncached is None and input_all is not None:
        input_uncached = max(0, input_all - cached - (cache_creation if creation_in_input else 0))
    if input_uncached is not None and output is None and total is not None:
        apart = (reasoning or 0) if reasoning_apart else 0
        output = max(0, total - input_uncached - cached - cache_creation - apart)
    if output is not None and input_uncached is None and total is not None:
        input_uncached = max(0, total - output - cached - cache_creation)
    if input_uncached is None or output is None:
        return dict(UNKNOWN)
    if reasoning:
        base = input_uncached + cached + cache_creation + output
        if (
            reasoning_apart
            or reasoning > output
            or (total is not None and total == base + reasoning)
        ):
            output += reasoning
    if input_uncached + output + cached + cache_creation > MAX_COUNT:
        return dict(UNKNOWN)  # counts no request has: not usage after all
    return split(input_uncached, output, cached, cache_creation, reasoning or 0)


def split(
    uncached: int, output: int, cache_read: int = 0, cache_creation: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    """``actual`` tokens from counts already in the model's convention and checked (each
    from 0, their sum at most MAX_COUNT): the zero cache and reasoning counts left out."""
    tokens: dict[str, Any] = {"source": "actual", "input": uncached, "output": output}
    if cache_read:
        tokens["cache_read"] = cache_read
    if cache_creation:
        tokens["cache_creation"] = cache_creation
    if reasoning:
        tokens["reasoning"] = reasoning
    tokens["total"] = uncached + output + cache_read + cache_creation
    return tokens


def gemini(
    *,
    input: int | None,
    output: int | None,
    cached: int | None = None,
    thoughts: int | None = None,
    tool: int | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    """Gemini's counts in the model's convention: one rule for the Gemini API's
    ``usageMetadata``, Gemini CLI's chat records (``tokens``) and its OTLP
    ``api_response`` events (and the rule ccusage applies to the chat records).

    - ``input`` (the prompt) includes ``cached``: input = input − cached, cache_read =
      cached; unless ``total`` shows that it does not (total = input + output +
      thoughts + tool + cached, and not without the cached), when input is kept.
    - ``tool`` (tool-use prompt tokens) is input too: added to input.
    - ``thoughts`` are not part of ``output`` but billed as output: output = output
      + thoughts, also kept as ``reasoning``.
    - A ``total`` larger than all of these: the rest is counted as output (ccusage
      counts it at the output rate too).
    """
    if input is None and output is None and total is None:
        return dict(UNKNOWN)
    inp, out, cache = input or 0, output or 0, cached or 0
    think, tools = thoughts or 0, tool or 0
    parts = inp + out + think + tools
    if cache and total is not None and total == parts + cache and total != parts:
        uncached = inp  # the total says the cached tokens are not part of the prompt
    else:
        uncached = max(0, inp - cache)
    uncached += tools
    if total is not None:
        out += max(0, total - (uncached + cache + out + think))
    return _actual(
        input_all=None,
        input_uncached=uncached,
        cached=cache,
        output=out + think,
        reasoning=think,
    )


def anthropic(
    *,
    input: int | None,
    output: int | None,
    cache_read: int | None = None,
    cache_creation: int | None = None,
) -> dict[str, Any]:
    """Anthropic's usage counts in the model's convention: ``input`` excludes the cache
    reads and writes already. The same as :func:`tokens_from_usage` of an Anthropic
    ``usage`` with these counts, without finding out which shape it is (the OTLP
    mapper of Claude Code calls it for every request)."""
    return _actual(
        input_all=None,
        input_uncached=input,
        cached=cache_read or 0,
        cache_creation=cache_creation or 0,
        output=output,
    )


def copilot(
    *,
    input: int,
    output: int,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    reasoning_apart: bool = False,
) -> dict[str, Any]:
    """GitHub Copilot CLI's ``usage`` counts (``session.shutdown`` model metrics) in the
    model's convention, as ccusage reads them: ``input`` includes both cache reads and
    cache writes (input = input − cache_read − cache_write, floored at 0); reasoning is
    part of ``output`` (Claude, GPT), except for Gemini models (``reasoning_apart``), whose
    thoughts are counted apart and added to output. Reasoning larger than the output it
    would be part of is not kept (ccusage drops it too)."""
    if not reasoning_apart and reasoning > output:
        reasoning = 0
    return _actual(
        input_all=None,
        input_uncached=max(0, input - cache_read - cache_write),
        cached=cache_read,
        cache_creation=cache_write,
        output=output,
        reasoning=reasoning,
        reasoning_apart=reasoning_apart,
    )


def input_with_caches(
    *,
    input: int | None,
    output: int | None,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    """Counts whose ``input`` includes both the cache reads and writes, and whose
    ``output`` includes the reasoning (Copilot's and the AI SDK's usage, the GenAI
    semantic conventions' ``gen_ai.usage.*``): what :func:`tokens_from_usage` makes of
    such a usage, without finding out its shape (the GenAI mapper calls it per span)."""
    return _actual(
        input_all=input,
        cached=cache_read,
        cache_creation=cache_write,
        creation_in_input=True,
        output=output,
        reasoning=reasoning,
        total=total,
    )


def parts_and_total(
    *,
    input: int,
    output: int,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    total: int = 0,
) -> dict[str, Any]:
    """Counts stored as uncached ``input``, ``output``, cache reads and writes, an
    optional ``total`` and optional ``reasoning`` apart from the output (OpenCode's
    message ``tokens``, Amp's thread usage). A ``total`` larger than the four parts
    holds tokens the parts leave out: the reasoning (OpenCode writes ``output`` without
    it and ``total`` with it) or, when nothing else is known, output (ccusage counts
    them at the output rate too). So output = output + max(total − parts, reasoning),
    the reasoning also kept as ``reasoning``. (What :func:`_actual` makes of these counts,
    without its general case: the importer calls it per message.)"""
    missing = max(0, total - (input + output + cache_read + cache_write))
    output += max(missing, reasoning)
    if reasoning > output:  # (_actual's rule; counts from 0 never meet it)
        output += reasoning
    if input + output + cache_read + cache_write > MAX_COUNT:
        return dict(UNKNOWN)  # counts no request has: not usage after all
    return split(input, output, cache_read, cache_write, reasoning)


def tokens_from_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Normalize one usage object (see the module docstring for the shapes)."""
    u = _keys(usage)

    def n(key: str, obj: dict[str, Any] = u) -> int | None:
        return _count(obj.get(key))

    # Gemini API usageMetadata: prompt includes cached content; thoughts are not in
    # the candidates; tool-use prompt tokens are input too.
    if any(k in u for k in ("prompt_token_count", "candidates_token_count", "total_token_count")):
        return gemini(
            input=n("prompt_token_count"),
            output=n("candidates_token_count"),
            cached=n("cached_content_token_count"),
            thoughts=n("thoughts_token_count"),
            tool=n("tool_use_prompt_token_count"),
            total=n("total_token_count"),
        )
    # Gemini CLI chat record `tokens`: same counts, short names.
    if ("cached" in u or "thoughts" in u) and "input" in u:
        return gemini(
            input=n("input"),
            output=n("output"),
            cached=n("cached"),
            thoughts=n("thoughts"),
            tool=n("tool"),
            total=n("total"),
        )
    # OpenAI chat completions (and OpenAI-compatible APIs).
    if "prompt_tokens" in u or "completion_tokens" in u:
        return _actual(
            input_all=n("prompt_tokens"),
            cached=n("cached_tokens", _sub(u, "prompt_tokens_details")) or 0,
            output=n("completion_tokens"),
            reasoning=n("reasoning_tokens", _sub(u, "completion_tokens_details")),
            total=n("total_tokens"),
        )
    # Anthropic: input_tokens excludes the cache reads and writes.
    if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:
        creation = n("cache_creation_input_tokens")
        if creation is None:
            split = _sub(u, "cache_creation")
            creation = sum(_count(v) or 0 for v in split.values())
        return _actual(
            input_all=None,
            input_uncached=n("input_tokens"),
            cached=n("cache_read_input_tokens") or 0,
            cache_creation=creation,
            output=n("output_tokens"),
        )
    # OpenAI Responses API: input_tokens includes cached_tokens.
    if "input_tokens_details" in u or "output_tokens_details" in u:
        return _actual(
            input_all=n("input_tokens"),
            cached=n("cached_tokens", _sub(u, "input_tokens_details")) or 0,
            output=n("output_tokens"),
            reasoning=n("reasoning_tokens", _sub(u, "output_tokens_details")),
            total=n("total_tokens"),
        )
    # LangChain usage_metadata: input_tokens is the sum of every input kind.
    if "input_token_details" in u or "output_token_details" in u:
        details = _sub(u, "input_token_details")
        return _actual(
            input_all=n("input_tokens"),
            cached=n("cache_read", details) or 0,
            cache_creation=n("cache_creation", details) or 0,
            creation_in_input=True,
            output=n("output_tokens"),
            reasoning=n("reasoning", _sub(u, "output_token_details")),
            total=n("total_tokens"),
        )
    # Copilot and the AI SDK: inputTokens includes cache reads and writes.
    if "cache_read_tokens" in u or "cache_write_tokens" in u:
        return input_with_caches(
            input=n("input_tokens"),
            cache_read=n("cache_read_tokens") or 0,
            cache_write=n("cache_write_tokens") or 0,
            output=n("output_tokens"),
            reasoning=n("reasoning_tokens"),
            total=n("total_tokens"),
        )
    # Codex (and the AI SDK's cachedInputTokens): input includes cached input; a bare
    # {input_tokens, output_tokens} means the same either way.
    if "input_tokens" in u or "output_tokens" in u:
        return _actual(
            input_all=n("input_tokens"),
            cached=n("cached_input_tokens") or 0,
            output=n("output_tokens"),
            reasoning=n("reasoning_output_tokens") or n("reasoning_tokens"),
            total=n("total_tokens"),
        )
    return dict(UNKNOWN)


def tokens(obj: Any) -> dict[str, Any]:
    """The tri-state tokens for whatever an SDK returned; ``{"source": "unknown"}``
    when it holds no usage."""
    usage = find(obj)
    return dict(UNKNOWN) if usage is None else tokens_from_usage(usage)


def cost_usd(obj: Any) -> float | None:
    """A reported cost in US dollars, at the top level, under ``result`` or in the usage."""
    places = [obj, _get(obj, ("result",)), find(obj)]
    for place in places:
        if not isinstance(place, dict):
            continue
        for key in COST_KEYS:
            value = place.get(key)
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and 0 <= value <= MAX_COST
            ):
                return float(value)
    return None


def model(obj: Any) -> str | None:
    """The model named next to the usage, if any."""
    for path in MODEL_PATHS:
        value = _get(obj, path)
        if isinstance(value, str) and value:
            return value
    return None


def normalize(obj: Any) -> dict[str, Any]:
    """``{"tokens": {...}, "cost_usd"?: float, "model"?: str}`` for an SDK response or
    usage object. Never raises on odd input: unknown shapes give unknown tokens."""
    out: dict[str, Any] = {"tokens": tokens(obj)}
    cost = cost_usd(obj)
    if cost is not None:
        out["cost_usd"] = cost
    name = model(obj)
    if name is not None:
        out["model"] = name
    return out
