//! The edge as a real process in front of an upstream the test controls: caching, collapsing,
//! streaming partial hits, refusals, cache-poisoning resistance, tokens, freshness, failures,
//! ranges.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cascade_cache::policy::token::TokenKey;
use cascade_testkit::{
    CascadeProcess, HttpResponse, Route, TestUpstream, parse_response, raw_request,
    read_until_closed,
};

fn edge_for(upstream: &TestUpstream, extra: &str) -> CascadeProcess {
    let config = format!(
        "[edge]\nshields = []\norigin = \"{}\"\n{extra}",
        upstream.addr()
    );
    CascadeProcess::start("cascade-edge", "edge", &config).unwrap()
}

fn listen(edge: &CascadeProcess) -> SocketAddr {
    edge.addr("listen").unwrap()
}

fn get_with(edge: &CascadeProcess, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut request = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    raw_request(listen(edge), request.as_bytes()).unwrap()
}

fn get(edge: &CascadeProcess, target: &str) -> HttpResponse {
    get_with(edge, target, &[])
}

fn body(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[test]
fn a_miss_fills_the_cache_and_the_next_request_is_a_hit() {
    let upstream = TestUpstream::start().unwrap();
    let segment = body(200_000);
    upstream.route(
        "/live/s/720p/1.m4s",
        Route::ok(segment.clone()).header("content-type", "video/mp4"),
    );
    let edge = edge_for(&upstream, "");

    let first = get(&edge, "/live/s/720p/1.m4s");
    assert_eq!((first.status, first.header("x-cache")), (200, Some("miss")));
    assert_eq!(first.body, segment);
    let second = get(&edge, "/live/s/720p/1.m4s");
    assert_eq!(
        (second.status, second.header("x-cache")),
        (200, Some("hit"))
    );
    assert_eq!(second.body, segment);
    assert_eq!(second.header("content-type"), Some("video/mp4"));
    let from_player = get_with(
        &edge,
        "/live/s/720p/1.m4s",
        &[("Origin", "https://player.example")],
    );
    assert_eq!(
        from_player.header("access-control-allow-origin"),
        Some("*"),
        "CORS is on by default for players"
    );
    assert_eq!(upstream.hits("/live/s/720p/1.m4s"), 1);
    // The same object under a different spelling of host and path is the same key.
    let third = get_with(
        &edge,
        "//live/s/./720p/1.m4s?utm_source=x",
        &[("Host", "LOCALHOST:8000")],
    );
    assert_eq!((third.status, third.header("x-cache")), (200, Some("hit")));
}

#[test]
fn concurrent_misses_collapse_into_one_upstream_request() {
    let upstream = TestUpstream::start().unwrap();
    let segment = body(64 * 1024);
    upstream.route(
        "/live/s/720p/9.m4s",
        Route::ok(segment.clone()).delay(Duration::from_millis(300)),
    );
    let edge = Arc::new(edge_for(&upstream, ""));
    let viewers = 200;
    let barrier = Arc::new(Barrier::new(viewers));
    let handles: Vec<_> = (0..viewers)
        .map(|_| {
            let edge = Arc::clone(&edge);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                get(&edge, "/live/s/720p/9.m4s")
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, segment);
    }
    assert_eq!(
        upstream.hits("/live/s/720p/9.m4s"),
        1,
        "{viewers} concurrent misses must make one upstream request"
    );
    let metrics = cascade_testkit::http_get(edge.addr("admin_listen").unwrap(), "/metrics")
        .unwrap()
        .text();
    let collapsed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cascade_proxy_collapsed_requests_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(collapsed > 0, "waiters are counted as collapsed");
    let ratio: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cascade_proxy_hit_ratio "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        ratio > 0.9 && ratio < 1.0,
        "199 of 200 requests were served from cache: {ratio}"
    );
}

/// Sends a GET and returns (time to first body byte, whole raw response).
fn timed_get(addr: SocketAddr, target: &str) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut first_body_byte = None;
    let mut buf = [0u8; 16384];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_body_byte.is_none()
            && let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n")
            && raw.len() > end + 4
        {
            first_body_byte = Some(start.elapsed());
        }
    }
    (first_body_byte.unwrap_or(start.elapsed()), raw)
}

