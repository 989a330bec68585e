-- The datasets reports are written against, by name. Recreated every time the store
-- opens, so changing a view needs no schema version bump. Times are UTC. Every column
-- reference is qualified: a table macro with a parameter of the same name as a column
-- (session_overview(session_id)) cannot use a view that names it bare.
--
-- Token columns: for `actual` tokens a missing cache count is 0; for `estimated` and
-- `unknown` tokens every count is NULL (an estimate is only in total_tokens, where a
-- view has it), so sums cover the requests whose counts are known.

-- Whether a tool result or a model request failed: its success flag is false, or it has
-- an error and no success flag. The `errors` view's rule, which the analytics macros
-- share (macros.sql).
CREATE OR REPLACE MACRO failed(success, error) AS
    NOT success OR (success IS NULL AND error IS NOT NULL);

-- One row per model request.
CREATE OR REPLACE VIEW api_requests AS
SELECT
    e.ts AS timestamp,
    e.session_id,
    e.agent_model AS model,
    e.tokens_input AS input_tokens,
    e.tokens_output AS output_tokens,
    CASE WHEN e.tokens_source = 'actual' THEN coalesce(e.tokens_cache_read, 0) END
        AS cache_read_tokens,
    CASE WHEN e.tokens_source = 'actual' THEN coalesce(e.tokens_cache_creation, 0) END
        AS cache_creation_tokens,
    e.cost_usd,
    e.duration_ms,
    e.cost_source,   -- reported / computed / unknown
    e.price_source,  -- a computed cost's prices: genai-prices X.Y.Z, override
    e.agent_provider AS provider
FROM events AS e
WHERE e.type = 'api_request';

-- One row per (sub-)agent start or stop; `event` is 'start' or 'stop'. Tokens and
-- duration are usually on the stop.
CREATE OR REPLACE VIEW agent_activations AS
SELECT
    e.ts AS timestamp,
    e.session_id,
    e.agent_type,
    e.agent_id,
    CASE e.type WHEN 'agent_start' THEN 'start' ELSE 'stop' END AS event,
    e.tokens_input AS input_tokens,
    e.tokens_output AS output_tokens,
    CASE WHEN e.tokens_source = 'actual' THEN coalesce(e.tokens_cache_read, 0) END
        AS cache_read_tokens,
    CASE WHEN e.tokens_source = 'actual' THEN coalesce(e.tokens_cache_creation, 0) END
        AS cache_creation_tokens,
    e.duration_ms,
    e.agent_model AS model
FROM events AS e
WHERE e.type IN ('agent_start', 'agent_stop');

