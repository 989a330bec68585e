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
-- calls or results of one use id count once (the first call, the last result: its
-- duration and success flag where it gives them, else an earlier result's). `error` is
-- the latest result's error unless the use succeeded (a use that failed and then
-- succeeded has none). Grouping by session too lets a filter on session_id skip the
-- other sessions' rows.
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
    -- (from the timestamps: none when the result is stamped before its call, two clocks)
    coalesce(
        p.result_duration_ms,
        CASE WHEN p.ended >= p.called THEN datediff('millisecond', p.called, p.ended) END
    ) AS duration_ms,
    p.success,
    CASE WHEN p.success IS NOT TRUE THEN p.error END AS error
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
-- (api_request): total_tokens adds each request's total (as its producer gave it, else
-- the four counts') or its estimate, so it may differ from the four columns added up;
-- cost_usd adds the known costs (NULL when no request has one: unknown, not free, and 0
-- without requests) and unpriced_requests counts the requests it leaves out;
-- agents_used counts distinct sub-agent types activated, skills_used
-- distinct skills; tool_calls and tool_failures come from `tool_calls`; success is the
-- session_end's; attempts counts distinct attempt ids among the session's runs.
-- The distinct counts are taken apart, over the few rows of their types: DISTINCT
-- aggregates over every event of every session cost more than the rest together.
-- The analyzer's own alerts about a session (source 'telemetryd', stamped when it
-- looked: a stall's comes stall-after later) are not the session's events.
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
        count(*) FILTER (WHERE e.type = 'api_request' AND e.cost_usd IS NULL)
            AS unpriced_requests,
        count(*) FILTER (WHERE e.type = 'error') AS errors
    FROM events AS e
    WHERE e.session_id IS NOT NULL AND e.source IS DISTINCT FROM 'telemetryd'
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
        count(*) FILTER (WHERE failed(c.success, c.error)) AS tool_failures
    FROM tool_calls AS c
    WHERE c.session_id IS NOT NULL
    GROUP BY c.session_id
),
-- A session known from its transcript (imported) or without a SessionStart hook has
-- no session_start: its first prompt's working directory (attrs.cwd, which the hooks
-- and the import put there), read from prompts only (few: no JSON read of every event).
prompt_cwd AS (
    SELECT p.session_id, arg_min(p.cwd, p.ts) AS cwd
    FROM (
        SELECT e.session_id, e.ts, json_extract_string(e.attrs, '$.cwd') AS cwd
        FROM events AS e
        WHERE e.type = 'prompt' AND e.session_id IS NOT NULL
    ) AS p
    WHERE p.cwd IS NOT NULL
    GROUP BY p.session_id
)
SELECT
    s.session_id,
    s.source,
    coalesce(s.cwd, w.cwd) AS cwd,
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
    CASE WHEN s.api_requests > 0 THEN s.cost_usd ELSE 0 END AS cost_usd,
    s.unpriced_requests,
    coalesce(t.tool_calls, 0) AS tool_calls,
    coalesce(t.tool_failures, 0) AS tool_failures,
    s.errors,
    s.success,
    coalesce(d.attempts, 0) AS attempts
FROM per_session AS s
LEFT JOIN distinct_counts AS d ON d.session_id = s.session_id
LEFT JOIN tools AS t ON t.session_id = s.session_id
LEFT JOIN prompt_cwd AS w ON w.session_id = s.session_id;

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

-- Tool-call metadata of the agentic telemetry spec (ATS): a tool input's `metadata`
-- (TaskCreate/TaskUpdate: `metadata._dgm`) kept as attrs.ats of its tool_call and
-- tool_result events (adapters/ats.py; docs/ats.md). The typed columns show a value
-- only when it has the spec's JSON type (a string where a string belongs, ...); what a
-- producer sent is in `metadata` either way, and `ats_valid` / `ats_errors` say whether
-- it follows the spec and why not.
CREATE OR REPLACE MACRO ats_text(j, path) AS
    CASE WHEN json_type(j, path) = 'VARCHAR' THEN json_extract_string(j, path) END;
CREATE OR REPLACE MACRO ats_bool(j, path) AS
    CASE WHEN json_type(j, path) = 'BOOLEAN' THEN json_extract_string(j, path) = 'true' END;
CREATE OR REPLACE MACRO ats_number(j, path) AS
    CASE WHEN json_type(j, path) IN ('UBIGINT', 'BIGINT', 'DOUBLE')
        THEN TRY_CAST(json_extract_string(j, path) AS DOUBLE) END;

