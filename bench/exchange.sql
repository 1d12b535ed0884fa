-- One POST /chat exchange's statements on Postgres, for pgbench: the floor
-- that Postgres alone puts under the /chat figure on this machine. The same
-- SQL as the server's (shared/src/store/postgres.rs), for a conversation going
-- on: the question stored, within the quota, with the standing, the session
-- and the history (ASK; the server sets no default quota here, so NULL),
-- committed without waiting for the disk; then the answer stored with its
-- usage while its question is there (APPEND_ANSWER, which names the
-- question by the id the first statement returned: here the session's
-- newest message's, one index probe more, stored before the statement's
-- clock; before its transaction's start, now(), would miss a question that
-- another client stored in the same session while the statement waited for
-- the session's row), its commit flushing both. Each
-- its own transaction, as there. bench/run.py makes 64 users with 4
-- sessions each, so session s belongs to user (s - 1) / 4 + 1 (it checks
-- that before running), and sets :sessions, :month and :day.
\set sid random(1, :sessions)
\set uid (:sid - 1) / 4 + 1
WITH standing AS (
    SELECT u.email, u.is_admin, u.token_quota, CAST(COALESCE((
        SELECT SUM(prompt_tokens + completion_tokens) FROM usage_monthly
        WHERE user_id = u.id AND month = :month), 0) AS BIGINT) AS used_tokens
    FROM users u WHERE u.id = :uid
), bumped AS (
    UPDATE sessions SET message_count = message_count + 1, updated_at = now()
    WHERE id = :sid AND user_id = :uid AND EXISTS (SELECT 1 FROM standing
        WHERE COALESCE(token_quota, NULL) IS NULL OR used_tokens < COALESCE(token_quota, NULL))
    RETURNING id, title, system_prompt, model, message_count, created_at, updated_at
), stored AS (
    INSERT INTO messages (session_id, role, content, tokens, status, created_at)
    SELECT id, 'user', 'How do iterators work in Rust?', 7, 'complete', now() FROM bumped
    RETURNING id, role, content, tokens, status, created_at
), exchange AS (
    SELECT true AS asked, id, role, content, tokens, status, created_at FROM stored
    UNION ALL (
        SELECT false, id, role, content, tokens, status, created_at FROM messages
        WHERE session_id = :sid AND EXISTS (SELECT 1 FROM bumped)
        ORDER BY id DESC LIMIT 19
    )
)
SELECT s.email, s.is_admin, s.token_quota, s.used_tokens,
    b.id AS session_id, b.title, b.system_prompt, b.model, b.message_count,
    b.created_at AS session_created_at, b.updated_at,
    e.asked, e.id, e.role, e.content, e.tokens, e.status, e.created_at
FROM standing s LEFT JOIN bumped b ON true LEFT JOIN exchange e ON true
WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL;
-- The answer, once the provider has given it (the overhead floor in run.py
-- waits here as long as the upstream does).
WITH bumped AS (
    UPDATE sessions SET message_count = message_count + 1, updated_at = now()
    WHERE id = :sid AND user_id = :uid AND EXISTS (SELECT 1 FROM messages
        WHERE id = (SELECT max(id) FROM messages WHERE session_id = :sid)
        AND session_id = :sid AND created_at <= clock_timestamp())
    RETURNING id
), stored AS (
    INSERT INTO messages (session_id, role, content, tokens, status, created_at)
    SELECT id, 'assistant', 'bench bench bench bench bench bench bench bench bench bench', 20, 'complete', now()
    FROM bumped
    RETURNING id, role, content, tokens, status, created_at
), monthly AS (
    INSERT INTO usage_monthly (user_id, month, model, prompt_tokens, completion_tokens, requests)
    SELECT :uid, :month, 'bench', 50, 20, 1 FROM bumped
    ON CONFLICT (user_id, month, model) DO UPDATE SET
    prompt_tokens = usage_monthly.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = usage_monthly.completion_tokens + excluded.completion_tokens,
    requests = usage_monthly.requests + 1
), daily AS (
    INSERT INTO usage_daily (day, user_id, model, prompt_tokens, completion_tokens, requests)
    SELECT :day, :uid, 'bench', 50, 20, 1 FROM bumped
    ON CONFLICT (day, user_id, model) DO UPDATE SET
    prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,
    requests = usage_daily.requests + 1
)
SELECT id, role, content, tokens, status, created_at FROM stored;
