//! Analytics in the registry database: request records, per-minute figures, viewer sessions
//! and the aggregation frontier. A minute, the sessions it updates and its QoE events are
//! written in one transaction, once: a minute already stored is never recomputed, so a
//! restart neither loses nor double-counts one.

use sqlx::{AnyPool, QueryBuilder, Row};

use cascade_analytics::Record;
use cascade_analytics::minute::{MinuteStats, SessionMinute};

use crate::streams::event::NewEvent;
use crate::streams::registry::insert_event;

/// Rows per multi-row insert (4 values each, well inside SQLite's parameter limit).
const INSERT_CHUNK: usize = 500;

/// The frontier's row in `analytics_progress`: minutes before it are aggregated.
const FRONTIER: &str = "aggregated_before";

/// What a session row keeps beyond its times.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SessionDetails {
    /// Edge of its last request.
    pub edge: String,
    /// Device type.
    pub device_type: String,
    /// Location, if known.
    pub location: Option<String>,
    /// The application's user id, if a beacon said.
    pub user_id: Option<String>,
    /// Requests.
    pub requests: u64,
    /// Bytes.
    pub bytes: u64,
    /// Renditions fetched.
    pub renditions: Vec<String>,
    /// Starvations reported.
    pub stalls: u64,
    /// Startup, ms, when measured.
    pub startup_ms: Option<u64>,
    /// The session ended (no request within the session timeout).
    pub ended: bool,
}

/// One stored session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session id.
    pub session_id: String,
    /// First request, Unix ms.
    pub first_at: i64,
    /// Last request, Unix ms.
    pub last_at: i64,
    /// The rest.
    pub details: SessionDetails,
}

/// The analytics tables.
#[derive(Debug, Clone)]
pub struct AnalyticsStore {
    pool: AnyPool,
}

