//! Live ingest end to end: the `cascade-origin` binary, streams created through its API, real
//! ffmpeg publishing over RTMP, real ffmpeg transcoding.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cascade_testkit::{
    BroadcastOptions, Broadcaster, CascadeProcess, HttpResponse, json_request, processes_with_arg,
    wait_for,
};
use serde_json::Value;

const OPS: &str = "ops-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

/// Transcoding is CPU-heavy on two cores: one stream-publishing test at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Origin {
    process: CascadeProcess,
    _dir: tempfile::TempDir,
}

impl Origin {
    fn start(grace: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
[origin]
database_url = "sqlite://{}/registry.db"
reconnect_grace = "{grace}"

[origin.transcoder]
preset = "ultrafast"
restart_delay = "200ms"
work_dir = "{}"

[storage.fs]
root = "{}/objects"

[[origin.tokens]]
name = "ops"
token = "{OPS}"
scope = "write"

[[origin.tokens]]
name = "dashboard"
token = "{VIEWER}"
scope = "read"
"#,
            dir.path().display(),
            dir.path().display(),
            dir.path().display()
        );
        let process = CascadeProcess::start("cascade-origin", "origin", &config).unwrap();
        Self { process, _dir: dir }
    }

    fn http(&self) -> SocketAddr {
        self.process.addr("listen").unwrap()
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> HttpResponse {
        json_request(self.http(), method, path, token, body).unwrap()
    }

    fn json(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let r = self.request(method, path, Some(OPS), body);
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    fn create(&self, body: &str) -> Value {
        let (status, stream) = self.json("POST", "/api/v1/livestreams", body);
        assert_eq!(status, 201, "{stream}");
        stream
    }

    fn stream(&self, id: &str) -> Value {
        let (status, stream) = self.json("GET", &format!("/api/v1/livestreams/{id}"), "");
        assert_eq!(status, 200, "{stream}");
        stream
    }

    fn events(&self, id: &str) -> Vec<String> {
        let (status, body) = self.json(
            "GET",
            &format!("/api/v1/livestreams/{id}/events?limit=100"),
            "",
        );
        assert_eq!(status, 200, "{body}");
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_type"].as_str().unwrap().to_owned())
            .collect()
    }

    fn event_messages(&self, id: &str, event_type: &str) -> Vec<String> {
        let (_, body) = self.json(
            "GET",
            &format!("/api/v1/livestreams/{id}/events?limit=100"),
            "",
        );
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event_type"] == event_type)
            .map(|e| format!("{} {}", e["message"], e["details"]))
            .collect()
    }

    fn rendition(&self, id: &str, name: &str) -> Value {
        self.stream(id)["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until every rendition in `names` has at least `keyframes` keyframes in its current run.
    fn wait_keyframes(&self, id: &str, names: &[&str], keyframes: usize, timeout: Duration) {
        wait_for(
            &format!("{keyframes} keyframes in every rendition of {names:?}"),
            timeout,
            || {
                names.iter().all(|n| {
                    self.rendition(id, n)["recent_keyframes"]
                        .as_array()
                        .is_some_and(|k| k.len() >= keyframes)
                })
            },
        );
    }

    fn log(&self) -> String {
        self.process.process().log()
    }
}

fn publish(url: &str, options: &BroadcastOptions) -> Broadcaster {
    Broadcaster::start(url, options).unwrap()
}

/// Publishes to `url` and checks that ffmpeg is refused (exits with an error) within 15 s.
fn assert_refused(url: &str, why: &str) {
    let mut publisher = publish(url, &BroadcastOptions::default());
    assert!(
        publisher
            .wait_for_exit(Duration::from_secs(15))
            .unwrap()
            .is_some_and(|s| !s.success()),
        "{why}: {}",
        publisher.log_tail()
    );
}

fn keyframe_times(rendition: &Value) -> Vec<f64> {
    rendition["recent_keyframes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect()
}

#[test]
fn every_rendition_gets_fragments_with_keyframes_at_the_same_media_times() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let stream = origin
        .create(r#"{"title":"ladder","settings":{"resolutions":["720p","480p","360p","240p"]}}"#);
    let id = stream["id"].as_str().unwrap();
    assert_eq!(stream["status"], "idle");
    let url = stream["rtmp_ingest_url"].as_str().unwrap();
    assert!(
        url.starts_with("rtmp://127.0.0.1:") && url.contains("/live/"),
        "{url}"
    );

    let _broadcaster = publish(
        url,
        &BroadcastOptions {
            width: 1280,
            height: 720,
            ..Default::default()
        },
    );
    let video = ["720p", "480p", "360p", "240p"];
    origin.wait_keyframes(id, &video, 3, Duration::from_secs(60));

    let stream = origin.stream(id);
    assert_eq!(stream["status"], "live");
    assert_eq!(stream["ingest"]["connected"], true);
    assert!(stream["ingest"]["ingest_bitrate"].as_u64().unwrap() > 0);
    let renditions = stream["renditions"].as_array().unwrap();
    let names: Vec<&str> = renditions
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["720p", "480p", "360p", "240p", "audio"]);
    for (rendition, height) in renditions.iter().zip([720, 480, 360, 240]) {
        assert_eq!(rendition["height"], height, "{rendition}");
        assert!(
            rendition["codec"].as_str().unwrap().starts_with("avc1."),
            "{rendition}"
        );
        assert!(rendition["fragments"].as_u64().unwrap() >= 3);
    }
    let audio = &renditions[4];
    assert_eq!(audio["codec"], "mp4a.40.2");
    assert_eq!(audio["sample_rate"], 48000);
    assert!(audio["fragments"].as_u64().unwrap() >= 2, "{audio}");

    // Fragments are cut at the part target, so there are more fragments than keyframes.
    let top = &renditions[0];
    assert!(
        top["fragments"].as_u64().unwrap() > top["keyframe_fragments"].as_u64().unwrap(),
        "{top}"
    );
    // Keyframes every 2 s of media time, the same in every rendition.
    let reference = keyframe_times(top);
    for pair in reference.windows(2) {
        assert!((pair[1] - pair[0] - 2.0).abs() < 0.05, "{reference:?}");
    }
    for rendition in &renditions[1..4] {
        let times = keyframe_times(rendition);
        let common = times.len().min(reference.len());
        assert!(common >= 3);
        for (a, b) in times[..common].iter().zip(&reference[..common]) {
            assert!(
                (a - b).abs() < 0.001,
                "{} keyframes {times:?} vs {reference:?}",
                rendition["name"]
            );
        }
    }

    assert_eq!(
        origin.process.metric("livestream_active_streams_total"),
        1.0
    );
    assert!(origin.process.metric("livestream_ingest_bytes_total") > 0.0);
    assert!(origin.events(id).contains(&"stream_started".to_owned()));
}

#[test]
fn stopping_disconnects_the_publisher_and_leaves_no_ffmpeg_behind() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let stream = origin.create(r#"{"settings":{"resolutions":["360p","240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let url = stream["rtmp_ingest_url"].as_str().unwrap();
    let mut broadcaster = publish(url, &BroadcastOptions::default());
    origin.wait_keyframes(&id, &["360p", "240p"], 1, Duration::from_secs(60));
    assert!(
        !processes_with_arg(&format!("cascade-{id}")).is_empty(),
        "the transcoder runs"
    );

    let (status, stopped) = origin.json("POST", &format!("/api/v1/livestreams/{id}/stop"), "");
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "ended");
    assert!(
        broadcaster
            .wait_for_exit(Duration::from_secs(15))
            .unwrap()
            .is_some(),
        "the publisher is disconnected"
    );
    wait_for("the transcoder to exit", Duration::from_secs(10), || {
        processes_with_arg(&format!("cascade-{id}")).is_empty()
    });
    assert!(origin.rendition(&id, "360p")["ended"] == true);
    let events = origin.events(&id);
    assert_eq!(events.first().map(String::as_str), Some("stream_started"));
    assert!(events.contains(&"stream_ended".to_owned()), "{events:?}");
    assert_eq!(
        origin.process.metric("livestream_active_streams_total"),
        0.0
    );

    // An ended stream refuses publishers until it is started again.
    assert_refused(url, "an ended stream accepted a publisher");
    let (status, started) = origin.json("POST", &format!("/api/v1/livestreams/{id}/start"), "");
    assert_eq!((status, started["status"].as_str()), (200, Some("idle")));
    let _again = publish(url, &BroadcastOptions::default());
    wait_for(
        "the stream to be live again",
        Duration::from_secs(30),
        || origin.stream(&id)["status"] == "live",
    );
}

#[test]
fn an_address_that_keeps_guessing_stream_keys_is_refused_even_with_the_right_key() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let stream = origin.create(r#"{"settings":{"resolutions":["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let url = stream["rtmp_ingest_url"].as_str().unwrap().to_owned();
    let key = stream["stream_key"].as_str().unwrap().to_owned();
    let base = url.trim_end_matches(&key).to_owned();
    // Ten wrong keys from 127.0.0.1 within a minute, each refused as a wrong key.
    for guess in 0..10 {
        assert_refused(
            &format!("{base}guess-{guess}"),
            &format!("guess {guess} was not refused"),
        );
    }
    // The right key from the same address is refused too, for a while.
    assert_refused(&url, "the guessing address could publish");
    assert_ne!(origin.stream(&id)["status"], "live");
    let log = origin.log();
    assert!(
        log.contains("too many wrong stream keys"),
        "the origin does not say why: {log}"
    );
    assert!(!log.contains(&key), "the stream key was logged");
}

#[test]
fn wrong_rotated_and_second_publishers_are_refused_without_logging_keys() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let stream = origin.create(r#"{"settings":{"resolutions":["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let old_url = stream["rtmp_ingest_url"].as_str().unwrap().to_owned();
    let old_key = stream["stream_key"].as_str().unwrap().to_owned();
    let base = old_url.trim_end_matches(&old_key).to_owned();

    assert_refused(
        &format!("{base}not-a-key-at-all"),
        "an unknown key is refused",
    );

    let (status, rotated) =
        origin.json("POST", &format!("/api/v1/livestreams/{id}/rotate_key"), "");
    assert_eq!(status, 200);
    let new_key = rotated["stream_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert_refused(&old_url, "the rotated-away key is refused");
    assert!(origin.process.metric("livestream_publish_refused_total") >= 2.0);

    let new_url = rotated["rtmp_ingest_url"].as_str().unwrap().to_owned();
    let mut first = publish(&new_url, &BroadcastOptions::default());
    origin.wait_keyframes(&id, &["240p"], 1, Duration::from_secs(60));
    assert_refused(&new_url, "a second publisher on a live key is refused");
    // The first publisher is unaffected.
    let before = origin.rendition(&id, "240p")["fragments"].as_u64().unwrap();
    wait_for(
        "more fragments from the first publisher",
        Duration::from_secs(20),
        || origin.rendition(&id, "240p")["fragments"].as_u64().unwrap() > before + 2,
    );
    assert!(
        first
            .wait_for_exit(Duration::from_millis(10))
            .unwrap()
            .is_none()
    );
    assert!(
        origin
            .event_messages(&id, "error")
            .iter()
            .any(|m| m.contains("already has a publisher")),
        "{:?}",
        origin.events(&id)
    );

    let log = origin.log();
    for key in [&old_key, &new_key, &"not-a-key-at-all".to_owned()] {
        assert!(
            !log.contains(key.as_str()),
            "a stream key appears in the log"
        );
    }
    assert!(log.contains("unknown stream key"));
}

#[test]
fn a_killed_transcoder_is_restarted_and_the_packager_sees_a_discontinuity() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let stream = origin.create(r#"{"settings":{"resolutions":["360p","240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let _broadcaster = publish(
        stream["rtmp_ingest_url"].as_str().unwrap(),
        &BroadcastOptions::default(),
    );
    origin.wait_keyframes(&id, &["360p", "240p"], 2, Duration::from_secs(60));
    let fragments_before = origin.rendition(&id, "360p")["fragments"].as_u64().unwrap();

    let pids = processes_with_arg(&format!("cascade-{id}"));
    assert_eq!(pids.len(), 1, "one ffmpeg per stream");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    wait_for(
        "a discontinuity in every rendition",
        Duration::from_secs(30),
        || {
            ["360p", "240p", "audio"]
                .iter()
                .all(|n| origin.rendition(&id, n)["discontinuities"].as_u64() >= Some(1))
        },
    );
    // The restarted transcoder produces again, with a new init segment.
    origin.wait_keyframes(&id, &["360p", "240p"], 1, Duration::from_secs(60));
    let after = origin.rendition(&id, "360p");
    assert!(after["init_segments"].as_u64().unwrap() >= 2, "{after}");
    assert!(after["fragments"].as_u64().unwrap() > fragments_before);
    let new_pids = processes_with_arg(&format!("cascade-{id}"));
    assert_eq!(new_pids.len(), 1);
    assert_ne!(new_pids[0], pids[0]);

    assert_eq!(
        origin.stream(&id)["status"],
        "live",
        "the stream was not restarted"
    );
    let restarts = origin.event_messages(&id, "transcoder_restarted");
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0].contains("SIGKILL") || restarts[0].contains("signal"),
        "{restarts:?}"
    );
    assert_eq!(
        origin
            .process
            .metric("livestream_transcoder_restarts_total"),
        1.0
    );
    assert_eq!(
        origin
            .events(&id)
            .iter()
            .filter(|e| *e == "stream_started")
            .count(),
        1
    );
}

