//! The shield as a real process between real edges and origins the test controls: offload
//! (one origin request however many viewers), origin failover, stale-if-error with the live
//! playlist bound, the disk tier across restarts and damage, the fill secret, the fill-time
//! purge rule through a lagging shield, and misbehaving origins.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_testkit::{CascadeProcess, HttpResponse, Route, TestUpstream, raw_request, wait_for};

fn toml_list(addrs: &[SocketAddr]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A shield over `origins` with its disk tier in `disk`; `shield` and `cache` are extra lines
/// for `[shield]` and `[shield.cache]`.
fn shield_with(origins: &[SocketAddr], disk: &Path, shield: &str, cache: &str) -> CascadeProcess {
    let config = format!(
        "[shield]\norigins = {}\n{shield}\n[shield.cache]\nhealth_check_interval = \"200ms\"\n{cache}\n[shield.disk]\ndir = {:?}\n",
        toml_list(origins),
        disk.display().to_string()
    );
    CascadeProcess::start("cascade-shield", "shield", &config).unwrap()
}

fn edge_over(shields: &[&CascadeProcess], extra: &str) -> CascadeProcess {
    let addrs: Vec<SocketAddr> = shields.iter().map(|s| s.addr("listen").unwrap()).collect();
    let config = format!(
        "[edge]\nshields = {}\norigin = \"\"\n{extra}",
        toml_list(&addrs)
    );
    CascadeProcess::start("cascade-edge", "edge", &config).unwrap()
}

fn get_with(node: &CascadeProcess, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    raw_request(node.addr("listen").unwrap(), request.as_bytes()).unwrap()
}

fn get(node: &CascadeProcess, target: &str) -> HttpResponse {
    get_with(node, target, &[])
}

fn body(n: usize, seed: u8) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8 ^ seed).collect::<Vec<u8>>())
}

/// Every object file of a disk tier.
fn disk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() && !shard.ends_with("tmp") {
            out.extend(std::fs::read_dir(shard).unwrap().map(|f| f.unwrap().path()));
        }
    }
    out
}

#[test]
fn two_hundred_viewers_on_two_edges_make_one_origin_request() {
    let origin = TestUpstream::start().unwrap();
    let segment = body(300_000, 1);
    origin.route(
        "/live/s/720p/10.m4s",
        Route::ok(segment.clone()).delay(Duration::from_millis(500)),
    );
    let disk = tempfile::tempdir().unwrap();
    let shield = shield_with(&[origin.addr()], disk.path(), "", "");
    let edges = Arc::new([edge_over(&[&shield], ""), edge_over(&[&shield], "")]);

    let viewers = 200;
    let barrier = Arc::new(Barrier::new(viewers));
    let handles: Vec<_> = (0..viewers)
        .map(|i| {
            let (edges, barrier) = (Arc::clone(&edges), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                get(&edges[i % 2], "/live/s/720p/10.m4s")
            })
        })
        .collect();
    for handle in handles {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.body, segment,
            "every viewer gets the whole segment"
        );
        assert!(
            response.header("x-cascade-fetched").is_some(),
            "the shield stamps the first fetch"
        );
    }
    assert_eq!(
        origin.hits("/live/s/720p/10.m4s"),
        1,
        "the origin saw it once"
    );
    let via = get(&edges[0], "/live/s/720p/10.m4s");
    assert_eq!(via.header("x-cache"), Some("hit"));
    assert!(via.header("via").unwrap().contains("cascade-shield"));
}

#[test]
fn a_dead_or_failing_primary_origin_fails_over_to_the_backup() {
    let primary = TestUpstream::start().unwrap();
    let backup = TestUpstream::start().unwrap();
    for (origin, text) in [(&primary, "primary"), (&backup, "backup")] {
        for path in ["/vod/a.m4s", "/vod/b.m4s", "/vod/c.m4s"] {
            origin.route(path, Route::ok(text));
        }
    }
    primary.route("/vod/b.m4s", Route::ok("overloaded").status(503));
    let disk = tempfile::tempdir().unwrap();
    let shield = shield_with(&[primary.addr(), backup.addr()], disk.path(), "", "");

    assert_eq!(get(&shield, "/vod/a.m4s").text(), "primary");
    let failed_over = get(&shield, "/vod/b.m4s");
    assert_eq!(
        (failed_over.status, failed_over.text().as_str()),
        (200, "backup"),
        "a 5xx from the primary moves the request to the backup"
    );
    drop(primary);
    let after_death = get(&shield, "/vod/c.m4s");
    assert_eq!(
        (after_death.status, after_death.text().as_str()),
        (200, "backup")
    );
    assert_eq!(
        get(&shield, "/vod/a.m4s").text(),
        "primary",
        "cached copies stay"
    );
}