#[test]
fn a_second_reader_gets_bytes_while_the_object_is_still_arriving() {
    let upstream = TestUpstream::start().unwrap();
    let (part1, part2) = (body(1000), Bytes::from(vec![b'z'; 1000]));
    upstream.route(
        "/live/s/720p/10.2.m4s",
        Route::ok(Bytes::new()).chunked(
            vec![part1.clone(), part2.clone()],
            Duration::from_millis(1500),
        ),
    );
    let edge = edge_for(&upstream, "");
    let addr = listen(&edge);
    let first = std::thread::spawn(move || timed_get(addr, "/live/s/720p/10.2.m4s"));
    std::thread::sleep(Duration::from_millis(300));
    let (ttfb, raw) = timed_get(addr, "/live/s/720p/10.2.m4s");
    let (first_ttfb, first_raw) = first.join().unwrap();
    assert!(
        first_ttfb < Duration::from_millis(800),
        "the first reader waited {first_ttfb:?}: the edge must stream the fill"
    );
    assert!(
        ttfb < Duration::from_millis(800),
        "the second reader waited {ttfb:?} for its first byte: it must not wait for the fill to end"
    );
    let second = parse_response(&raw).unwrap();
    assert_eq!(second.body, [part1.as_ref(), part2.as_ref()].concat());
    assert_eq!(parse_response(&first_raw).unwrap().body, second.body);
    assert_eq!(upstream.hits("/live/s/720p/10.2.m4s"), 1);
}

#[test]
fn an_aborted_upstream_body_is_not_cached_and_not_passed_off_as_complete() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route(
        "/live/s/720p/11.m4s",
        Route::ok(Bytes::new())
            .chunked(vec![body(1000), body(1000)], Duration::from_millis(100))
            .abort_after(1),
    );
    let edge = edge_for(&upstream, "");
    let (_, raw) = timed_get(listen(&edge), "/live/s/720p/11.m4s");
    assert!(
        parse_response(&raw).is_err() || !raw.ends_with(b"0\r\n\r\n"),
        "a cut transfer must not end like a complete chunked body"
    );
    let (_, raw) = timed_get(listen(&edge), "/live/s/720p/11.m4s");
    assert!(!raw.ends_with(b"0\r\n\r\n"));
    assert_eq!(
        upstream.hits("/live/s/720p/11.m4s"),
        2,
        "the broken object was not cached"
    );
}

#[test]
fn requests_the_edge_must_refuse() {
    let upstream = TestUpstream::start().unwrap();
    let edge = edge_for(&upstream, "");
    let addr = listen(&edge);
    let unknown = get_with(&edge, "/live/s/master.m3u8", &[("Host", "evil.example")]);
    assert_eq!(unknown.status, 421, "not an open proxy");
    let post = raw_request(addr, b"POST /live/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD, OPTIONS"))
    );
    let traversal = raw_request(
        addr,
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(traversal.status, 400);
    let encoded = raw_request(addr, b"GET /live/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(encoded.status, 400);
    let long = get(&edge, &format!("/live/{}", "a".repeat(9000)));
    assert!(
        long.status == 414 || long.status == 400,
        "overlong target: {}",
        long.status
    );
    let big = get_with(
        &edge,
        "/live/s/master.m3u8",
        &[("X-Padding", &"p".repeat(40 * 1024))],
    );
    assert_eq!(big.status, 431, "oversized headers");
    let preflight = raw_request(
        addr,
        b"OPTIONS /live/s/master.m3u8 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        (
            preflight.status,
            preflight.header("access-control-allow-origin")
        ),
        (204, Some("*"))
    );
    assert!(
        upstream.seen().is_empty(),
        "nothing refused reached the upstream: {:?}",
        upstream.seen()
    );
    // The edge keeps serving after all that.
    upstream.route("/ok", Route::ok("fine"));
    assert_eq!(get(&edge, "/ok").status, 200);
}