#[test]
fn a_publisher_that_reconnects_within_the_grace_period_continues_the_stream() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("5s");
    let stream = origin.create(r#"{"settings":{"resolutions":["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let url = stream["rtmp_ingest_url"].as_str().unwrap().to_owned();
    let mut broadcaster = publish(&url, &BroadcastOptions::default());
    origin.wait_keyframes(&id, &["240p"], 2, Duration::from_secs(60));

    broadcaster.kill().unwrap();
    wait_for("connection_lost", Duration::from_secs(20), || {
        origin.events(&id).contains(&"connection_lost".to_owned())
    });
    assert_eq!(origin.stream(&id)["status"], "live");
    assert_eq!(origin.stream(&id)["ingest"]["connected"], false);

    let mut back = publish(&url, &BroadcastOptions::default());
    wait_for("connection_restored", Duration::from_secs(20), || {
        origin
            .events(&id)
            .contains(&"connection_restored".to_owned())
    });
    wait_for(
        "a discontinuity then new keyframes",
        Duration::from_secs(60),
        || {
            let r = origin.rendition(&id, "240p");
            r["discontinuities"].as_u64() >= Some(1)
                && r["recent_keyframes"]
                    .as_array()
                    .is_some_and(|k| !k.is_empty())
        },
    );
    let events = origin.events(&id);
    assert_eq!(
        events.iter().filter(|e| *e == "stream_started").count(),
        1,
        "{events:?}"
    );
    assert!(!events.contains(&"stream_ended".to_owned()), "{events:?}");

    // Gone for longer than the grace period: the stream ends.
    back.kill().unwrap();
    let lost_at = Instant::now();
    wait_for("the stream to end", Duration::from_secs(30), || {
        origin.stream(&id)["status"] == "ended"
    });
    assert!(
        lost_at.elapsed() >= Duration::from_secs(4),
        "ended before the grace period"
    );
    assert!(origin.events(&id).contains(&"stream_ended".to_owned()));
}

