-- Parameterized reports: table macros over the views, recreated every time the store opens.
-- `SELECT * FROM cost_by_model(days := 30)`. Each has a COMMENT: its one-line description
-- (`telemetryctl reports` lists them from duckdb_functions()). Inside a macro an unqualified
-- name that is also a parameter means the parameter: columns are qualified.
-- `days` counts back from now over event times (ts), in UTC; a fraction is part of a day.

-- The current UTC time as a TIMESTAMP, comparable with the stored times.
CREATE OR REPLACE MACRO utc_now() AS make_timestamp(epoch_us(now()));

-- The time `days` days before now (0.5: twelve hours ago).
CREATE OR REPLACE MACRO days_ago(days) AS
    utc_now() - to_microseconds(CAST(days * 86400000000.0 AS BIGINT));

-- Whether a request ran in fast mode (Claude's `speed: "fast"` in attrs; a model of its
-- own in reports and prices). Parsed only where the text names the key: the canonical form
-- never escapes a key's letters, and parsing every request's attrs would be most of a
-- report. usage_quarters stores its value: a change here bumps the store's SCHEMA_VERSION.
CREATE OR REPLACE MACRO fast_mode(attrs) AS
    CASE WHEN contains(CAST(attrs AS VARCHAR), '"speed"')
        THEN coalesce(json_extract_string(attrs, '$.speed') = 'fast', false) ELSE false END;

CREATE OR REPLACE MACRO cost_by_model(days := 7) AS TABLE
SELECT
    r.model,
    sum(r.input_tokens) AS total_input,
    sum(r.output_tokens) AS total_output,
    sum(r.cost_usd) AS total_cost_usd,
    count(*) AS request_count
FROM api_requests AS r
WHERE r.timestamp >= days_ago(days)
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
    WHERE r.timestamp >= days_ago(days)
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
WHERE a.event = 'stop' AND a.timestamp >= days_ago(days)
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
WHERE s.timestamp >= days_ago(days)
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
    s.cost_usd AS total_cost_usd,
    s.unpriced_requests
FROM sessions AS s
WHERE (session_id IS NULL AND s.started >= days_ago(days))
    OR s.session_id = session_id  -- (a session named: whenever it was)
