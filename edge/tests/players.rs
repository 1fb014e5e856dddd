//! Viewers in real players: headless Chromium plays the origin's player page with hls.js and
//! dash.js through edge → shield → origin (all three real binaries), over HTTP/1.1, HTTP/2
//! and HTTP/3, while ffmpeg publishes over RTMP. Each run reports start-up, stalls, player
//! errors, live latency, the renditions shown and the protocol the media came over.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cascade_cache::policy::token::TokenKey;
use cascade_testkit::{
    BroadcastOptions, Broadcaster, CascadeProcess, HttpResponse, PlayOptions, PlayReport, TestPki,
    Viewer, curl_https, json_request, processes_with_arg, raw_request, wait_for,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const OPS: &str = "ops-token-0123456789";
const TOKEN_SECRET: &str = "viewer-token-secret-0123456789abcdef";
const FILL_SECRET: &str = "fill-secret-0123456789abcdef";
const COLLECTOR: &str = "collector-token-0123456789abcdef";

/// Transcoding and two browsers fill two cores: one player test at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    /// What Chromium reports as the resource's `nextHopProtocol`.
    fn seen_as(self) -> &'static str {
        match self {
            Self::H1 => "http/1.1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// How the tiers reach each other.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Links {
    /// Plain HTTP on loopback.
    Plain,
    /// HTTPS with a private CA, the shield requiring the edge's fill secret.
    Tls,
}

/// Origin, shield and edge, wired as in production, with a certificate Chromium trusts.
struct Tiers {
    origin: CascadeProcess,
    _shield: CascadeProcess,
    edge: CascadeProcess,
    spki: String,
    /// The CA the origin's certificate comes from, when the tiers speak TLS.
    origin_ca: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Tiers {
    /// `site` is the edge's `[[edge.sites]]` entry; the tiers speak plain HTTP.
    fn start(site: &str) -> Self {
        Self::start_with(site, Links::Plain)
    }

    fn start_with(site: &str, links: Links) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let pki = (links == Links::Tls).then(|| TestPki::generate(dir.path(), "tiers").unwrap());
        let (origin_tls, shield_tls, edge_tls) = match &pki {
            None => Default::default(),
            Some(pki) => {
                let (cert, key, ca) = (pki.cert.display(), pki.key.display(), pki.ca.display());
                (
                    format!("[origin.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
                    format!(
                        "fill_secret = \"{FILL_SECRET}\"\n[shield.tls]\ncert = \"{cert}\"\n\
                         key = \"{key}\"\n[shield.upstream_tls]\nenabled = true\nca_file = \"{ca}\"\n"
                    ),
                    format!(
                        "fill_secret = \"{FILL_SECRET}\"\n[edge.upstream_tls]\nenabled = true\n\
                         ca_file = \"{ca}\"\n"
                    ),
                )
            }
        };
        let players = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules");
        let origin = CascadeProcess::start(
            "cascade-origin",
            "origin",
            &format!(
                r#"
[origin]
database_url = "sqlite://{path}/registry.db"
reconnect_grace = "20s"
player_dir = "{players}"

[origin.transcoder]
preset = "ultrafast"
work_dir = "{path}"

[origin.analytics]
collector_token = "{COLLECTOR}"
session_idle = "5s"
grace = "1s"

[[origin.tokens]]
name = "ops"
token = "{OPS}"
scope = "write"

[storage.fs]
root = "{path}/objects"
{origin_tls}
"#,
                players = players.display()
            ),
        )
        .unwrap();
        let shield = CascadeProcess::start(
            "cascade-shield",
            "shield",
            &format!(
                "[shield]\norigins = [\"{}\"]\n{shield_tls}[shield.disk]\ndir = \"{path}/shield-disk\"\n",
                origin.addr("listen").unwrap()
            ),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("edge.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("edge.key"), key.serialize_pem()).unwrap();
        let spki = STANDARD.encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        ));
        // Viewer analytics go to the origin's collector, which listens on plain HTTP only
        // when the tiers do.
        let analytics = match links {
            Links::Plain => format!(
                "[edge.analytics]\ncollector_url = \"http://{}\"\ncollector_token = \"{COLLECTOR}\"\n\
                 flush_interval = \"500ms\"\n",
                origin.addr("listen").unwrap()
            ),
            Links::Tls => String::new(),
        };
        let edge = CascadeProcess::start(
            "cascade-edge",
            "edge",
            &format!(
                "[edge]\nshields = [\"{}\"]\norigin = \"\"\n{edge_tls}\
                 [edge.purge]\nnode_id = \"edge-test\"\n{analytics}{site}\n\
                 [tls]\nself_signed = false\n[[tls.certificates]]\nhosts = [\"localhost\"]\n\
                 cert = \"{path}/edge.pem\"\nkey = \"{path}/edge.key\"\n",
                shield.addr("listen").unwrap()
            ),
        )
        .unwrap();
        Self {
            origin,
            _shield: shield,
            edge,
            spki,
            origin_ca: pki.map(|p| p.ca),
            dir,
        }
    }

    fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        if let Some(ca) = &self.origin_ca {
            let port = self.origin.addr("listen").unwrap().port();
            let bearer = format!("Authorization: Bearer {OPS}");
            let (status, answer) = curl_https(
                ca,
                &format!("https://localhost:{port}{path}"),
                &[
                    "-X",
                    method,
                    "-H",
                    &bearer,
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    body,
                ],
            )
            .unwrap();
            return (
                status,
                serde_json::from_slice(&answer).unwrap_or(Value::Null),
            );
        }
        let r = json_request(
            self.origin.addr("listen").unwrap(),
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

    /// A stream with a 360p + 240p ladder, and its ingest URL.
    fn create_stream(&self) -> (String, String) {
        let (status, stream) = self.api(
            "POST",
            "/api/v1/livestreams",
            r#"{"title":"player test","settings":{"resolutions":["360p","240p"]}}"#,
        );
        assert_eq!(status, 201, "{stream}");
        (
            stream["id"].as_str().unwrap().to_owned(),
            stream["rtmp_ingest_url"].as_str().unwrap().to_owned(),
        )
    }

    fn edge_get(&self, target: &str) -> HttpResponse {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        raw_request(self.edge.addr("listen").unwrap(), request.as_bytes()).unwrap()
    }

    /// Waits until the stream's multivariant playlist comes through the edge.
    fn wait_live(&self, id: &str) {
        wait_for(
            "the stream to be playable through the edge",
            Duration::from_secs(30),
            || self.edge_get(&format!("/live/{id}/master.m3u8")).status == 200,
        );
    }

    /// The URL of `path` on the edge over `protocol`, and how Chromium must be told about it.
    fn page(&self, protocol: Protocol, path: &str) -> (String, PlayOptions) {
        let tls = self.edge.addr("tls_listen").unwrap().port();
        let mut options = PlayOptions {
            spki: Some(self.spki.clone()),
            ..PlayOptions::default()
        };
        let url = match protocol {
            Protocol::H1 => format!(
                "http://127.0.0.1:{}{path}",
                self.edge.addr("listen").unwrap().port()
            ),
            Protocol::H2 => format!("https://localhost:{tls}{path}"),
            Protocol::H3 => {
                options.quic = Some(format!("localhost:{tls}"));
                format!("https://localhost:{tls}{path}")
            }
        };
        (url, options)
    }

    fn broadcast(&self, ingest: &str) -> Broadcaster {
        Broadcaster::start(ingest, &BroadcastOptions::default()).unwrap()
    }
}

/// Plays `path` on the edge over `protocol` for `seconds`, without a rendition switch.
fn play(tiers: &Tiers, protocol: Protocol, path: &str, seconds: u32) -> PlayReport {
    let (url, mut options) = tiers.page(protocol, path);
    options.seconds = seconds;
    Viewer::start(&url, &options)
        .unwrap()
        .finish(Duration::from_secs(u64::from(seconds) + 90))
        .unwrap()
}

fn watch(tiers: &Tiers, protocol: Protocol, path: &str, seconds: u32) -> Viewer {
    let (url, mut options) = tiers.page(protocol, path);
    options.seconds = seconds;
    options.switch_after = Some(12);
    Viewer::start(&url, &options).unwrap()
}

fn finish(viewer: Viewer, seconds: u32) -> PlayReport {
    viewer
        .finish(Duration::from_secs(u64::from(seconds) + 90))
        .unwrap()
}

/// No stall that delivery caused: the player never ran out of media. A busy two-core machine
/// running several Chromiums can make a decoder fall behind for a frame or two with media
/// buffered; that is allowed only within the seed's QoE objective (rebuffer ratio < 1 %).
fn assert_no_stall(report: &PlayReport, context: &str) {
    assert!(report.stalls.is_some(), "no stall figure: {context}");
    assert_eq!(
        report.starved_stalls(),
        0,
        "the player ran out of media: {context}"
    );
    assert!(
        report.rebuffer_ratio() < 0.01,
        "rebuffer ratio {:.4}: {context}",
        report.rebuffer_ratio()
    );
}

/// What every live run must show: it started, played throughout without a stall or an error,
/// near the live edge, switched rendition when asked, over the protocol asked for.
fn assert_watched_live(report: &PlayReport, protocol: Protocol, seconds: u32) {
    let context = format!("{report:#?}");
    assert!(report.started, "playback never started: {context}");
    assert!(report.errors.is_empty(), "player errors: {context}");
    assert_no_stall(report, &context);
    assert_eq!(report.state, "playing", "{context}");
    assert!(
        report.played_seconds >= f64::from(seconds) - 15.0,
        "played only {} s of {seconds}: {context}",
        report.played_seconds
    );
    let median = report.latency.median.unwrap_or(f64::MAX);
    let p95 = report.latency.p95.unwrap_or(f64::MAX);
    assert!(
        median < 6.0 && p95 < 8.0,
        "live latency too high: {context}"
    );
    assert_eq!(
        report.switched,
        Some(true),
        "no rendition switch: {context}"
    );
    assert!(report.heights_seen.len() >= 2, "{context}");
    assert_eq!(
        report.main_protocol(),
        Some(protocol.seen_as()),
        "media came over another protocol: {context}"
    );
}

#[test]
fn hls_and_dash_play_through_edge_shield_and_origin_over_h1_h2_and_h3() {
    let _heavy = one_at_a_time();
    let tiers =
        Tiers::start("[[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\ncors = true\n");
    let (id, ingest) = tiers.create_stream();
    let _broadcaster = tiers.broadcast(&ingest);
    tiers.wait_live(&id);

    const SECONDS: u32 = 60;
    for protocol in [Protocol::H1, Protocol::H2, Protocol::H3] {
        let hls = watch(
            &tiers,
            protocol,
            &format!("/player/{id}?protocol=hls"),
            SECONDS,
        );
        let dash = watch(
            &tiers,
            protocol,
            &format!("/player/{id}?protocol=dash"),
            SECONDS,
        );
        if protocol == Protocol::H1 {
            // Malformed and premature requests from another client, while these two watch.
            bad_requests_get_the_protocols_answer(&tiers, &id);
        }
        for (player, report) in [
            ("hls.js", finish(hls, SECONDS)),
            ("dash.js", finish(dash, SECONDS)),
        ] {
            eprintln!(
                "{player} over {protocol:?}: first frame {:?} ms, latency median {:?} p95 {:?} s, stalls {:?} {:?}, heights {:?}, protocols {:?}",
                report.first_frame_ms,
                report.latency.median,
                report.latency.p95,
                report.stalls,
                report.stall_log,
                report.heights_seen,
                report.protocols
            );
            assert_watched_live(&report, protocol, SECONDS);
        }
    }
    // Both players sent CMCD (query mode) with their requests, and the edge read it.
    let metric = |name: &str| tiers.edge.metric(name);
    assert!(
        metric("cascade_cmcd_requests_total{object_type=\"video\"}") > 50.0,
        "{}",
        metric("cascade_cmcd_requests_total")
    );
    assert!(metric("cascade_cmcd_requests_total{object_type=\"manifest\"}") > 10.0);
    assert!(metric("cascade_cmcd_buffer_length_seconds_count") > 50.0);
    assert!(metric("cascade_cmcd_measured_throughput_kbps_count") > 10.0);
}

/// Parts far ahead, a rendition that does not exist, malformed `_HLS_` and CMCD queries: each
/// gets the protocol's answer, and a premature 404 is not kept for the viewers who come next.
fn bad_requests_get_the_protocols_answer(tiers: &Tiers, id: &str) {
    let far = tiers.edge_get(&format!("/live/{id}/360p/999999.0.m4s"));
    assert_eq!(far.status, 404, "{}", far.text());
    assert_eq!(far.header("cache-control"), Some("no-store"));
    let again = tiers.edge_get(&format!("/live/{id}/360p/999999.0.m4s"));
    assert_ne!(
        again.header("x-cache"),
        Some("hit"),
        "a premature 404 was cached"
    );

    let unknown = tiers.edge_get(&format!("/live/{id}/999p/playlist.m3u8"));
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let malformed = tiers.edge_get(&format!("/live/{id}/360p/playlist.m3u8?_HLS_msn=abc"));
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    let part_without_msn = tiers.edge_get(&format!("/live/{id}/360p/playlist.m3u8?_HLS_part=1"));
    assert_eq!(part_without_msn.status, 400, "{}", part_without_msn.text());

    for cmcd in ["CMCD=%%%", "CMCD=br%3Dabc%2Cbl%3D", "CMCD="] {
        let r = tiers.edge_get(&format!("/live/{id}/360p/playlist.m3u8?{cmcd}"));
        assert_eq!(r.status, 200, "{cmcd}: {}", r.text());
        assert!(r.text().starts_with("#EXTM3U"), "{cmcd}");
    }
}

#[test]
fn playback_survives_a_transcoder_restart_and_a_publisher_reconnect_and_the_recording_plays_as_vod()
{
    let _heavy = one_at_a_time();
    let tiers =
        Tiers::start("[[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\ncors = true\n");
    let (id, ingest) = tiers.create_stream();
    let mut broadcaster = tiers.broadcast(&ingest);
    tiers.wait_live(&id);

    const SECONDS: u32 = 75;
    let hls = watch(
        &tiers,
        Protocol::H2,
        &format!("/player/{id}?protocol=hls"),
        SECONDS,
    );
    let dash = watch(
        &tiers,
        Protocol::H2,
        &format!("/player/{id}?protocol=dash"),
        SECONDS,
    );
    let started = Instant::now();

    // The transcoder dies: the origin restarts it and marks a discontinuity.
    std::thread::sleep(Duration::from_secs(20));
    let work_dir = tiers.dir.path().display().to_string();
    let transcoders: Vec<u32> = processes_with_arg(&work_dir)
        .into_iter()
        .filter(|pid| *pid != std::process::id())
        .collect();
    assert!(
        !transcoders.is_empty(),
        "no transcoder found with {work_dir} in its arguments"
    );
    for pid in &transcoders {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }

    // The publisher drops and comes back with the same key within the grace period.
    std::thread::sleep(Duration::from_secs(20));
    broadcaster.kill().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut broadcaster = tiers.broadcast(&ingest);

    for (player, report) in [
        ("hls.js", finish(hls, SECONDS)),
        ("dash.js", finish(dash, SECONDS)),
    ] {
        let context = format!("{player}: {report:#?}");
        eprintln!(
            "{player} across a transcoder restart and a reconnect: stalls {:?} ({:?} s), played {} s, latency median {:?}",
            report.stalls, report.stall_seconds, report.played_seconds, report.latency.median
        );
        assert!(report.started, "{context}");
        assert!(report.errors.is_empty(), "player errors: {context}");
        assert_eq!(
            report.state, "playing",
            "playback did not continue: {context}"
        );
        // Two interruptions of the source may each cost a short wait, not the stream.
        assert!(
            report.played_seconds >= f64::from(SECONDS) - 30.0,
            "played only {} s: {context}",
            report.played_seconds
        );
        assert!(report.stalls.unwrap_or(u32::MAX) <= 4, "{context}");
    }
    assert!(started.elapsed() >= Duration::from_secs(u64::from(SECONDS)));

    // The stream ends; its recording plays as VOD through the tiers.
    broadcaster.kill().unwrap();
    let (status, body) = tiers.api("POST", &format!("/api/v1/livestreams/{id}/stop"), "");
    assert_eq!(status, 200, "{body}");
    let mut recording = String::new();
    wait_for("the recording to be ready", Duration::from_secs(60), || {
        let (_, body) = tiers.api("GET", &format!("/api/v1/livestreams/{id}/recordings"), "");
        // Any finished recording of the stream (a late fragment after the stop can open a new
        // one, noted as an origin bug to fix).
        let finished = body["recordings"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["status"] != "recording"));
        match finished {
            Some(r) => {
                recording = r["id"].as_str().unwrap_or_default().to_owned();
                true
            }
            None => false,
        }
    });
    for player in ["hls", "dash"] {
        let report = play(
            &tiers,
            Protocol::H2,
            &format!("/player/vod/{recording}?protocol={player}"),
            15,
        );
        let context = format!("{player} VOD: {report:#?}");
        assert!(report.started, "{context}");
        assert!(report.errors.is_empty(), "{context}");
        assert!(report.played_seconds >= 8.0, "{context}");
    }
}

#[test]
fn a_signed_url_stream_plays_with_a_valid_token_and_not_with_a_bad_one() {
    let _heavy = one_at_a_time();
    // Deployed as a careful operator would: signed URLs for viewers, and TLS with the fill
    // secret between the tiers.
    let tiers = Tiers::start_with(
        &format!(
            "[[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\ncors = true\ntoken_secret = \"{TOKEN_SECRET}\"\n"
        ),
        Links::Tls,
    );
    let (id, ingest) = tiers.create_stream();
    let _broadcaster = tiers.broadcast(&ingest);
    let key = TokenKey::new(TOKEN_SECRET.as_bytes());
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = key.sign("/", expiry, None);
    wait_for(
        "the stream through the edge with a token",
        Duration::from_secs(30),
        || {
            tiers
                .edge_get(&format!("/t/{token}/live/{id}/master.m3u8"))
                .status
                == 200
        },
    );
    assert_eq!(
        tiers.edge_get(&format!("/live/{id}/master.m3u8")).status,
        403
    );

    let report = play(&tiers, Protocol::H2, &format!("/t/{token}/player/{id}"), 25);
    let context = format!("{report:#?}");
    assert!(report.started, "a valid token did not play: {context}");
    assert!(report.errors.is_empty(), "{context}");
    assert_no_stall(&report, &context);

    // A forged token: the page itself is refused, nothing plays.
    let forged = TokenKey::new(b"some other secret").sign("/", expiry, None);
    let report = play(&tiers, Protocol::H2, &format!("/t/{forged}/player/{id}"), 8);
    assert_eq!(report.page_status, Some(403), "{report:#?}");
    assert!(!report.started, "{report:#?}");

    // A token for the player page only: the page loads, the media is refused, and the
    // player says so.
    let page_only = key.sign("/player/", expiry, None);
    let report = play(
        &tiers,
        Protocol::H2,
        &format!("/t/{page_only}/player/{id}"),
        10,
    );
    assert_eq!(report.page_status, Some(200), "{report:#?}");
    assert!(!report.started, "{report:#?}");
    assert!(
        !report.errors.is_empty(),
        "the player reported no error: {report:#?}"
    );
}

/// `curl` over HTTPS to the edge, as a browser would ask: `(status, headers, body)`.
fn curl_edge(tiers: &Tiers, version: &str, head: bool, path: &str) -> (u16, String, Vec<u8>) {
    let port = tiers.edge.addr("tls_listen").unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let mut command = std::process::Command::new("curl");
    command
        .args(["-s", "-S", "--max-time", "10", version, "-D"])
        .arg(&headers)
        .arg("--cacert")
        .arg(tiers.dir.path().join("edge.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"));
    // What Chromium sends with a media request from the player page.
    for header in [
        "Origin: https://localhost",
        "Referer: https://localhost/player/",
        "Accept: */*",
        "Accept-Encoding: gzip, deflate, br, zstd",
        "Accept-Language: en-GB,en;q=0.9",
        "Sec-Fetch-Mode: cors",
        "Sec-Fetch-Site: same-origin",
        "Sec-Fetch-Dest: empty",
        "Cookie: session=abc",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36",
    ] {
        command.args(["-H", header]);
    }
    if head {
        // curl prints a HEAD answer's header to stdout; a body sent anyway is an HTTP/2
        // protocol error, which fails curl.
        command.args(["-I", "-o", "/dev/null"]);
    }
    let out = command
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl is installed by .ci/install-tools");
    assert!(
        out.status.success(),
        "curl {version} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = std::fs::read_to_string(headers).unwrap();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, headers.to_ascii_lowercase(), out.stdout)
}

/// The value of `attribute` on the MPD element.
fn mpd_attribute<'a>(mpd: &'a str, attribute: &str) -> Option<&'a str> {
    let start = mpd.find("<MPD")?;
    let element = &mpd[start..start + mpd[start..].find('>')?];
    let at = element.find(&format!(" {attribute}=\""))? + attribute.len() + 3;
    element[at..].split('"').next()
}

#[test]
fn http2_gets_and_heads_fill_through_the_real_shield_and_origin_and_manifests_stay_fresh() {
    let _heavy = one_at_a_time();
    let tiers =
        Tiers::start("[[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\ncors = true\n");
    let (id, ingest) = tiers.create_stream();
    let _broadcaster = tiers.broadcast(&ingest);
    wait_for("the stream at the origin", Duration::from_secs(30), || {
        json_request(
            tiers.origin.addr("listen").unwrap(),
            "GET",
            &format!("/live/{id}/master.m3u8"),
            None,
            "",
        )
        .is_ok_and(|r| r.status == 200)
    });

    // Every object below is asked for first over HTTP/2 (or as a HEAD), so the edge and the
    // shield fill it from the origin on that request.
    for (version, head, path) in [
        ("--http2", true, format!("/live/{id}/master.m3u8")),
        ("--http2", false, format!("/live/{id}/manifest.mpd")),
        ("--http2", true, format!("/live/{id}/240p/init.mp4")),
        ("--http2", false, format!("/live/{id}/360p/playlist.m3u8")),
        ("--http2", false, format!("/player/{id}")),
        ("--http1.1", true, format!("/live/{id}/360p/init.mp4")),
    ] {
        let (status, headers, body) = curl_edge(&tiers, version, head, &path);
        assert_eq!(status, 200, "{version} {path}: {headers}");
        assert!(
            headers.contains("cascade-shield"),
            "not filled through the shield: {headers}"
        );
        if head {
            assert!(headers.contains("content-length:"), "{headers}");
        } else {
            assert!(!body.is_empty());
        }
    }
    let (status, _, _) = curl_edge(
        &tiers,
        "--http2",
        true,
        &format!("/live/{id}/360p/999999.m4s"),
    );
    assert_eq!(status, 404);

    // Past its `max-age` (2 s), the player page is served stale while the edge refreshes it
    // in the background; the refreshed copy lands at once and nobody waits on it.
    let page = format!("/player/{id}");
    let timed = |path: &str| {
        let asked = Instant::now();
        let (status, headers, _) = curl_edge(&tiers, "--http2", false, path);
        (status, headers, asked.elapsed())
    };
    let (status, _, _) = timed(&page);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(2600));
    let (status, headers, took) = timed(&page);
    assert_eq!(status, 200, "{headers}");
    assert!(headers.contains("x-cache: stale"), "{headers}");
    assert!(
        took < Duration::from_secs(1),
        "a stale answer took {took:?}"
    );
    let refreshed_by = Instant::now() + Duration::from_millis(1500);
    loop {
        let (status, headers, took) = timed(&page);
        assert_eq!(status, 200, "{headers}");
        assert!(
            took < Duration::from_secs(1),
            "a viewer waited {took:?}: {headers}"
        );
        if headers.contains("x-cache: hit") {
            break;
        }
        assert!(
            Instant::now() < refreshed_by,
            "the background refresh never landed: {headers}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A viewer polling the MPD through both tiers never gets one older than the origin's
    // `max-age` (1 s) allows, nor a stale one.
    let mut oldest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let (status, headers, body) = curl_edge(
            &tiers,
            "--http2",
            false,
            &format!("/live/{id}/manifest.mpd"),
        );
        let received = SystemTime::now();
        assert_eq!(status, 200);
        assert!(!headers.contains("x-cache: stale"), "{headers}");
        let mpd = String::from_utf8(body).unwrap();
        let published = mpd_attribute(&mpd, "publishTime").unwrap();
        let published = parse_utc(published);
        let age = received.duration_since(published).unwrap_or_default();
        oldest = oldest.max(age);
        std::thread::sleep(Duration::from_millis(150));
    }
    eprintln!("oldest MPD a viewer got through edge and shield: {oldest:?}");
    assert!(
        oldest < Duration::from_millis(1600),
        "an MPD {oldest:?} old was served"
    );
}

/// `2026-12-06T16:01:02.345Z` as a system time.
fn parse_utc(text: &str) -> SystemTime {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days since the epoch (civil-from-days inverse, proleptic Gregorian).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).unwrap();
    let millis: u64 = format!("{frac:0<3}")[..3].parse().unwrap();
    UNIX_EPOCH
        + Duration::from_secs(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
        + Duration::from_millis(millis)
}

/// What the analytics API answers for the stream.
fn analytics(tiers: &Tiers, id: &str, query: &str) -> Value {
    let (status, body) = tiers.api(
        "GET",
        &format!("/api/v1/livestreams/{id}/analytics{query}"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// The player page's CMCD, read by the edge, reaches the origin as records: the viewer shows
/// in `/viewers` while it watches, with its buffer and latency, then in the per-minute
/// analytics and sessions, with the seed's gauges on the origin's metrics. Every response
/// carries the origin's CMSD-Static and each tier's CMSD-Dynamic entry.
#[test]
fn a_player_pages_cmcd_shows_its_session_in_viewers_and_in_analytics() {
    let _heavy = one_at_a_time();
    let tiers =
        Tiers::start("[[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\ncors = true\n");
    let (id, ingest) = tiers.create_stream();
    let _broadcaster = tiers.broadcast(&ingest);
    tiers.wait_live(&id);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // CMSD: the origin's static data travels with the object; each tier adds its entry in
    // front, and a hit carries the edge's alone.
    let path = format!("/live/{id}/manifest.mpd?fresh=1");
    let first = tiers.edge_get(&path);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cmsd-static"), Some("ot=m,sf=d,st=l"));
    let dynamic = first.header("cmsd-dynamic").unwrap_or_default().to_owned();
    assert!(
        dynamic.starts_with("\"edge-test\";") && dynamic.contains(", \"shield-"),
        "{dynamic}"
    );

    const SECONDS: u32 = 40;
    let mut sessions_seen: Vec<String> = Vec::new();
    for protocol in ["hls", "dash"] {
        let (url, mut options) =
            tiers.page(Protocol::H2, &format!("/player/{id}?protocol={protocol}"));
        options.seconds = SECONDS;
        let viewer = Viewer::start(&url, &options).unwrap();
        // While it watches: the player, named by its CMCD session id, on this edge. (The
        // test's own requests, without CMCD or a user agent, are a viewer too, under a hash.)
        let mut seen = Value::Null;
        let player = |body: &Value| -> Option<Value> {
            body["viewers"]
                .as_array()?
                .iter()
                .find(|v| {
                    let session = v["session_id"].as_str().unwrap_or("h-");
                    !session.starts_with("h-")
                        && !sessions_seen.iter().any(|s| s == session)
                        && v["latency_ms"].is_number()
                })
                .cloned()
        };
        wait_for(
            "the player in /viewers with its latency",
            Duration::from_secs(30),
            || {
                let (_, body) = tiers.api("GET", &format!("/api/v1/livestreams/{id}/viewers"), "");
                seen = body;
                player(&seen).is_some()
            },
        );
        let now = player(&seen).unwrap();
        sessions_seen.push(now["session_id"].as_str().unwrap().to_owned());
        eprintln!("{protocol} viewer: {now}");
        assert_eq!(now["edge"], "edge-test", "{now}");
        assert_eq!(now["device_type"], "desktop", "{now}");
        let latency = now["latency_ms"].as_f64().unwrap();
        let buffer = now["buffer_ms"].as_f64().unwrap();
        assert!(
            (200.0..8_000.0).contains(&latency),
            "latency {latency} ms: {now}"
        );
        assert!(
            (0.0..30_000.0).contains(&buffer),
            "buffer {buffer} ms: {now}"
        );
        // The seed's gauges, on the origin's metrics (refreshed every 2 s).
        let metric = |name: &str| tiers.origin.metric(name);
        wait_for("the viewer gauges", Duration::from_secs(10), || {
            metric("livestream_average_latency_ms").is_finite()
        });
        assert!(metric("livestream_total_viewers") >= 1.0);
        let average = metric("livestream_average_latency_ms");
        assert!((200.0..8_000.0).contains(&average), "{average}");
        assert!(metric("cascade_qoe_viewers{edge=\"edge-test\"}") >= 1.0);
        let report = viewer
            .finish(Duration::from_secs(u64::from(SECONDS) + 90))
            .unwrap();
        assert!(report.started, "{report:#?}");
    }

    // Every minute the two sessions watched is aggregated once its session timeout and grace
    // have passed.
    let from = started / 60_000 * 60_000;
    let from = chrono::DateTime::from_timestamp_millis(from)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let query = format!("?from={from}");
    let players = |body: &Value| -> Vec<Value> {
        body["sessions"].as_array().map_or(Vec::new(), |s| {
            s.iter()
                .filter(|s| !s["session_id"].as_str().unwrap_or("h-").starts_with("h-"))
                .cloned()
                .collect()
        })
    };
    let mut body = Value::Null;
    wait_for(
        "both players' sessions in the analytics",
        Duration::from_secs(150),
        || {
            body = analytics(&tiers, &id, &query);
            let players = players(&body);
            players.len() == 2
                && players.iter().all(|s| s["ended"] == true)
                && body["series"].as_array().is_some_and(|s| {
                    s.iter()
                        .map(|p| p["watch_time_seconds"].as_u64().unwrap_or(0))
                        .sum::<u64>()
                        >= 60
                })
        },
    );
    eprintln!("analytics: {body:#}");
    let series = body["series"].as_array().unwrap();
    for point in series {
        assert!(point["viewer_count"].as_u64().unwrap() >= 1, "{point}");
        let latency = point["average_latency"].as_f64().unwrap();
        assert!((200.0..8_000.0).contains(&latency), "{point}");
        assert!(point["p95_latency"].as_f64().unwrap() >= latency, "{point}");
        let health = point["buffer_health"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&health), "{point}");
        assert!(point["rebuffer_ratio"].as_f64().unwrap() < 0.2, "{point}");
        assert!(point["egress_bytes"].as_u64().unwrap() > 0, "{point}");
        assert!(
            point["bitrate_distribution"]
                .as_object()
                .is_some_and(|b| !b.is_empty()),
            "{point}"
        );
        let score = point["quality_score"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&score), "{point}");
    }
    for session in players(&body) {
        assert_eq!(session["device_type"], "desktop", "{session}");
        assert_eq!(session["edge"], "edge-test", "{session}");
        assert!(
            session["renditions"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{session}"
        );
        assert!(
            session["duration_seconds"].as_u64().unwrap() >= u64::from(SECONDS) / 2,
            "{session}"
        );
    }
    // A coarser interval folds the minutes: the same requests in one point (two if the run
    // crossed the hour).
    let hourly = analytics(&tiers, &id, &format!("{query}&interval=1h"));
    let requests = |series: &Value| -> u64 {
        series
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum()
    };
    assert!(hourly["series"].as_array().unwrap().len() <= 2, "{hourly}");
    // A minute may still be aggregated between two reads: compare reads taken back to back.
    wait_for(
        "the hourly fold to match the minutes",
        Duration::from_secs(30),
        || {
            let minutes = analytics(&tiers, &id, &query);
            let hourly = analytics(&tiers, &id, &format!("{query}&interval=1h"));
            requests(&hourly["series"]) == requests(&minutes["series"])
        },
    );
    // Bad input gets a clear answer and changes nothing.
    let (status, answer) = tiers.api(
        "GET",
        &format!("/api/v1/livestreams/{id}/analytics?interval=7s"),
        "",
    );
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("interval")),
        "{answer}"
    );
    let collector = raw_request(
        tiers.origin.addr("listen").unwrap(),
        b"POST /api/v1/analytics/records HTTP/1.1\r\nHost: o\r\nAuthorization: Bearer wrong\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(collector.status, 401, "{}", collector.text());
    let beacon = json_request(
        tiers.origin.addr("listen").unwrap(),
        "POST",
        &format!("/api/v1/livestreams/{id}/viewers/track"),
        None,
        r#"{"session_id":"beacon-1","resolution":"not a rendition"}"#,
    )
    .unwrap();
    assert_eq!(beacon.status, 400, "{}", beacon.text());
    assert_eq!(analytics(&tiers, &id, &query)["sessions"], body["sessions"]);
}

/// `cascade-bench viewers` with a scenario of `viewers` for `seconds` and `thresholds`;
/// returns its exit code and JSON report.
fn load_tool(
    tiers: &Tiers,
    url: &str,
    protocol: &str,
    seconds: u32,
    thresholds: &str,
) -> (Option<i32>, Value, PathBuf) {
    let scenario = tiers.dir.path().join(format!("scenario-{protocol}.toml"));
    std::fs::write(
        &scenario,
        format!(
            "name = \"smoke {protocol}\"\nstages = [{{ duration = \"2s\", viewers = 4 }}, \
             {{ duration = \"{seconds}s\", viewers = 4 }}]\nthresholds = [{thresholds}]\n"
        ),
    )
    .unwrap();
    let json = tiers.dir.path().join(format!("report-{protocol}.json"));
    let html = tiers.dir.path().join(format!("report-{protocol}.html"));
    let _ = std::fs::remove_file(&json);
    let out = std::process::Command::new(cascade_testkit::binary_path("cascade-bench").unwrap())
        .args([
            "viewers",
            "--url",
            url,
            "--protocol",
            protocol,
            "--progress",
            "0s",
        ])
        .arg("--scenario")
        .arg(&scenario)
        .arg("--ca")
        .arg(tiers.dir.path().join("edge.pem"))
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    eprintln!(
        "cascade-bench viewers over {protocol}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read(&json)
        .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    (out.status.code(), report, html)
}

#[test]
fn the_load_tools_players_watch_through_the_tiers_over_h1_h2_and_h3_and_thresholds_set_the_exit_code()
 {
    let _heavy = one_at_a_time();
    let tiers = Tiers::start("[[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\n");
    let (id, ingest) = tiers.create_stream();
    let _broadcaster = tiers.broadcast(&ingest);
    tiers.wait_live(&id);
    let plain = tiers.edge.addr("listen").unwrap().port();
    let tls = tiers.edge.addr("tls_listen").unwrap().port();
    let thresholds = "\"viewers_started >= 100%\", \"rebuffer_ratio < 1%\", \"p95_live_latency < 4s\", \"errors < 1%\"";
    for (protocol, url) in [
        (
            "h1",
            format!("http://127.0.0.1:{plain}/live/{id}/master.m3u8"),
        ),
        (
            "h2",
            format!("https://localhost:{tls}/live/{id}/master.m3u8"),
        ),
        (
            "h3",
            format!("https://localhost:{tls}/live/{id}/master.m3u8"),
        ),
        // LL-DASH: chunked segments asked for before they are complete, over all three.
        (
            "h2",
            format!("https://localhost:{tls}/live/{id}/manifest.mpd"),
        ),
        (
            "h3",
            format!("https://localhost:{tls}/live/{id}/manifest.mpd"),
        ),
        (
            "h1",
            format!("http://127.0.0.1:{plain}/live/{id}/manifest.mpd"),
        ),
    ] {
        let dash = url.ends_with(".mpd");
        let (code, report, html) = load_tool(&tiers, &url, protocol, 20, thresholds);
        let s = &report["summary"];
        assert_eq!(code, Some(0), "{protocol}: {report:#}");
        assert_eq!(s["viewers"], 4, "{report:#}");
        assert_eq!(s["protocol"], protocol);
        assert!(s["passed"].as_bool().unwrap(), "{report:#}");
        // The simulated players followed the live edge, part by part as hls.js does, or
        // chunk by chunk as dash.js does.
        let latency = s["latency_p50"].as_f64().unwrap();
        assert!(
            (0.3..4.0).contains(&latency),
            "{protocol} {url}: {report:#}"
        );
        assert!(s["startup_p95"].as_f64().unwrap() < 5.0, "{report:#}");
        // 4 viewers × (HLS: a part every ~0.34 s, video and audio, plus the blocking
        // reloads; DASH: the manifest every part, a segment of each track every 2 s).
        let per_viewer_second = if dash { 2 } else { 8 };
        assert!(
            s["requests"].as_u64().unwrap() > 4 * 20 * per_viewer_second,
            "{url}: {report:#}"
        );
        assert!(s["egress_mbps"].as_f64().unwrap() > 0.5, "{report:#}");
        let series = report["series"].as_array().unwrap();
        assert!(series.len() >= 20, "{report:#}");
        assert!(series.iter().any(|x| x["playing"] == 4), "{report:#}");
        if protocol == "h1" && !dash {
            // The HTML report renders in Chromium.
            let png = tiers.dir.path().join("report.png");
            let out = std::process::Command::new(cascade_testkit::chromium_path().unwrap())
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=800,1600",
                ])
                .arg(format!("--screenshot={}", png.display()))
                .arg(format!("file://{}", html.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            assert!(size > 20_000, "a {size}-byte screenshot");
            let page = std::fs::read_to_string(&html).unwrap();
            assert_eq!(page.matches("<svg").count(), 5);
        }
    }
    // The players' CMCD reached the edge with each request.
    assert!(
        tiers
            .edge
            .metric("cascade_cmcd_requests_total{object_type=\"video\"}")
            > 100.0
    );

    // A threshold the run cannot meet fails it, with the exit code and the verdict.
    let (code, report, _) = load_tool(
        &tiers,
        &format!("http://127.0.0.1:{plain}/live/{id}/master.m3u8"),
        "h1",
        5,
        "\"p95_live_latency < 10ms\"",
    );
    assert_eq!(code, Some(99), "{report:#}");
    assert_eq!(report["summary"]["passed"], false);
    assert_eq!(report["summary"]["thresholds"][0]["passed"], false);

    // A stream that does not exist is one clear error, not a run.
    let (code, report, _) = load_tool(
        &tiers,
        &format!("http://127.0.0.1:{plain}/live/nope/master.m3u8"),
        "h1",
        5,
        "",
    );
    assert_eq!(code, Some(1));
    assert_eq!(report, Value::Null);
}
