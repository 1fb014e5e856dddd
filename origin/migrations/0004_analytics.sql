-- Viewer analytics. Request records as the edges sent them (JSON, kept for
-- origin.analytics.detail_retention), the per-minute figures of each stream (JSON, kept for
-- minute_retention), viewer sessions, and how far aggregation has got.
CREATE TABLE IF NOT EXISTS analytics_records (
    stream_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    session_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS analytics_records_by_time ON analytics_records (at);
CREATE INDEX IF NOT EXISTS analytics_records_by_stream ON analytics_records (stream_id, at);

CREATE TABLE IF NOT EXISTS analytics_minutes (
    stream_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    figures TEXT NOT NULL,
    PRIMARY KEY (stream_id, minute)
);

CREATE TABLE IF NOT EXISTS viewer_sessions (
    stream_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (stream_id, session_id)
);
CREATE INDEX IF NOT EXISTS viewer_sessions_by_last ON viewer_sessions (last_at);

CREATE TABLE IF NOT EXISTS analytics_progress (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Batches already stored (a Kafka message's partition and offset, an edge's batch id), so a
-- batch delivered twice after a crash is stored once.
CREATE TABLE IF NOT EXISTS analytics_batches (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS analytics_batches_by_time ON analytics_batches (at);