#[test]
fn unkeyed_request_details_cannot_poison_the_cache() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route(
        "/live/s/720p/playlist.m3u8",
        Route::ok("#EXTM3U\n").header("cache-control", "max-age=60"),
    );
    let edge = edge_for(&upstream, "");
    let poisoned = get_with(
        &edge,
        "/live/s/720p/playlist.m3u8?evil=1&_HLS_skip=YES",
        &[
            ("X-Forwarded-Host", "evil.example"),
            ("Cookie", "a=b"),
            ("Accept-Encoding", "gzip"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("Authorization", "Bearer x"),
        ],
    );
    assert_eq!(poisoned.status, 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(
        sent.target, "/live/s/720p/playlist.m3u8?_HLS_skip=YES",
        "only keyed query parameters go upstream"
    );
    for header in [
        "x-forwarded-host",
        "cookie",
        "accept-encoding",
        "authorization",
    ] {
        assert_eq!(sent.header(header), None, "{header} reached the upstream");
    }
    assert_eq!(
        sent.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "the client's own XFF is not trusted"
    );
    assert_eq!(sent.header("via"), Some("1.1 cascade-edge"));
    assert_eq!(sent.header("host"), Some("localhost"));
    let clean = get(&edge, "/live/s/720p/playlist.m3u8?_HLS_skip=YES");
    assert_eq!(
        (clean.header("x-cache"), upstream.seen().len()),
        (Some("hit"), 1)
    );
}

#[test]
fn cmcd_is_read_and_counted_but_never_splits_the_cache_or_reaches_the_upstream() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route(
        "/live/s/720p/7.m4s",
        Route::ok(body(4096)).header("cache-control", "max-age=60"),
    );
    let edge = edge_for(&upstream, "");
    let first = get(
        &edge,
        "/live/s/720p/7.m4s?CMCD=bl%3D1500%2Cbs%2Cmtp%3D2400%2Cot%3Dv%2Csid%3D%22viewer-1%22",
    );
    assert_eq!(first.status, 200);
    let second = get_with(
        &edge,
        "/live/s/720p/7.m4s",
        &[
            ("CMCD-Request", "bl=800,mtp=abc"),
            ("CMCD-Object", "ot=v,br=1200"),
            ("CMCD-Session", "sid=\"viewer-2\",sf=h"),
        ],
    );
    assert_eq!(
        second.header("x-cache"),
        Some("hit"),
        "CMCD split the cache"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/live/s/720p/7.m4s");
    assert_eq!(seen[0].header("cmcd-request"), None);
    let metric = |name: &str| edge.metric(name);
    assert_eq!(
        metric("cascade_cmcd_requests_total{object_type=\"video\"}"),
        2.0
    );
    assert_eq!(metric("cascade_cmcd_buffer_starvations_total"), 1.0);
    assert_eq!(metric("cascade_cmcd_buffer_length_seconds_count"), 2.0);
    assert_eq!(metric("cascade_cmcd_buffer_length_seconds_sum"), 2.3);
    assert_eq!(
        metric("cascade_cmcd_measured_throughput_kbps_count"),
        1.0,
        "mtp=abc is not a throughput"
    );
    assert_eq!(metric("cascade_cmcd_rejected_values_total"), 1.0);
    let plain = get(&edge, "/live/s/720p/7.m4s");
    assert_eq!(plain.status, 200);
    assert_eq!(
        metric("cascade_cmcd_requests_total"),
        2.0,
        "a request without CMCD is not counted as one"
    );
}

#[test]
fn signed_urls_are_checked_and_stripped() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/720p/1.m4s", Route::ok("media"));
    upstream.route("/live/other/1.m4s", Route::ok("other"));
    let edge = edge_for(
        &upstream,
        "[[edge.sites]]\nhosts = [\"localhost\"]\ntoken_secret = \"s3cret\"\n",
    );
    let key = TokenKey::new(b"s3cret");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = key.sign("/live/s/", now + 60, None);

    assert_eq!(
        get(&edge, "/live/s/720p/1.m4s").status,
        403,
        "a token is required"
    );
    let ok = get(&edge, &format!("/t/{token}/live/s/720p/1.m4s"));
    assert_eq!((ok.status, ok.text().as_str()), (200, "media"));
    assert_eq!(
        upstream.seen()[0].target,
        "/live/s/720p/1.m4s",
        "the token is not sent upstream"
    );
    let expired = key.sign("/live/s/", now - 1, None);
    assert_eq!(
        get(&edge, &format!("/t/{expired}/live/s/720p/1.m4s")).status,
        403
    );
    let forged = TokenKey::new(b"guess").sign("/live/s/", now + 60, None);
    assert_eq!(
        get(&edge, &format!("/t/{forged}/live/s/720p/1.m4s")).status,
        403
    );
    let escape = get(&edge, &format!("/t/{token}/live/s/../other/1.m4s"));
    assert_eq!(escape.status, 403, "`..` cannot leave the granted prefix");
    let no_slash = key.sign("/live/s", now + 60, None);
    let sibling = get(&edge, &format!("/t/{no_slash}/live/sother/1.m4s"));
    assert_eq!(sibling.status, 403, "a prefix grants only at a / boundary");
    assert!(
        sibling.text().contains("does not cover this path"),
        "{}",
        sibling.text()
    );
    let forever = key.sign("/live/s/", now + 10 * 365 * 86_400, None);
    let too_long = get(&edge, &format!("/t/{forever}/live/s/720p/1.m4s"));
    assert_eq!(too_long.status, 403, "longer than the default 1d maximum");
    assert!(
        too_long.text().contains("further ahead"),
        "{}",
        too_long.text()
    );
    let bound_elsewhere = key.sign("/live/s/", now + 60, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(
        get(&edge, &format!("/t/{bound_elsewhere}/live/s/720p/1.m4s")).status,
        403
    );
    let bound_here = key.sign("/live/s/", now + 60, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        get(&edge, &format!("/t/{bound_here}/live/s/720p/1.m4s")).header("x-cache"),
        Some("hit"),
        "tokens are not in the cache key"
    );
    assert_eq!(upstream.hits("/live/other/1.m4s"), 0);
}

#[test]
fn freshness_follows_the_upstream_and_the_policy() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route(
        "/short.m4s",
        Route::ok("v1").header("cache-control", "max-age=1"),
    );
    upstream.route(
        "/never.m4s",
        Route::ok("x").header("cache-control", "no-store"),
    );
    upstream.route("/cookie.m4s", Route::ok("x").header("set-cookie", "a=b"));
    upstream.route("/error.m4s", Route::ok("boom").status(500));
    let edge = edge_for(&upstream, "");
    for path in [
        "/short.m4s",
        "/never.m4s",
        "/cookie.m4s",
        "/error.m4s",
        "/missing.m4s",
    ] {
        get(&edge, path);
        get(&edge, path);
    }
    assert_eq!(upstream.hits("/short.m4s"), 1);
    assert_eq!(upstream.hits("/never.m4s"), 2, "no-store is never cached");
    assert_eq!(
        upstream.hits("/cookie.m4s"),
        2,
        "responses setting cookies are not shared"
    );
    assert_eq!(
        upstream.hits("/error.m4s"),
        2,
        "server errors are not cached"
    );
    assert_eq!(upstream.hits("/missing.m4s"), 1, "404s are cached briefly");
    std::thread::sleep(Duration::from_millis(1500));
    upstream.route(
        "/short.m4s",
        Route::ok("v2").header("cache-control", "max-age=1"),
    );
    // Past max-age: served stale while it is refreshed (stale-while-revalidate), then fresh.
    get(&edge, "/short.m4s");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&edge, "/short.m4s").text() != "v2" {
        assert!(Instant::now() < deadline, "the object was never refreshed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(upstream.hits("/short.m4s"), 2);
}

#[test]
fn a_dead_upstream_is_a_504_and_cached_objects_are_served_stale() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route(
        "/seg.m4s",
        Route::ok("kept").header("cache-control", "max-age=1, stale-if-error=60"),
    );
    let addr = upstream.addr();
    let edge = edge_for(&upstream, "");
    assert_eq!(get(&edge, "/seg.m4s").text(), "kept");
    drop(upstream);
    assert!(TcpStream::connect(addr).is_err(), "upstream is down");
    let unreachable = get(&edge, "/new.m4s");
    assert_eq!(unreachable.status, 504, "no upstream could be reached");
    assert!(unreachable.text().contains("no upstream could be reached"));
    std::thread::sleep(Duration::from_millis(1200));
    let stale = get(&edge, "/seg.m4s");
    assert_eq!(
        (stale.status, stale.text().as_str()),
        (200, "kept"),
        "stale-if-error serves the last good copy"
    );
}

