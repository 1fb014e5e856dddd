//! TLS between tiers: edge → shield → origin over HTTPS with a private CA (all three real
//! binaries, ffmpeg publishing), the fill secret carried inside TLS, and each tier refusing
//! an upstream it cannot verify or a client that does not speak TLS.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use cascade_testkit::{
    BroadcastOptions, Broadcaster, CascadeProcess, HttpResponse, TestPki, curl_https, raw_request,
    wait_for,
};
use serde_json::Value;

const OPS: &str = "ops-token-0123456789";
const FILL: &str = "fill-secret-0123456789abcdef";

fn origin(dir: &Path, pki: &TestPki) -> CascadeProcess {
    let path = dir.display();
    CascadeProcess::start(
        "cascade-origin",
        "origin",
        &format!(
            r#"
[origin]
database_url = "sqlite://{path}/registry.db"
[origin.tls]
cert = "{cert}"
key = "{key}"
[origin.transcoder]
preset = "ultrafast"
work_dir = "{path}"
[[origin.tokens]]
name = "ops"
token = "{OPS}"
scope = "write"
[storage.fs]
root = "{path}/objects"
"#,
            cert = pki.cert.display(),
            key = pki.key.display(),
        ),
    )
    .unwrap()
}

fn shield(origin: &CascadeProcess, pki: &TestPki) -> CascadeProcess {
    CascadeProcess::start(
        "cascade-shield",
        "shield",
        &format!(
            r#"
[shield]
origins = ["{origin}"]
fill_secret = "{FILL}"
[shield.tls]
cert = "{cert}"
key = "{key}"
[shield.upstream_tls]
enabled = true
ca_file = "{ca}"
"#,
            origin = origin.addr("listen").unwrap(),
            cert = pki.cert.display(),
            key = pki.key.display(),
            ca = pki.ca.display(),
        ),
    )
    .unwrap()
}

/// An edge filling from `shield` over TLS, trusting `ca`; `extra` goes in `[edge.upstream_tls]`.
fn edge_config(shield: &CascadeProcess, ca: &Path, extra: &str) -> String {
    format!(
        "[edge]\nshields = [\"{}\"]\norigin = \"\"\nfill_secret = \"{FILL}\"\n\
         [edge.upstream_tls]\nenabled = true\nca_file = \"{}\"\n{extra}\n",
        shield.addr("listen").unwrap(),
        ca.display()
    )
}

fn get(node: &CascadeProcess, target: &str) -> HttpResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_request(node.addr("listen").unwrap(), request.as_bytes()).unwrap()
}

fn curl(ca: &Path, url: &str, args: &[&str]) -> (u16, Vec<u8>) {
    curl_https(ca, url, args).unwrap()
}

/// What a listener answers to a plain-HTTP request: the bytes before it closes.
fn plain_answer(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn tiers_fill_over_tls_with_the_fill_secret_and_refuse_peers_they_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "tiers").unwrap();
    let stranger = TestPki::generate(dir.path(), "stranger").unwrap();
    let origin = origin(dir.path(), &pki);
    let origin_url = format!(
        "https://127.0.0.1:{}",
        origin.addr("listen").unwrap().port()
    );

    // The operator creates a stream over HTTPS; the URLs it hands out are HTTPS.
    let (status, body) = curl(
        &pki.ca,
        &format!("{origin_url}/api/v1/livestreams"),
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {OPS}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"title":"tls tiers","settings":{"resolutions":["240p"]}}"#,
        ],
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let stream: Value = serde_json::from_slice(&body).unwrap();
    let id = stream["id"].as_str().unwrap().to_owned();
    let hls = stream["playback"]["hls"].as_str().unwrap_or_default();
    assert!(hls.starts_with("https://"), "{stream}");

    let shield = shield(&origin, &pki);
    let edge =
        CascadeProcess::start("cascade-edge", "edge", &edge_config(&shield, &pki.ca, "")).unwrap();

    // Before the stream is live, the origin's own answer comes back through both TLS hops.
    let early = get(&edge, &format!("/live/{id}/master.m3u8"));
    assert_eq!(early.status, 404, "{}", early.text());

    let ingest = stream["rtmp_ingest_url"].as_str().unwrap();
    let _broadcaster = Broadcaster::start(ingest, &BroadcastOptions::default()).unwrap();
    let master = format!("/live/{id}/master.m3u8");
    wait_for(
        "the stream through edge → shield → origin over TLS",
        Duration::from_secs(40),
        || get(&edge, &master).status == 200,
    );
    let playlist = get(&edge, &master);
    assert!(
        playlist.text().starts_with("#EXTM3U"),
        "{}",
        playlist.text()
    );
    let (status, from_origin) = curl(&pki.ca, &format!("{origin_url}{master}"), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        playlist.body, from_origin,
        "the edge serves the origin's bytes"
    );

    // The shield speaks only TLS, and over TLS it still wants the fill secret.
    let shield_addr = shield.addr("listen").unwrap();
    let answer = plain_answer(shield_addr);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "the TLS shield answered plain HTTP: {}",
        String::from_utf8_lossy(&answer)
    );
    let shield_url = format!("https://localhost:{}{master}", shield_addr.port());
    assert_eq!(curl(&pki.ca, &shield_url, &[]).0, 403);
    let secret = format!("X-Cascade-Fill-Secret: {FILL}");
    assert_eq!(curl(&pki.ca, &shield_url, &["-H", &secret]).0, 200);
    assert!(
        !plain_answer(origin.addr("listen").unwrap()).starts_with(b"HTTP/"),
        "the TLS origin answered plain HTTP"
    );

    // Edges that cannot verify the shield fill nothing: one trusting another CA, one
    // expecting another name.
    for (what, ca, extra) in [
        ("a shield signed by an unknown CA", &stranger.ca, ""),
        (
            "a certificate for another name",
            &pki.ca,
            "server_name = \"shield.example\"",
        ),
    ] {
        let doubtful =
            CascadeProcess::start("cascade-edge", "edge", &edge_config(&shield, ca, extra))
                .unwrap();
        let refused = get(&doubtful, &master);
        assert_eq!(refused.status, 502, "{what}: {}", refused.text());
        let log = doubtful.process().log();
        assert!(
            log.contains("certificate") || log.contains("Certificate"),
            "{what}: the edge's log does not say why:\n{log}"
        );
    }
}

#[test]
fn an_unusable_trust_file_stops_the_edge_with_a_message_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let config = format!(
        "[edge]\nshields = [\"127.0.0.1:9\"]\n[edge.upstream_tls]\nenabled = true\nca_file = \"{}\"\n",
        not_pem.display()
    );
    let failed = CascadeProcess::start("cascade-edge", "edge", &config)
        .err()
        .expect("the edge started with a CA file holding no certificate");
    let message = failed.to_string();
    assert!(
        message.contains("edge.upstream_tls.ca_file") && message.contains("holds no certificate"),
        "{message}"
    );
}
