//! HTTPS on the edge with curl as the client: HTTP/1.1 and HTTP/2 by ALPN, certificates
//! chosen by SNI, and a renewed certificate served without a restart.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_testkit::{CascadeProcess, Route, TestUpstream, read_until_closed};

fn write_cert(dir: &Path, name: &str) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), generated.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        generated.signing_key.serialize_pem(),
    )
    .unwrap();
}

/// `curl` over HTTPS to `host` (resolved to the edge), trusting `ca`; returns (status, version).
fn curl(
    edge: &CascadeProcess,
    host: &str,
    ca: &Path,
    version_flag: &str,
) -> Result<(String, String), String> {
    let port = edge.addr("tls_listen").unwrap().port();
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            version_flag,
            "--max-time",
            "5",
        ])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{host}:{port}/live/s/1.m4s"))
        .output()
        .expect("curl is installed by .ci/install-tools");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once(' ').unwrap();
    Ok((status.to_owned(), version.to_owned()))
}

#[test]
fn https_with_sni_certificates_h1_h2_and_renewal() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), "a.test");
    write_cert(dir.path(), "b.test");
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let d = dir.path().display();
    let config = format!(
        "[edge]\nshields = []\norigin = \"{}\"\n[[edge.sites]]\nhosts = [\"a.test\", \"b.test\"]\n\
         [tls]\nself_signed = false\n\
         [[tls.certificates]]\nhosts = [\"a.test\"]\ncert = \"{d}/a.test.pem\"\nkey = \"{d}/a.test.key\"\n\
         [[tls.certificates]]\nhosts = [\"b.test\"]\ncert = \"{d}/b.test.pem\"\nkey = \"{d}/b.test.key\"\n",
        upstream.addr()
    );
    let edge = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
    let a_ca = dir.path().join("a.test.pem");
    let b_ca = dir.path().join("b.test.pem");

    assert_eq!(
        curl(&edge, "a.test", &a_ca, "--http1.1").unwrap(),
        ("200".into(), "1.1".into())
    );
    assert_eq!(
        curl(&edge, "a.test", &a_ca, "--http2").unwrap(),
        ("200".into(), "2".into())
    );
    assert_eq!(
        curl(&edge, "b.test", &b_ca, "--http2").unwrap(),
        ("200".into(), "2".into()),
        "b.test gets its own certificate"
    );
    assert!(
        curl(&edge, "b.test", &a_ca, "--http2").is_err(),
        "and not a.test's"
    );
    assert_eq!(
        upstream.hits("/live/s/1.m4s"),
        2,
        "one cache per host: a.test and b.test are different sites"
    );

    // Renew a.test's certificate in place: the edge serves the new one without a restart.
    let old_ca = dir.path().join("a.test.old.pem");
    std::fs::copy(&a_ca, &old_ca).unwrap();
    write_cert(dir.path(), "a.test");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&edge, "a.test", &a_ca, "--http2").is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        curl(&edge, "a.test", &old_ca, "--http2").is_err(),
        "the old certificate is no longer served"
    );
}

/// A TLS connection to the edge trusting `root`, offering `alpn`.
fn tls_connect(
    edge: &CascadeProcess,
    root: rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "a.test".try_into().unwrap())
            .unwrap();
    let socket = std::net::TcpStream::connect(edge.addr("tls_listen").unwrap()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    rustls::StreamOwned::new(conn, socket)
}

/// Writes `piece` once per read timeout of the stream (which sets the pace) until the edge
/// closes the connection; returns what the edge sent and when it closed.
fn trickle_until_cut(stream: &mut (impl Read + Write), piece: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a trickling client was still connected after 8s"
        );
        if stream.write_all(piece).is_err() {
            return (answer, started.elapsed());
        }
        match stream.read(&mut buf) {
            Ok(0) => return (answer, started.elapsed()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (answer, started.elapsed()),
        }
    }
}

/// An edge serving `a.test` over TLS with a certificate of its own (returned, to trust it),
/// in front of an upstream holding `/live/s/1.m4s`; `extra` is more edge config.
fn a_test_edge(
    extra: &str,
) -> (
    CascadeProcess,
    rustls::pki_types::CertificateDer<'static>,
    TestUpstream,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    std::fs::write(dir.path().join("a.pem"), generated.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("a.key"),
        generated.signing_key.serialize_pem(),
    )
    .unwrap();
    let root = generated.cert.der().clone();
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let d = dir.path().display();
    let config = format!(
        "[edge]\nshields = []\norigin = \"{}\"\n[[edge.sites]]\nhosts = [\"a.test\"]\n{extra}\
         [tls]\nself_signed = false\n\
         [[tls.certificates]]\nhosts = [\"a.test\"]\ncert = \"{d}/a.pem\"\nkey = \"{d}/a.key\"\n",
        upstream.addr()
    );
    let edge = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
    (edge, root, upstream, dir)
}

