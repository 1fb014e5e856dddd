-- Recordings: what each live session archived. The segment index itself is `index.json` in
-- the object store next to the media; this table lists recordings and their lifecycle.
-- status: recording (live), ready (ended, kept until expires_at), vod (kept).
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    duration_ms BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    segments BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX IF NOT EXISTS recordings_by_stream ON recordings (stream_id, started_at);
CREATE INDEX IF NOT EXISTS recordings_by_expiry ON recordings (status, expires_at);
