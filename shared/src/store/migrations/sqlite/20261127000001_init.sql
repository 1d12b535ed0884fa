-- Timestamps are RFC 3339 text in UTC, as sqlx writes them.

CREATE TABLE users (
    id                INTEGER     PRIMARY KEY AUTOINCREMENT,
    -- stored lower-cased, so uniqueness is case-insensitive
    email             TEXT        NOT NULL UNIQUE,
    password_hash     TEXT        NOT NULL,
    created_at        TEXT        NOT NULL
);

-- One row per login. Refresh tokens rotate within their family; presenting a
-- spent token revokes the family, which is a single-row update.
CREATE TABLE refresh_families (
    id                TEXT        PRIMARY KEY,
    user_id           INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at        TEXT        NOT NULL,
    revoked_at        TEXT
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    id                INTEGER     PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family            TEXT        NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    token_hash        TEXT        NOT NULL UNIQUE,
    expires_at        TEXT        NOT NULL,
    used_at           TEXT,
    created_at        TEXT        NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE sessions (
    id                INTEGER     PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title             TEXT        NOT NULL,
    system_prompt     TEXT,
    model             TEXT,
    message_count     INTEGER     NOT NULL DEFAULT 0,
    created_at        TEXT        NOT NULL,
    updated_at        TEXT        NOT NULL
);
CREATE INDEX sessions_by_activity ON sessions (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id                INTEGER     PRIMARY KEY AUTOINCREMENT,
    session_id        INTEGER     NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role              TEXT        NOT NULL CHECK (role IN ('user', 'assistant')),
    content           TEXT        NOT NULL,
    tokens            INTEGER     NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('complete', 'incomplete', 'stopped')),
    created_at        TEXT        NOT NULL
);
CREATE INDEX messages_in_order ON messages (session_id, id);

CREATE TABLE usage_monthly (
    user_id           INTEGER     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    month             TEXT        NOT NULL,
    model             TEXT        NOT NULL,
    prompt_tokens     INTEGER     NOT NULL,
    completion_tokens INTEGER     NOT NULL,
    requests          INTEGER     NOT NULL,
    PRIMARY KEY (user_id, month, model)
);
