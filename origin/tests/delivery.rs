//! Delivery end to end: real ffmpeg publishes over RTMP to the `cascade-origin` binary, which
//! transcodes, packages and serves LL-HLS and DASH; real clients read it (ffmpeg decodes every
//! rendition, PyPI's `m3u8` parses every playlist), and the recording is archived to the
//! filesystem or a real Garage S3 and played back as VOD, also after an origin restart.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cascade_origin::archive::store::S3Store;
use cascade_testkit::{
    BroadcastOptions, Broadcaster, CascadeProcess, Garage, HttpResponse, http_get, json_request,
    wait_for, wait_for_or_explain,
};
use serde_json::Value;

const OPS: &str = "ops-token-0123456789";

/// Transcoding is CPU-heavy on two cores: one publishing test at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Origin {
    process: CascadeProcess,
    dir: tempfile::TempDir,
}

impl Origin {
    /// An origin storing objects as `storage` says (a TOML `[storage]` section).
    fn start(storage: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display();
        let config = format!(
            r#"
[origin]
database_url = "sqlite://{path}/registry.db"
reconnect_grace = "2s"

[origin.transcoder]
preset = "ultrafast"
work_dir = "{path}"

[[origin.tokens]]
name = "ops"
token = "{OPS}"
scope = "write"

{storage}
"#
        );
        let storage_dir = dir.path().join("objects");
        let config = config.replace("{objects}", &storage_dir.display().to_string());
        let process = CascadeProcess::start("cascade-origin", "origin", &config).unwrap();
        Self { process, dir }
    }

    fn http(&self) -> SocketAddr {
        self.process.addr("listen").unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http())
    }

    fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http(), path).unwrap()
    }

    fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let r = json_request(self.http(), method, path, Some(OPS), body).unwrap();
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    fn create(&self, body: &str) -> Value {
        let (status, stream) = self.api("POST", "/api/v1/livestreams", body);
        assert_eq!(status, 201, "{stream}");
        stream
    }

    fn recordings(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.api("GET", &format!("/api/v1/livestreams/{id}/recordings"), "");
        assert_eq!(status, 200, "{body}");
        body["recordings"].as_array().unwrap().clone()
    }

    fn events(&self, id: &str) -> String {
        let (_, body) = self.api(
            "GET",
            &format!("/api/v1/livestreams/{id}/events?limit=100"),
            "",
        );
        body.to_string()
    }
}

fn publish(stream: &Value) -> Broadcaster {
    let options = BroadcastOptions {
        width: 854,
        height: 480,
        ..BroadcastOptions::default()
    };
    Broadcaster::start(stream["rtmp_ingest_url"].as_str().unwrap(), &options).unwrap()
}