#[test]
fn ranges_and_head_on_cached_objects() {
    let upstream = TestUpstream::start().unwrap();
    let segment = body(10_000);
    upstream.route("/r.m4s", Route::ok(segment.clone()));
    let edge = edge_for(&upstream, "");
    assert_eq!(get(&edge, "/r.m4s").status, 200);
    let one = get_with(&edge, "/r.m4s", &[("Range", "bytes=100-199")]);
    assert_eq!(
        (one.status, one.header("content-range")),
        (206, Some("bytes 100-199/10000"))
    );
    assert_eq!(one.body, &segment[100..200]);
    let suffix = get_with(&edge, "/r.m4s", &[("Range", "bytes=-10")]);
    assert_eq!(suffix.body, &segment[9990..]);
    let multi = get_with(&edge, "/r.m4s", &[("Range", "bytes=0-1,5-6")]);
    assert_eq!(multi.status, 206);
    assert!(
        multi
            .header("content-type")
            .unwrap()
            .starts_with("multipart/byteranges")
    );
    let beyond = get_with(&edge, "/r.m4s", &[("Range", "bytes=20000-")]);
    assert_eq!(beyond.status, 416);
    let head = raw_request(
        listen(&edge),
        b"HEAD /r.m4s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        (head.status, head.header("content-length"), head.body.len()),
        (200, Some("10000"), 0)
    );
    assert_eq!(upstream.hits("/r.m4s"), 1);
}

