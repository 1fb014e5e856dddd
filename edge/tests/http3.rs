//! HTTP/3 on the edge, with independent clients: PyPI aioquic (`h3client.py`) and headless
//! Chromium forced onto QUIC. One cache for H1, H2 and H3 (fills and hits cross protocols,
//! purges are seen over H3), bodies relayed as they arrive, a viewer's reset that does not
//! cancel the shared fill, tokens bound to the QUIC client's address, and bad input.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use cascade_cache::policy::token::TokenKey;
use cascade_testkit::{CascadeProcess, HttpResponse, Route, TestUpstream, http_get, raw_request};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An edge with HTTPS + HTTP/3 for `localhost` on a certificate the test trusts.
struct H3Edge {
    edge: CascadeProcess,
    ca: PathBuf,
    spki_sha256: String,
    _dir: tempfile::TempDir,
}

impl H3Edge {
    fn start(upstream: &TestUpstream, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca = dir.path().join("localhost.pem");
        let key = dir.path().join("localhost.key");
        std::fs::write(&ca, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&generated.signing_key);
        let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki));
        let config = format!(
            "[edge]\nshields = []\norigin = \"{}\"\nadmin_token = \"purge-secret\"\n{extra}\n\
             [tls]\nself_signed = false\n[[tls.certificates]]\nhosts = [\"localhost\"]\n\
             cert = \"{}\"\nkey = \"{}\"\n",
            upstream.addr(),
            ca.display(),
            key.display()
        );
        let edge = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
        Self {
            edge,
            ca,
            spki_sha256,
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.edge.addr("tls_listen").unwrap().port()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port())
    }

    /// Runs the aioquic client with `args` on one connection, trusting the edge's certificate:
    /// whether it succeeded, one JSON report per request, and its stderr.
    fn run_client(&self, args: &[&str], paths: &[&str]) -> (bool, Vec<Value>, String) {
        let python = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h3client.py");
        let mut command = Command::new(&python);
        command
            .arg(script)
            .arg("--connect")
            .arg(format!("127.0.0.1:{}", self.port()))
            .arg("--ca")
            .arg(&self.ca);
        let out = command
            .args(args)
            .args(paths.iter().map(|p| self.url(p)))
            .output()
            .expect("python with aioquic (CASCADE_PYTHON, set by .ci/install-tools)");
        let reports = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            out.status.success(),
            reports,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The client's reports; it must succeed.
    fn h3(&self, args: &[&str], paths: &[&str]) -> Vec<Value> {
        let (ok, reports, stderr) = self.run_client(args, paths);
        assert!(ok, "h3client failed: {reports:?} {stderr}");
        reports
    }

    /// The client's reports, whether or not it succeeded.
    fn h3_raw(&self, args: &[&str], paths: &[&str]) -> Vec<Value> {
        self.run_client(args, paths).1
    }

    fn h3_get(&self, path: &str) -> Value {
        self.h3(&[], &[path]).remove(0)
    }

    fn h1_get(&self, path: &str) -> HttpResponse {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        raw_request(self.edge.addr("listen").unwrap(), request.as_bytes()).unwrap()
    }

    fn purge_url(&self, path: &str) {
        let body = format!(r#"{{"kind":"url","targets":["https://localhost{path}"]}}"#);
        let request = format!(
            "POST /purge HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer purge-secret\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = raw_request(self.edge.addr("admin_listen").unwrap(), request.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// `cascade_proxy_requests_total` for `protocol`, summed over the other labels.
    fn requests_over(&self, protocol: &str) -> f64 {
        let page = http_get(self.edge.addr("admin_listen").unwrap(), "/metrics")
            .unwrap()
            .text();
        let label = format!("protocol=\"{protocol}\"");
        page.lines()
            .filter(|l| l.starts_with("cascade_proxy_requests_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

fn body(n: usize, seed: u8) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8 ^ seed).collect::<Vec<u8>>())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn status(report: &Value) -> u64 {
    report["status"].as_u64().unwrap_or(0)
}

fn header<'a>(report: &'a Value, name: &str) -> Option<&'a str> {
    report["headers"][name].as_str()
}

#[test]
fn h3_shares_one_cache_with_h1_and_h2_and_sees_purges() {
    let upstream = TestUpstream::start().unwrap();
    let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n1.m4s\n";
    let segments: Vec<Bytes> = (1..=3).map(|i| body(300_000 + i, i as u8)).collect();
    upstream.route(
        "/live/s/index.m3u8",
        Route::ok(playlist).header("content-type", "application/vnd.apple.mpegurl"),
    );
    for (i, segment) in segments.iter().enumerate() {
        upstream.route(
            &format!("/live/s/{}.m4s", i + 1),
            Route::ok(segment.clone()),
        );
    }
    let edge = H3Edge::start(&upstream, "");

    // A playlist and a segment on one QUIC connection: the bytes are the upstream's.
    let first = edge.h3(&[], &["/live/s/index.m3u8", "/live/s/1.m4s"]);
    assert_eq!(status(&first[0]), 200, "{}", first[0]);
    assert_eq!(first[0]["sha256"], sha256_hex(playlist.as_bytes()));
    assert_eq!(status(&first[1]), 200);
    assert_eq!(first[1]["length"], segments[0].len());
    assert_eq!(first[1]["sha256"], sha256_hex(&segments[0]));
    assert_eq!(header(&first[1], "x-cache"), Some("miss"));
    assert!(
        header(&first[1], "alt-svc").is_none(),
        "no Alt-Svc over h3 itself"
    );
    let again = edge.h3_get("/live/s/1.m4s");
    assert_eq!(header(&again, "x-cache"), Some("hit"));
    assert_eq!(again["sha256"], sha256_hex(&segments[0]));

    // Filled over H1, a hit over H3; filled over H3, a hit over H1.
    assert_eq!(edge.h1_get("/live/s/2.m4s").header("x-cache"), Some("miss"));
    let crossed = edge.h3_get("/live/s/2.m4s");
    assert_eq!(
        (header(&crossed, "x-cache"), crossed["sha256"].as_str()),
        (Some("hit"), Some(sha256_hex(&segments[1]).as_str()))
    );
    assert_eq!(
        header(&edge.h3_get("/live/s/3.m4s"), "x-cache"),
        Some("miss")
    );
    let h1 = edge.h1_get("/live/s/3.m4s");
    assert_eq!(
        (h1.header("x-cache"), &h1.body),
        (Some("hit"), &segments[2].to_vec())
    );
    for path in ["/live/s/1.m4s", "/live/s/2.m4s", "/live/s/3.m4s"] {
        assert_eq!(
            upstream.hits(path),
            1,
            "{path} was fetched once for every protocol"
        );
    }

    // HTTPS responses advertise HTTP/3 on the same port; plain HTTP ones do not.
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--http2",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(&edge.ca)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", edge.port()))
        .arg(edge.url("/live/s/1.m4s"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(
        head.contains(&format!("alt-svc: h3=\":{}\"; ma=86400\r\n", edge.port())),
        "{head}"
    );
    assert!(edge.h1_get("/live/s/1.m4s").header("alt-svc").is_none());

    // A purge through the admin endpoint is seen by the next H3 request.
    edge.purge_url("/live/s/1.m4s");
    let purged = edge.h3_get("/live/s/1.m4s");
    assert_eq!(header(&purged, "x-cache"), Some("miss"));
    assert_eq!(upstream.hits("/live/s/1.m4s"), 2);

    assert!(
        edge.requests_over("h3") >= 6.0,
        "h3 requests are counted with protocol=\"h3\""
    );
    assert!(edge.requests_over("h2") >= 1.0);
}

#[test]
fn bodies_are_relayed_as_they_arrive_and_a_reset_viewer_does_not_cancel_the_fill() {
    let upstream = TestUpstream::start().unwrap();
    let chunks: Vec<Bytes> = (0..6).map(|i| body(50_000, i)).collect();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let slow = Route::ok(Bytes::new()).chunked(chunks.clone(), Duration::from_millis(300));
    upstream.route("/live/s/shared.m4s", slow.clone());
    upstream.route("/live/s/alone.m4s", slow);
    upstream.route(
        "/live/s/index.m3u8",
        Route::ok("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:5\n").delay(Duration::from_millis(800)),
    );
    let edge = H3Edge::start(&upstream, "");

    // Two viewers of one object: one gives up after its first bytes, the other gets it all,
    // each chunk as the upstream sends it, from one upstream fetch.
    let quitter = std::thread::scope(|s| {
        let quitter = s.spawn(|| {
            edge.h3(&["--reset-after", "1"], &["/live/s/shared.m4s"])
                .remove(0)
        });
        std::thread::sleep(Duration::from_millis(100));
        let viewer = edge.h3_get("/live/s/shared.m4s");
        assert_eq!(status(&viewer), 200, "{viewer}");
        assert_eq!(viewer["sha256"], sha256_hex(&whole));
        let first = viewer["first_byte_ms"].as_f64().unwrap();
        let total = viewer["elapsed_ms"].as_f64().unwrap();
        assert!(
            total - first > 1000.0,
            "the first chunk came {first} ms in, the end {total} ms: relayed as it arrived"
        );
        quitter.join().unwrap()
    });
    assert_eq!(quitter["error"], "reset by client", "{quitter}");
    assert_eq!(upstream.hits("/live/s/shared.m4s"), 1);
    assert_eq!(
        header(&edge.h3_get("/live/s/shared.m4s"), "x-cache"),
        Some("hit")
    );

    // A lone viewer that resets: the fill still completes and the next viewer gets a hit.
    let gone = edge
        .h3(&["--reset-after", "1"], &["/live/s/alone.m4s"])
        .remove(0);
    assert_eq!(gone["error"], "reset by client");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = edge.h1_get("/live/s/alone.m4s");
        if r.header("x-cache") == Some("hit") {
            assert_eq!(r.body, whole);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned fill never completed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(upstream.hits("/live/s/alone.m4s"), 1);

    // An LL-HLS blocking request waits at the upstream over H3 and is answered when it is.
    let blocked = edge.h3_get("/live/s/index.m3u8?_HLS_msn=5&_HLS_part=0");
    assert_eq!(status(&blocked), 200);
    assert!(
        blocked["elapsed_ms"].as_f64().unwrap() >= 800.0,
        "{blocked}"
    );
}

#[test]
fn a_cut_upstream_body_resets_the_h3_stream_and_is_not_cached() {
    let upstream = TestUpstream::start().unwrap();
    let chunks: Vec<Bytes> = (0..4).map(|i| body(20_000, i)).collect();
    upstream.route(
        "/live/s/cut.m4s",
        Route::ok(Bytes::new())
            .chunked(chunks, Duration::from_millis(50))
            .abort_after(1),
    );
    let edge = H3Edge::start(&upstream, "");
    let cut = edge.h3_get("/live/s/cut.m4s");
    // Cut before the header went out: a 502. Cut after: the stream is reset, never finished.
    let reset = cut["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("reset"));
    assert!(
        status(&cut) == 502 || (status(&cut) == 200 && reset),
        "a cut body must not end cleanly: {cut}"
    );
    assert!(cut["length"].as_u64().unwrap() < 80_000);
    let next = edge.h3_get("/live/s/cut.m4s");
    assert_ne!(
        header(&next, "x-cache"),
        Some("hit"),
        "nothing is cached from a broken exchange"
    );
    assert_eq!(upstream.hits("/live/s/cut.m4s"), 2);
}

#[test]
fn tokens_bind_to_the_quic_client_address() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let edge = H3Edge::start(
        &upstream,
        "[[edge.sites]]\nhosts = [\"localhost\"]\ntoken_secret = \"s3cret\"\n",
    );
    let key = TokenKey::new(b"s3cret");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mine = key.sign("/live/s/", now + 60, Some("127.0.0.1".parse().unwrap()));
    let theirs = key.sign("/live/s/", now + 60, Some("192.0.2.7".parse().unwrap()));
    let reports = edge.h3(
        &[],
        &[
            "/live/s/1.m4s",
            &format!("/t/{theirs}/live/s/1.m4s"),
            &format!("/t/{mine}/live/s/1.m4s"),
        ],
    );
    assert_eq!(status(&reports[0]), 403, "a token is required");
    assert_eq!(
        status(&reports[1]),
        403,
        "a token bound to another address is refused"
    );
    assert_eq!(status(&reports[2]), 200, "{}", reports[2]);
}

#[test]
fn bad_input_on_the_quic_port_is_refused_and_the_listener_keeps_serving() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok(body(10_000, 3)));
    let edge = H3Edge::start(&upstream, "");
    let target = format!("127.0.0.1:{}", edge.port());

    // Datagrams that are not QUIC, and long-header packets that are cut short or garbled.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed: u32 = 0x9e37_79b9;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    for i in 0..300 {
        let mut datagram = noise(1 + (i * 37) % 1400);
        if i % 3 == 0 {
            // An Initial packet header for QUIC v1, then garbage or nothing.
            let header = [0xc0, 0, 0, 0, 1, 8];
            let keep = datagram.len().min(1200);
            datagram.truncate(keep);
            datagram.splice(0..0, header);
            if i % 2 == 0 {
                datagram.truncate(7 + i % 20);
            }
        }
        socket.send_to(&datagram, &target).unwrap();
    }

    // Too large a header section: 431, as HTTP/3 says.
    let oversized = edge
        .h3(&["--pad-headers", "40000"], &["/live/s/1.m4s"])
        .remove(0);
    assert_eq!(status(&oversized), 431, "{oversized}");
    // A Host that disagrees with :authority is malformed: the stream is reset with
    // H3_MESSAGE_ERROR (0x10e).
    let mismatch = edge
        .h3(&["--header", "host: elsewhere.example"], &["/live/s/1.m4s"])
        .remove(0);
    assert_eq!(mismatch["error"], "reset 270", "{mismatch}");
    // A host this edge does not serve is refused by the proxy, as over H1/H2.
    let python = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python3".into());
    let other = Command::new(python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h3client.py"))
        .args(["--connect", &target])
        .arg(format!(
            "https://unknown.example:{}/live/s/1.m4s",
            edge.port()
        ))
        .output()
        .unwrap();
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(status(&other), 421, "{other}");
    // More requests at once than the stream limit: the client queues, every one is answered.
    let many: Vec<String> = (0..150).map(|i| format!("/live/s/1.m4s?n={i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let answered = edge.h3(&["--parallel"], &many);
    assert!(
        answered.iter().all(|r| status(r) == 200),
        "every request is answered"
    );

    // The listener still serves, the right bytes.
    let fine = edge.h3_get("/live/s/1.m4s");
    assert_eq!(fine["sha256"], sha256_hex(&body(10_000, 3)));
    assert!(edge.edge.metric("cascade_http3_refused_streams_total") >= 1.0);
    assert_eq!(upstream.hits("/live/s/1.m4s"), 1);
}

#[test]
fn chromium_fetches_a_segment_over_h3() {
    let upstream = TestUpstream::start().unwrap();
    let segment = body(200_000, 9);
    upstream.route("/live/s/1.m4s", Route::ok(segment.clone()));
    upstream.route(
        "/page.html",
        Route::ok(
            "<!doctype html><html><body><pre id=\"out\">pending</pre><script>\n\
             (async () => {\n\
               const out = document.getElementById('out');\n\
               try {\n\
                 const r = await fetch('/live/s/1.m4s');\n\
                 const buf = await r.arrayBuffer();\n\
                 const digest = await crypto.subtle.digest('SHA-256', buf);\n\
                 const hex = Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, '0')).join('');\n\
                 const entry = performance.getEntriesByType('resource').find(e => e.name.endsWith('/live/s/1.m4s'));\n\
                 out.textContent = 'RESULT ' + JSON.stringify({status: r.status, sha256: hex, protocol: entry && entry.nextHopProtocol});\n\
               } catch (e) { out.textContent = 'RESULT ' + JSON.stringify({error: String(e)}); }\n\
             })();\n\
             </script></body></html>\n",
        )
        .header("content-type", "text/html"),
    );
    let edge = H3Edge::start(&upstream, "");
    let profile = tempfile::tempdir().unwrap();
    let port = edge.port();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-quic",
            &format!("--origin-to-force-quic-on=localhost:{port}"),
            // localhost may resolve to ::1 first; the edge listens on 127.0.0.1.
            "--host-resolver-rules=MAP localhost 127.0.0.1",
            &format!("--ignore-certificate-errors-spki-list={}", edge.spki_sha256),
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(edge.url("/page.html"))
        .output()
        .expect("chromium (installed by .ci/install-tools)");
    let dom = String::from_utf8_lossy(&out.stdout);
    let result = dom
        .split("RESULT ")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| {
            panic!(
                "no result in the page: {dom} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let result: Value = serde_json::from_str(&result.replace("&quot;", "\"")).unwrap();
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["sha256"], sha256_hex(&segment));
    assert_eq!(result["protocol"], "h3", "{result}");
    assert!(
        edge.requests_over("h3") >= 2.0,
        "the page and the segment came over h3"
    );
}

#[test]
fn zero_rtt_is_refused_by_default_and_accepted_when_enabled() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/index.m3u8", Route::ok("#EXTM3U\n"));
    for (extra, accepted) in [("", false), ("[edge.http3]\nzero_rtt = true\n", true)] {
        let edge = H3Edge::start(&upstream, extra);
        let reports = edge.h3(&["--resume"], &["/live/s/index.m3u8"]);
        assert_eq!(status(&reports[0]), 200, "{}", reports[0]);
        let handshake = &reports[1]["handshake"];
        assert_eq!(handshake["session_resumed"], true, "{handshake}");
        assert_eq!(
            handshake["early_data_accepted"], accepted,
            "early data with `{extra}`: {handshake}"
        );
    }
}

#[test]
fn connections_beyond_the_limit_are_refused_until_one_closes() {
    // The listener's cap, then one address's share (every test client is 127.0.0.1).
    for cap in [
        "[edge.http3]\nmax_connections = 1\n",
        "[edge.clients]\nmax_connections_per_address = 1\n",
    ] {
        refused_beyond(cap);
    }
}

/// With `cap` configured, a second connection is refused while one is open, and accepted
/// once it closes.
fn refused_beyond(cap: &str) {
    let upstream = TestUpstream::start().unwrap();
    upstream.route(
        "/live/s/slow.m3u8",
        Route::ok("#EXTM3U\n").delay(Duration::from_secs(2)),
    );
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let edge = H3Edge::start(&upstream, cap);
    std::thread::scope(|s| {
        let holder = s.spawn(|| edge.h3_get("/live/s/slow.m3u8"));
        std::thread::sleep(Duration::from_millis(500));
        let refused = edge.h3_raw(&["--timeout", "5"], &["/live/s/1.m4s"]);
        let error = refused[0]["error"].as_str().unwrap_or_default();
        // Over the listener's cap the handshake is refused; over an address's share (counted
        // once the handshake has proved the address) the connection is closed with the reason.
        assert!(
            error.contains("ConnectionError") || error.contains("already holds its 1 connections"),
            "{cap}: a second connection is refused: {refused:?}"
        );
        assert_eq!(status(&holder.join().unwrap()), 200, "the first is served");
    });
    // Once the first connection is gone, a new one is accepted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let retry = edge.h3_raw(&[], &["/live/s/1.m4s"]);
        if status(&retry[0]) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never accepted again: {retry:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(edge.edge.metric("cascade_http3_handshakes_total") >= 3.0);
}

#[test]
fn a_request_stream_whose_header_never_completes_is_closed_at_the_header_timeout() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let edge = H3Edge::start(&upstream, "[edge.clients]\nheader_timeout = \"1s\"\n");
    let started = Instant::now();
    let stalled = edge.h3_raw(&["--stall-header", "--timeout", "15"], &["/live/s/1.m4s"]);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "the stalled stream was held for {waited:?}: {stalled:?}"
    );
    assert!(
        stalled.first().is_some_and(|r| r["status"].is_null()),
        "{stalled:?}"
    );
    let metrics = cascade_testkit::http_get(edge.edge.addr("admin_listen").unwrap(), "/metrics")
        .unwrap()
        .text();
    assert!(
        metrics.contains("cascade_http3_refused_streams_total{reason=\"header_timeout\"} 1"),
        "{metrics}"
    );
    // The connection's other streams, and the listener, still serve.
    assert_eq!(status(&edge.h3_get("/live/s/1.m4s")), 200);
}