ORDER BY s.started DESC, s.session_id;
COMMENT ON MACRO TABLE session_overview IS
    'Agents, skills, tokens and cost of one session, whenever it was (or of every one of the last `days`)';

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
-- siblings by start time; events without a span_id come last, by time. Where a span's
-- events disagree on its parent, its (first) `span` event says, else its first event
-- that names one: as `telemetryctl trace` (client/traces.py) builds the tree.
CREATE OR REPLACE MACRO trace(trace_id) AS TABLE
WITH RECURSIVE
    spans AS (
        SELECT
            e.span_id,
            coalesce(
                arg_min_null(e.parent_span_id, (e.ts, e.id)) FILTER (WHERE e.type = 'span'),
                arg_min(e.parent_span_id, (e.ts, e.id))
            ) AS parent,
            min(e.ts) AS started
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

-- -- Analytics (docs/analytics.md) ---------------------------------------------------
-- An attempt is one `run` event's attempt_id, counted when its run event is among the
-- last `days` days (of several run events with one attempt_id, the latest: by ts, then
-- id). It spans [ts - elapsed_ms.wall, ts]. Its events (attempt_events) are every
-- other event whose envelope names it (task.attempt_id), and every event without a
-- task.attempt_id in the run's session within that span, whatever their own times.

CREATE OR REPLACE MACRO attempt_events(days := 7) AS TABLE
WITH latest AS (
    SELECT
        e.id,
        e.attempt_id,
        e.session_id,
        e.ts - to_milliseconds(e.elapsed_wall_ms) AS started,
        e.ts AS ended
    FROM events AS e
    WHERE e.type = 'run' AND e.ts >= days_ago(days)
    QUALIFY row_number() OVER (PARTITION BY e.attempt_id ORDER BY e.ts DESC, e.id DESC) = 1
)
SELECT l.attempt_id, l.id AS event_id, 'run' AS type, l.ended AS timestamp, 'run' AS matched_by
FROM latest AS l
UNION ALL
SELECT l.attempt_id, e.id, e.type, e.ts, 'task'
FROM latest AS l
JOIN events AS e ON e.task_attempt_id = l.attempt_id
WHERE e.type <> 'run'
UNION ALL
SELECT l.attempt_id, e.id, e.type, e.ts, 'session'
FROM latest AS l
JOIN events AS e
    ON e.session_id = l.session_id AND e.ts >= l.started AND e.ts <= l.ended
WHERE e.type <> 'run' AND e.task_attempt_id IS NULL;
COMMENT ON MACRO TABLE attempt_events IS
    'Events of each attempt (run) of the last `days` days: its run event, every event with its task.attempt_id, and every event without one in its session between ts - elapsed_ms.wall and ts (matched_by: run, task, session)';

-- One row per attempt: its run event's fields and counts over its attempt_events.
-- errors and tool_failures are rows of the `errors` view (tool_failures: kind 'tool');
-- an anomaly action is an `alert` event with a non-empty attrs.action (what was done
-- about the anomaly: nudge, abort, reroute, ...); an auto-resume is a `custom` event
-- named 'auto_resume'.
-- It matches events to attempts as attempt_events does, but only the events it counts
-- (requests, errors, failed tool results, alerts, auto-resumes: a fraction of all) and
-- with the columns it counts: the runs, one per attempt, are the joins' small side, and
-- no event is looked up again by id (a join over every event, which at 10M events needs
-- more than the store's memory).
CREATE OR REPLACE MACRO attempts(days := 7) AS TABLE
WITH
    latest AS (
        SELECT e.*
        FROM events AS e
        WHERE e.type = 'run' AND e.ts >= days_ago(days)
        QUALIFY row_number() OVER (PARTITION BY e.attempt_id ORDER BY e.ts DESC, e.id DESC) = 1
    ),
    counted AS (
        SELECT
            e.session_id,
            e.task_attempt_id,
            e.ts,
            e.type = 'api_request' AS request,
            CASE WHEN e.type = 'api_request' THEN e.cost_usd END AS cost_usd,
            e.type IN ('error', 'tool_result')
                OR (e.type = 'api_request' AND failed(e.success, e.error)) AS error,
            e.type = 'tool_result' AS tool_failure,
            e.type = 'alert' AS alert,
            CASE
                WHEN e.type = 'alert'
                    THEN nullif(json_extract_string(e.attrs, '$.action'), '') IS NOT NULL
                ELSE false
            END AS anomaly_action,
            e.type = 'custom' AS auto_resume
        FROM events AS e
        WHERE e.type IN ('api_request', 'error', 'alert')
            OR (e.type = 'tool_result' AND failed(e.tool_success, e.tool_error))
            OR (e.type = 'custom' AND e.name = 'auto_resume')
    ),
    matched AS (
        SELECT l.attempt_id, c.*
        FROM latest AS l
        JOIN counted AS c ON c.task_attempt_id = l.attempt_id
        UNION ALL
        SELECT l.attempt_id, c.*
        FROM latest AS l
        JOIN counted AS c
            ON c.session_id = l.session_id
                AND c.ts >= l.ts - to_milliseconds(l.elapsed_wall_ms) AND c.ts <= l.ts
        WHERE c.task_attempt_id IS NULL
    ),
    counts AS (
        SELECT
            m.attempt_id,
            count(*) FILTER (WHERE m.request) AS requests,
            coalesce(sum(m.cost_usd), 0) AS cost_usd,
            count(*) FILTER (WHERE m.error) AS errors,
            count(*) FILTER (WHERE m.tool_failure) AS tool_failures,
            count(*) FILTER (WHERE m.alert) AS alerts,
            count(*) FILTER (WHERE m.anomaly_action) AS anomaly_actions,
            count(*) FILTER (WHERE m.auto_resume) AS auto_resumes
        FROM matched AS m
        GROUP BY m.attempt_id
    )
SELECT
    r.attempt_id,
    r.attempt_index,
    r.task_id,
    r.task_title,
    r.session_id,
    r.agent_model AS model,
    r.agent_provider AS provider,
    r.ts - to_milliseconds(r.elapsed_wall_ms) AS started,
    r.ts AS ended,
    r.outcome,
    r.outcome_reason,
    r.retry_same_model,
    r.retry_reroute,
    coalesce(c.requests, 0) AS requests,
    coalesce(c.cost_usd, 0) AS cost_usd,
    coalesce(c.errors, 0) AS errors,
    coalesce(c.tool_failures, 0) AS tool_failures,
    coalesce(c.alerts, 0) AS alerts,
    coalesce(c.anomaly_actions, 0) AS anomaly_actions,
    coalesce(c.auto_resumes, 0) AS auto_resumes
FROM latest AS r
LEFT JOIN counts AS c ON c.attempt_id = r.attempt_id
ORDER BY ended DESC, r.attempt_id;
COMMENT ON MACRO TABLE attempts IS
    'One row per attempt (run) of the last `days` days with counts over its attempt_events: requests, cost_usd, errors, tool_failures, alerts, anomaly_actions (alerts with attrs.action), auto_resumes (custom events named auto_resume)';

CREATE OR REPLACE MACRO model_quality(days := 7, cost_weight := 0.1, error_weight := 0.05) AS TABLE
WITH per_model AS (
    SELECT
        a.model,
        count(*) AS attempts,
        count(*) FILTER (WHERE a.outcome = 'done') / count(*) AS success_rate,
        avg(a.cost_usd) AS avg_cost_usd,
        avg(a.errors) AS avg_errors,
        count(*) FILTER (WHERE a.retry_same_model + a.retry_reroute > 0) / count(*)
            AS retry_rate
    FROM attempts(days := days) AS a
    GROUP BY a.model
)
SELECT
    m.*,
    m.success_rate
        - m.avg_cost_usd * CAST(cost_weight AS DOUBLE)
        - m.avg_errors * CAST(error_weight AS DOUBLE) AS score
FROM per_model AS m
ORDER BY score DESC, m.model NULLS LAST;
COMMENT ON MACRO TABLE model_quality IS
    'Per model, over its attempts: success_rate = done / attempts, avg_cost_usd, avg_errors, retry_rate = attempts with a retry / attempts; score = success_rate - avg_cost_usd * cost_weight - avg_errors * error_weight';

-- first_shot_rate: of the first attempts at a task (attempt_index 0), the share done
-- without a retry.
CREATE OR REPLACE MACRO run_outcomes(days := 7) AS TABLE
WITH per_model AS (
    SELECT
        a.model,
        count(*) AS attempts,
        count(*) FILTER (WHERE a.attempt_index = 0) AS first_attempts,
        count(*) FILTER (
            WHERE a.attempt_index = 0 AND a.outcome = 'done'
                AND a.retry_same_model + a.retry_reroute = 0
        ) AS first_shot_successes,
        count(*) FILTER (WHERE a.retry_same_model > 0) AS retried_same_model,
        count(*) FILTER (WHERE a.retry_reroute > 0) AS rerouted,
        sum(a.retry_same_model) AS same_model_retries,
        sum(a.retry_reroute) AS reroutes,
        count(*) FILTER (WHERE a.outcome = 'done') AS done,
        count(*) FILTER (WHERE a.outcome = 'blocked') AS blocked,
        count(*) FILTER (WHERE a.outcome = 'redo') AS redo
    FROM attempts(days := days) AS a
    GROUP BY a.model
)
SELECT
    m.model,
    m.attempts,
    m.first_attempts,
    m.first_shot_successes,
    m.first_shot_successes / nullif(m.first_attempts, 0) AS first_shot_rate,
    m.retried_same_model,
    m.rerouted,
    m.same_model_retries,
    m.reroutes,
    m.done,
    m.blocked,
    m.redo
FROM per_model AS m
ORDER BY m.attempts DESC, m.model NULLS LAST;
COMMENT ON MACRO TABLE run_outcomes IS
    'Per model, from run events: attempts; first_shot_rate = first attempts (attempt_index 0) done without a retry / first attempts; attempts retried on the same model and rerouted, their retries; done, blocked, redo';

-- A task is listed when any threshold is met; reasons names which. Error categories come
-- from the `errors` view rows of the tasked attempts' events, matched as attempt_events
-- does, among the events that can be errors only.
CREATE OR REPLACE MACRO task_risk(
    days := 7, min_attempts := 3, min_tool_failures := 3, min_repeats := 3
) AS TABLE
WITH
    tasked AS (SELECT * FROM attempts(days := days) AS a WHERE a.task_id IS NOT NULL),
    failures AS (
        SELECT e.id, e.session_id, e.task_attempt_id, e.ts
        FROM events AS e
        WHERE e.type = 'error'
            OR (e.type = 'tool_result' AND failed(e.tool_success, e.tool_error))
            OR (e.type = 'api_request' AND failed(e.success, e.error))
    ),
    matched AS (
        SELECT t.task_id, f.id
        FROM tasked AS t
        JOIN failures AS f ON f.task_attempt_id = t.attempt_id
        UNION ALL
        SELECT t.task_id, f.id
        FROM tasked AS t
        JOIN failures AS f
            ON f.session_id = t.session_id AND f.ts >= t.started AND f.ts <= t.ended
        WHERE f.task_attempt_id IS NULL
    ),
    categories AS (
        SELECT m.task_id, x.category, count(*) AS n
        FROM matched AS m
        JOIN errors AS x ON x.event_id = m.id
        GROUP BY m.task_id, x.category
    ),
    repeats AS (
        SELECT
            c.task_id,
            list(c.category ORDER BY c.n DESC, c.category)[1] AS top_category,
            max(c.n) AS top_category_errors,
            list(c.category ORDER BY c.n DESC, c.category) FILTER (WHERE c.n >= min_repeats)
                AS repeated_categories
        FROM categories AS c
        GROUP BY c.task_id
    ),
    per_task AS (
        SELECT
            t.task_id,
            arg_max(t.task_title, t.ended) AS task_title,
            count(*) AS attempts,
            count(*) FILTER (WHERE t.outcome = 'done') AS done,
            count(*) FILTER (WHERE t.outcome = 'blocked') AS blocked,
            count(*) FILTER (WHERE t.outcome = 'redo') AS redo,
            sum(t.tool_failures) AS tool_failures,
            sum(t.errors) AS errors
        FROM tasked AS t
        GROUP BY t.task_id
    ),
    flagged AS (
        SELECT
            p.*,
            r.top_category,
            coalesce(r.top_category_errors, 0) AS top_category_errors,
            coalesce(r.repeated_categories, []) AS repeated_categories,
            concat_ws(
                ',',
                CASE WHEN p.attempts >= min_attempts THEN 'attempts' END,
                CASE WHEN p.tool_failures >= min_tool_failures THEN 'tool_failures' END,
                CASE WHEN r.top_category_errors >= min_repeats THEN 'repeated_errors' END
            ) AS reasons
        FROM per_task AS p
        LEFT JOIN repeats AS r ON r.task_id = p.task_id
    )
SELECT f.*
FROM flagged AS f
WHERE f.reasons <> ''
ORDER BY
    length(f.reasons) - length(replace(f.reasons, ',', '')) DESC,
    f.attempts DESC,
    f.tool_failures DESC,
    f.errors DESC,
    f.task_id;
COMMENT ON MACRO TABLE task_risk IS
    'Tasks at risk: attempts >= min_attempts, tool_failures >= min_tool_failures, or one error category repeated >= min_repeats times over the task''s attempts (reasons names which)';

-- Heat map data: failed tool results are left out (a tool is not the provider's);
-- errors_per_request divides by the provider's api_request events of that day.
CREATE OR REPLACE MACRO provider_reliability(days := 7) AS TABLE
WITH
    failed AS (
        SELECT
            CAST(x.timestamp AS DATE) AS day,
            x.provider,
            x.category,
            count(*) AS errors
        FROM errors AS x
        WHERE x.kind <> 'tool' AND x.timestamp >= days_ago(days)
        GROUP BY ALL
    ),
    requests AS (
        SELECT CAST(e.ts AS DATE) AS day, e.agent_provider AS provider, count(*) AS requests
        FROM events AS e
        WHERE e.type = 'api_request' AND e.ts >= days_ago(days)
        GROUP BY ALL
    )
SELECT
    f.day,
    f.provider,
    f.category,
    f.errors,
    coalesce(r.requests, 0) AS requests,
    f.errors / nullif(r.requests, 0) AS errors_per_request
FROM failed AS f
LEFT JOIN requests AS r ON r.day = f.day AND r.provider IS NOT DISTINCT FROM f.provider
ORDER BY f.day, f.provider NULLS LAST, f.category;
COMMENT ON MACRO TABLE provider_reliability IS
    'Errors per UTC day, provider and category (failed tool results left out); errors_per_request = errors / that day''s api_request events of the provider';

CREATE OR REPLACE MACRO intervention_effectiveness(days := 7) AS TABLE
WITH
    a AS (SELECT * FROM attempts(days := days)),
    marked AS (
        SELECT 'anomaly_action' AS intervention, a.anomaly_actions > 0 AS applied, a.outcome
        FROM a
        UNION ALL
        SELECT 'auto_resume', a.auto_resumes > 0, a.outcome
        FROM a
    ),
    counted AS (
        SELECT
            m.intervention,
            count(*) FILTER (WHERE m.applied) AS attempts_with,
            count(*) FILTER (WHERE m.applied AND m.outcome = 'done') AS done_with,
            count(*) FILTER (WHERE NOT m.applied) AS attempts_without,
            count(*) FILTER (WHERE NOT m.applied AND m.outcome = 'done') AS done_without
        FROM marked AS m
        GROUP BY m.intervention
    ),
    -- (both rows, with zero counts when the window has no attempts)
    c AS (
        SELECT
            i.intervention,
            coalesce(n.attempts_with, 0) AS attempts_with,
            coalesce(n.done_with, 0) AS done_with,
            coalesce(n.attempts_without, 0) AS attempts_without,
            coalesce(n.done_without, 0) AS done_without
        FROM (VALUES ('anomaly_action'), ('auto_resume')) AS i(intervention)
        LEFT JOIN counted AS n ON n.intervention = i.intervention
    )
SELECT
    c.intervention,
    c.attempts_with,
    c.done_with,
    c.done_with / nullif(c.attempts_with, 0) AS success_rate_with,
    c.attempts_without,
    c.done_without,
    c.done_without / nullif(c.attempts_without, 0) AS success_rate_without,
    c.done_with / nullif(c.attempts_with, 0) - c.done_without / nullif(c.attempts_without, 0)
        AS difference
FROM c
ORDER BY c.intervention;
COMMENT ON MACRO TABLE intervention_effectiveness IS
    'Success rate (done / attempts) of attempts with and without an anomaly action (an alert with attrs.action) and an auto-resume (a custom event named auto_resume); difference = with - without';

CREATE OR REPLACE MACRO guardrail_gaps(days := 7) AS TABLE
SELECT
    x.category,
    x.fingerprint,
    count(*) AS errors,
    count(DISTINCT x.session_id) AS sessions,
    min(x.timestamp) AS first_seen,
    max(x.timestamp) AS last_seen,
    coalesce(list_sort(list(DISTINCT x.tool_name) FILTER (WHERE x.tool_name IS NOT NULL)), [])
        AS tools,
    arg_min(x.normalised, x.timestamp) AS example
FROM errors AS x
WHERE x.category IN ('permission', 'auth', 'content_policy')
    AND x.timestamp >= days_ago(days)
GROUP BY x.category, x.fingerprint
ORDER BY errors DESC, x.category, x.fingerprint;
COMMENT ON MACRO TABLE guardrail_gaps IS
    'Permission, auth and content-policy errors clustered by category and fingerprint: errors, sessions, first and last seen, tools, the earliest normalised message';

-- ts_packed(ts, value) packs a time and a BIGINT into one HUGEINT that orders by time,
-- then by value: max(ts_packed(ts, v)) unpacked is the v of the latest row whose v is not
-- NULL (ties: the largest), min(...) of the earliest (ties: the smallest). arg_max(v, ts)
-- gives the same but keeps a bigger state per group, which matters with millions of groups.
CREATE OR REPLACE MACRO ts_packed(ts, value) AS
    CAST(epoch_us(ts) AS HUGEINT) * 18446744073709551616
        + (CAST(value AS HUGEINT) + 9223372036854775808);
CREATE OR REPLACE MACRO ts_unpacked(packed) AS
    CAST((packed & 18446744073709551615) - 9223372036854775808 AS BIGINT);

-- The tool uses of the tool_calls view, paired here the same way (by session and use id;
-- the first named event's tool name, the first call, the last result, the latest result's
-- duration and success flag where given, an error in any result) but with fixed-size
-- states: tool names as numbers (their rank), times and values packed (ts_packed). At 10M
-- events the view's string and arg_max states take ~2x longer, spilling to disk. Where
-- two of a use's events have the same time, the view takes either one's; this takes the
-- larger duration, success over failure, and the first tool name in sort order.
CREATE OR REPLACE MACRO tool_reliability(days := 7) AS TABLE
WITH
    names AS (
        SELECT n.tool_name, row_number() OVER (ORDER BY n.tool_name) AS code
        FROM (
            SELECT DISTINCT e.tool_name
            FROM events AS e
            WHERE e.type IN ('tool_call', 'tool_result') AND e.tool_name IS NOT NULL
        ) AS n
    ),
    paired AS (
        SELECT
            ts_unpacked(min(ts_packed(e.ts, n.code))) AS code,
            min(e.ts) FILTER (WHERE e.type = 'tool_call') AS called,
            max(e.ts) FILTER (WHERE e.type = 'tool_result') AS ended,
            ts_unpacked(max(ts_packed(e.ts, e.duration_ms)) FILTER (WHERE e.type = 'tool_result'))
                AS result_duration_ms,
            ts_unpacked(
                max(ts_packed(e.ts, CAST(e.tool_success AS BIGINT)))
                    FILTER (WHERE e.type = 'tool_result')
            ) = 1 AS success,
            bool_or(e.tool_error IS NOT NULL) FILTER (WHERE e.type = 'tool_result') AS errored
        FROM events AS e
        LEFT JOIN names AS n ON n.tool_name = e.tool_name
        WHERE e.type IN ('tool_call', 'tool_result')
        -- an event without a use id is a use of its own
        GROUP BY e.session_id, e.tool_use_id, CASE WHEN e.tool_use_id IS NULL THEN e.id END
    ),
    per_tool AS (
        SELECT
            p.code,
            count(*) AS calls,
            count(*) FILTER (WHERE p.ended IS NOT NULL) AS results,
            count(*) FILTER (WHERE NOT p.success OR (p.success IS NULL AND p.errored))
                AS failures,
            quantile_cont(
                coalesce(
                    p.result_duration_ms,
                    CASE WHEN p.ended >= p.called THEN datediff('millisecond', p.called, p.ended) END
                ),
                0.5
            ) AS p50_ms,
            quantile_cont(
                coalesce(
                    p.result_duration_ms,
                    CASE WHEN p.ended >= p.called THEN datediff('millisecond', p.called, p.ended) END
                ),
                0.95
            ) AS p95_ms
        FROM paired AS p
        WHERE coalesce(p.called, p.ended - to_milliseconds(coalesce(p.result_duration_ms, 0)))
            >= days_ago(days)
        GROUP BY p.code
    )
SELECT
    n.tool_name,
    t.calls,
    t.results,
    t.failures,
    t.failures / nullif(t.results, 0) AS failure_rate,
    t.p50_ms,
    t.p95_ms
FROM per_tool AS t
LEFT JOIN names AS n ON n.code = t.code
ORDER BY t.calls DESC, n.tool_name;
COMMENT ON MACRO TABLE tool_reliability IS
    'Per tool (tool_calls started in the last `days` days): calls, results, failures (success false, or an error without a success flag), failure_rate = failures / results, p50_ms and p95_ms of duration_ms (interpolated quantiles)';

-- The analyzer's rules (store/analyzer.py runs them on new events and journals an `alert`
-- for each condition they find; docs/alerts.md). Each looks at events since `since` (a UTC
-- TIMESTAMP) and leaves out the analyzer's own alerts (source 'telemetryd').

-- One row per tool use (a call and its result, paired by tool_use_id) with an input digest,
-- counted per session, tool and digest over a sliding window of `window_seconds`; only
-- sessions with a tool event received since `touched` (the analyzer's last look).
CREATE OR REPLACE MACRO tool_loops(min_calls := 5, window_seconds := 300, since := TIMESTAMP '1970-01-01', touched := TIMESTAMP '1970-01-01') AS TABLE
WITH touched_sessions AS (
    SELECT DISTINCT t.session_id
    FROM events AS t
    WHERE t.received_at >= touched AND t.type IN ('tool_call', 'tool_result')
        AND t.tool_input_digest IS NOT NULL
),
uses AS (
    SELECT
        e.session_id,
        e.tool_name,
        min(e.ts) AS ts,
        arg_min(e.tool_input_digest, e.ts) FILTER (WHERE e.tool_input_digest IS NOT NULL)
            AS digest,
        arg_min(e.source, e.ts) AS source
    FROM events AS e
    WHERE e.type IN ('tool_call', 'tool_result') AND e.ts >= since
        AND e.session_id IN (SELECT s.session_id FROM touched_sessions AS s)
    GROUP BY e.session_id, e.tool_name, coalesce(e.tool_use_id, e.id)
),
windowed AS (
    SELECT
        u.*,
        count(*) OVER (
            PARTITION BY u.session_id, u.tool_name, u.digest
            ORDER BY u.ts
            RANGE BETWEEN to_milliseconds(CAST(window_seconds * 1000 AS BIGINT)) PRECEDING
                AND CURRENT ROW
        ) AS in_window
    FROM uses AS u
    WHERE u.digest IS NOT NULL
)
SELECT
    w.session_id,
    w.tool_name,
    w.digest AS input_digest,
    any_value(w.source) AS source,
    min(w.ts) FILTER (WHERE w.in_window >= min_calls) AS looped_at,
    max(w.in_window) AS most_in_window,
    count(*) AS calls,
    min(w.ts) AS first_call,
    max(w.ts) AS last_call
FROM windowed AS w
GROUP BY w.session_id, w.tool_name, w.digest
HAVING max(w.in_window) >= min_calls
ORDER BY looped_at, w.session_id, w.tool_name;
COMMENT ON MACRO TABLE tool_loops IS
    'Tool loops since `since` (in sessions with tool events received since `touched`): per session, tool and input digest whose uses reached `min_calls` within `window_seconds`, when first (looped_at), the most in one window, all calls';

-- Sessions that are live (their last event arrived within 10 minutes of its own time: not
-- an import or a replay) and working (their last event is not an end: a session_end, a
-- turn's end or Claude Code's idle prompt; an end at the same time as other events wins),
-- silent since `last_event`; `due` is when they stall.
CREATE OR REPLACE MACRO open_sessions(silent_seconds := 1800, since := TIMESTAMP '1970-01-01') AS TABLE
WITH marked AS (
    SELECT
        e.session_id, e.ts, e.type, e.received_at, e.source, e.agent_model,
        e.type = 'session_end'
            OR (e.type = 'custom' AND e.name = 'stop')
            OR (e.type = 'alert' AND e.kind = 'idle_prompt') AS ending
    FROM events AS e
    WHERE e.ts >= since AND e.session_id IS NOT NULL AND e.source IS DISTINCT FROM 'telemetryd'
),
latest AS (
    SELECT
        m.session_id,
        max(m.ts) AS last_event,
        max(m.ts) FILTER (WHERE m.ending) AS last_end,
        max(m.ts) FILTER (WHERE NOT m.ending) AS last_work,
        arg_max(m.type, m.ts) FILTER (WHERE NOT m.ending) AS last_type,
        arg_max(m.received_at, m.ts) AS last_received,
        arg_max(m.source, m.ts) AS source,
        arg_max(m.agent_model, m.ts) FILTER (WHERE m.agent_model IS NOT NULL) AS model
    FROM marked AS m
    GROUP BY m.session_id
)
SELECT
    l.session_id,
    l.source,
    l.model,
    l.last_event,
    l.last_type,
    l.last_event + to_milliseconds(CAST(silent_seconds * 1000 AS BIGINT)) AS due
FROM latest AS l
WHERE l.last_work IS NOT NULL
    AND (l.last_end IS NULL OR l.last_work > l.last_end)
    AND abs(epoch(l.last_received) - epoch(l.last_event)) <= 600
ORDER BY due, l.session_id;
COMMENT ON MACRO TABLE open_sessions IS
    'Live sessions still working (their last event since `since` is not an end, a turn end or an idle prompt) and when each stalls: due = last_event + `silent_seconds`';

-- Per session active since `since` with a request received since `touched` (the
-- analyzer's last look): its cost, its model (the one it spent most on) and the median
-- cost of that model's other sessions of the last `days` days.
CREATE OR REPLACE MACRO cost_anomalies(factor := 5.0, min_sessions := 5, days := 30, since := TIMESTAMP '1970-01-01', touched := TIMESTAMP '1970-01-01') AS TABLE
WITH per_model AS (
    SELECT r.session_id, r.model, sum(r.cost_usd) AS cost, max(r.timestamp) AS last_request
    FROM api_requests AS r
    WHERE r.session_id IS NOT NULL AND r.cost_usd IS NOT NULL
        AND r.timestamp >= days_ago(days)
    GROUP BY r.session_id, r.model
),
per_session AS (
    SELECT
        p.session_id,
        arg_max(p.model, p.cost) AS model,
        sum(p.cost) AS cost,
        max(p.last_request) AS last_request
    FROM per_model AS p
    GROUP BY p.session_id
    HAVING sum(p.cost) > 0
),
candidates AS (
    SELECT c.*
    FROM per_session AS c
    WHERE c.last_request >= since
        AND c.session_id IN (
            SELECT t.session_id FROM events AS t
            WHERE t.type = 'api_request' AND t.received_at >= touched
        )
),
-- The median of a model's other sessions, without pairing each candidate with all of
-- them: the sessions of each model in cost order (position k of n), and the one or two
-- middle positions of the n - 1 others, moved past the candidate's own position. (Which
-- of several equal costs is the candidate's does not matter: the others are the same.)
ranked AS (
    SELECT
        p.session_id,
        p.model,
        p.cost,
        row_number() OVER (PARTITION BY p.model ORDER BY p.cost, p.session_id) - 1 AS k,
        count(*) OVER (PARTITION BY p.model) AS n
    FROM per_session AS p
    WHERE p.model IS NOT NULL
),
middles AS (
    SELECT
        s.*,
        r.n - 1 AS others,
        (r.n - 2) // 2 AS lo,
        (r.n - 1) // 2 AS hi,
        r.k
    FROM candidates AS s JOIN ranked AS r USING (session_id)
    WHERE r.n >= 2
),
medians AS (
    SELECT
        m.session_id,
        m.model,
        m.cost,
        m.last_request,
        m.others,
        (a.cost + b.cost) / 2 AS median_usd
    FROM middles AS m
    JOIN ranked AS a ON a.model = m.model AND a.k = m.lo + CAST(m.lo >= m.k AS BIGINT)
    JOIN ranked AS b ON b.model = m.model AND b.k = m.hi + CAST(m.hi >= m.k AS BIGINT)
)
SELECT
    s.session_id,
    s.model,
    s.cost AS cost_usd,
    s.median_usd,
    s.others AS baseline_sessions,
    s.cost / s.median_usd AS ratio,
    s.last_request
FROM medians AS s
WHERE s.others >= min_sessions AND s.cost > factor * s.median_usd
ORDER BY ratio DESC, s.session_id;
COMMENT ON MACRO TABLE cost_anomalies IS
    'Sessions active since `since` (with a request received since `touched`) whose cost is over `factor` times the median cost of their model''s other sessions of the last `days` days (at least `min_sessions` of them)';

-- Error and API-error events per provider (agent provider, else source), counted over a
-- sliding window: a spike starts where the count reaches `min_errors`, and a new one no
-- sooner than `window_seconds` after the last.
CREATE OR REPLACE MACRO error_spikes(min_errors := 10, window_seconds := 300, since := TIMESTAMP '1970-01-01') AS TABLE
WITH RECURSIVE errs AS (
    SELECT coalesce(x.provider, x.source, 'unknown') AS provider, x.timestamp AS ts, x.category
    FROM errors AS x
    WHERE x.kind IN ('error', 'api')
        AND x.timestamp >= since - 3 * to_milliseconds(CAST(window_seconds * 1000 AS BIGINT))
        AND x.source IS DISTINCT FROM 'telemetryd'
),
counted AS (
    SELECT
        r.provider,
        r.ts,
        count(*) OVER w AS in_window,
        mode(r.category) OVER w AS top_category
    FROM errs AS r
    WINDOW w AS (
        PARTITION BY r.provider
        ORDER BY r.ts
        RANGE BETWEEN to_milliseconds(CAST(window_seconds * 1000 AS BIGINT)) PRECEDING
            AND CURRENT ROW
    )
),
crossings AS (
    SELECT c.*
    FROM (
        SELECT c.*, lag(c.in_window, 1, 0) OVER (PARTITION BY c.provider ORDER BY c.ts) AS before
        FROM counted AS c
    ) AS c
    WHERE c.in_window >= min_errors AND c.before < min_errors
),
numbered AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.provider ORDER BY c.ts) AS n
    FROM crossings AS c
),
-- Each crossing in turn: a spike when it comes more than a window after the last spike
-- (not after the last crossing: one that was no spike does not push the next one away)
spikes AS (
    SELECT x.provider, x.ts, x.in_window, x.top_category, x.n, x.ts AS last_spike, true AS spike
    FROM numbered AS x
    WHERE x.n = 1
    UNION ALL
    SELECT
        x.provider, x.ts, x.in_window, x.top_category, x.n,
        CASE WHEN x.ts > s.last_spike + to_milliseconds(CAST(window_seconds * 1000 AS BIGINT))
            THEN x.ts ELSE s.last_spike END,
        x.ts > s.last_spike + to_milliseconds(CAST(window_seconds * 1000 AS BIGINT))
    FROM spikes AS s
    JOIN numbered AS x ON x.provider = s.provider AND x.n = s.n + 1
)
SELECT s.provider, s.ts AS spiked_at, s.in_window AS errors, s.top_category
FROM spikes AS s
WHERE s.spike AND s.ts >= since
ORDER BY s.ts, s.provider;
COMMENT ON MACRO TABLE error_spikes IS
    'Error spikes since `since`: where one provider''s errors (error events and failed API requests) reach `min_errors` within `window_seconds`, at most one per window';

-- A/B results of one agentic telemetry spec experiment, per variant (docs/ats.md):
-- a run is one tool use whose metadata assigns it to `experiment_id` (ats_experiments),
-- with metadata that follows the spec unless include_invalid. successes, failures and
-- draws count the runs' outcome_signal (the metadata's final koth.outcome_signal, else
-- the tool result's success); pending ones have neither. success_rate = successes /
-- (successes + failures + draws), NULL without any. sessions: the distinct sessions
-- with a run of the variant; session_cost_usd: those sessions' known model-request cost,
-- each session once per variant (whole sessions: a session with runs in two variants
-- counts in both); run_cost_usd: the known cost of the session's requests timed within
-- a run (started to ended), each request once per variant. total_duration_ms and
-- avg_duration_ms: the runs' tool durations (call to result).
CREATE OR REPLACE MACRO ab_results(experiment_id, include_invalid := false) AS TABLE
WITH assigned AS (
    SELECT x.*
    FROM ats_experiments AS x
    WHERE x.experiment_id = experiment_id AND (x.ats_valid OR include_invalid)
),
variant_sessions AS (
    SELECT DISTINCT r.variant_id, r.session_id
    FROM assigned AS r
    WHERE r.session_id IS NOT NULL
),
session_costs AS (
    SELECT v.variant_id, sum(e.cost_usd) AS cost_usd
    FROM variant_sessions AS v
    JOIN events AS e ON e.session_id = v.session_id AND e.type = 'api_request'
    GROUP BY v.variant_id
),
run_requests AS (
    SELECT DISTINCT r.variant_id, e.id, e.cost_usd
    FROM assigned AS r
    JOIN events AS e
        ON e.session_id = r.session_id AND e.type = 'api_request'
        AND e.ts >= r.started AND e.ts <= r.ended
),
run_costs AS (
    SELECT q.variant_id, sum(q.cost_usd) AS cost_usd
    FROM run_requests AS q
    GROUP BY q.variant_id
),
per_variant AS (
    SELECT
        r.variant_id,
        mode(r.treatment_group) AS treatment_group,
        count(*) AS runs,
        count(*) FILTER (WHERE r.outcome_signal = 'win') AS successes,
        count(*) FILTER (WHERE r.outcome_signal = 'loss') AS failures,
        count(*) FILTER (WHERE r.outcome_signal = 'draw') AS draws,
        count(*) FILTER (WHERE r.outcome_signal = 'pending') AS pending,
        count(DISTINCT r.session_id) AS sessions,
        sum(r.duration_ms) AS total_duration_ms,
        avg(r.duration_ms) AS avg_duration_ms
    FROM assigned AS r
    GROUP BY r.variant_id
)
SELECT
    v.variant_id,
    v.treatment_group,
    v.runs,
    v.successes,
    v.failures,
    v.draws,
    v.pending,
    v.successes / nullif(v.successes + v.failures + v.draws, 0) AS success_rate,
    v.sessions,
    coalesce(s.cost_usd, 0) AS session_cost_usd,
    coalesce(c.cost_usd, 0) AS run_cost_usd,
    v.total_duration_ms,
    v.avg_duration_ms
FROM per_variant AS v
LEFT JOIN session_costs AS s ON s.variant_id IS NOT DISTINCT FROM v.variant_id
LEFT JOIN run_costs AS c ON c.variant_id IS NOT DISTINCT FROM v.variant_id
ORDER BY v.variant_id NULLS LAST;
COMMENT ON MACRO TABLE ab_results IS
    'Per variant of an agentic telemetry spec experiment: runs (tool uses assigned to it), successes, success rate, sessions'' and runs'' cost, duration';