fn purge(edge: &CascadeProcess, token: Option<&str>, body: &str) -> HttpResponse {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /purge HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(edge.addr("admin_listen").unwrap(), request.as_bytes()).unwrap()
}

#[test]
fn purges_through_the_admin_endpoint_by_each_kind() {
    let upstream = TestUpstream::start().unwrap();
    for (path, tags) in [
        ("/live/s1/720p/1.m4s", "stream/s1 rendition/s1/720p"),
        ("/live/s1/720p/2.m4s", "stream/s1 rendition/s1/720p"),
        ("/live/s1/480p/1.m4s", "stream/s1 rendition/s1/480p"),
        ("/live/s2/720p/1.m4s", "stream/s2"),
        ("/vod/v/1.m4s", "vod/v"),
    ] {
        upstream.route(
            path,
            Route::ok(path.to_owned()).header("surrogate-key", tags),
        );
    }
    let edge = edge_for(&upstream, "admin_token = \"purge-secret\"\n");
    let warm = |path: &str| assert_eq!(get(&edge, path).status, 200);
    let cached = |path: &str| get(&edge, path).header("x-cache") == Some("hit");
    for path in [
        "/live/s1/720p/1.m4s",
        "/live/s1/720p/2.m4s",
        "/live/s1/480p/1.m4s",
        "/live/s2/720p/1.m4s",
        "/vod/v/1.m4s",
    ] {
        warm(path);
        assert!(cached(path));
    }

    // Refusals first: nothing may be purged by them.
    assert_eq!(
        purge(&edge, None, r#"{"kind":"all","confirm_all":true}"#).status,
        401
    );
    assert_eq!(
        purge(&edge, Some("guess"), r#"{"kind":"all","confirm_all":true}"#).status,
        401
    );
    let bad_json = purge(&edge, Some("purge-secret"), "{not json");
    assert_eq!(bad_json.status, 400);
    assert!(
        bad_json.text().contains("invalid purge request"),
        "{}",
        bad_json.text()
    );
    assert_eq!(
        purge(&edge, Some("purge-secret"), r#"{"kind":"all"}"#).status,
        400,
        "all needs confirmation"
    );
    assert_eq!(
        purge(
            &edge,
            Some("purge-secret"),
            r#"{"kind":"url","targets":["ftp://x/y"]}"#
        )
        .status,
        400
    );
    assert!(cached("/vod/v/1.m4s"), "refused purges purged nothing");

    let ok = purge(
        &edge,
        Some("purge-secret"),
        r#"{"kind":"url","targets":["http://localhost/live/s1/720p/1.m4s"]}"#,
    );
    assert_eq!((ok.status, ok.text().trim()), (200, r#"{"purged":1}"#));
    assert!(!cached("/live/s1/720p/1.m4s"));
    assert!(cached("/live/s1/720p/2.m4s"));

    assert_eq!(
        purge(
            &edge,
            Some("purge-secret"),
            r#"{"kind":"tag","targets":["rendition/s1/720p"]}"#
        )
        .status,
        200
    );
    assert!(!cached("/live/s1/720p/2.m4s"));
    assert!(cached("/live/s1/480p/1.m4s"));

    assert_eq!(
        purge(
            &edge,
            Some("purge-secret"),
            r#"{"kind":"prefix","targets":["https://localhost/live/s1/"]}"#
        )
        .status,
        200
    );
    assert!(!cached("/live/s1/480p/1.m4s"));
    assert!(
        cached("/live/s2/720p/1.m4s"),
        "a prefix purge leaves other streams"
    );

    // Soft purge: the object stays but is stale, so the next request goes upstream.
    let hits_before = upstream.hits("/vod/v/1.m4s");
    assert_eq!(
        purge(
            &edge,
            Some("purge-secret"),
            r#"{"kind":"host","targets":["localhost"],"action":"expire"}"#
        )
        .status,
        200
    );
    get(&edge, "/vod/v/1.m4s");
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.hits("/vod/v/1.m4s") == hits_before {
        assert!(
            Instant::now() < deadline,
            "an expired object was never refreshed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(
        purge(
            &edge,
            Some("purge-secret"),
            r#"{"kind":"all","confirm_all":true}"#
        )
        .status,
        200
    );
    assert!(!cached("/live/s2/720p/1.m4s"));
}

#[test]
fn the_purge_endpoint_is_off_without_a_token() {
    let upstream = TestUpstream::start().unwrap();
    let edge = edge_for(&upstream, "");
    let r = purge(&edge, Some(""), r#"{"kind":"all","confirm_all":true}"#);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("set edge.admin_token"), "{}", r.text());
}

#[test]
fn misses_spread_over_shields_and_fail_over_when_one_dies() {
    let (a, b) = (
        TestUpstream::start().unwrap(),
        TestUpstream::start().unwrap(),
    );
    for shield in [&a, &b] {
        for i in 0..60 {
            shield.route(
                &format!("/live/s/{i}.m4s"),
                Route::ok(format!("segment {i}")),
            );
        }
    }
    let config = format!(
        "[edge]\nshields = [\"{}\", \"{}\"]\norigin = \"\"\n[edge.cache]\nhealth_check_interval = \"200ms\"\n",
        a.addr(),
        b.addr()
    );
    let edge = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
    for i in 0..40 {
        assert_eq!(
            get(&edge, &format!("/live/s/{i}.m4s")).text(),
            format!("segment {i}")
        );
    }
    let (on_a, on_b) = (a.seen().len(), b.seen().len());
    assert_eq!(on_a + on_b, 40, "each miss went to exactly one shield");
    assert!(
        on_a >= 8 && on_b >= 8,
        "keys are spread by hashing: {on_a} / {on_b}"
    );
    for i in 0..40 {
        get(&edge, &format!("/live/s/{i}.m4s"));
    }
    assert_eq!(
        a.seen().len() + b.seen().len(),
        40,
        "hits do not go upstream"
    );

    drop(a);
    for i in 40..60 {
        let r = get(&edge, &format!("/live/s/{i}.m4s"));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("segment {i}")),
            "keys of the dead shield fail over"
        );
    }
    assert_eq!(b.seen().len(), on_b + 20);
}

#[test]
fn an_upstream_answering_garbage_is_a_502_and_nothing_is_cached() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"THIS IS NOT HTTP\r\n\r\nat all");
        }
    });
    let config = format!("[edge]\nshields = []\norigin = \"{addr}\"\n");
    let edge = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
    assert_eq!(get(&edge, "/live/s/1.m4s").status, 502);
    let after_first = accepted.load(Ordering::SeqCst);
    assert_eq!(
        get(&edge, "/live/s/1.m4s").status,
        502,
        "the garbage was not cached"
    );
    assert!(
        accepted.load(Ordering::SeqCst) > after_first,
        "the second request went upstream again"
    );
    let health = cascade_testkit::http_get(edge.addr("admin_listen").unwrap(), "/healthz").unwrap();
    assert_eq!(health.status, 200, "the edge keeps running");
}

