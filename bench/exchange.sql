-- One POST /chat exchange's statements on Postgres, for pgbench: the floor
-- that Postgres alone puts under the /chat figure on this machine. The same
-- SQL as the server's: the standing and session read
-- (shared/src/store/sql.rs, standing_and_session), the question stored with
-- its history recalled (postgres.rs, APPEND_QUESTION), and the answer stored
-- with its usage (postgres.rs, APPEND_MESSAGE); each its own transaction, as
-- there. bench/run.py makes 64 users with 4 sessions each, so session s
-- belongs to user (s - 1) / 4 + 1 (it checks that before running), and sets
-- :sessions, :month and :day.
\set sid random(1, :sessions)
\set uid (:sid - 1) / 4 + 1
SELECT u.email, u.is_admin, u.token_quota, CAST(COALESCE((
    SELECT SUM(prompt_tokens + completion_tokens) FROM usage_monthly
    WHERE user_id = u.id AND month = :month), 0) AS BIGINT) AS used_tokens,
    s.id, s.title, s.system_prompt, s.model, s.message_count, s.created_at, s.updated_at
FROM users u LEFT JOIN sessions s ON s.id = :sid AND s.user_id = u.id
WHERE u.id = :uid;
WITH bumped AS (
    UPDATE sessions SET message_count = message_count + 1, updated_at = now()
    WHERE id = :sid AND user_id = :uid RETURNING id
), stored AS (
    INSERT INTO messages (session_id, role, content, tokens, status, created_at)
    SELECT id, 'user', 'How do iterators work in Rust?', 7, 'complete', now() FROM bumped
    RETURNING id, role, content, tokens, status, created_at
)
SELECT true AS asked, id, role, content, tokens, status, created_at FROM stored
UNION ALL (
    SELECT false, id, role, content, tokens, status, created_at FROM messages
    WHERE session_id = :sid AND EXISTS (SELECT 1 FROM bumped)
    ORDER BY id DESC LIMIT 19
);
WITH bumped AS (
    UPDATE sessions SET message_count = message_count + 1, updated_at = now()
    WHERE id = :sid AND user_id = :uid RETURNING id
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
