-- One batch of journal lines into `events` (store/database.py runs it, then removes ids
-- that were already stored). $files: newline-delimited JSON files, plain or .gz/.zst.
-- $lenient: skip malformed lines instead of failing (the retry after a failure).
-- Keys that are not listed are ignored (so a field of events.py missing here would be
-- dropped: tests/test_sql_columns.py checks every one is listed); every listed key is
-- optional. The select list is positional: in the order of the events table's columns.
INSERT INTO events
SELECT
    id, type, v, ts, received_at, source, session_id, trace_id, span_id, parent_span_id,
    agent.model, agent.provider, agent.type, agent.id, agent.variant,
    task.id, task.title, task.attempt_id, task.attempt_index,
    tokens.source, tokens.input, tokens.output, tokens.cache_read, tokens.cache_creation,
    tokens.reasoning, tokens.total, tokens.estimated_total, tokens.tokenizer,
    cost_usd, cost_source,
    NULL,  -- price_source: set by pricing, in the same transaction (store/pricing.py)
    duration_ms, success, error,
    tool.name, tool.use_id, tool.success, tool.error, tool.input_digest,
    name, message, category, fingerprint, confidence,
    level, component, event,
    value, unit, kind, severity,
    attempt_id, attempt_index,
    -- the canonical form omits retry counts of 0
    CASE WHEN retry_count IS NOT NULL THEN coalesce(retry_count.same_model, 0) END,
    CASE WHEN retry_count IS NOT NULL THEN coalesce(retry_count.reroute, 0) END,
    elapsed_ms.wall, elapsed_ms.llm, elapsed_ms.tools,
    outcome, outcome_reason,
    cwd, reason,
    "length",
    attrs, fields
FROM read_json(
    $files,
    format = 'newline_delimited',
    ignore_errors = $lenient,
    columns = {
        type: 'VARCHAR',
        v: 'INTEGER',
        id: 'VARCHAR',
        ts: 'TIMESTAMP',
        source: 'VARCHAR',
        session_id: 'VARCHAR',
        trace_id: 'VARCHAR',
        span_id: 'VARCHAR',
        parent_span_id: 'VARCHAR',
        agent: 'STRUCT(model VARCHAR, provider VARCHAR, type VARCHAR, id VARCHAR, variant VARCHAR)',
        task: 'STRUCT(id VARCHAR, title VARCHAR, attempt_id VARCHAR, attempt_index BIGINT)',
        attrs: 'JSON',
        received_at: 'TIMESTAMP',
        tokens: 'STRUCT(source VARCHAR, input BIGINT, output BIGINT, cache_read BIGINT,
            cache_creation BIGINT, reasoning BIGINT, total BIGINT, estimated_total BIGINT,
            tokenizer VARCHAR)',
        cost_usd: 'DOUBLE',
        cost_source: 'VARCHAR',
        duration_ms: 'BIGINT',
        success: 'BOOLEAN',
        error: 'VARCHAR',
        tool: 'STRUCT(name VARCHAR, use_id VARCHAR, success BOOLEAN, error VARCHAR, input_digest VARCHAR)',
        name: 'VARCHAR',
        message: 'VARCHAR',
        category: 'VARCHAR',
        fingerprint: 'VARCHAR',
        confidence: 'DOUBLE',
        level: 'VARCHAR',
        component: 'VARCHAR',
        event: 'VARCHAR',
        fields: 'JSON',
        value: 'DOUBLE',
        unit: 'VARCHAR',
        kind: 'VARCHAR',
        severity: 'VARCHAR',
        attempt_id: 'VARCHAR',
        attempt_index: 'BIGINT',
        retry_count: 'STRUCT(same_model BIGINT, reroute BIGINT)',
        elapsed_ms: 'STRUCT(wall BIGINT, llm BIGINT, tools BIGINT)',
        outcome: 'VARCHAR',
        outcome_reason: 'VARCHAR',
        cwd: 'VARCHAR',
        reason: 'VARCHAR',
        "length": 'BIGINT'
    }
)
-- A line without `id` or `type` is no event: the strict load fails on it, so that the
-- lenient retry leaves it out and the lines it left out are named (store/database.py).
WHERE CASE
    WHEN id IS NOT NULL AND type IS NOT NULL THEN true
    WHEN $lenient THEN false
    ELSE error('a journal line that is no event: without id or type')
END;