#[test]
fn a_lagging_parent_cannot_undo_a_purge() {
    let upstream = TestUpstream::start().unwrap();
    // The parent still holds a copy first fetched from the origin long ago.
    let before_purge = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 60_000;
    let stale = |body: &'static str, stamp: u128| {
        Route::ok(body)
            .header("x-cascade-fetched", &stamp.to_string())
            .header("cache-control", "max-age=3600")
    };
    upstream.route("/vod/v/1.m4s", stale("old", before_purge));
    let edge = edge_for(&upstream, "admin_token = \"t\"\n");
    assert_eq!(get(&edge, "/vod/v/1.m4s").text(), "old");
    assert_eq!(get(&edge, "/vod/v/1.m4s").header("x-cache"), Some("hit"));

    assert_eq!(
        purge(
            &edge,
            Some("t"),
            r#"{"kind":"prefix","targets":["http://localhost/vod/v/"]}"#
        )
        .status,
        200
    );
    // The parent has not applied the purge: it keeps answering with the old copy.
    assert_eq!(get(&edge, "/vod/v/1.m4s").text(), "old");
    let second = get(&edge, "/vod/v/1.m4s");
    assert_ne!(
        second.header("x-cache"),
        Some("hit"),
        "the pre-purge copy was not stored again"
    );
    let last = upstream.seen().into_iter().last().unwrap();
    assert_eq!(
        last.header("cache-control"),
        Some("no-cache"),
        "the parent is asked to revalidate"
    );

    // Once the parent has a copy fetched after the purge, it is cached again.
    let after_purge = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1;
    upstream.route("/vod/v/1.m4s", stale("new", after_purge));
    assert_eq!(get(&edge, "/vod/v/1.m4s").text(), "new");
    let hit = get(&edge, "/vod/v/1.m4s");
    assert_eq!(
        (hit.header("x-cache"), hit.text().as_str()),
        (Some("hit"), "new")
    );
}

