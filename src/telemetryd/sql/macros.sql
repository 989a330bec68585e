-- Parameterized reports: table macros over the views, recreated every time the store opens.
-- `SELECT * FROM cost_by_model(days := 30)`. Each has a COMMENT: its one-line description
-- (`telemetryctl reports` lists them from duckdb_functions()). Inside a macro an unqualified
-- name that is also a parameter means the parameter: columns are qualified.
-- `days` counts back from now over event times (ts), in UTC.

-- The current UTC time as a TIMESTAMP, comparable with the stored times.
CREATE OR REPLACE MACRO utc_now() AS make_timestamp(epoch_us(now()));

CREATE OR REPLACE MACRO cost_by_model(days := 7) AS TABLE
SELECT
    r.model,
    sum(r.input_tokens) AS total_input,
    sum(r.output_tokens) AS total_output,
    sum(r.cost_usd) AS total_cost_usd,
    count(*) AS request_count
FROM api_requests AS r
WHERE r.timestamp >= utc_now() - to_days(CAST(days AS INTEGER))
GROUP BY r.model
ORDER BY total_cost_usd DESC NULLS LAST, r.model;
COMMENT ON MACRO TABLE cost_by_model IS
    'Tokens, cost and requests per model over the last `days` days';

-- est_cost_usd prices each activation's tokens at its model's average cost per token
-- over the same days (sum of cost_usd / sum of tokens of its api_requests): an estimate.
CREATE OR REPLACE MACRO agent_usage_summary(days := 7) AS TABLE
WITH prices AS (
    SELECT
        r.model,
        sum(r.cost_usd) / nullif(
            sum(r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_creation_tokens),
            0
        ) AS usd_per_token
    FROM api_requests AS r
    WHERE r.timestamp >= utc_now() - to_days(CAST(days AS INTEGER))
        AND r.cost_usd IS NOT NULL AND r.input_tokens IS NOT NULL
    GROUP BY r.model
)
SELECT
    a.agent_type,
    count(*) AS invocations,
    sum(a.input_tokens) AS total_input,
    sum(a.output_tokens) AS total_output,
    sum(a.cache_read_tokens) AS total_cache_read,
    avg(a.duration_ms) AS avg_duration_ms,
    sum(
        (a.input_tokens + a.output_tokens + a.cache_read_tokens + a.cache_creation_tokens)
        * p.usd_per_token
    ) AS est_cost_usd
FROM agent_activations AS a
LEFT JOIN prices AS p ON p.model = a.model
WHERE a.event = 'stop' AND a.timestamp >= utc_now() - to_days(CAST(days AS INTEGER))
GROUP BY a.agent_type
ORDER BY invocations DESC, a.agent_type;
COMMENT ON MACRO TABLE agent_usage_summary IS
    'Sub-agent activations per agent type: tokens, average duration, estimated cost';

CREATE OR REPLACE MACRO skill_frequency(days := 7) AS TABLE
SELECT
    s.skill_name,
    count(*) AS activations,
    count(*) FILTER (WHERE s.success) AS successes,
    avg(s.duration_ms) AS avg_duration_ms
FROM skill_activations AS s
WHERE s.timestamp >= utc_now() - to_days(CAST(days AS INTEGER))
GROUP BY s.skill_name
ORDER BY activations DESC, s.skill_name;
COMMENT ON MACRO TABLE skill_frequency IS
    'Skill activations and successes per skill over the last `days` days';

-- session_id NULL (the default): every session that started in the last `days` days.
CREATE OR REPLACE MACRO session_overview(session_id := NULL, days := 7) AS TABLE
SELECT
    s.session_id,
    s.agents_used,
    s.skills_used,
    s.total_tokens,
    s.cost_usd AS total_cost_usd
FROM sessions AS s
WHERE (session_id IS NULL OR s.session_id = session_id)
    AND s.started >= utc_now() - to_days(CAST(days AS INTEGER))
ORDER BY s.started DESC, s.session_id;
COMMENT ON MACRO TABLE session_overview IS
    'Agents, skills, tokens and cost of one session (or of every recent one)';

-- Per agent type: est. cost per invocation, tokens per invocation, invocations, and
-- efficiency_score: output tokens per 1,000 tokens of context (input and cache) consumed.
CREATE OR REPLACE MACRO optimization_insights(days := 7) AS TABLE
SELECT
    u.agent_type,
    u.est_cost_usd / u.invocations AS avg_cost_per_invocation,
    (coalesce(u.total_input, 0) + coalesce(u.total_output, 0)) / u.invocations AS avg_tokens,
    u.invocations AS frequency,
    round(
        1000.0 * u.total_output / nullif(coalesce(u.total_input, 0) + coalesce(u.total_cache_read, 0), 0),
        1
    ) AS efficiency_score
FROM agent_usage_summary(days := days) AS u
ORDER BY avg_cost_per_invocation DESC NULLS LAST, u.agent_type;
COMMENT ON MACRO TABLE optimization_insights IS
    'Per agent type: cost and tokens per invocation, frequency, output per 1k context tokens';

CREATE OR REPLACE MACRO recent_event_count(type := NULL, seconds := 60) AS TABLE
SELECT count(*) AS events
FROM events AS e
WHERE (type IS NULL OR e.type = type)
    AND e.ts >= utc_now() - to_microseconds(CAST(seconds * 1000000.0 AS BIGINT));
COMMENT ON MACRO TABLE recent_event_count IS
    'Events (of one type, or all) in the last `seconds` seconds';

-- Spans form a tree through parent_span_id (a span whose parent is not in the trace is
-- a root, depth 0); events are listed depth first, children after their parent and
-- siblings by start time; events without a span_id come last, by time.
CREATE OR REPLACE MACRO trace(trace_id) AS TABLE
WITH RECURSIVE
    spans AS (
        SELECT e.span_id, any_value(e.parent_span_id) AS parent, min(e.ts) AS started
        FROM events AS e
        WHERE e.trace_id = trace_id AND e.span_id IS NOT NULL
        GROUP BY e.span_id
    ),
    tree AS (
        SELECT s.span_id, 0 AS depth, [struct_pack(t := s.started, s := s.span_id)] AS path
        FROM spans AS s
        WHERE s.parent IS NULL OR s.parent NOT IN (SELECT p.span_id FROM spans AS p)
        UNION ALL
        SELECT
            s.span_id,
            tree.depth + 1,
            list_append(tree.path, struct_pack(t := s.started, s := s.span_id))
        FROM spans AS s
        JOIN tree ON s.parent = tree.span_id
    )
SELECT
    tree.depth,
    e.ts AS timestamp,
    e.duration_ms,
    e.type,
    coalesce(e.tool_name, e.name, e.event, e.message, e.agent_type) AS what,
    e.span_id,
    e.parent_span_id,
    e.id,
    e.session_id,
    e.source,
    e.agent_model AS model,
    coalesce(e.tool_success, e.success) AS success,
    coalesce(e.tool_error, e.error) AS error
FROM events AS e
LEFT JOIN tree ON tree.span_id = e.span_id
WHERE e.trace_id = trace_id
ORDER BY tree.path NULLS LAST, e.ts, e.id;
COMMENT ON MACRO TABLE trace IS
    'Every event of one trace in span order, with its depth in the span tree';