#[test]
fn over_tls_slow_handshakes_headers_and_header_blocks_are_cut() {
    let (edge, root, _upstream, dir) = a_test_edge(
        "[edge.clients]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"3s\"\nhandshake_timeout = \"1s\"\n",
    );

    // A TCP connection to the TLS port that never starts a handshake, and one that trickles
    // its ClientHello (a record header, then a byte every 200 ms), are closed after about the
    // 1s handshake limit rather than Pingora's 60 s.
    let mut silent = std::net::TcpStream::connect(edge.addr("tls_listen").unwrap()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(8));
    let closed = closed.expect("a connection that never handshakes is closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "silent TLS connection closed after {closed:?}, for a 1s handshake limit"
    );
    let mut trickle = std::net::TcpStream::connect(edge.addr("tls_listen").unwrap()).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A handshake record of 512 bytes, then a ClientHello header, one byte at a time.
    trickle.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let (answer, cut) = trickle_until_cut(&mut trickle, &[0x01]);
    assert!(
        answer.is_empty(),
        "the edge answered an incomplete ClientHello"
    );
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_millis(2500),
        "trickled ClientHello cut after {cut:?}, for a 1s handshake limit"
    );

    // HTTP/1.1 over TLS: a header trickled a line every 100 ms is cut after about a second.
    let mut h1 = tls_connect(&edge, root.clone(), b"http/1.1");
    h1.write_all(b"GET /live/s/1.m4s HTTP/1.1\r\nHost: a.test\r\n")
        .unwrap();
    let (answer, cut) = trickle_until_cut(&mut h1, b"X-Slow: 1\r\n");
    assert!(answer.is_empty(), "nothing answered: {answer:?}");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_millis(2500),
        "cut after {cut:?} for a 1s header limit"
    );

    // HTTP/2: a connection with no open stream closes after the 3s keep-alive limit, not the
    // 1s header limit: between frames it is idle, not slow.
    let mut h2 = tls_connect(&edge, root.clone(), b"h2");
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.write_all(&settings).unwrap();
    let (frames, closed) = read_until_closed(&mut h2, Duration::from_secs(8));
    let closed = closed.expect("an idle HTTP/2 connection is closed");
    assert!(
        closed >= Duration::from_millis(2800) && closed < Duration::from_secs(6),
        "idle HTTP/2 connection closed after {closed:?}, for a 3s keep-alive limit"
    );
    let mut offset = 0;
    let mut types = Vec::new();
    while offset + 9 <= frames.len() {
        let len = u32::from_be_bytes([0, frames[offset], frames[offset + 1], frames[offset + 2]]);
        types.push(frames[offset + 3]);
        offset += 9 + len as usize;
    }
    assert_eq!(
        types.first(),
        Some(&4),
        "the edge spoke HTTP/2 (SETTINGS first): {types:?}"
    );

    // A header block left open (a HEADERS frame without END_HEADERS, its CONTINUATION never
    // sent) is a request header that has not arrived: cut at the 1s header limit.
    let mut h2 = tls_connect(&edge, root, b"h2");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.write_all(&settings).unwrap();
    // HEADERS, length 1, no flags, stream 1; 0x82 is `:method: GET` from the static table.
    h2.write_all(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]).unwrap();
    let (_, closed) = read_until_closed(&mut h2, Duration::from_secs(8));
    let closed = closed.expect("a connection with an unfinished header block is closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "unfinished HTTP/2 header block: closed after {closed:?}, for a 1s header limit"
    );
    assert!(edge.metric("cascade_proxy_tls_handshake_timeouts_total") >= 2.0);
    assert!(edge.metric("cascade_proxy_header_timeouts_total") >= 2.0);

    // Well-behaved clients are still served on both.
    let ca = dir.path().join("a.pem");
    assert_eq!(
        curl(&edge, "a.test", &ca, "--http1.1").unwrap(),
        ("200".into(), "1.1".into())
    );
    assert_eq!(
        curl(&edge, "a.test", &ca, "--http2").unwrap(),
        ("200".into(), "2".into())
    );
}

/// Reads one response with a `Content-Length` body from `stream` (whose reads time out, so
/// the wait is bounded by `limit`).
fn read_response(stream: &mut impl Read, limit: Duration) -> String {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                return text.into_owned();
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_kept_alive_https_connection_serves_request_after_request() {
    let (edge, root, _upstream, _dir) = a_test_edge("");
    // An LL-HLS player over HTTP/1.1 sends hundreds of requests on one connection.
    let mut h1 = tls_connect(&edge, root, b"http/1.1");
    for i in 0..50 {
        h1.write_all(b"GET /live/s/1.m4s HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .unwrap();
        let answer = read_response(&mut h1, Duration::from_secs(5));
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("segment"),
            "request {i} on the kept-alive connection: {answer:?}"
        );
    }
}
