//! The stream registry: streams, their keys and their events, persisted with sqlx in SQLite
//! (embedded, the default) or PostgreSQL (by URL), schema kept by the migrations in
//! `origin/migrations`. Keys are looked up by their SHA-256 digest.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::streams::event::NewEvent;
use crate::streams::model::{self, Status, StreamConfig};
use cascade_service::clock::now_ms_i64;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed.
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row could not be read back.
    #[error("registry row {id}: {message}")]
    Corrupt {
        /// The row.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// No randomness for a key.
    #[error("no randomness for a stream key: {0}")]
    Random(#[from] getrandom::Error),
}

/// One stream as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    /// Id (UUID).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Status.
    pub status: Status,
    /// Title, settings and the rest.
    pub config: StreamConfig,
    /// Unix ms.
    pub created_at: i64,
    /// When it last went live (Unix ms).
    pub started_at: Option<i64>,
    /// When it last ended (Unix ms).
    pub ended_at: Option<i64>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Id (UUIDv7: sorts by time).
    pub id: String,
    /// `stream_started`, ...
    pub event_type: String,
    /// `info`, ...
    pub severity: String,
    /// Human text.
    pub message: String,
    /// JSON details.
    pub details: serde_json::Value,
    /// Unix ms.
    pub at: i64,
}

/// Which streams to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this owner.
    pub user_id: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: AnyPool,
}

const STREAM_COLUMNS: &str = "id, user_id, status, config, created_at, started_at, ended_at";

