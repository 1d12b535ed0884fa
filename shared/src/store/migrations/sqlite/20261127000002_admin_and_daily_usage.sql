-- Administrators promoted by the CLI (ADMIN_EMAILS needs no column), and a
-- per-user monthly token quota set by an administrator (NULL: the default).
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN token_quota INTEGER CHECK (token_quota >= 0);

-- The same figures as usage_monthly, per day (UTC), for the admin dashboard;
-- written in the same transaction. Keyed by day first: the dashboard reads a
-- month of every user at once.
CREATE TABLE usage_daily (
    day               TEXT        NOT NULL,
    user_id           INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model             TEXT        NOT NULL,
    prompt_tokens     INTEGER     NOT NULL,
    completion_tokens INTEGER     NOT NULL,
    requests          INTEGER     NOT NULL,
    PRIMARY KEY (day, user_id, model)
);
CREATE INDEX usage_daily_user ON usage_daily (user_id);
