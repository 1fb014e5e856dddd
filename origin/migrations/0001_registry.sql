-- The stream registry: streams with their (digest-indexed) keys, and their events.
-- Portable SQL: runs on SQLite and PostgreSQL alike. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    key_digest TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT
);
CREATE INDEX IF NOT EXISTS streams_by_status ON streams (status, created_at);
CREATE INDEX IF NOT EXISTS streams_by_user ON streams (user_id, created_at);

CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream_id, id);