#[test]
fn with_every_origin_down_copies_are_served_stale_and_live_playlists_504_after_the_bound() {
    let origin = TestUpstream::start().unwrap();
    origin.route("/live/s/index.m3u8", Route::ok("#EXTM3U\n"));
    origin.route(
        "/vod/a.m4s",
        Route::ok("segment").header("cache-control", "max-age=1"),
    );
    let disk = tempfile::tempdir().unwrap();
    let shield = shield_with(
        &[origin.addr()],
        disk.path(),
        "",
        "live_stale_if_error = \"2s\"\nstale_if_error = \"60s\"",
    );
    assert_eq!(get(&shield, "/live/s/index.m3u8").status, 200);
    assert_eq!(get(&shield, "/vod/a.m4s").status, 200);
    let fetched = Instant::now();
    drop(origin);
    std::thread::sleep(Duration::from_millis(1300));

    for path in ["/live/s/index.m3u8", "/vod/a.m4s"] {
        let stale = get(&shield, path);
        assert_eq!(
            stale.status, 200,
            "{path} is served stale while the origin is down"
        );
        assert_eq!(stale.header("x-cache"), Some("stale"), "{path}");
    }
    let uncached = get(&shield, "/vod/never-fetched.m4s");
    assert_eq!(uncached.status, 504);

    // Past 1 s of freshness plus the 2 s live bound.
    let bound = Duration::from_millis(3500);
    std::thread::sleep(bound.saturating_sub(fetched.elapsed()));
    assert_eq!(
        get(&shield, "/live/s/index.m3u8").status,
        504,
        "a live playlist is not served stale past its bound"
    );
    let segment = get(&shield, "/vod/a.m4s");
    assert_eq!((segment.status, segment.text().as_str()), (200, "segment"));
}

#[test]
fn disk_tier_hits_survive_a_restart_and_damaged_files_are_refetched() {
    let origin = TestUpstream::start().unwrap();
    let big = body(700_000, 2);
    let small = body(50_000, 3);
    origin.route("/vod/big.mp4", Route::ok(big.clone()));
    origin.route("/vod/small.m4s", Route::ok(small.clone()));
    origin.route("/vod/third.m4s", Route::ok(small.clone()));
    let disk = tempfile::tempdir().unwrap();
    let shield = shield_with(&[origin.addr()], disk.path(), "", "");
    for path in ["/vod/big.mp4", "/vod/small.m4s", "/vod/third.m4s"] {
        assert_eq!(get(&shield, path).status, 200);
    }
    wait_for("three disk writes", Duration::from_secs(10), || {
        shield.metric("cascade_disk_cache_writes_total") >= 3.0
    });
    drop(shield);

    let shield = shield_with(&[origin.addr()], disk.path(), "", "");
    assert_eq!(shield.metric("cascade_disk_cache_objects"), 3.0);
    let hit = get(&shield, "/vod/big.mp4");
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("hit")));
    assert_eq!(hit.body, big, "the disk copy is byte for byte the original");
    let range = get_with(&shield, "/vod/big.mp4", &[("Range", "bytes=300000-600009")]);
    assert_eq!(range.status, 206);
    assert_eq!(
        range.body,
        big.slice(300_000..600_010),
        "ranges across blocks"
    );
    assert_eq!(
        origin.hits("/vod/big.mp4"),
        1,
        "served from disk after the restart"
    );

    // Damage two files behind the shield's back: truncate one, flip a byte in another.
    let files = disk_files(disk.path());
    assert_eq!(files.len(), 3);
    let mut by_size: Vec<(u64, PathBuf)> = files
        .into_iter()
        .map(|f| (std::fs::metadata(&f).unwrap().len(), f))
        .collect();
    by_size.sort();
    let (big_file, small_file) = (&by_size[2].1, &by_size[0].1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(big_file)
        .unwrap();
    f.set_len(by_size[2].0 - 1000).unwrap();
    let mut bytes = std::fs::read(small_file).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    std::fs::write(small_file, bytes).unwrap();

    let refetched = get(&shield, "/vod/big.mp4");
    assert_eq!(refetched.status, 200);
    assert_eq!(refetched.body, big, "a truncated file is not served");
    assert_eq!(origin.hits("/vod/big.mp4"), 2, "it was fetched again");
    let small_hits_before = origin.hits("/vod/small.m4s") + origin.hits("/vod/third.m4s");
    for path in ["/vod/small.m4s", "/vod/third.m4s"] {
        assert_eq!(get(&shield, path).body, small, "{path} intact");
    }
    assert_eq!(
        origin.hits("/vod/small.m4s") + origin.hits("/vod/third.m4s"),
        small_hits_before + 1,
        "exactly the corrupted one was fetched again"
    );
    assert!(shield.metric("cascade_disk_cache_corrupt_total") >= 2.0);
}