#[test]
fn two_streams_run_at_once_and_garbage_on_the_rtmp_port_harms_neither() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let a = origin.create(r#"{"title":"a","settings":{"resolutions":["240p"]}}"#);
    let b = origin.create(r#"{"title":"b","settings":{"resolutions":["240p"]}}"#);
    let _pa = publish(
        a["rtmp_ingest_url"].as_str().unwrap(),
        &BroadcastOptions::default(),
    );
    let _pb = publish(
        b["rtmp_ingest_url"].as_str().unwrap(),
        &BroadcastOptions::default(),
    );
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    origin.wait_keyframes(a, &["240p", "audio"], 1, Duration::from_secs(60));
    origin.wait_keyframes(b, &["240p", "audio"], 1, Duration::from_secs(60));
    assert_eq!(
        origin.process.metric("livestream_active_streams_total"),
        2.0
    );

    let rtmp = origin.process.addr("rtmp_listen").unwrap();
    use std::io::{Read, Write};
    // Garbage instead of a handshake.
    let mut garbage = std::net::TcpStream::connect(rtmp).unwrap();
    garbage.write_all(&[0xAB; 4096]).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink);
    // A valid handshake start, then nothing: the origin gives up on it by itself.
    let mut stalled = std::net::TcpStream::connect(rtmp).unwrap();
    stalled.write_all(&[3]).unwrap();
    stalled.write_all(&[0; 1536]).unwrap();

    let before = [a, b].map(|id| origin.rendition(id, "240p")["fragments"].as_u64().unwrap());
    wait_for(
        "both streams to keep going",
        Duration::from_secs(20),
        || {
            [a, b]
                .iter()
                .zip(before)
                .all(|(id, n)| origin.rendition(id, "240p")["fragments"].as_u64().unwrap() > n + 2)
        },
    );
    // The stalled connection is closed by the origin (handshake timeout), not left open.
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = stalled.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the stalled connection was not closed: {closed:?}"
    );
}