-- One row per span of a trace (OTLP spans, and producers' own `span` events); the
-- trace(trace_id) macro lists a trace's events in span order.
CREATE OR REPLACE VIEW spans AS
SELECT
    e.ts AS timestamp,
    e.trace_id,
    e.span_id,
    e.parent_span_id,
    e.name,
    e.kind,
    e.duration_ms,
    e.success,
    e.error,
    e.session_id,
    e.source
FROM events AS e
WHERE e.type = 'span';

-- One row per skill activation.
CREATE OR REPLACE VIEW skill_activations AS
SELECT
    e.ts AS timestamp,
    e.session_id,
    e.name AS skill_name,
    e.duration_ms,
    e.success
FROM events AS e
WHERE e.type = 'skill';

-- One row per tool use: its tool_call and tool_result paired by (session_id, tool.use_id).
-- A call without a result yet, and a result without a recorded call (PostToolUse-only
-- hooks), each still have their row; so does every event without a use id. `started`
-- is the call's time (without a call: the result's time less its duration), `ended` the
-- result's; `duration_ms` is the result's, else the time between the two. Repeated
-- calls or results of one use id count once (the first call, the last result). Grouping
-- by session too lets a filter on session_id skip the other sessions' rows.
CREATE OR REPLACE VIEW tool_calls AS
WITH paired AS (
    SELECT
        e.tool_use_id,
        e.session_id,
        arg_min(e.tool_name, e.ts) AS tool_name,
        min(e.ts) FILTER (WHERE e.type = 'tool_call') AS called,
        max(e.ts) FILTER (WHERE e.type = 'tool_result') AS ended,
        arg_max(e.duration_ms, e.ts) FILTER (WHERE e.type = 'tool_result') AS result_duration_ms,
        arg_max(e.tool_success, e.ts) FILTER (WHERE e.type = 'tool_result') AS success,
        arg_max(e.tool_error, e.ts) FILTER (WHERE e.type = 'tool_result') AS error
    FROM events AS e
    WHERE e.type IN ('tool_call', 'tool_result') AND e.tool_use_id IS NOT NULL
    GROUP BY e.session_id, e.tool_use_id
    UNION ALL
    SELECT
        NULL,
        e.session_id,
        e.tool_name,
        CASE WHEN e.type = 'tool_call' THEN e.ts END,
        CASE WHEN e.type = 'tool_result' THEN e.ts END,
        CASE WHEN e.type = 'tool_result' THEN e.duration_ms END,
        CASE WHEN e.type = 'tool_result' THEN e.tool_success END,
        CASE WHEN e.type = 'tool_result' THEN e.tool_error END
    FROM events AS e
    WHERE e.type IN ('tool_call', 'tool_result') AND e.tool_use_id IS NULL
)
SELECT
    p.tool_use_id,
    p.session_id,
    p.tool_name,
    coalesce(p.called, p.ended - to_milliseconds(coalesce(p.result_duration_ms, 0))) AS started,
    p.ended,
    coalesce(p.result_duration_ms, datediff('millisecond', p.called, p.ended)) AS duration_ms,
    p.success,
    p.error
FROM paired AS p;

-- One row per error, from every source: `error` events (kind 'error'), failed tool
-- results (kind 'tool': tool.success false, or an error without a success flag) and
-- failed model requests (kind 'api': success false, or an error without a success flag;
-- status_code from the producer's attrs). category, confidence and fingerprint are the
-- producer's where it gave them (category_source 'producer'; a producer's category
-- keeps confidence 1 unless it gave its own, and is renamed to ours where
-- errorclass.PRODUCER_ALIASES knows it), else the error rules' (category_source 'rule':
-- the macros error_rule, error_fingerprint, ... generated from telemetryd/errorclass.py,
-- docs/errors.md). normalised is the message with ids, numbers, paths, hex and quoted
-- values replaced: the text the fingerprint hashes.
CREATE OR REPLACE VIEW errors AS
WITH raw AS (
    SELECT
        e.id, e.ts, e.session_id, e.source, e.agent_type, e.agent_model, e.agent_provider,
        e.trace_id, e.span_id, 'error' AS kind, e.message,
        nullif(e.category, '') AS producer_category,
        e.fingerprint AS producer_fingerprint,
        e.confidence AS producer_confidence,
        CAST(NULL AS VARCHAR) AS tool_name,
        CAST(NULL AS INTEGER) AS status_code
    FROM events AS e
    WHERE e.type = 'error'
    UNION ALL
    SELECT
        e.id, e.ts, e.session_id, e.source, e.agent_type, e.agent_model, e.agent_provider,
        e.trace_id, e.span_id, 'tool', e.tool_error, NULL, NULL, NULL, e.tool_name, NULL
    FROM events AS e
    WHERE e.type = 'tool_result'
        AND failed(e.tool_success, e.tool_error)
    UNION ALL
    SELECT
        e.id, e.ts, e.session_id, e.source, e.agent_type, e.agent_model, e.agent_provider,
        e.trace_id, e.span_id, 'api', e.error, NULL, NULL, NULL, NULL,
        TRY_CAST(coalesce(
            json_extract_string(e.attrs, '$.status_code'),
            json_extract_string(e.attrs, '$."http.response.status_code"')
        ) AS INTEGER)
    FROM events AS e
    WHERE e.type = 'api_request'
        AND failed(e.success, e.error)
),
ruled AS (
    SELECT
        r.*,
        CASE WHEN r.producer_category IS NULL THEN error_rule(r.message, r.status_code) END
            AS rule
    FROM raw AS r
)
SELECT
    r.ts AS timestamp,
    r.session_id,
    r.source,
    r.agent_type,
    r.agent_model AS model,
    coalesce(
        error_producer_category(r.producer_category),
        error_rule_category(r.rule),
        error_fallback_category(r.kind)
    ) AS category,
    r.message,
    coalesce(r.producer_fingerprint, error_fingerprint(r.message)) AS fingerprint,
    CASE
        WHEN r.producer_category IS NOT NULL THEN coalesce(r.producer_confidence, 1.0)
        ELSE coalesce(error_rule_confidence(r.rule), error_fallback_confidence(r.kind))
    END AS confidence,
    r.trace_id,
    r.span_id,
    r.kind,
    CASE WHEN r.producer_category IS NOT NULL THEN 'producer' ELSE 'rule' END
        AS category_source,
    error_normalised(r.message) AS normalised,
    r.tool_name,
    r.status_code,
    r.agent_provider AS provider,
    r.id AS event_id