#[test]
fn only_edges_presenting_the_fill_secret_may_fill() {
    let origin = TestUpstream::start().unwrap();
    origin.route("/vod/a.m4s", Route::ok("secret content"));
    let disk = tempfile::tempdir().unwrap();
    let shield = shield_with(
        &[origin.addr()],
        disk.path(),
        "fill_secret = \"edge-only\"",
        "",
    );

    let anonymous = get(&shield, "/vod/a.m4s");
    assert_eq!(anonymous.status, 403);
    assert!(anonymous.text().contains("fill secret"));
    let wrong = get_with(&shield, "/vod/a.m4s", &[("X-Cascade-Fill-Secret", "guess")]);
    assert_eq!(wrong.status, 403);
    assert_eq!(origin.hits("/vod/a.m4s"), 0);

    let edge = edge_over(&[&shield], "fill_secret = \"edge-only\"\n");
    let through_edge = get(&edge, "/vod/a.m4s");
    assert_eq!(
        (through_edge.status, through_edge.text().as_str()),
        (200, "secret content")
    );
    let seen = origin.seen();
    assert!(
        seen.iter()
            .all(|r| r.header("x-cascade-fill-secret").is_none()),
        "the secret is not passed on to the origin"
    );
    let unconfigured_edge = edge_over(&[&shield], "");
    assert_eq!(get(&unconfigured_edge, "/vod/a.m4s").status, 403);
}

#[test]
fn an_edge_purged_before_its_shield_does_not_get_the_old_copy_back() {
    let origin = TestUpstream::start().unwrap();
    origin.route("/vod/title.m4s", Route::ok("version 1"));
    let disk = tempfile::tempdir().unwrap();
    let shield = shield_with(&[origin.addr()], disk.path(), "", "");
    let edge = edge_over(&[&shield], "admin_token = \"t\"\n");
    assert_eq!(get(&edge, "/vod/title.m4s").text(), "version 1");

    // The content is replaced and only the edge hears of it (the shield's purge is late).
    origin.route("/vod/title.m4s", Route::ok("version 2"));
    let purge = format!(
        "POST /purge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        r#"{"kind":"url","targets":["http://localhost/vod/title.m4s"]}"#.len(),
        r#"{"kind":"url","targets":["http://localhost/vod/title.m4s"]}"#
    );
    let answer = raw_request(edge.addr("admin_listen").unwrap(), purge.as_bytes()).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    let after = get(&edge, "/vod/title.m4s");
    assert_eq!(
        after.text(),
        "version 2",
        "the shield went back to the origin"
    );
    assert_eq!(get(&edge, "/vod/title.m4s").header("x-cache"), Some("hit"));
    assert_eq!(get(&shield, "/vod/title.m4s").text(), "version 2");
}

/// An origin that answers `/ok.m4s` properly and every other request with `response`, then
/// closes (or, with `hold`, keeps the connection open without finishing).
fn raw_origin(response: &'static [u8], hold: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                if buf[..n].starts_with(b"GET /ok.m4s ") {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine");
                    return;
                }
                let _ = stream.write_all(response);
                if hold {
                    std::thread::sleep(Duration::from_secs(30));
                }
            });
        }
    });
    addr
}