#[test]
fn video_that_is_not_h264_ends_the_stream_with_an_error_saying_why() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("30s");
    let stream = origin.create(r#"{"settings":{"resolutions":["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut broadcaster = publish(
        stream["rtmp_ingest_url"].as_str().unwrap(),
        &BroadcastOptions {
            video_codec: "flv",
            ..Default::default()
        },
    );
    wait_for("the stream to end", Duration::from_secs(30), || {
        origin.stream(&id)["status"] == "ended"
    });
    let errors = origin.event_messages(&id, "error");
    assert!(
        errors
            .iter()
            .any(|m| m.contains("H.263") && m.contains("only H.264")),
        "{errors:?}"
    );
    assert!(
        broadcaster
            .wait_for_exit(Duration::from_secs(15))
            .unwrap()
            .is_some()
    );
    assert!(processes_with_arg(&format!("cascade-{id}")).is_empty());
}

#[test]
fn the_api_names_bad_fields_and_refuses_bad_tokens() {
    let origin = Origin::start("30s");
    let bad = |body: &str| {
        let (status, error) = origin.json("POST", "/api/v1/livestreams", body);
        assert_eq!(status, 400, "{body}: {error}");
        error["field"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(
        bad(r#"{"settings":{"resolutions":["720p","4k"]}}"#),
        "settings.resolutions[1]"
    );
    assert_eq!(bad(r#"{"low_latency":"yes"}"#), "low_latency");
    assert_eq!(bad(r#"{"colour":"red"}"#), "colour");
    let (status, error) = origin.json("POST", "/api/v1/livestreams", "{not json");
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("invalid JSON"));

    let stream = origin.create(r#"{"title":"t","user_id":"u1"}"#);
    let id = stream["id"].as_str().unwrap();
    let path = format!("/api/v1/livestreams/{id}");
    assert_eq!(origin.request("GET", &path, None, "").status, 401);
    assert_eq!(
        origin
            .request("GET", &path, Some("wrong-token-0123456789"), "")
            .status,
        401
    );
    let read = origin.request("GET", &path, Some(VIEWER), "");
    assert_eq!(read.status, 200);
    let key = stream["stream_key"].as_str().unwrap();
    let shown = String::from_utf8_lossy(&read.body).into_owned();
    assert!(
        !shown.contains(key) && !shown.contains("stream_key"),
        "GET shows no stream key: {shown}"
    );
    assert_eq!(
        origin.request("DELETE", &path, Some(VIEWER), "").status,
        403
    );
    assert_eq!(origin.request("PUT", &path, Some(OPS), "").status, 405);
    assert_eq!(
        origin
            .request("GET", "/api/v1/livestreams/no-such-id", Some(OPS), "")
            .status,
        404
    );
    let (status, error) = origin.json("GET", "/api/v1/livestreams?status=paused", "");
    assert_eq!((status, error["field"].as_str()), (400, Some("status")));

    let (status, updated) = origin.json("PATCH", &path, r#"{"title":"renamed"}"#);
    assert_eq!((status, updated["title"].as_str()), (200, Some("renamed")));
    let (status, error) = origin.json("PATCH", &path, r#"{"settings":{"codec":"vp9"}}"#);
    assert_eq!(
        (status, error["field"].as_str()),
        (400, Some("settings.codec"))
    );

    let other = origin.create(r#"{"user_id":"u2"}"#);
    let (_, list) = origin.json("GET", "/api/v1/livestreams?user_id=u1&status=idle", "");
    let ids: Vec<&str> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id]);
    assert!(
        !list.to_string().contains(key),
        "a list shows no stream key: {list}"
    );
    assert_eq!(list["limit"], 20);
    let (_, page) = origin.json("GET", "/api/v1/livestreams?limit=1&offset=1", "");
    assert_eq!(page["streams"].as_array().unwrap().len(), 1);
    assert_eq!(page["total"], 2);

    assert_eq!(origin.request("DELETE", &path, Some(OPS), "").status, 204);
    assert_eq!(origin.request("GET", &path, Some(OPS), "").status, 404);
    assert_eq!(
        origin.stream(other["id"].as_str().unwrap())["user_id"],
        "u2"
    );

    // Everything survives a restart of the origin (the registry is on disk).
    let mut process = origin.process;
    process.stop_with(2, Duration::from_secs(10)).unwrap();
    let again = process.start_again().unwrap();
    let r = json_request(
        again.addr("listen").unwrap(),
        "GET",
        &format!("/api/v1/livestreams/{}", other["id"].as_str().unwrap()),
        Some(OPS),
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200);

    // An address that keeps presenting wrong tokens is refused for a while, good token or not.
    let api = again.addr("listen").unwrap();
    let list = |token: &str| json_request(api, "GET", "/api/v1/livestreams", Some(token), "");
    for _ in 0..10 {
        assert_eq!(list("guess-0123456789").unwrap().status, 401);
    }
    let blocked = list(OPS).unwrap();
    assert_eq!(blocked.status, 429);
    assert!(
        blocked.headers.iter().any(
            |(name, value)| name == "retry-after" && value.parse::<u64>().is_ok_and(|s| s >= 1)
        ),
        "{:?}",
        blocked.headers
    );
    assert!(String::from_utf8_lossy(&blocked.body).contains("too many failed authentications"));
}

/// Completes an RTMP handshake as a client (unversioned, as the simple handshake allows).
fn rtmp_handshake(stream: &mut std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    c0c1[1..9].fill(0);
    stream.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    stream.read_exact(&mut s0s1s2).unwrap();
    stream.write_all(&s0s1s2[1..1537]).unwrap();
}

#[test]
fn rtmp_clients_that_never_publish_or_announce_huge_messages_are_cut_off() {
    use std::io::{ErrorKind, Read, Write};
    let origin = Origin::start("30s");
    let rtmp = origin.process.addr("rtmp_listen").unwrap();

    // A chunk header announcing a 16 MiB video message: closed at once, before any body.
    let mut huge = std::net::TcpStream::connect(rtmp).unwrap();
    rtmp_handshake(&mut huge);
    huge.write_all(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0])
        .unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut sink = Vec::new();
    assert!(
        huge.read_to_end(&mut sink).is_ok(),
        "the connection stays open"
    );
    assert!(start.elapsed() < Duration::from_secs(3));

    // A client that trickles a valid message a byte every 2 s, never publishing, so that no
    // read timeout fires: cut off by the publish deadline (10 s after connecting).
    let opened = Instant::now();
    let mut silent = std::net::TcpStream::connect(rtmp).unwrap();
    rtmp_handshake(&mut silent);
    silent
        .write_all(&[0x04, 0, 0, 0, 0, 0x03, 0xe8, 9, 1, 0, 0, 0])
        .unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    let closed_after = loop {
        assert!(opened.elapsed() < Duration::from_secs(30), "never closed");
        match silent.read(&mut buffer) {
            Ok(0) => break opened.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if silent.write_all(&[0x17]).is_err() {
                    break opened.elapsed();
                }
            }
            Err(_) => break opened.elapsed(),
        }
    };
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    // The origin still answers.
    assert_eq!(
        origin
            .request("GET", "/api/v1/livestreams", Some(OPS), "")
            .status,
        200
    );
}