impl Registry {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let mut url = url.to_owned();
        let mut max_connections = 8;
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            if path == ":memory:" || path.is_empty() {
                // Each connection to an in-memory database is its own database.
                max_connections = 1;
            } else {
                // Resolved once, and said: started from another directory, a relative path
                // would otherwise open another, empty registry without a word.
                let absolute = std::path::absolute(path).map_err(|e| {
                    anyhow::anyhow!("origin.database_url: cannot resolve {path:?}: {e}")
                })?;
                tracing::info!(path = %absolute.display(), "stream registry (SQLite)");
                let rebuilt = match query {
                    "" => format!("sqlite://{}", absolute.display()),
                    query => format!("sqlite://{}?{query}", absolute.display()),
                };
                if let Some(parent) = absolute.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        anyhow::anyhow!(
                            "origin.database_url: cannot create {}: {e}",
                            parent.display()
                        )
                    })?;
                }
                url = rebuilt;
            }
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("mode=rwc");
            }
        }
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers go on during a write; the busy timeout waits out a
                        // writer instead of failing; secure_delete zeroes what is deleted (keys
                        // dropped by migration 0003 do not linger in free pages).
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA secure_delete = ON",
                        ] {
                            sqlx::Executor::execute(&mut *conn, pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("origin.database_url: cannot open the registry: {e}"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| {
                anyhow::anyhow!("origin.database_url: cannot migrate the registry: {e}")
            })?;
        if sqlite {
            // Write what the migrations changed into the database file now, so that values
            // they dropped (plaintext stream keys) are gone from it, not left until the next
            // automatic checkpoint.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&pool)
                .await
                .map_err(|e| anyhow::anyhow!("origin.database_url: cannot checkpoint: {e}"))?;
        }
        Ok(Self { pool })
    }

    /// Stores a new idle stream with a fresh key, and returns the key: this is the only time
    /// it is known, since the registry keeps its digest alone.
    pub async fn create(
        &self,
        user_id: &str,
        config: &StreamConfig,
    ) -> Result<(StreamRecord, String), RegistryError> {
        let key = model::new_stream_key()?;
        let record = StreamRecord {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            status: Status::Idle,
            config: config.clone(),
            created_at: now_ms_i64(),
            started_at: None,
            ended_at: None,
        };
        sqlx::query(
            "INSERT INTO streams (id, user_id, status, key_digest, config, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&record.id)
        .bind(&record.user_id)
        .bind(record.status.as_str())
        .bind(model::key_digest(&key))
        .bind(config_json(config))
        .bind(record.created_at)
        .execute(&self.pool)
        .await?;
        Ok((record, key))
    }

    /// The stream `id`.
    pub async fn get(&self, id: &str) -> Result<Option<StreamRecord>, RegistryError> {
        let row = sqlx::query(&format!(
            "SELECT {STREAM_COLUMNS} FROM streams WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stream_from_row(&r)).transpose()
    }

    /// The stream whose current key is `key`.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<StreamRecord>, RegistryError> {
        let row = sqlx::query(&format!(
            "SELECT {STREAM_COLUMNS} FROM streams WHERE key_digest = $1"
        ))
        .bind(model::key_digest(key))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stream_from_row(&r)).transpose()
    }

    /// A page of streams, newest first, and how many match in all.
    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<StreamRecord>, i64), RegistryError> {
        let mut conditions = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(status) = filter.status {
            binds.push(status.as_str().to_owned());
            conditions.push(format!("status = ${}", binds.len()));
        }
        if let Some(user) = &filter.user_id {
            binds.push(user.clone());
            conditions.push(format!("user_id = ${}", binds.len()));
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let page_sql = format!(
            "SELECT {STREAM_COLUMNS} FROM streams{filter_sql} ORDER BY created_at DESC, id DESC \
             LIMIT {} OFFSET {}",
            filter.limit, filter.offset
        );
        let mut page = sqlx::query(&page_sql);
        for b in &binds {
            page = page.bind(b);
        }
        let rows = page.fetch_all(&self.pool).await?;
        let count_sql = format!("SELECT COUNT(*) FROM streams{filter_sql}");
        let mut count = sqlx::query(&count_sql);
        for b in &binds {
            count = count.bind(b);
        }
        let total: i64 = count.fetch_one(&self.pool).await?.try_get(0)?;
        let streams = rows
            .iter()
            .map(stream_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((streams, total))
    }

    /// Sets the status; going live stamps `started_at`, ending stamps `ended_at`.
    pub async fn set_status(&self, id: &str, status: Status) -> Result<bool, RegistryError> {
        let query = match status {
            Status::Live => {
                sqlx::query("UPDATE streams SET status = $1, started_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(now_ms_i64())
            }
            Status::Ended => {
                sqlx::query("UPDATE streams SET status = $1, ended_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(now_ms_i64())
            }
            Status::Idle => {
                sqlx::query("UPDATE streams SET status = $1 WHERE id = $2").bind(status.as_str())
            }
        };
        let done = query.bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the stream's configuration.
    pub async fn set_config(&self, id: &str, config: &StreamConfig) -> Result<bool, RegistryError> {
        let done = sqlx::query("UPDATE streams SET config = $1 WHERE id = $2")
            .bind(config_json(config))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives the stream a new key, returned this once; the old one stops working at once.
    pub async fn rotate_key(
        &self,
        id: &str,
    ) -> Result<Option<(StreamRecord, String)>, RegistryError> {
        let key = model::new_stream_key()?;
        let done = sqlx::query("UPDATE streams SET key_digest = $1 WHERE id = $2")
            .bind(model::key_digest(&key))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(self.get(id).await?.map(|stream| (stream, key)))
    }

    /// Removes the stream and its events.
    pub async fn delete(&self, id: &str) -> Result<bool, RegistryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM events WHERE stream_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM streams WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records an event of stream `stream_id`.
    pub async fn add_event(&self, stream_id: &str, event: &NewEvent) -> Result<(), RegistryError> {
        insert_event(&self.pool, stream_id, event, now_ms_i64()).await?;
        Ok(())
    }

    /// The database, for the stores that share it (analytics).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A page of the stream's events, oldest first.
    pub async fn events(
        &self,
        stream_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<EventRecord>, RegistryError> {
        let rows = sqlx::query(&format!(
            "SELECT id, event_type, severity, message, details, at FROM events \
             WHERE stream_id = $1 ORDER BY id LIMIT {limit} OFFSET {offset}"
        ))
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let details: String = row.try_get("details")?;
                Ok(EventRecord {
                    details: serde_json::from_str(&details).map_err(|e| {
                        RegistryError::Corrupt {
                            id: id.clone(),
                            message: format!("details: {e}"),
                        }
                    })?,
                    id,
                    event_type: row.try_get("event_type")?,
                    severity: row.try_get("severity")?,
                    message: row.try_get("message")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }
}

/// One recording as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordingRecord {
    /// Id (UUIDv7).
    pub id: String,
    /// The stream recorded.
    pub stream_id: String,
    /// `recording` (the stream is live), `ready` (ended; kept until `expires_at`) or `vod`
    /// (converted: kept until deleted).
    pub status: String,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    pub ended_at: Option<i64>,
    /// Media duration archived (ms).
    pub duration_ms: i64,
    /// Bytes archived.
    pub size_bytes: i64,
    /// Segments archived (all renditions).
    pub segments: i64,
    /// When retention deletes it (Unix ms).
    pub expires_at: Option<i64>,
}

const RECORDING_COLUMNS: &str =
    "id, stream_id, status, started_at, ended_at, duration_ms, size_bytes, segments, expires_at";

fn recording_from_row(row: &AnyRow) -> Result<RecordingRecord, RegistryError> {
    Ok(RecordingRecord {
        id: row.try_get("id")?,
        stream_id: row.try_get("stream_id")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        size_bytes: row.try_get("size_bytes")?,
        segments: row.try_get("segments")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Registry {
    /// Starts a recording of `stream_id`.
    pub async fn create_recording(
        &self,
        stream_id: &str,
    ) -> Result<RecordingRecord, RegistryError> {
        let record = RecordingRecord {
            id: uuid::Uuid::now_v7().to_string(),
            stream_id: stream_id.to_owned(),
            status: "recording".into(),
            started_at: now_ms_i64(),
            ended_at: None,
            duration_ms: 0,
            size_bytes: 0,
            segments: 0,
            expires_at: None,
        };
        sqlx::query(
            "INSERT INTO recordings (id, stream_id, status, started_at, duration_ms, size_bytes, segments) \
             VALUES ($1, $2, $3, $4, 0, 0, 0)",
        )
        .bind(&record.id)
        .bind(&record.stream_id)
        .bind(&record.status)
        .bind(record.started_at)
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    /// Updates what a recording holds.
    pub async fn update_recording(
        &self,
        id: &str,
        duration_ms: i64,
        size_bytes: i64,
        segments: i64,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "UPDATE recordings SET duration_ms = $1, size_bytes = $2, segments = $3 WHERE id = $4",
        )
        .bind(duration_ms)
        .bind(size_bytes)
        .bind(segments)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a recording finished, to be kept until `expires_at` (Unix ms; `None`: forever).
    pub async fn finish_recording(
        &self,
        id: &str,
        expires_at: Option<i64>,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "UPDATE recordings SET status = 'ready', ended_at = $1, expires_at = $2 \
             WHERE id = $3 AND status = 'recording'",
        )
        .bind(now_ms_i64())
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The recording `id`.
    pub async fn get_recording(&self, id: &str) -> Result<Option<RecordingRecord>, RegistryError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| recording_from_row(&r)).transpose()
    }

    /// The recordings of `stream_id`, newest first.
    pub async fn list_recordings(
        &self,
        stream_id: &str,
    ) -> Result<Vec<RecordingRecord>, RegistryError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE stream_id = $1 ORDER BY id DESC"
        ))
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Recordings in `status`.
    pub async fn recordings_in(&self, status: &str) -> Result<Vec<RecordingRecord>, RegistryError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE status = $1 ORDER BY id"
        ))
        .bind(status)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Converts a finished recording to VOD: kept until deleted. False when it does not
    /// exist or is still recording.
    pub async fn convert_recording(&self, id: &str) -> Result<bool, RegistryError> {
        let done = sqlx::query(
            "UPDATE recordings SET status = 'vod', expires_at = NULL \
             WHERE id = $1 AND status IN ('ready', 'vod')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Finished recordings whose retention ended before `now` (Unix ms), finished recordings
    /// of deleted streams (VOD ones too: the stream's deletion took them), and those whose
    /// deletion was claimed but not finished (the origin stopped in between).
    pub async fn expired_recordings(
        &self,
        now: i64,
    ) -> Result<Vec<RecordingRecord>, RegistryError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings \
             WHERE (status = 'ready' AND expires_at IS NOT NULL AND expires_at <= $1) \
             OR status = 'expiring' \
             OR (status IN ('ready', 'vod') AND stream_id NOT IN (SELECT id FROM streams))"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Claims an expired recording for deletion (status `expiring`), so that a conversion to
    /// VOD arriving meanwhile is refused instead of answered and then lost. False when it was
    /// converted (or deleted) first.
    pub async fn claim_expired_recording(&self, id: &str, now: i64) -> Result<bool, RegistryError> {
        let done = sqlx::query(
            "UPDATE recordings SET status = 'expiring' WHERE id = $1 AND \
             ((status = 'ready' AND expires_at IS NOT NULL AND expires_at <= $2) \
             OR status = 'expiring' \
             OR (status IN ('ready', 'vod') AND stream_id NOT IN (SELECT id FROM streams)))",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets a recording (its objects are deleted by the caller first).
    pub async fn delete_recording(&self, id: &str) -> Result<bool, RegistryError> {
        let done = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn config_json(config: &StreamConfig) -> String {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_string(config).unwrap_or_default()
}

fn stream_from_row(row: &AnyRow) -> Result<StreamRecord, RegistryError> {
    let id: String = row.try_get("id")?;
    let corrupt = |message: String| RegistryError::Corrupt {
        id: id.clone(),
        message,
    };
    let status: String = row.try_get("status")?;
    let config: String = row.try_get("config")?;
    Ok(StreamRecord {
        status: Status::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        config: serde_json::from_str(&config).map_err(|e| corrupt(format!("config: {e}")))?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        id,
    })
}

/// Inserts an event at `at_ms` through `executor` (the pool, or a transaction that stores it
/// with what it describes).
pub async fn insert_event<'e, E>(
    executor: E,
    stream_id: &str,
    event: &NewEvent,
    at_ms: i64,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO events (id, stream_id, event_type, severity, message, details, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(stream_id)
    .bind(event.event_type.as_str())
    .bind(event.severity.as_str())
    .bind(&event.message)
    .bind(event.details.to_string())
    .bind(at_ms)
    .execute(executor)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::event::EventType;
    use crate::streams::model::CreateStream;

    async fn open() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/registry.db", dir.path().display());
        let registry = Registry::open(&url).await.unwrap();
        (dir, registry)
    }

    fn config(title: &str) -> StreamConfig {
        let mut c: CreateStream = serde_json::from_str("{}").unwrap();
        c.title = title.into();
        StreamConfig::from(&c)
    }

    #[tokio::test]
    async fn sqlite_stores_streams_and_keeps_them_across_reopening() {
        let (dir, registry) = open().await;
        let kept = exercise(&registry).await;
        // Reopening the file keeps what was stored (and re-running migrations is harmless).
        let url = format!("sqlite://{}/sub/registry.db", dir.path().display());
        let again = Registry::open(&url).await.unwrap();
        assert_eq!(again.get(&kept.id).await.unwrap().unwrap(), kept);
    }

    /// A registry written before keys were stored as digests alone: after the upgrade its
    /// plaintext keys are gone from the file and the keys still publish.
    #[tokio::test]
    async fn upgrading_drops_plaintext_keys_and_keeps_them_working() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for name in ["0001_registry.sql", "0002_recordings.sql"] {
            std::fs::copy(here.join(name), old.join(name)).unwrap();
        }
        let path = dir.path().join("registry.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        let key = "old-plaintext-key-0123456789abcdef";
        sqlx::query(
            "INSERT INTO streams (id, user_id, status, stream_key, key_digest, config, created_at) \
             VALUES ('s1', 'u', 'idle', $1, $2, $3, 1)",
        )
        .bind(key)
        .bind(model::key_digest(key))
        .bind(config_json(&config("old")))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let registry = Registry::open(&url).await.unwrap();
        assert_eq!(registry.find_by_key(key).await.unwrap().unwrap().id, "s1");
        registry.pool.close().await;
        for file in ["registry.db", "registry.db-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "the plaintext key is still in {file}"
            );
        }
    }

    #[tokio::test]
    async fn postgres_stores_streams_the_same_way() {
        let server = cascade_testkit::Postgres::start().unwrap();
        let registry = Registry::open(&server.url()).await.unwrap();
        let kept = exercise(&registry).await;
        let again = Registry::open(&server.url()).await.unwrap();
        assert_eq!(again.get(&kept.id).await.unwrap().unwrap(), kept);
    }

    /// Every operation; returns a stream that is still stored.
    async fn exercise(registry: &Registry) -> StreamRecord {
        let (a, _) = registry.create("alice", &config("a")).await.unwrap();
        let (b, b_key) = registry.create("bob", &config("b")).await.unwrap();
        assert_eq!(registry.get(&a.id).await.unwrap().unwrap(), a);
        assert_eq!(
            registry.find_by_key(&b_key).await.unwrap().unwrap().id,
            b.id
        );
        assert!(registry.find_by_key("nope").await.unwrap().is_none());

        assert!(registry.set_status(&a.id, Status::Live).await.unwrap());
        let live = registry.get(&a.id).await.unwrap().unwrap();
        assert_eq!(live.status, Status::Live);
        assert!(live.started_at.is_some());

        let all = ListFilter {
            limit: 10,
            ..Default::default()
        };
        let (page, total) = registry.list(&all).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(page[0].id, b.id, "newest first");
        let only_live = ListFilter {
            status: Some(Status::Live),
            ..all.clone()
        };
        let (page, total) = registry.list(&only_live).await.unwrap();
        assert_eq!((page.len(), total), (1, 1));
        let bobs = ListFilter {
            user_id: Some("bob".into()),
            status: Some(Status::Idle),
            ..all.clone()
        };
        assert_eq!(registry.list(&bobs).await.unwrap().0[0].id, b.id);
        let second_page = ListFilter {
            limit: 1,
            offset: 1,
            ..all.clone()
        };
        assert_eq!(registry.list(&second_page).await.unwrap().0[0].id, a.id);

        let (rotated, new_key) = registry.rotate_key(&b.id).await.unwrap().unwrap();
        assert_eq!(rotated.id, b.id);
        assert_ne!(new_key, b_key);
        assert!(registry.find_by_key(&b_key).await.unwrap().is_none());
        assert_eq!(
            registry.find_by_key(&new_key).await.unwrap().unwrap().id,
            b.id
        );

        registry
            .add_event(&a.id, &NewEvent::new(EventType::StreamStarted, "started"))
            .await
            .unwrap();
        registry
            .add_event(&a.id, &NewEvent::new(EventType::Error, "broke"))
            .await
            .unwrap();
        let events = registry.events(&a.id, 10, 0).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, "stream_started");
        assert_eq!(events[1].severity, "error");

        assert!(registry.delete(&a.id).await.unwrap());
        assert!(!registry.delete(&a.id).await.unwrap());
        assert!(registry.events(&a.id, 10, 0).await.unwrap().is_empty());

        let rec = registry.create_recording(&b.id).await.unwrap();
        assert_eq!(rec.status, "recording");
        registry
            .update_recording(&rec.id, 8_500, 1_000_000, 20)
            .await
            .unwrap();
        assert!(
            !registry.convert_recording(&rec.id).await.unwrap(),
            "still recording"
        );
        assert_eq!(
            registry.recordings_in("recording").await.unwrap()[0].id,
            rec.id
        );
        registry
            .finish_recording(&rec.id, Some(now_ms_i64() - 1))
            .await
            .unwrap();
        let done = registry.get_recording(&rec.id).await.unwrap().unwrap();
        assert_eq!(
            (done.status.as_str(), done.duration_ms, done.segments),
            ("ready", 8_500, 20)
        );
        assert!(done.ended_at.is_some());
        assert_eq!(
            registry
                .expired_recordings(now_ms_i64())
                .await
                .unwrap()
                .len(),
            1
        );
        let kept = registry.create_recording(&b.id).await.unwrap();
        registry
            .finish_recording(&kept.id, Some(now_ms_i64() - 1))
            .await
            .unwrap();
        assert!(registry.convert_recording(&kept.id).await.unwrap());
        let expired = registry.expired_recordings(now_ms_i64()).await.unwrap();
        assert_eq!(expired.len(), 1, "a VOD recording does not expire");
        // Retention claims what it lists, and a conversion loses to the claim (and the other
        // way round), so nothing converted is deleted and no conversion is answered in vain.
        assert!(
            !registry
                .claim_expired_recording(&kept.id, now_ms_i64())
                .await
                .unwrap(),
            "a converted recording cannot be claimed"
        );
        assert!(
            registry
                .claim_expired_recording(&rec.id, now_ms_i64())
                .await
                .unwrap()
        );
        assert!(
            !registry.convert_recording(&rec.id).await.unwrap(),
            "a claimed recording cannot be converted"
        );
        assert_eq!(
            registry.expired_recordings(now_ms_i64()).await.unwrap()[0].status,
            "expiring",
            "an unfinished deletion is listed again"
        );
        assert_eq!(registry.list_recordings(&b.id).await.unwrap().len(), 2);
        assert!(registry.delete_recording(&rec.id).await.unwrap());
        assert!(registry.get_recording(&rec.id).await.unwrap().is_none());

        // A deleted stream's finished recordings, VOD ones included, go to retention; one
        // still recording waits until it is finished.
        let (c, _) = registry.create("carol", &config("c")).await.unwrap();
        let kept = registry.create_recording(&c.id).await.unwrap();
        registry.finish_recording(&kept.id, None).await.unwrap();
        assert!(registry.convert_recording(&kept.id).await.unwrap());
        let live = registry.create_recording(&c.id).await.unwrap();
        assert!(registry.delete(&c.id).await.unwrap());
        let orphans: Vec<String> = registry
            .expired_recordings(now_ms_i64())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(orphans, vec![kept.id.clone()], "{orphans:?}");
        assert!(
            registry
                .claim_expired_recording(&kept.id, now_ms_i64())
                .await
                .unwrap()
        );
        registry
            .finish_recording(&live.id, Some(now_ms_i64() + 3_600_000))
            .await
            .unwrap();
        assert!(
            registry
                .claim_expired_recording(&live.id, now_ms_i64())
                .await
                .unwrap(),
            "finished after its stream was deleted: claimed at once, not in an hour"
        );

        rotated
    }
}