#[test]
fn misbehaving_origins_are_502_or_504_and_nothing_is_cached() {
    let garbage = raw_origin(b"this is not HTTP at all\r\n\r\n", false);
    let short = raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nCache-Control: max-age=600\r\n\r\nonly a little",
        false,
    );
    let huge_header = {
        let mut r = b"HTTP/1.1 200 OK\r\nX-Padding: ".to_vec();
        r.extend(std::iter::repeat_n(b'a', 200_000));
        r.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        raw_origin(r.leak(), false)
    };
    let stalled = raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nCache-Control: max-age=600\r\n\r\nstarted",
        true,
    );
    let never_answers = raw_origin(b"", true);

    let disk = tempfile::tempdir().unwrap();
    for (origin, expected) in [
        (garbage, 502),
        (short, 502),
        (huge_header, 502),
        (stalled, 504),
        (never_answers, 504),
    ] {
        let shield = shield_with(
            &[origin],
            disk.path().join(origin.port().to_string()).as_path(),
            "",
            "upstream_read_timeout = \"1s\"",
        );
        let target = shield.addr("listen").unwrap();
        let request = b"GET /x.m4s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        match raw_request(target, request) {
            // Headers already sent when the body broke: the client must see it is short.
            Ok(answer) if answer.status == 200 => {
                assert_ne!(
                    answer.body.len(),
                    1000,
                    "{origin}: a broken body looked complete"
                )
            }
            Ok(answer) => assert_eq!(answer.status, expected, "{origin}: {}", answer.text()),
            Err(_) => {} // the connection was cut mid-body: also visibly broken
        }
        assert_eq!(
            shield.metric("cascade_cache_objects"),
            0.0,
            "{origin}: nothing cached"
        );
        assert_eq!(
            get(&shield, "/ok.m4s").text(),
            "fine",
            "{origin}: the shield keeps serving other keys"
        );
        if let Ok(again) = raw_request(target, request) {
            assert_ne!(
                again.header("x-cache"),
                Some("hit"),
                "{origin}: the broken object was not cached"
            );
        }
    }
}

/// A 1 MiB filesystem for the disk tier: a tmpfs when this process may mount one (root, as on
/// the CI machine), else a directory whose `tmp` is replaced by a file once the shield runs,
/// so every disk write fails (ENOTDIR instead of ENOSPC, the same path in the shield).
struct TinyDisk {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl TinyDisk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self { dir, mounted }
    }

    fn break_if_not_mounted(&self) {
        if !self.mounted {
            let tmp = self.dir.path().join("tmp");
            std::fs::remove_dir_all(&tmp).unwrap();
            std::fs::write(&tmp, b"not a directory").unwrap();
        }
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn a_full_disk_stops_disk_admission_and_the_memory_tier_carries_on() {
    let origin = TestUpstream::start().unwrap();
    let paths: Vec<String> = (1..=5).map(|i| format!("/vod/{i}.m4s")).collect();
    for (i, path) in paths.iter().enumerate() {
        origin.route(path, Route::ok(body(400_000, i as u8)));
    }
    let disk = TinyDisk::new();
    let shield = shield_with(&[origin.addr()], disk.dir.path(), "", "");
    disk.break_if_not_mounted();
    for path in &paths {
        assert_eq!(get(&shield, path).status, 200);
        // Let each write land (or fail) before the next fill.
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("a disk write error", Duration::from_secs(10), || {
        shield.metric("cascade_disk_cache_write_errors_total") >= 1.0
    });
    for (i, path) in paths.iter().enumerate() {
        let again = get(&shield, path);
        assert_eq!(again.header("x-cache"), Some("hit"), "{path} from memory");
        assert_eq!(again.body, body(400_000, i as u8));
        assert_eq!(origin.hits(path), 1);
    }
    assert!(
        shield.metric("cascade_disk_cache_objects") < 5.0,
        "not everything fitted on a 1 MiB disk"
    );
    // Still serving new fills while the disk is full.
    origin.route("/vod/6.m4s", Route::ok("after"));
    assert_eq!(get(&shield, "/vod/6.m4s").text(), "after");
}