/// Seconds of media ffmpeg decoded from `url` (reading at most `seconds`), with every stream
/// of the input mapped.
fn decode(url: &str, seconds: u32) -> f64 {
    let ffmpeg = cascade_testkit::ffmpeg_path().unwrap();
    let out = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostats",
            "-progress",
            "pipe:1",
        ])
        .args([
            "-i",
            url,
            "-map",
            "0",
            "-t",
            &seconds.to_string(),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffmpeg could not read {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .filter_map(|v| v.parse::<f64>().ok())
        .fold(0.0, f64::max)
        / 1e6
}

/// Parses playlists with PyPI's `m3u8` and returns what it read, as JSON.
fn parse_with_m3u8(playlists: &[(&str, String)]) -> Value {
    let python = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys, m3u8
out = {}
for name, text in json.load(sys.stdin):
    p = m3u8.loads(text)
    out[name] = {
        "variant": p.is_variant,
        "playlists": [{"uri": v.uri, "bandwidth": v.stream_info.bandwidth,
                       "average_bandwidth": v.stream_info.average_bandwidth,
                       "codecs": v.stream_info.codecs, "resolution": v.stream_info.resolution,
                       "frame_rate": v.stream_info.frame_rate, "audio": v.stream_info.audio}
                      for v in p.playlists],
        "media": [{"type": m.type, "group_id": m.group_id, "uri": m.uri} for m in p.media],
        "version": p.version,
        "target_duration": p.target_duration,
        "media_sequence": p.media_sequence,
        "segments": [{"uri": s.uri, "duration": s.duration, "discontinuity": s.discontinuity,
                      "parts": [{"uri": x.uri, "duration": x.duration, "independent": x.independent == "YES"}
                                for x in s.parts],
                      "init": s.init_section.uri if s.init_section else None,
                      "program_date_time": str(s.program_date_time) if s.program_date_time else None}
                     for s in p.segments],
        "part_target": p.part_inf.part_target if p.part_inf else None,
        "server_control": {
            "can_block_reload": p.server_control.can_block_reload,
            "part_hold_back": p.server_control.part_hold_back,
            "hold_back": p.server_control.hold_back,
            "can_skip_until": p.server_control.can_skip_until,
        } if p.server_control else None,
        "preload_hint": {"type": p.preload_hint.hint_type, "uri": p.preload_hint.uri}
                        if p.preload_hint else None,
        "rendition_reports": [{"uri": r.uri, "last_msn": r.last_msn, "last_part": r.last_part}
                              for r in p.rendition_reports],
        "skipped_segments": p.skip.skipped_segments if p.skip else None,
        "endlist": p.is_endlist,
        "playlist_type": p.playlist_type,
    }
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python with m3u8 (CASCADE_PYTHON, set by .ci/install-tools)");
    serde_json::to_writer(child.stdin.take().unwrap(), &playlists).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "m3u8 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `(msn, part)` of a `<msn>.<part>.m4s` URI.
fn part_of(uri: &str) -> (u64, u64) {
    let stem = uri.strip_suffix(".m4s").unwrap();
    let (msn, part) = stem.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

/// Waits until the live playlist of `rendition` lists `segments` complete segments.
fn wait_for_segments(origin: &Origin, id: &str, rendition: &str, segments: usize) {
    wait_for(
        &format!("{segments} segments of {rendition}"),
        Duration::from_secs(60),
        || {
            origin
                .get(&format!("/live/{id}/{rendition}/playlist.m3u8"))
                .text()
                .matches("#EXTINF")
                .count()
                >= segments
        },
    );
}

/// Stops the stream and waits for its recording; returns the recording id.
fn stop_and_wait_for_recording(origin: &Origin, id: &str) -> String {
    let (status, _) = origin.api("POST", &format!("/api/v1/livestreams/{id}/stop"), "");
    assert_eq!(status, 200);
    // The last segments are archived and the index written before the recording is ready;
    // on a busy machine that can take a while. Say what the origin reports if it never is.
    wait_for_or_explain(
        "a ready recording after the stop",
        Duration::from_secs(60),
        || {
            origin
                .recordings(id)
                .first()
                .is_some_and(|r| r["status"] == "ready")
        },
        || {
            format!(
                "(recordings {:?}; events {})",
                origin.recordings(id),
                origin.events(id)
            )
        },
    );
    origin.recordings(id)[0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn live_ll_hls_and_dash_play_and_the_recording_plays_as_vod() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("[storage.fs]\nroot = \"{objects}\"");
    let stream = origin.create(
        r#"{"title": "delivery", "dvr_enabled": false, "settings": {"resolutions": ["480p", "240p"], "playlist_length": 7}}"#,
    );
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut publisher = publish(&stream);
    wait_for_segments(&origin, &id, "480p", 4);

    // Playlists as a player sees them, parsed by m3u8.
    let master = origin.get(&format!("/live/{id}/master.m3u8"));
    assert_eq!(master.status, 200);
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        master.header("surrogate-key"),
        Some(format!("stream/{id}").as_str())
    );
    let mut playlists = vec![("master", master.text())];
    let names = ["480p", "240p", "audio"];
    for name in names {
        let r = origin.get(&format!("/live/{id}/{name}/playlist.m3u8"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("public, max-age=1"));
        assert_eq!(
            r.header("surrogate-key"),
            Some(format!("stream/{id} rendition/{id}/{name}").as_str())
        );
        playlists.push((name, r.text()));
    }
    let parsed = parse_with_m3u8(&playlists);
    let m = &parsed["master"];
    assert_eq!(m["variant"], true);
    let variants = m["playlists"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{m}");
    assert_eq!(variants[0]["uri"], "480p/playlist.m3u8");
    assert_eq!(variants[0]["resolution"], serde_json::json!([854, 480]));
    assert!(variants[0]["codecs"].as_str().unwrap().starts_with("avc1."));
    assert!(
        variants[0]["codecs"]
            .as_str()
            .unwrap()
            .ends_with(",mp4a.40.2")
    );
    assert!(variants[0]["average_bandwidth"].as_u64().unwrap() > 0);
    assert_eq!(variants[0]["frame_rate"], 30.0);
    assert_eq!(variants[0]["audio"], "audio");
    assert_eq!(m["media"][0]["type"], "AUDIO");
    for name in names {
        let p = &parsed[name];
        assert_eq!(
            p["server_control"]["can_block_reload"], "YES",
            "{name}: {p}"
        );
        assert_eq!(p["part_target"], 0.34);
        assert!(p["server_control"]["part_hold_back"].as_f64().unwrap() >= 3.0 * 0.34);
        assert!(p["server_control"]["can_skip_until"].as_f64().unwrap() >= 12.0);
        assert_eq!(p["preload_hint"]["type"], "PART");
        assert_eq!(p["rendition_reports"].as_array().unwrap().len(), 2);
        let segments = p["segments"].as_array().unwrap();
        assert!(segments.len() >= 4, "{name}: {p}");
        assert_eq!(segments[0]["init"], "init.mp4");
        assert!(segments[0]["program_date_time"].is_string());
        let parts: Vec<&Value> = segments
            .iter()
            .flat_map(|s| s["parts"].as_array().unwrap())
            .collect();
        assert!(parts.len() >= 4, "{name} lists its recent parts");
        for part in &parts {
            assert!(
                part["duration"].as_f64().unwrap() <= 0.34,
                "{name}: part over the target: {part}"
            );
        }
        if name != "audio" {
            assert!(
                segments.iter().all(|s| s["parts"]
                    .as_array()
                    .unwrap()
                    .first()
                    .is_none_or(|p| p["independent"] == true)),
                "{name}: every segment starts with an independent part"
            );
        }
    }

    // Blocking reload: ask for the hinted part; the answer comes when it exists and lists it.
    let hint = parsed["480p"]["preload_hint"]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let (msn, part) = part_of(&hint);
    let started = Instant::now();
    let blocked = origin.get(&format!(
        "/live/{id}/480p/playlist.m3u8?_HLS_msn={msn}&_HLS_part={part}"
    ));
    let waited = started.elapsed();
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    assert!(
        blocked.text().contains(&format!("URI=\"{hint}\"")),
        "{}",
        blocked.text()
    );
    assert!(waited < Duration::from_secs(3), "blocked for {waited:?}");
    assert_eq!(blocked.header("cache-control"), Some("public, max-age=6"));
    // The next hinted part, requested directly, waits for it and then arrives whole.
    let next = parse_with_m3u8(&[("p", blocked.text())])["p"]["preload_hint"]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let part_response = origin.get(&format!("/live/{id}/480p/{next}"));
    assert_eq!(part_response.status, 200);
    assert_eq!(
        part_response.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(part_response.header("content-type"), Some("video/mp4"));
    assert!(part_response.body.len() > 100);
    assert_eq!(&part_response.body[4..8], b"moof");

    // A delta update skips old segments (once the playlist is long enough).
    wait_for(
        "a playlist longer than the skip boundary",
        Duration::from_secs(40),
        || {
            origin
                .get(&format!("/live/{id}/480p/playlist.m3u8?_HLS_skip=YES"))
                .text()
                .contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=")
        },
    );

    // Bad requests are refused with a reason; nothing outside the store is reachable.
    for (path, status) in [
        (format!("/live/{id}/480p/playlist.m3u8?_HLS_msn=-1"), 400),
        (format!("/live/{id}/480p/playlist.m3u8?_HLS_msn=abc"), 400),
        (format!("/live/{id}/480p/playlist.m3u8?_HLS_part=1"), 400),
        (
            format!("/live/{id}/480p/playlist.m3u8?_HLS_msn={}", msn + 10),
            400,
        ),
        (format!("/live/{id}/1080p/playlist.m3u8"), 404),
        ("/live/nosuchstream/master.m3u8".to_owned(), 404),
        (format!("/live/{id}/../../etc/passwd"), 400),
        (format!("/live/{id}/%2e%2e/%2e%2e/etc/passwd"), 400),
        (format!("/vod/{id}/..%2f..%2fregistry.db"), 400),
    ] {
        let r = origin.get(&path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(!r.text().trim().is_empty(), "{path}: the error says why");
    }

    // DASH: the in-progress segment streams as its parts arrive, then equals the stored one.
    let mpd = origin.get(&format!("/live/{id}/manifest.mpd"));
    assert_eq!(mpd.status, 200);
    assert_eq!(mpd.header("content-type"), Some("application/dash+xml"));
    let text = mpd.text();
    for needle in [
        "type=\"dynamic\"",
        "availabilityTimeOffset=",
        "availabilityTimeComplete=\"false\"",
        "<ServiceDescription",
        "urn:mpeg:dash:utc:http-iso:2014",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    let playlist = origin.get(&format!("/live/{id}/240p/playlist.m3u8")).text();
    let growing = part_of(
        parse_with_m3u8(&[("p", playlist)])["p"]["preload_hint"]["uri"]
            .as_str()
            .unwrap(),
    )
    .0;
    let started = Instant::now();
    let chunked = origin.get(&format!("/live/{id}/240p/{growing}.m4s"));
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "it arrived as produced"
    );
    let whole = origin.get(&format!("/live/{id}/240p/{growing}.m4s"));
    assert_eq!(
        whole.header("content-length").map(str::to_owned),
        Some(whole.body.len().to_string())
    );
    assert_eq!(chunked.body, whole.body);
    let time = origin.get("/time");
    assert!(time.text().ends_with('Z'), "{}", time.text());

    // Thumbnail.
    let thumb = origin.get(&format!("/live/{id}/thumbnail.jpg"));
    assert_eq!(thumb.status, 200, "{}", thumb.text());
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    assert_eq!(&thumb.body[..2], &[0xFF, 0xD8]);

    // Real players read it: every rendition, HLS and DASH.
    for name in names {
        let seconds = decode(&origin.url(&format!("/live/{id}/{name}/playlist.m3u8")), 3);
        assert!(seconds >= 2.5, "{name}: decoded {seconds} s");
    }
    assert!(decode(&origin.url(&format!("/live/{id}/master.m3u8")), 3) >= 2.5);
    assert!(decode(&origin.url(&format!("/live/{id}/manifest.mpd")), 3) >= 2.5);

    // A part that left the live window is gone.
    wait_for(
        "part 0.0 to leave the window",
        Duration::from_secs(40),
        || origin.get(&format!("/live/{id}/480p/0.0.m4s")).status == 404,
    );

    // Stop: the live playlist ends, the session is a recording that plays as VOD.
    publisher.kill().unwrap();
    let rec = &stop_and_wait_for_recording(&origin, &id);
    let ended = origin.get(&format!("/live/{id}/480p/playlist.m3u8")).text();
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    let recording = origin.recordings(&id)[0].clone();
    assert_eq!(recording["id"], rec.as_str());
    assert!(recording["duration"].as_f64().unwrap() > 8.0, "{recording}");
    let vod_names = ["master", "480p", "audio"];
    let vod: Vec<(&str, String)> = vod_names
        .iter()
        .map(|n| {
            let path = if *n == "master" {
                format!("/vod/{rec}/master.m3u8")
            } else {
                format!("/vod/{rec}/{n}/playlist.m3u8")
            };
            let r = origin.get(&path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
            (*n, r.text())
        })
        .collect();
    let parsed = parse_with_m3u8(&vod);
    assert_eq!(parsed["480p"]["endlist"], true);
    assert_eq!(parsed["480p"]["playlist_type"], "vod");
    assert!(parsed["480p"]["segments"].as_array().unwrap().len() >= 4);
    assert!(decode(&origin.url(&format!("/vod/{rec}/master.m3u8")), 60) > 8.0);
    assert!(decode(&origin.url(&format!("/vod/{rec}/manifest.mpd")), 60) > 8.0);
    let archived = origin
        .dir
        .path()
        .join("objects/recordings")
        .join(rec)
        .join("480p");
    let files = std::fs::read_dir(&archived).unwrap().count();
    assert!(files >= 5, "{files} files in {}", archived.display());

    // Convert keeps it past retention.
    let (status, converted) = origin.api(
        "POST",
        &format!("/api/v1/livestreams/{id}/recordings/{rec}/convert"),
        "",
    );
    assert_eq!(status, 200, "{converted}");
    assert_eq!(converted["status"], "vod");
    assert!(converted["expires_at"].is_null());

    // A browser's CORS preflight for a playlist is answered without a body.
    let preflight = json_request(
        origin.http(),
        "OPTIONS",
        &format!("/vod/{rec}/master.m3u8"),
        None,
        "",
    )
    .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("Range"))
    );

    // The stream cannot be deleted by accident while it has a VOD recording: its deletion
    // would take the recording along.
    let (status, refused) = origin.api("DELETE", &format!("/api/v1/livestreams/{id}"), "");
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains(rec)),
        "{refused}"
    );
    let (status, refused) = origin.api(
        "DELETE",
        &format!("/api/v1/livestreams/{id}?recordings=keep"),
        "",
    );
    assert_eq!(status, 400, "{refused}");
    assert_eq!(origin.get(&format!("/vod/{rec}/master.m3u8")).status, 200);

    // Deleting the recording removes its objects and its VOD URLs.
    let (status, _) = origin.api(
        "DELETE",
        &format!("/api/v1/livestreams/{id}/recordings/{rec}"),
        "",
    );
    assert_eq!(status, 204);
    assert!(origin.recordings(&id).is_empty());
    assert_eq!(origin.get(&format!("/vod/{rec}/master.m3u8")).status, 404);
    assert!(!archived.exists(), "{} is still there", archived.display());
    let (status, _) = origin.api(
        "DELETE",
        &format!("/api/v1/livestreams/{id}/recordings/{rec}"),
        "",
    );
    assert_eq!(status, 404, "a second delete finds nothing");
    let (status, _) = origin.api("DELETE", &format!("/api/v1/livestreams/{id}"), "");
    assert_eq!(status, 204, "with no VOD recording left, the stream goes");
}

/// A `[storage]` section for `garage`'s bucket, with `extra` fields of `[storage]`.
fn s3_storage(garage: &Garage, extra: &str) -> String {
    let s3 = garage.storage_config();
    format!(
        "[storage]\nbackend = \"s3\"\n{extra}[storage.s3]\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        s3.endpoint,
        s3.region,
        s3.bucket,
        s3.access_key_id,
        s3.secret_access_key.expose()
    )
}

#[test]
fn archive_to_s3_survives_an_origin_restart() {
    let _heavy = one_at_a_time();
    let garage = Garage::start().unwrap();
    let s3 = garage.storage_config();
    let origin = Origin::start(&s3_storage(&garage, ""));
    let stream = origin.create(r#"{"title": "s3", "settings": {"resolutions": ["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut publisher = publish(&stream);
    wait_for_segments(&origin, &id, "240p", 4);
    publisher.kill().unwrap();
    let rec = stop_and_wait_for_recording(&origin, &id);

    // The objects are in the bucket.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<String> = runtime.block_on(async {
        let listed = S3Store::new(&garage.storage_config())
            .client()
            .list_objects_v2()
            .bucket(&s3.bucket)
            .prefix(format!("recordings/{rec}/"))
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    });
    assert!(
        keys.contains(&format!("recordings/{rec}/index.json")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("recordings/{rec}/240p/init.mp4")),
        "{keys:?}"
    );
    assert!(
        keys.iter().filter(|k| k.ends_with(".m4s")).count() >= 8,
        "{keys:?}"
    );

    // Restart the origin: the recording and its playlists come back and play.
    let mut process = origin.process;
    process
        .stop_with(libc_sigterm(), Duration::from_secs(20))
        .unwrap();
    let again = Origin {
        process: process.start_again().unwrap(),
        dir: origin.dir,
    };
    assert_eq!(again.recordings(&id)[0]["id"], rec.as_str());
    let playlist = again.get(&format!("/vod/{rec}/240p/playlist.m3u8"));
    assert_eq!(playlist.status, 200, "{}", playlist.text());
    assert!(playlist.text().contains("#EXT-X-ENDLIST"));
    assert!(decode(&again.url(&format!("/vod/{rec}/master.m3u8")), 60) > 6.0);
}

/// Objects waiting in the spool `dir`, and how many of them are segments of the 240p
/// rendition (the key in a spooled file's header line).
fn spooled(dir: &std::path::Path) -> (usize, usize) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let segments = files
        .iter()
        .filter(|path| {
            std::fs::read(path).is_ok_and(|bytes| {
                let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
                let header = String::from_utf8_lossy(header);
                header.contains("/240p/") && header.contains(".m4s\"")
            })
        })
        .count();
    (files.len(), segments)
}

#[test]
fn a_store_outage_is_spooled_and_the_recording_is_complete_afterwards() {
    let _heavy = one_at_a_time();
    let garage = Garage::start().unwrap();
    let s3 = garage.storage_config();
    let origin = Origin::start(&s3_storage(&garage, "spool_dir = \"{objects}-spool\"\n"));
    let spool = origin.dir.path().join("objects-spool");
    let stream = origin.create(r#"{"title": "outage", "settings": {"resolutions": ["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut publisher = publish(&stream);
    wait_for_segments(&origin, &id, "240p", 3);

    // The store hangs (a compressed outage): segments go to the spool, live goes on.
    garage.pause().unwrap();
    wait_for("segments in the spool", Duration::from_secs(60), || {
        spooled(&spool).1 >= 4
    });
    assert!(origin.events(&id).contains("archive is failing"));
    assert!(decode(&origin.url(&format!("/live/{id}/240p/playlist.m3u8")), 2) >= 1.5);
    let during = spooled(&spool).1;
    garage.resume().unwrap();
    wait_for("the spool to drain", Duration::from_secs(60), || {
        spooled(&spool).0 == 0
    });
    publisher.kill().unwrap();
    let rec = stop_and_wait_for_recording(&origin, &id);
    wait_for(
        "the recording's index in the bucket",
        Duration::from_secs(30),
        || origin.events(&id).contains("now stored"),
    );

    // Every segment is in the index, with no hole and no gap, and every one plays.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let index: Value = runtime.block_on(async {
        let object = S3Store::new(&garage.storage_config())
            .client()
            .get_object()
            .bucket(&s3.bucket)
            .key(format!("recordings/{rec}/index.json"))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap()
    });
    assert!(index.get("gaps").is_none(), "{index}");
    let video = index["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "240p")
        .unwrap();
    let msns: Vec<u64> = video["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["msn"].as_u64().unwrap())
        .collect();
    assert!(
        msns.len() >= 3 + during,
        "{} segments, {during} of them spooled",
        msns.len()
    );
    assert!(
        msns.windows(2).all(|w| w[1] == w[0] + 1),
        "the recording has a hole: {msns:?}"
    );
    for msn in &msns {
        let segment = origin.get(&format!("/vod/{rec}/240p/{msn}.m4s"));
        assert_eq!(segment.status, 200, "segment {msn}: {}", segment.text());
    }
    assert!(decode(&origin.url(&format!("/vod/{rec}/master.m3u8")), 60) > 6.0);
}

#[test]
fn an_unreachable_archive_does_not_stop_live_delivery() {
    let _heavy = one_at_a_time();
    // An S3 endpoint where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = format!(
        "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:{port}\"\nbucket = \"down\"\naccess_key_id = \"GKnone\"\nsecret_access_key = \"none\"\n"
    );
    let origin = Origin::start(&storage);
    let stream = origin.create(r#"{"title": "outage", "settings": {"resolutions": ["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let _publisher = publish(&stream);
    wait_for_segments(&origin, &id, "240p", 4);
    assert!(decode(&origin.url(&format!("/live/{id}/240p/playlist.m3u8")), 2) >= 1.5);
    wait_for("the outage event", Duration::from_secs(30), || {
        origin.events(&id).contains("archive is failing")
    });
}

/// Where the rendition called `name` is in a recording index's list.
fn rendition_position(index: &Value, name: &str) -> usize {
    index["renditions"]
        .as_array()
        .and_then(|all| all.iter().position(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no rendition {name} in {index}"))
}

/// How many media segments (`<msn>.m4s`) a rendition's folder in the store holds.
fn stored_segments(folder: &std::path::Path) -> usize {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".m4s"))
                        .is_some_and(|msn| msn.parse::<u64>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn segments_stored_after_the_last_index_write_are_recovered_when_a_killed_origin_restarts() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("[storage.fs]\nroot = \"{objects}\"\n");
    let stream = origin.create(r#"{"title": "crash", "settings": {"resolutions": ["240p"]}}"#);
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut publisher = publish(&stream);
    wait_for_segments(&origin, &id, "240p", 6);
    let rec = origin.recordings(&id)[0]["id"].as_str().unwrap().to_owned();
    let dir = origin.dir;
    let mut process = origin.process;
    process.stop_with(9, Duration::from_secs(10)).unwrap();
    publisher.kill().unwrap();

    // The crash window: segments stored, the index not yet rewritten. Take the last three
    // segments out of the index as the origin would have left it.
    let index_path = dir
        .path()
        .join(format!("objects/recordings/{rec}/index.json"));
    let full: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    // Renditions are listed in the order they first archived a segment, so audio may come
    // before video: find the video one by name.
    let video = rendition_position(&full, "240p");
    let segments = full["renditions"][video]["segments"]
        .as_array()
        .unwrap()
        .clone();
    assert!(segments.len() >= 5, "{full}");
    let kept = segments.len() - 3;
    let mut truncated = full.clone();
    truncated["renditions"][video]["segments"] = Value::Array(segments[..kept].to_vec());
    std::fs::write(&index_path, serde_json::to_vec(&truncated).unwrap()).unwrap();
    let orphans: Vec<u64> = segments[kept..]
        .iter()
        .map(|s| s["msn"].as_u64().unwrap())
        .collect();
    for msn in &orphans {
        assert!(
            dir.path()
                .join(format!("objects/recordings/{rec}/240p/{msn}.m4s"))
                .exists()
        );
    }

    // The kill can itself land in the crash window: a segment stored whose index write never
    // happened. Those are recovered too, so count what the store holds, not what the index said.
    let rec_dir = dir.path().join(format!("objects/recordings/{rec}"));
    let stored_240p = stored_segments(&rec_dir.join("240p"));
    let missed_by_the_kill: usize = full["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap();
            let indexed = r["segments"].as_array().unwrap().len();
            stored_segments(&rec_dir.join(name)).saturating_sub(indexed)
        })
        .sum();

    let again = Origin {
        process: process.start_again().unwrap(),
        dir,
    };
    let recovered: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let after = recovered["renditions"][rendition_position(&recovered, "240p")]["segments"]
        .as_array()
        .unwrap();
    assert_eq!(after.len(), stored_240p, "{recovered}");
    for (was, now) in segments.iter().zip(after) {
        for field in ["msn", "start", "duration", "size", "init_id", "independent"] {
            assert_eq!(was[field], now[field], "{field} of {was} vs {now}");
        }
        let drift = was["program_date_time_ms"].as_i64().unwrap()
            - now["program_date_time_ms"].as_i64().unwrap();
        assert!(
            drift.abs() <= 50,
            "wall clock {drift} ms off: {was} vs {now}"
        );
    }
    // The event and the recording's end are written just after the index, so they may trail
    // the API's first answers by a moment.
    wait_for("the recovery event", Duration::from_secs(10), || {
        again.events(&id).contains(&format!(
            "{} segments stored just before the origin stopped",
            3 + missed_by_the_kill
        )) && again.recordings(&id)[0]["status"] == "ready"
    });
    assert_eq!(again.recordings(&id)[0]["status"], "ready");
    let playlist = again.get(&format!("/vod/{rec}/240p/playlist.m3u8")).text();
    for msn in &orphans {
        assert!(
            playlist.contains(&format!("\n{msn}.m4s\n")),
            "{msn} missing: {playlist}"
        );
    }
    let listed: f64 = playlist
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXTINF:")?
                .trim_end_matches(',')
                .parse::<f64>()
                .ok()
        })
        .sum();
    let decoded = decode(&again.url(&format!("/vod/{rec}/240p/playlist.m3u8")), 120);
    assert!(
        decoded > listed - 1.0,
        "decoded {decoded} s of {listed} s listed"
    );
}

/// `(PART-TARGET, every EXT-X-PART DURATION, every EXTINF)` of a media playlist.
fn part_durations(playlist: &str) -> (f64, Vec<f64>, Vec<f64>) {
    let number = |text: &str| text.parse::<f64>().unwrap();
    let mut target = None;
    let mut parts = Vec::new();
    let mut segments = Vec::new();
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
            target = Some(number(rest));
        } else if let Some(rest) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            parts.push(number(rest.split(',').next().unwrap()));
        } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
            segments.push(number(rest.trim_end_matches(',')));
        }
    }
    (target.expect("a PART-TARGET"), parts, segments)
}