-- One row per tool use whose call or result carries attrs.ats: the use paired as in
-- `tool_calls` (started, ended, duration_ms, success, error), the metadata of its first
-- event that has it (the call's, usually: both carry the same input), and
-- outcome_signal, the KOTH outcome as the spec's telemetry hook sets it at PostToolUse:
-- the metadata's koth.outcome_signal when it is final (win, loss, draw), else 'win' or
-- 'loss' from the result's success, else 'pending' (no result yet, or none known).
CREATE OR REPLACE VIEW ats_tool_uses AS
WITH marked AS (
    SELECT
        e.id, e.ts, e.session_id, e.tool_use_id, e.tool_name,
        json_extract(e.attrs, '$.ats') AS ats
    FROM events AS e
    WHERE e.type IN ('tool_call', 'tool_result')
        AND contains(CAST(e.attrs AS VARCHAR), '"ats":')
),
uses AS (
    SELECT
        m.session_id,
        m.tool_use_id,
        coalesce(m.tool_use_id, m.id) AS use_key,
        arg_min(m.ats, m.ts) AS ats,
        arg_min(m.id, m.ts) AS event_id,
        arg_min(m.tool_name, m.ts) AS tool_name
    FROM marked AS m
    WHERE json_type(m.ats) = 'OBJECT'
    GROUP BY m.session_id, m.tool_use_id, coalesce(m.tool_use_id, m.id)
),
tool_events AS (
    SELECT u.session_id, u.use_key, e.type, e.ts, e.duration_ms, e.tool_success, e.tool_error
    FROM uses AS u
    JOIN events AS e
        ON e.tool_use_id = u.tool_use_id AND e.session_id IS NOT DISTINCT FROM u.session_id
    WHERE u.tool_use_id IS NOT NULL AND e.type IN ('tool_call', 'tool_result')
    UNION ALL
    SELECT u.session_id, u.use_key, e.type, e.ts, e.duration_ms, e.tool_success, e.tool_error
    FROM uses AS u
    JOIN events AS e ON e.id = u.use_key
    WHERE u.tool_use_id IS NULL
),
outcomes AS (
    SELECT
        t.session_id,
        t.use_key,
        min(t.ts) FILTER (WHERE t.type = 'tool_call') AS called,
        max(t.ts) FILTER (WHERE t.type = 'tool_result') AS ended,
        arg_max(t.duration_ms, t.ts) FILTER (WHERE t.type = 'tool_result') AS result_duration_ms,
        arg_max(t.tool_success, t.ts) FILTER (WHERE t.type = 'tool_result') AS success,
        arg_max(t.tool_error, t.ts) FILTER (WHERE t.type = 'tool_result') AS error
    FROM tool_events AS t
    GROUP BY t.session_id, t.use_key
),
typed AS (
    SELECT
        u.session_id,
        u.tool_use_id,
        u.tool_name,
        coalesce(o.called, o.ended - to_milliseconds(coalesce(o.result_duration_ms, 0)))
            AS started,
        o.ended,
        coalesce(
            o.result_duration_ms,
            CASE WHEN o.ended >= o.called THEN datediff('millisecond', o.called, o.ended) END
        ) AS duration_ms,
        o.success,
        CASE WHEN o.success IS NOT TRUE THEN o.error END AS error,
        ats_text(u.ats, '$.metadata.source') AS ats_source,
        TRY_CAST(json_extract_string(u.ats, '$.tier') AS INTEGER) AS tier,
        coalesce(ats_bool(u.ats, '$.valid'), false) AS ats_valid,
        json_extract_string(u.ats, '$.errors[*]') AS ats_errors,
        ats_text(u.ats, '$.at') AS ats_at,
        coalesce(ats_bool(u.ats, '$.has_legacy_compat'), false) AS has_legacy_compat,
        coalesce(ats_bool(u.ats, '$.truncated'), false) AS ats_truncated,
        ats_text(u.ats, '$.metadata.koth.outcome_signal') AS declared_outcome_signal,
        ats_text(u.ats, '$.metadata._compat.schema_version') AS schema_version,
        json_extract(u.ats, '$.metadata') AS metadata,
        u.event_id
    FROM uses AS u
    LEFT JOIN outcomes AS o
        ON o.use_key = u.use_key AND o.session_id IS NOT DISTINCT FROM u.session_id
)
SELECT
    t.*,
    CASE
        WHEN t.declared_outcome_signal IN ('win', 'loss', 'draw') THEN t.declared_outcome_signal
        WHEN t.success THEN 'win'
        WHEN NOT t.success THEN 'loss'
        ELSE 'pending'
    END AS outcome_signal
FROM typed AS t;

-- Provenance (session -> agent -> skill/hook -> tool), one row per ATS tool use:
-- the immediate caller (caller_type, caller_name; ats_source is the metadata's
-- `<caller_type>:<caller_name>` string), the sub-agent instance (agent_id), the chain
-- of callers above it from the outermost (caller_chain; chain_depth its length) and
-- chain_path, the whole path as text: each caller of the chain, the immediate caller
-- and the tool, as `type:name` joined by ' > '. provenance_session_id is the session the
-- metadata names; session_matches whether it is the event's.
CREATE OR REPLACE VIEW ats_provenance AS
WITH p AS (
    SELECT
        u.*,
        json_extract(u.metadata, '$.provenance') AS prov,
        list_transform(
            json_extract(u.metadata, '$.provenance.caller_chain[*]'),
            lambda x: {
                'caller_type': ats_text(x, '$.caller_type'),
                'caller_name': ats_text(x, '$.caller_name'),
                'agent_id': ats_text(x, '$.agent_id')
            }
        ) AS chain
    FROM ats_tool_uses AS u
)
SELECT
    p.started AS timestamp,
    p.session_id,
    p.tool_use_id,
    p.tool_name,
    p.ats_source,
    ats_text(p.prov, '$.caller_type') AS caller_type,
    ats_text(p.prov, '$.caller_name') AS caller_name,
    ats_text(p.prov, '$.agent_id') AS agent_id,
    p.chain AS caller_chain,
    len(p.chain) AS chain_depth,
    array_to_string(
        list_concat(
            list_transform(p.chain, lambda c: c.caller_type || ':' || c.caller_name),
            [ats_text(p.prov, '$.caller_type') || ':' || ats_text(p.prov, '$.caller_name'),
             'tool:' || p.tool_name]
        ),
        ' > '
    ) AS chain_path,
    ats_text(p.prov, '$.session_id') AS provenance_session_id,
    ats_text(p.prov, '$.session_id') = p.session_id AS session_matches,
    ats_text(p.prov, '$.project_path_hash') AS project_path_hash,
    ats_text(p.prov, '$.timestamp_utc') AS timestamp_utc,
    p.tier,
    p.has_legacy_compat,
    p.ats_valid,
    p.ats_errors,
    p.event_id
FROM p;

-- A/B assignments: one row per ATS tool use with an `experiment` block, its outcome
-- (outcome_signal, success, duration_ms) beside the assignment. ab_results(experiment_id)
-- (macros.sql) sums them per variant.
CREATE OR REPLACE VIEW ats_experiments AS
SELECT
    u.started AS timestamp,
    u.session_id,
    u.tool_use_id,
    u.tool_name,
    ats_text(u.metadata, '$.experiment.experiment_id') AS experiment_id,
    ats_text(u.metadata, '$.experiment.variant_id') AS variant_id,
    ats_text(u.metadata, '$.experiment.template_id') AS template_id,
    ats_text(u.metadata, '$.experiment.template_version') AS template_version,
    ats_text(u.metadata, '$.experiment.assignment_method') AS assignment_method,
    ats_text(u.metadata, '$.experiment.treatment_group') AS treatment_group,
    u.started,
    u.ended,
    u.duration_ms,
    u.success,
    u.outcome_signal,
    u.tier,
    u.ats_valid,
    u.ats_errors,
    u.event_id
FROM ats_tool_uses AS u
WHERE json_type(u.metadata, '$.experiment') = 'OBJECT';

-- KOTH/Oracle signals: one row per ATS tool use with a `koth` block. confidence is
-- oracle_recommendation_confidence; declared_outcome_signal the metadata's own,
-- outcome_signal as ats_tool_uses derives it; domain the koth_domain.
CREATE OR REPLACE VIEW ats_koth AS
SELECT
    u.started AS timestamp,
    u.session_id,
    u.tool_use_id,
    u.tool_name,
    ats_text(u.metadata, '$.provenance.caller_name') AS caller_name,
    ats_bool(u.metadata, '$.koth.oracle_consulted') AS oracle_consulted,
    ats_text(u.metadata, '$.koth.oracle_recommended_agent') AS recommended_agent,
    ats_number(u.metadata, '$.koth.oracle_recommendation_confidence') AS confidence,
    CASE WHEN json_type(u.metadata, '$.koth.agents_in_options') = 'ARRAY'
        THEN list_filter(
            list_transform(
                json_extract(u.metadata, '$.koth.agents_in_options[*]'), lambda x: ats_text(x, '$')
            ),
            lambda x: x IS NOT NULL
        )
    END AS agents_in_options,
    ats_text(u.metadata, '$.koth.koth_domain') AS domain,
    ats_text(u.metadata, '$.koth.question_type') AS question_type,
    u.declared_outcome_signal,
    u.outcome_signal,
    u.success,
    u.tier,
    u.ats_valid,
    u.ats_errors,
    u.event_id
FROM ats_tool_uses AS u
WHERE json_type(u.metadata, '$.koth') = 'OBJECT';

-- Decision Logger join keys: one row per ATS tool use with a `decision` block.
CREATE OR REPLACE VIEW ats_decisions AS
SELECT
    u.started AS timestamp,
    u.session_id,
    u.tool_use_id,
    u.tool_name,
    ats_text(u.metadata, '$.decision.decision_id') AS decision_id,
    ats_text(u.metadata, '$.decision.parent_decision_id') AS parent_decision_id,
    ats_text(u.metadata, '$.decision.signal_type') AS signal_type,
    ats_text(u.metadata, '$.decision.intent_classification') AS intent_classification,
    ats_text(u.metadata, '$.decision.entity_id') AS entity_id,
    ats_text(u.metadata, '$.decision.decision_domain') AS decision_domain,
    u.outcome_signal,
    u.success,
    u.tier,
    u.ats_valid,
    u.ats_errors,
    u.event_id
FROM ats_tool_uses AS u
WHERE json_type(u.metadata, '$.decision') = 'OBJECT';