#[test]
fn the_first_tier_stamps_when_it_fetched_from_the_origin() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/a.m4s", Route::ok("x"));
    let edge = edge_for(&upstream, "");
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let stamp: u128 = get(&edge, "/a.m4s")
        .header("x-cascade-fetched")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stamp >= before - 1000 && stamp <= before + 5000,
        "{stamp} vs {before}"
    );
    let again: u128 = get(&edge, "/a.m4s")
        .header("x-cascade-fetched")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(again, stamp, "a hit keeps the original stamp");
}

#[test]
fn a_live_playlist_is_fresh_only_for_live_playlist_fresh_and_a_recordings_for_its_max_age() {
    let upstream = TestUpstream::start().unwrap();
    let live = "/live/s/720p/playlist.m3u8";
    let recording = "/vod/r/720p/playlist.m3u8";
    // max-age=5 would keep it fresh past the wait below; the cap must cut it short.
    upstream.route(
        live,
        Route::ok("#EXTM3U\n").header("cache-control", "public, max-age=5"),
    );
    upstream.route(
        recording,
        Route::ok("#EXTM3U\n#EXT-X-ENDLIST\n").header("cache-control", "public, max-age=86400"),
    );
    let edge = edge_for(&upstream, "[edge.cache]\nlive_playlist_fresh = \"600ms\"\n");
    for path in [live, recording] {
        assert_eq!(get(&edge, path).header("x-cache"), Some("miss"), "{path}");
        assert_eq!(get(&edge, path).header("x-cache"), Some("hit"), "{path}");
    }
    std::thread::sleep(Duration::from_millis(900));
    let again = get(&edge, live);
    assert_eq!(again.status, 200);
    assert_ne!(
        again.header("x-cache"),
        Some("hit"),
        "a live playlist older than live_playlist_fresh is fetched again"
    );
    assert_eq!(upstream.hits(live), 2);
    assert_eq!(get(&edge, recording).header("x-cache"), Some("hit"));
    assert_eq!(upstream.hits(recording), 1);
}

#[test]
fn blocking_playlist_requests_that_wait_at_the_upstream_collapse_and_are_not_cut() {
    let upstream = TestUpstream::start().unwrap();
    // An LL-HLS origin holds a blocking reload until the part exists (here 3 s).
    upstream.route(
        "/live/s/720p/playlist.m3u8",
        Route::ok("#EXTM3U\n#EXT-X-PART:DURATION=0.5,URI=\"20.3.m4s\"\n")
            .delay(Duration::from_secs(3)),
    );
    let edge = Arc::new(edge_for(&upstream, ""));
    let viewers: Vec<_> = (0..20)
        .map(|_| {
            let edge = Arc::clone(&edge);
            std::thread::spawn(move || {
                get(&edge, "/live/s/720p/playlist.m3u8?_HLS_msn=20&_HLS_part=3")
            })
        })
        .collect();
    for v in viewers {
        let r = v.join().unwrap();
        assert_eq!(r.status, 200, "a blocking request was cut: {}", r.text());
        assert!(r.text().contains("20.3.m4s"));
    }
    assert_eq!(
        upstream.hits("/live/s/720p/playlist.m3u8"),
        1,
        "20 blocking requests for the same msn/part make one upstream request"
    );
    let again = get(&edge, "/live/s/720p/playlist.m3u8?_HLS_part=3&_HLS_msn=20");
    assert_eq!(
        again.header("x-cache"),
        Some("hit"),
        "the answer for a given msn/part is cached"
    );
}