#[test]
fn default_parts_stay_within_their_target_at_common_frame_rates() {
    let _heavy = one_at_a_time();
    let origin = Origin::start("[storage.fs]\nroot = \"{objects}\"");
    for fps in [24, 25, 50, 60] {
        let stream = origin.create(&format!(
            r#"{{"title": "{fps} fps", "dvr_enabled": false, "settings": {{"resolutions": ["240p"]}}}}"#
        ));
        let id = stream["id"].as_str().unwrap().to_owned();
        let options = BroadcastOptions {
            width: 426,
            height: 240,
            fps,
            ..BroadcastOptions::default()
        };
        let publisher =
            Broadcaster::start(stream["rtmp_ingest_url"].as_str().unwrap(), &options).unwrap();
        wait_for_segments(&origin, &id, "240p", 3);
        for rendition in ["240p", "audio"] {
            let playlist = origin
                .get(&format!("/live/{id}/{rendition}/playlist.m3u8"))
                .text();
            let (target, parts, segments) = part_durations(&playlist);
            assert_eq!(target, 0.34, "{fps} fps {rendition}:\n{playlist}");
            assert!(parts.len() >= 6, "{fps} fps {rendition}:\n{playlist}");
            for part in &parts {
                assert!(
                    *part <= target,
                    "{fps} fps {rendition}: a part of {part} s against a target of {target} s:\n{playlist}"
                );
            }
            // Only a segment's last part may be short (the keyframe ends it: 0.08 s at 25 fps).
            let short = parts.iter().filter(|p| **p < target / 2.0).count();
            assert!(
                short <= segments.len() + 1,
                "{fps} fps {rendition}: {short} short parts in {} segments:\n{playlist}",
                segments.len()
            );
            for segment in &segments {
                assert!(
                    (1.8..=2.2).contains(segment),
                    "{fps} fps {rendition}: a segment of {segment} s:\n{playlist}"
                );
            }
        }
        drop(publisher);
        let (status, _) = origin.api("POST", &format!("/api/v1/livestreams/{id}/stop"), "");
        assert_eq!(status, 200);
    }
}