FROM ruled AS r;

-- One row per attempt record (`run` event). total_tokens is the actual total or the
-- estimate, as tokens_source says.
CREATE OR REPLACE VIEW runs AS
SELECT
    e.ts AS timestamp,
    e.source,
    e.session_id,
    e.task_id,
    e.task_title,
    e.attempt_id,
    e.attempt_index,
    e.agent_model AS model,
    e.agent_provider AS provider,
    e.agent_type,
    e.retry_same_model,
    e.retry_reroute,
    e.retry_same_model + e.retry_reroute AS retries,
    e.elapsed_wall_ms,
    e.elapsed_llm_ms,
    e.elapsed_tools_ms,
    e.tokens_source,
    e.tokens_input AS input_tokens,
    e.tokens_output AS output_tokens,
    CASE WHEN e.tokens_source = 'actual' THEN coalesce(e.tokens_cache_read, 0) END
        AS cache_read_tokens,
    CASE WHEN e.tokens_source = 'actual' THEN coalesce(e.tokens_cache_creation, 0) END
        AS cache_creation_tokens,
    coalesce(e.tokens_total, e.tokens_estimated_total) AS total_tokens,
    e.outcome,
    e.outcome_reason
FROM events AS e
WHERE e.type = 'run';

-- One row per session id. started / ended: the session_start / session_end events,
-- else the first / last event of the session; duration_ms: the session_end's, else
-- the time between the two. Tokens and cost are the session's model requests
-- (api_request); agents_used counts distinct sub-agent types activated, skills_used
-- distinct skills; tool_calls and tool_failures come from `tool_calls`; success is the
-- session_end's; attempts counts distinct attempt ids among the session's runs.
-- The distinct counts are taken apart, over the few rows of their types: DISTINCT
-- aggregates over every event of every session cost more than the rest together.
CREATE OR REPLACE VIEW sessions AS
WITH per_session AS (
    SELECT
        e.session_id,
        arg_min(e.source, e.ts) AS source,
        min(e.ts) FILTER (WHERE e.type = 'session_start') AS start_ts,
        max(e.ts) FILTER (WHERE e.type = 'session_end') AS end_ts,
        min(e.ts) AS first_ts,
        max(e.ts) AS last_ts,
        arg_max(e.duration_ms, e.ts) FILTER (WHERE e.type = 'session_end') AS end_duration_ms,
        arg_max(e.success, e.ts) FILTER (WHERE e.type = 'session_end') AS success,
        arg_min(e.cwd, e.ts) FILTER (WHERE e.type = 'session_start') AS cwd,
        count(*) FILTER (WHERE e.type = 'api_request') AS api_requests,
        sum(e.tokens_input) FILTER (WHERE e.type = 'api_request') AS input_tokens,
        sum(e.tokens_output) FILTER (WHERE e.type = 'api_request') AS output_tokens,
        sum(e.tokens_cache_read) FILTER (WHERE e.type = 'api_request') AS cache_read_tokens,
        sum(e.tokens_cache_creation) FILTER (WHERE e.type = 'api_request')
            AS cache_creation_tokens,
        sum(coalesce(e.tokens_total, e.tokens_estimated_total))
            FILTER (WHERE e.type = 'api_request') AS total_tokens,
        sum(e.cost_usd) FILTER (WHERE e.type = 'api_request') AS cost_usd,
        count(*) FILTER (WHERE e.type = 'error') AS errors
    FROM events AS e
    WHERE e.session_id IS NOT NULL
    GROUP BY e.session_id
),
distinct_counts AS (
    SELECT
        e.session_id,
        count(DISTINCT e.agent_type) FILTER (WHERE e.type IN ('agent_start', 'agent_stop'))
            AS agents_used,
        count(DISTINCT e.name) FILTER (WHERE e.type = 'skill') AS skills_used,
        count(DISTINCT coalesce(e.attempt_id, e.id)) FILTER (WHERE e.type = 'run') AS attempts
    FROM events AS e
    WHERE e.session_id IS NOT NULL AND e.type IN ('agent_start', 'agent_stop', 'skill', 'run')
    GROUP BY e.session_id
),
tools AS (
    SELECT
        c.session_id,
        count(*) AS tool_calls,
        count(*) FILTER (WHERE NOT c.success) AS tool_failures
    FROM tool_calls AS c
    WHERE c.session_id IS NOT NULL
    GROUP BY c.session_id
)
SELECT
    s.session_id,
    s.source,
    s.cwd,
    coalesce(s.start_ts, s.first_ts) AS started,
    coalesce(s.end_ts, s.last_ts) AS ended,
    coalesce(
        s.end_duration_ms,
        datediff('millisecond', coalesce(s.start_ts, s.first_ts), coalesce(s.end_ts, s.last_ts))
    ) AS duration_ms,
    coalesce(d.agents_used, 0) AS agents_used,
    coalesce(d.skills_used, 0) AS skills_used,
    s.api_requests,
    coalesce(s.input_tokens, 0) AS input_tokens,
    coalesce(s.output_tokens, 0) AS output_tokens,
    coalesce(s.cache_read_tokens, 0) AS cache_read_tokens,
    coalesce(s.cache_creation_tokens, 0) AS cache_creation_tokens,
    coalesce(s.total_tokens, 0) AS total_tokens,
    coalesce(s.cost_usd, 0) AS cost_usd,
    coalesce(t.tool_calls, 0) AS tool_calls,
    coalesce(t.tool_failures, 0) AS tool_failures,
    s.errors,
    s.success,
    coalesce(d.attempts, 0) AS attempts