impl AnalyticsStore {
    /// The store in the registry's database (its migrations made the tables).
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Stores a batch of records; done when this returns `Ok`. A batch with an id is stored
    /// once: `Ok(false)` says it already was.
    pub async fn insert_records(
        &self,
        records: &[Record],
        batch: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(batch) = batch {
            let seen = sqlx::query("SELECT 1 FROM analytics_batches WHERE id = $1")
                .bind(batch)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if seen {
                return Ok(false);
            }
            sqlx::query("INSERT INTO analytics_batches (id, at) VALUES ($1, $2)")
                .bind(batch)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in records.chunks(INSERT_CHUNK) {
            let mut query: QueryBuilder<sqlx::Any> = QueryBuilder::new(
                "INSERT INTO analytics_records (stream_id, at, session_id, record) ",
            );
            query.push_values(chunk, |mut row, r| {
                row.push_bind(r.stream.clone())
                    .push_bind(r.at_ms)
                    .push_bind(r.session.clone())
                    .push_bind(serde_json::to_string(r).unwrap_or_default());
            });
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Streams with records in `[from, to)`, and the minutes those records fall in.
    pub async fn minutes_with_records(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT stream_id, (at / 60000) * 60000 AS minute FROM analytics_records \
             WHERE at >= $1 AND at < $2 ORDER BY minute, stream_id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// The records of `stream` in `[from, to)`; rows that no longer read as records are
    /// skipped.
    pub async fn records(
        &self,
        stream: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Record>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT record FROM analytics_records WHERE stream_id = $1 AND at >= $2 AND at < $3",
        )
        .bind(stream)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get::<String, _>(0).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect())
    }

    /// The stored figures of `stream` for `minute`, if any.
    pub async fn minute(
        &self,
        stream: &str,
        minute: i64,
    ) -> Result<Option<MinuteStats>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT figures FROM analytics_minutes WHERE stream_id = $1 AND minute = $2",
        )
        .bind(stream)
        .bind(minute)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>(0).ok())
            .and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Stores a minute with its sessions and events, unless it is already stored. Returns
    /// whether it was stored now.
    pub async fn store_minute(
        &self,
        stream: &str,
        minute: i64,
        stats: &MinuteStats,
        sessions: &[SessionMinute],
        events: &[NewEvent],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let exists =
            sqlx::query("SELECT 1 FROM analytics_minutes WHERE stream_id = $1 AND minute = $2")
                .bind(stream)
                .bind(minute)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if exists {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO analytics_minutes (stream_id, minute, figures) VALUES ($1, $2, $3)",
        )
        .bind(stream)
        .bind(minute)
        .bind(serde_json::to_string(stats).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        for seen in sessions {
            let existing = sqlx::query(
                "SELECT first_at, last_at, details FROM viewer_sessions \
                 WHERE stream_id = $1 AND session_id = $2",
            )
            .bind(stream)
            .bind(&seen.session)
            .fetch_optional(&mut *tx)
            .await?;
            let existed = existing.is_some();
            let mut row = match existing {
                Some(r) => SessionRow {
                    session_id: seen.session.clone(),
                    first_at: r.try_get(0)?,
                    last_at: r.try_get(1)?,
                    details: serde_json::from_str(&r.try_get::<String, _>(2)?).unwrap_or_default(),
                },
                None => SessionRow {
                    session_id: seen.session.clone(),
                    first_at: seen.first_ms,
                    last_at: seen.last_ms,
                    details: SessionDetails::default(),
                },
            };
            merge_session(&mut row, seen);
            let details = serde_json::to_string(&row.details).unwrap_or_default();
            let statement = if existed {
                "UPDATE viewer_sessions SET first_at = $3, last_at = $4, details = $5 \
                 WHERE stream_id = $1 AND session_id = $2"
            } else {
                "INSERT INTO viewer_sessions (stream_id, session_id, first_at, last_at, details) \
                 VALUES ($1, $2, $3, $4, $5)"
            };
            sqlx::query(statement)
                .bind(stream)
                .bind(&seen.session)
                .bind(row.first_at)
                .bind(row.last_at)
                .bind(details)
                .execute(&mut *tx)
                .await?;
        }
        for event in events {
            insert_event(
                &mut *tx,
                stream,
                event,
                minute + cascade_analytics::minute::MINUTE_MS,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The minutes of `stream` in `[from, to)`, in order.
    pub async fn series(
        &self,
        stream: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, MinuteStats)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT minute, figures FROM analytics_minutes \
             WHERE stream_id = $1 AND minute >= $2 AND minute < $3 ORDER BY minute",
        )
        .bind(stream)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let minute = row.try_get::<i64, _>(0).ok()?;
                let figures = serde_json::from_str(&row.try_get::<String, _>(1).ok()?).ok()?;
                Some((minute, figures))
            })
            .collect())
    }

    /// The highest peak of `stream` over its stored minutes.
    pub async fn peak_viewers(&self, stream: &str) -> Result<u32, sqlx::Error> {
        Ok(self
            .series(stream, 0, i64::MAX)
            .await?
            .iter()
            .map(|(_, m)| m.peak_viewers)
            .max()
            .unwrap_or(0))
    }

    /// Sessions of `stream` last seen at or after `since`, most recent first.
    pub async fn sessions(
        &self,
        stream: &str,
        since: i64,
        limit: u32,
    ) -> Result<Vec<SessionRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT session_id, first_at, last_at, details FROM viewer_sessions \
             WHERE stream_id = $1 AND last_at >= $2 ORDER BY last_at DESC LIMIT $3",
        )
        .bind(stream)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(SessionRow {
                    session_id: row.try_get(0).ok()?,
                    first_at: row.try_get(1).ok()?,
                    last_at: row.try_get(2).ok()?,
                    details: serde_json::from_str(&row.try_get::<String, _>(3).ok()?).ok()?,
                })
            })
            .collect())
    }

    /// Minutes before this are aggregated.
    pub async fn frontier(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT value FROM analytics_progress WHERE name = $1")
            .bind(FRONTIER)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.try_get::<i64, _>(0).ok()).unwrap_or(0))
    }

    /// Moves the frontier.
    pub async fn set_frontier(&self, value: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE analytics_progress SET value = $2 WHERE name = $1")
            .bind(FRONTIER)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            sqlx::query("INSERT INTO analytics_progress (name, value) VALUES ($1, $2)")
                .bind(FRONTIER)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Deletes records (and the ids of their batches) older than `records_before`, sessions
    /// older than `sessions_before` and minutes older than `minutes_before`; returns the rows
    /// deleted.
    pub async fn prune(
        &self,
        records_before: i64,
        sessions_before: i64,
        minutes_before: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        for (sql, bound) in [
            (
                "DELETE FROM analytics_records WHERE at < $1",
                records_before,
            ),
            (
                "DELETE FROM analytics_batches WHERE at < $1",
                records_before,
            ),
            (
                "DELETE FROM viewer_sessions WHERE last_at < $1",
                sessions_before,
            ),
            (
                "DELETE FROM analytics_minutes WHERE minute < $1",
                minutes_before,
            ),
        ] {
            deleted += sqlx::query(sql)
                .bind(bound)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}

/// Folds a minute of a session into its row.
fn merge_session(row: &mut SessionRow, seen: &SessionMinute) {
    row.first_at = row.first_at.min(seen.first_ms);
    row.last_at = row.last_at.max(seen.last_ms);
    let d = &mut row.details;
    let who = &seen.identity;
    d.edge.clone_from(&who.edge);
    d.device_type = who.device.label().to_owned();
    if who.location.is_some() {
        d.location.clone_from(&who.location);
    }
    if who.user.is_some() {
        d.user_id.clone_from(&who.user);
    }
    d.requests += seen.requests;
    d.bytes += seen.bytes;
    for r in &seen.renditions {
        if !d.renditions.contains(r) {
            d.renditions.push(r.clone());
        }
    }
    d.stalls += seen.stalls;
    if seen.startup_ms.is_some() {
        d.startup_ms = seen.startup_ms;
    }
    d.ended = seen.left;
}
