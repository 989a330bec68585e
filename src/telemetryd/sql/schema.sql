-- The store's tables (store/database.py explains the design).
-- A change to any table here bumps SCHEMA_VERSION in store/database.py: a database with
-- another version is rebuilt from the journal, never migrated.

-- Key/value facts about the database itself: schema_version, created_at.
CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- How far each journal segment is materialized. Updated in the same transaction as the
-- rows it accounts for, so after a crash rows and offsets always agree.
CREATE TABLE segments (
    seq BIGINT PRIMARY KEY,         -- the segment's sequence number (its file name's suffix)
    name VARCHAR NOT NULL,          -- the file name it was last read under
    loaded_bytes BIGINT NOT NULL,   -- complete lines [0, loaded_bytes) are in `events`
    complete BOOLEAN NOT NULL,      -- closed and loaded to its end: never read again
    loaded_at TIMESTAMP NOT NULL    -- UTC time of the last load from this segment
);

-- The lines loads dropped as twins of a stored event: the same id and received_at (a
-- forwarded event sent again after the dedup window keeps the received_at it was first
-- journaled with), for Parquet exports (store/export.py). A batch commits with its
-- segments' offsets, so one of its segments and the offset the batch took it to date
-- all its lines: an export whose position in that segment is below `loaded_bytes` has
-- them all among its new lines, and they are no new events. Retention deletes them
-- with that segment.
CREATE TABLE copies (
    id VARCHAR NOT NULL,
    received_at TIMESTAMP NOT NULL,
    seq BIGINT NOT NULL,            -- a segment the batch loaded lines of
    loaded_bytes BIGINT NOT NULL    -- its loaded_bytes once the batch was in
);

-- The [budget] limits the analyzer applied last (store/analyzer.py), with the current
-- day and month in the budget's time zone as UTC bounds. Settings, not journal data: each
-- analysis rewrites it; the budget_use view adds up the spend.
CREATE TABLE budget (
    period VARCHAR PRIMARY KEY,     -- 'day' or 'month'
    starts TIMESTAMP NOT NULL,
    ends TIMESTAMP NOT NULL,
    limit_usd DOUBLE NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- The api_requests summed per UTC quarter hour, producer, agent and model: what daily,
-- weekly and monthly reports read instead of every request. Derived from `events` and kept
-- in step with it in the same transactions (store/rollup.py explains how).
CREATE TABLE usage_quarters (
    quarter TIMESTAMP NOT NULL,     -- time_bucket(INTERVAL 15 MINUTE, ts)
    source VARCHAR,
    agent_type VARCHAR,
    agent_model VARCHAR,
    fast BOOLEAN NOT NULL,          -- fast_mode(attrs) (sql/macros.sql)
    requests BIGINT NOT NULL,
    input HUGEINT NOT NULL,         -- the sums of the token counts (NULL counts as 0)
    output HUGEINT NOT NULL,
    cache_creation HUGEINT NOT NULL,
    cache_read HUGEINT NOT NULL,
    reasoning HUGEINT NOT NULL,
    cost DOUBLE NOT NULL,           -- the sum of the known costs (0 when none is known)
    unpriced BIGINT NOT NULL,       -- requests without a cost
    first TIMESTAMP NOT NULL,       -- the first and last request's time
    last TIMESTAMP NOT NULL
);

-- One row per event id, the envelope and every type's fields in typed columns. A field
-- that a type does not have is NULL. Nested objects are flattened with their name as a
-- prefix (agent.model -> agent_model, tokens.cache_read -> tokens_cache_read,
-- retry_count.same_model -> retry_same_model, elapsed_ms.wall -> elapsed_wall_ms);
-- the free-form objects stay JSON. Times are UTC TIMESTAMPs (millisecond precision).
-- The columns follow the Structs of events.py: tests/test_sql_columns.py fails when a
-- field has no column (or load.sql does not read it), and lists the deliberate renames.
CREATE TABLE events (
    id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    v INTEGER,
    ts TIMESTAMP,
    received_at TIMESTAMP,
    source VARCHAR,
    session_id VARCHAR,
    trace_id VARCHAR,
    span_id VARCHAR,
    parent_span_id VARCHAR,
    agent_model VARCHAR,
    agent_provider VARCHAR,
    agent_type VARCHAR,
    agent_id VARCHAR,
    agent_variant VARCHAR,
    task_id VARCHAR,
    task_title VARCHAR,
    task_attempt_id VARCHAR,
    task_attempt_index BIGINT,
    -- tokens (api_request, agent_start/agent_stop, run)
    tokens_source VARCHAR,
    tokens_input BIGINT,
    tokens_output BIGINT,
    tokens_cache_read BIGINT,
    tokens_cache_creation BIGINT,
    tokens_reasoning BIGINT,
    tokens_total BIGINT,
    tokens_estimated_total BIGINT,
    tokens_tokenizer VARCHAR,
    -- api_request, sessions, activations, tools, skills, spans
    cost_usd DOUBLE,
    cost_source VARCHAR,            -- reported / computed / unknown (store/pricing.py)
    price_source VARCHAR,           -- what priced a computed cost: genai-prices X.Y.Z, override
    duration_ms BIGINT,
    success BOOLEAN,
    error VARCHAR,
    tool_name VARCHAR,
    tool_use_id VARCHAR,
    tool_success BOOLEAN,
    tool_error VARCHAR,
    tool_input_digest VARCHAR,
    -- skill, metric, span, custom: name; error, alert: message
    name VARCHAR,
    message VARCHAR,
    category VARCHAR,
    fingerprint VARCHAR,
    confidence DOUBLE,
    -- log
    level VARCHAR,
    component VARCHAR,
    event VARCHAR,
    -- metric, alert, span (kind: the span kind)
    value DOUBLE,
    unit VARCHAR,
    kind VARCHAR,
    severity VARCHAR,
    -- run
    attempt_id VARCHAR,
    attempt_index BIGINT,
    retry_same_model BIGINT,
    retry_reroute BIGINT,
    elapsed_wall_ms BIGINT,
    elapsed_llm_ms BIGINT,
    elapsed_tools_ms BIGINT,
    outcome VARCHAR,
    outcome_reason VARCHAR,
    -- session_start / session_end
    cwd VARCHAR,
    reason VARCHAR,
    -- prompt (its length only: the text is content, not metadata)
    prompt_length BIGINT,
    -- free-form
    attrs JSON,
    fields JSON
);