FROM per_session AS s
LEFT JOIN distinct_counts AS d ON d.session_id = s.session_id
LEFT JOIN tools AS t ON t.session_id = s.session_id;

-- Alerts: the analyzer's (source 'telemetryd', rule = its rule) and producers' own, such
-- as Claude Code's notifications. evidence: what the rule saw (docs/alerts.md).
CREATE OR REPLACE VIEW alerts AS
SELECT
    e.ts AS timestamp,
    e.kind AS rule,
    e.severity,
    e.session_id,
    e.message,
    e.source,
    json_extract(e.attrs, '$.evidence') AS evidence,
    e.id AS event_id
FROM events AS e
WHERE e.type = 'alert';

-- Spending against the [budget] limits in force at the analyzer's last run: the current
-- day and month in the budget's time zone, spend counted now.
CREATE OR REPLACE VIEW budget_use AS
SELECT
    b.period,
    b.starts,
    b.ends,
    b.limit_usd,
    coalesce(s.spent, 0) AS spent_usd,
    coalesce(s.spent, 0) / b.limit_usd AS used
FROM budget AS b
LEFT JOIN LATERAL (
    SELECT sum(r.cost_usd) AS spent
    FROM api_requests AS r
    WHERE r.timestamp >= b.starts AND r.timestamp < b.ends
) AS s ON true
WHERE b.limit_usd > 0 AND b.ends > make_timestamp(epoch_us(now()));
