//! `cascade-bench analytics`: how many viewer records a second the origin's analytics take,
//! on the real code and a real SQLite registry. Synthetic sessions request a part every half
//! second for the run's minutes; their records are encoded in the edges' batches, then:
//! - **ingest**: each batch decoded, stored (one transaction, stored once) and counted in the
//!   live viewers, as the collector and the Kafka consumer do;
//! - **aggregate**: every finished minute read back, aggregated with its sessions and QoE
//!   events, and stored, as the origin's aggregator does;
//! - **in memory**: decode and aggregate alone, without the database.
//!
//! Run under `taskset -c 0` for one core (`bench/scripts/analytics` does).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use cascade_analytics::minute::{MINUTE_MS, Settings, aggregate, minute_of};
use cascade_analytics::record::{decode_batch, encode_batch};
use cascade_analytics::{Object, Record};
use cascade_config::OriginAnalyticsConfig;
use cascade_origin::analytics::Analytics;
use cascade_origin::analytics::store::AnalyticsStore;
use cascade_origin::streams::registry::Registry;

/// Records per batch, as edges send them by default.
const BATCH: usize = 2000;

#[derive(Debug, Serialize)]
struct Report {
    records: usize,
    sessions: usize,
    minutes: usize,
    ingest_records_per_second: f64,
    aggregate_records_per_second: f64,
    in_memory_records_per_second: f64,
}

fn synthetic(records: usize, sessions: usize, start_ms: i64) -> Vec<Record> {
    (0..records)
        .map(|i| {
            let session = i % sessions;
            let tick = (i / sessions) as i64;
            let at_ms = start_ms + tick * 500 + (session as i64 % 500);
            Record {
                at_ms,
                stream: format!("stream-{}", session % 4),
                live: true,
                rendition: Some(
                    if session.is_multiple_of(3) {
                        "360p"
                    } else {
                        "720p"
                    }
                    .into(),
                ),
                object: Object::Part,
                status: 200,
                bytes: 60_000,
                cache: if tick % 20 == 0 { "miss" } else { "hit" }.into(),
                ttfb_ms: 2,
                duration_ms: 5,
                protocol: "h2".into(),
                edge: format!("edge-{}", session % 3),
                session: format!("6e2fb550-c457-11e9-bb97-{session:012}"),
                object_time_ms: Some(at_ms - 400),
                buffer_ms: Some(1_200),
                starved: tick % 97 == 0,
                throughput_kbps: Some(25_000),
                bitrate_kbps: Some(if session.is_multiple_of(3) {
                    800
                } else {
                    2_800
                }),
                top_bitrate_kbps: Some(2_800),
                object_duration_ms: Some(500),
                format: Some('h'),
                ..Record::default()
            }
        })
        .collect()
}

/// Runs the benchmark and prints its report.
pub async fn run(records: usize, sessions: usize, json: bool) -> anyhow::Result<()> {
    let sessions = sessions.max(1);
    let start = minute_of(cascade_service::clock::now_ms_i64() - 24 * 3_600_000);
    let generated = synthetic(records, sessions, start);
    let batches: Vec<Vec<u8>> = generated.chunks(BATCH).map(encode_batch).collect();
    let last = generated.iter().map(|r| r.at_ms).max().unwrap_or(start);
    drop(generated);

    let dir = tempfile::tempdir().context("temporary directory")?;
    let registry =
        Registry::open(&format!("sqlite://{}/registry.db", dir.path().display())).await?;
    let config = OriginAnalyticsConfig::default();
    let analytics = Arc::new(Analytics::new(
        AnalyticsStore::new(registry.pool().clone()),
        &config,
        false,
    ));

    let began = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        let (decoded, rejected) = decode_batch(batch);
        anyhow::ensure!(rejected == 0, "a synthetic batch did not decode");
        analytics
            .ingest(&decoded, Some(&format!("bench/{i}")))
            .await
            .context("storing a batch")?;
    }
    let ingest = records as f64 / began.elapsed().as_secs_f64();

    let began = Instant::now();
    let minutes = analytics
        .aggregate_ready(last + MINUTE_MS + 10 * 60_000)
        .await
        .context("aggregating")?;
    let aggregated = records as f64 / began.elapsed().as_secs_f64();

    let settings = Settings::default();
    let began = Instant::now();
    let mut decoded = Vec::with_capacity(records);
    for batch in &batches {
        decoded.extend(decode_batch(batch).0);
    }
    let mut by_stream: std::collections::BTreeMap<(String, i64), Vec<Record>> = Default::default();
    for r in decoded {
        by_stream
            .entry((r.stream.clone(), minute_of(r.at_ms)))
            .or_default()
            .push(r);
    }
    let mut counted = 0;
    for ((_, minute), window) in &by_stream {
        counted += aggregate(*minute, window, &settings).0.requests;
    }
    anyhow::ensure!(
        counted as usize == records,
        "in-memory aggregation lost records"
    );
    let in_memory = records as f64 / began.elapsed().as_secs_f64();

    let report = Report {
        records,
        sessions,
        minutes,
        ingest_records_per_second: ingest.round(),
        aggregate_records_per_second: aggregated.round(),
        in_memory_records_per_second: in_memory.round(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} records from {} sessions over {} stream-minutes\n\
             ingest (decode, store once, live viewers): {:>10.0} records/s\n\
             aggregate (read back, minutes, sessions, events): {:>10.0} records/s\n\
             in memory (decode + aggregate, no database): {:>10.0} records/s",
            report.records,
            report.sessions,
            report.minutes,
            report.ingest_records_per_second,
            report.aggregate_records_per_second,
            report.in_memory_records_per_second
        );
    }
    Ok(())
}
