//! Viewer analytics over Kafka (a real tansu broker): simulated players send CMCD to a real
//! edge, which publishes its records to `cascade.analytics`; the real origin consumes,
//! stores and aggregates them. The origin is killed mid-stream and restarted: every minute it
//! had stored is still there, unchanged, and every request the players made is counted once.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cascade_testkit::{CascadeProcess, Tansu, json_request, raw_request, wait_for};
use serde_json::Value;

const OPS: &str = "ops-token-0123456789";
const SESSIONS: usize = 10;

fn origin_config(dir: &std::path::Path, kafka: &str) -> String {
    let path = dir.display();
    format!(
        r#"
[origin]
database_url = "sqlite://{path}/registry.db"

[origin.analytics]
session_idle = "5s"
grace = "1s"

[[origin.tokens]]
name = "ops"
token = "{OPS}"
scope = "write"

[storage.fs]
root = "{path}/objects"
{kafka}"#
    )
}

fn api(origin: &CascadeProcess, method: &str, path: &str) -> (u16, Value) {
    let body = if method == "POST" { "{}" } else { "" };
    let r = json_request(
        origin.addr("listen").unwrap(),
        method,
        path,
        Some(OPS),
        body,
    )
    .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn series(origin: &CascadeProcess, id: &str) -> Vec<Value> {
    let (status, body) = api(
        origin,
        "GET",
        &format!("/api/v1/livestreams/{id}/analytics"),
    );
    assert_eq!(status, 200, "{body}");
    body["series"].as_array().cloned().unwrap_or_default()
}

#[test]
fn records_cross_kafka_and_a_killed_origin_loses_no_stored_minute() {
    let tansu = Tansu::start().unwrap();
    let kafka = format!(
        "[kafka]\nbrokers = [\"{}\"]\npartitions = 1\nfetch_wait = \"5ms\"\n",
        tansu.bootstrap()
    );
    // The purge bus creates the purge topics the edge follows.
    let _bus = CascadeProcess::start(
        "cascade-purge-bus",
        "purge_bus",
        &format!(
            "[purge_bus]\nnodes = [\"edge-k\"]\n[[purge_bus.tokens]]\nname = \"ops\"\ntoken = \"{OPS}\"\nscope = \"write\"\n{kafka}"
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = origin_config(dir.path(), &kafka);
    let mut origin = CascadeProcess::start("cascade-origin", "origin", &config).unwrap();
    let (status, stream) = api(&origin, "POST", "/api/v1/livestreams");
    assert_eq!(status, 201, "{stream}");
    let id = stream["id"].as_str().unwrap().to_owned();
    let shield = CascadeProcess::start(
        "cascade-shield",
        "shield",
        &format!(
            "[shield]\norigins = [\"{}\"]\n[shield.disk]\ndir = \"\"\n[shield.purge]\nnode_id = \"shield-k\"\n{kafka}",
            origin.addr("listen").unwrap()
        ),
    )
    .unwrap();
    let edge = CascadeProcess::start(
        "cascade-edge",
        "edge",
        &format!(
            "[edge]\nshields = [\"{}\"]\norigin = \"\"\n[edge.purge]\nnode_id = \"edge-k\"\n\
             [edge.analytics]\nflush_interval = \"200ms\"\n{kafka}",
            shield.addr("listen").unwrap()
        ),
    )
    .unwrap();

    // Ten players ask for the playlist twice a second, each with its CMCD session id.
    let edge_addr = edge.addr("listen").unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicU64::new(0));
    let players = {
        let (running, answered, id) = (Arc::clone(&running), Arc::clone(&answered), id.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                for s in 0..SESSIONS {
                    let request = format!(
                        "GET /live/{id}/master.m3u8?CMCD=bl%3D1500%2Cot%3Dm%2Csid%3D%22player-{s}%22 HTTP/1.1\r\n\
                         Host: localhost\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nConnection: close\r\n\r\n"
                    );
                    if raw_request(edge_addr, request.as_bytes()).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    wait_for(
        "the ten players in /viewers",
        Duration::from_secs(30),
        || {
            api(&origin, "GET", &format!("/api/v1/livestreams/{id}/viewers")).1["viewer_count"]
                == SESSIONS
        },
    );
    let mut stored = Vec::new();
    wait_for("a stored minute", Duration::from_secs(100), || {
        stored = series(&origin, &id);
        !stored.is_empty()
    });

    // Killed without a chance to flush anything; the players go on, their records wait in
    // the topic.
    origin.stop_with(9, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let origin = CascadeProcess::start("cascade-origin", "origin", &config).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    running.store(false, Ordering::Relaxed);
    players.join().unwrap();
    let total = answered.load(Ordering::Relaxed);

    // Every request is counted once, when every minute has been aggregated.
    let mut after = Vec::new();
    wait_for(
        "every request in the minutes",
        Duration::from_secs(120),
        || {
            after = series(&origin, &id);
            after
                .iter()
                .map(|p| p["requests"].as_u64().unwrap())
                .sum::<u64>()
                >= total
        },
    );
    eprintln!("{total} requests; minutes: {after:#?}");
    assert_eq!(
        after
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        total
    );
    for (before, now) in stored.iter().zip(&after) {
        assert_eq!(before, now, "a stored minute changed after the restart");
    }
    // Every minute, including the one the origin was down in, saw all ten players.
    assert!(after.len() >= 2, "{after:#?}");
    for point in &after {
        assert_eq!(point["viewer_count"], SESSIONS, "{point}");
        assert_eq!(point["average_buffer_ms"], 1500.0, "{point}");
    }
    let (_, body) = api(
        &origin,
        "GET",
        &format!("/api/v1/livestreams/{id}/analytics"),
    );
    let players: Vec<&Value> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["session_id"].as_str().unwrap().starts_with("player-"))
        .collect();
    assert_eq!(players.len(), SESSIONS, "{body}");
    assert!(
        players
            .iter()
            .all(|s| s["edge"] == "edge-k" && s["device_type"] == "desktop")
    );
    assert_eq!(
        edge.metric("cascade_analytics_records_total{outcome=\"dropped\"}"),
        0.0
    );
}