#[test]
fn each_request_has_a_tracing_span_that_carries_its_key_and_never_its_token() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/720p/1.m4s", Route::ok("media"));
    let edge = edge_for(
        &upstream,
        "[[edge.sites]]\nhosts = [\"localhost\"]\ntoken_secret = \"s3cret\"\n\
         [log]\nformat = \"json\"\n",
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = TokenKey::new(b"s3cret").sign("/live/s/", now + 60, None);
    assert_eq!(
        get(&edge, &format!("/t/{token}/live/s/720p/1.m4s")).status,
        200
    );
    assert_eq!(
        get(&edge, &format!("/t/{token}/live/s/720p/1.m4s")).status,
        200
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let access: Vec<serde_json::Value> = loop {
        let lines: Vec<serde_json::Value> = edge
            .process()
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "cascade::access" && v["method"] == "GET")
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(access.len(), 2, "one access line per request");
    for line in &access {
        assert_eq!(line["protocol"], "h1", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    let spans: Vec<&serde_json::Value> = access.iter().map(|l| &l["span"]).collect();
    for span in &spans {
        assert_eq!(span["name"], "request", "{span}");
        assert_eq!(span["key"], "localhost/live/s/720p/1.m4s", "{span}");
    }
    assert_eq!(
        spans[0]["upstream"],
        upstream.addr().to_string(),
        "the miss went upstream"
    );
    assert_ne!(
        spans[0]["id"], spans[1]["id"],
        "each request has its own span"
    );
    assert!(
        !edge.process().log().contains(&token),
        "the viewer's token is never logged"
    );
}

/// A connection to `addr` whose reads give up after 50 ms, for [`read_until_closed`].
fn connect_polled(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    stream
}

#[test]
fn slow_stalled_and_idle_clients_are_disconnected_while_others_are_served() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/ok", Route::ok("fine"));
    let edge = edge_for(
        &upstream,
        "[edge.clients]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"2s\"\n",
    );
    let addr = listen(&edge);

    // A client trickling its header a line every 200 ms (each read well inside Pingora's own
    // per-read limit) is cut once the whole header is a second late.
    let trickler = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let started = Instant::now();
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(8) {
            if stream.write_all(b"X-Slow: 1\r\n").is_err() {
                return (Vec::new(), started.elapsed());
            }
            match stream.read(&mut buf) {
                Ok(n) => return (buf[..n].to_vec(), started.elapsed()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (Vec::new(), started.elapsed()),
            }
        }
        panic!("a trickling client was still connected after 8s");
    });

    // A client that connects and says nothing is closed too.
    let mut silent = connect_polled(addr);
    // Meanwhile, other clients are served.
    assert_eq!(get(&edge, "/ok").status, 200);
    // A header sent in two parts, inside the limit, is answered.
    let mut split = connect_polled(addr);
    split.write_all(b"GET /ok HTTP/1.1\r\nHost: local").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    split
        .write_all(b"host\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut split, Duration::from_secs(5));
    assert!(closed.is_some());
    assert_eq!(parse_response(&answer).unwrap().status, 200);

    let (silent_got, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(8));
    assert!(silent_got.is_empty(), "nothing is sent to a silent client");
    assert!(silent_closed.is_some(), "a silent connection is closed");

    let (trickled, trickle_closed) = trickler.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&trickled).contains(" 200 "),
        "the trickled request was not answered: {:?}",
        String::from_utf8_lossy(&trickled)
    );
    assert!(
        trickle_closed >= Duration::from_millis(900) && trickle_closed < Duration::from_secs(4),
        "the trickling client was cut after {trickle_closed:?}, for a 1s header limit"
    );

    // Keep-alive: a connection that answered a request is closed after 2s of idleness, not
    // by the 1s header limit (idle time is not header time).
    let mut idle = connect_polled(addr);
    idle.write_all(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (first, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(8));
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));
    let idle_closed = idle_closed.expect("an idle keep-alive connection is closed");
    assert!(
        idle_closed >= Duration::from_millis(1800) && idle_closed < Duration::from_secs(5),
        "idle connection closed after {idle_closed:?}, for a 2s keep-alive limit"
    );

    let metrics = cascade_testkit::http_get(edge.addr("admin_listen").unwrap(), "/metrics")
        .unwrap()
        .text();
    let timeouts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cascade_proxy_header_timeouts_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        timeouts >= 2,
        "trickler and silent client counted: {timeouts}"
    );
    assert_eq!(get(&edge, "/ok").status, 200, "the edge still serves");
}

#[test]
fn a_client_that_stops_reading_or_opens_too_many_connections_is_cut_off() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/ok", Route::ok("fine"));
    upstream.route("/big.m4s", Route::ok(vec![7u8; 32 << 20]));
    let edge = edge_for(
        &upstream,
        "[edge.clients]\nwrite_timeout = \"2s\"\nmax_connections_per_address = 4\n",
    );
    let addr = listen(&edge);

    // A viewer that asks for 32 MiB and never reads: once the socket buffers are full, the
    // write makes no progress, and the connection is closed after the 2s write timeout.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(b"GET /big.m4s HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let closed = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        edge.metric("cascade_proxy_write_timeouts_total") >= 1.0
    });
    assert!(closed, "the stalled viewer was never timed out");
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while let Ok(n) = stalled.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got < 32 << 20, "the whole body arrived: {got} bytes");

    // Four connections from 127.0.0.1 are held; the fifth is closed at once, unanswered,
    // and other requests are still served once one of the four goes.
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect_polled(addr);
    let (answer, refused) = read_until_closed(&mut extra, Duration::from_secs(3));
    assert!(answer.is_empty() && refused.is_some(), "{answer:?}");
    assert!(edge.metric("cascade_proxy_refused_connections_total") >= 1.0);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(&edge, "/ok").status, 200);
}
