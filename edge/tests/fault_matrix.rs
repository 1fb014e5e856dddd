//! The fault matrix: real tiers, a viewer load running throughout, and one fault per test.
//! Each row prints `fault matrix | <row> | viewer requests | viewer errors | purges lost |
//! segments lost` and asserts what the row allows. The rows about purges, the transcoder, the
//! publisher and the store outage live beside the code they exercise; docs/operations.md
//! lists every row with its test.
//!
//! The viewer load is a set of clients that fetch their objects round after round, and, like a
//! player following content steering, move to the next edge when one does not answer. A viewer
//! error is a request no edge answered with 200.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use cascade_testkit::{
    BroadcastOptions, Broadcaster, CascadeProcess, HttpResponse, json_request, raw_request,
    wait_for,
};
use serde_json::Value;

const OPS: &str = "ops-token-0123456789";

/// Transcoding fills the cores: one row at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `GET target` on `addr`, the connection closed after the answer.
fn fetch(addr: SocketAddr, target: &str) -> Option<HttpResponse> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).ok()
}

fn get(addr: SocketAddr, target: &str) -> Option<(u16, usize)> {
    fetch(addr, target).map(|r| (r.status, r.body.len()))
}

/// What the viewers saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    moved_edge: u64,
    first_error: Option<String>,
}

/// Viewers fetching `targets()` round after round until stopped.
struct ViewerLoad {
    stop: Arc<AtomicBool>,
    viewers: Vec<JoinHandle<Tally>>,
}

impl ViewerLoad {
    /// `viewers` clients over `edges` (viewer `i` starts on edge `i % edges`); `targets` gives
    /// the objects of round `n`.
    fn start(
        edges: Vec<SocketAddr>,
        viewers: usize,
        targets: Arc<dyn Fn(u64) -> Vec<String> + Send + Sync>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let viewers = (0..viewers)
            .map(|i| {
                let (edges, stop, targets) =
                    (edges.clone(), Arc::clone(&stop), Arc::clone(&targets));
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut on = i % edges.len();
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for target in targets(round) {
                            tally.requests += 1;
                            let mut answered = false;
                            for attempt in 0..edges.len() {
                                let edge = (on + attempt) % edges.len();
                                if let Some((200, _)) = get(edges[edge], &target) {
                                    if edge != on {
                                        tally.moved_edge += 1;
                                        on = edge;
                                    }
                                    answered = true;
                                    break;
                                }
                            }
                            if !answered {
                                tally.errors += 1;
                                tally
                                    .first_error
                                    .get_or_insert_with(|| format!("round {round}: {target}"));
                            }
                        }
                        round += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    tally
                })
            })
            .collect();
        Self { stop, viewers }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for viewer in self.viewers {
            let t = viewer.join().unwrap();
            total.requests += t.requests;
            total.errors += t.errors;
            total.moved_edge += t.moved_edge;
            total.first_error = total.first_error.or(t.first_error);
        }
        total
    }
}

fn report(row: &str, tally: &Tally, purges_lost: &str, segments_lost: &str) {
    eprintln!(
        "fault matrix | {row} | {} | {} | {purges_lost} | {segments_lost} |",
        tally.requests, tally.errors
    );
}

fn players_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules")
}

/// Objects every origin serves the same way: the player page's scripts.
const SCRIPTS: [&str; 3] = [
    "/player/assets/v1/hls.min.js",
    "/player/assets/v1/dash.all.min.js",
    "/player/assets/v1/player.js",
];

fn origin_config(dir: &Path, registry: &Path, store: &Path) -> String {
    format!(
        "[origin]\ndatabase_url = \"sqlite://{}\"\nplayer_dir = \"{}\"\nreconnect_grace = \"2s\"\n\
         [origin.transcoder]\npreset = \"ultrafast\"\nwork_dir = \"{}\"\n\
         [[origin.tokens]]\nname = \"ops\"\ntoken = \"{OPS}\"\nscope = \"write\"\n\
         [storage.fs]\nroot = \"{}\"\n",
        registry.display(),
        players_dir().display(),
        dir.display(),
        store.display()
    )
}

/// An origin keeping its registry and store under `dir`.
fn start_origin(dir: &Path) -> CascadeProcess {
    CascadeProcess::start(
        "cascade-origin",
        "origin",
        &origin_config(dir, &dir.join("registry.db"), &dir.join("objects")),
    )
    .unwrap()
}

fn api(origin: &CascadeProcess, method: &str, path: &str, body: &str) -> (u16, Value) {
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

fn publish(stream: &Value) -> Broadcaster {
    let options = BroadcastOptions {
        width: 640,
        height: 360,
        ..BroadcastOptions::default()
    };
    Broadcaster::start(stream["rtmp_ingest_url"].as_str().unwrap(), &options).unwrap()
}

/// The whole segments of `id`'s live 240p playlist on `addr`.
fn live_msns(addr: SocketAddr, id: &str) -> Vec<u64> {
    fetch(addr, &format!("/live/{id}/240p/playlist.m3u8"))
        .map(|r| segment_msns(&r.text()))
        .unwrap_or_default()
}

/// The media sequence numbers a media playlist lists as whole segments.
fn segment_msns(playlist: &str) -> Vec<u64> {
    let mut msns = Vec::new();
    let mut after_extinf = false;
    for line in playlist.lines() {
        if line.starts_with("#EXTINF") {
            after_extinf = true;
        } else if after_extinf && !line.starts_with('#') {
            if let Some(msn) = line
                .strip_suffix(".m4s")
                .and_then(|m| m.rsplit('/').next()?.parse().ok())
            {
                msns.push(msn);
            }
            after_extinf = false;
        }
    }
    msns
}

#[test]
fn kill_9_of_the_primary_origin_with_a_backup_viewers_see_no_error() {
    let _heavy = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = (dir.path().join("registry.db"), dir.path().join("objects"));
    let mut primary = CascadeProcess::start(
        "cascade-origin",
        "origin",
        &origin_config(dir.path(), &registry, &store),
    )
    .unwrap();
    // A recording to watch as VOD: 16 s of a 240p stream.
    let (status, stream) = api(
        &primary,
        "POST",
        "/api/v1/livestreams",
        r#"{"title":"vod","settings":{"resolutions":["240p"]}}"#,
    );
    assert_eq!(status, 201, "{stream}");
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut publisher = publish(&stream);
    wait_for("16 s of the stream", Duration::from_secs(90), || {
        live_msns(primary.addr("listen").unwrap(), &id).len() >= 8
    });
    publisher.kill().unwrap();
    assert_eq!(
        api(
            &primary,
            "POST",
            &format!("/api/v1/livestreams/{id}/stop"),
            ""
        )
        .0,
        200
    );
    wait_for("the recording", Duration::from_secs(30), || {
        api(
            &primary,
            "GET",
            &format!("/api/v1/livestreams/{id}/recordings"),
            "",
        )
        .1["recordings"][0]["status"]
            == "ready"
    });
    let rec = api(
        &primary,
        "GET",
        &format!("/api/v1/livestreams/{id}/recordings"),
        "",
    )
    .1["recordings"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The backup shares the registry and the store.
    let backup = CascadeProcess::start(
        "cascade-origin",
        "origin",
        &origin_config(dir.path(), &registry, &store),
    )
    .unwrap();
    let shield = CascadeProcess::start(
        "cascade-shield",
        "shield",
        &format!(
            "[shield]\norigins = [\"{}\", \"{}\"]\n",
            primary.addr("listen").unwrap(),
            backup.addr("listen").unwrap()
        ),
    )
    .unwrap();
    let edge = CascadeProcess::start(
        "cascade-edge",
        "edge",
        &format!(
            "[edge]\nshields = [\"{}\"]\norigin = \"\"\n",
            shield.addr("listen").unwrap()
        ),
    )
    .unwrap();
    let playlist = fetch(
        primary.addr("listen").unwrap(),
        &format!("/vod/{rec}/240p/playlist.m3u8"),
    )
    .unwrap()
    .text();
    let segments = segment_msns(&playlist);
    assert!(segments.len() >= 6, "{playlist}");

    // VOD viewers that reach one more segment every second: most segments are first asked
    // for after the primary is gone, so only the backup can have served them.
    let started = std::time::Instant::now();
    let targets = {
        let (rec, segments) = (rec.clone(), segments.clone());
        Arc::new(move |_round: u64| {
            let mut t = vec![
                format!("/vod/{rec}/master.m3u8"),
                format!("/vod/{rec}/240p/playlist.m3u8"),
                format!("/vod/{rec}/240p/init.mp4"),
            ];
            let upto = usize::try_from(started.elapsed().as_secs())
                .unwrap_or(usize::MAX)
                .min(segments.len() - 1);
            t.extend(
                segments[..=upto]
                    .iter()
                    .map(|msn| format!("/vod/{rec}/240p/{msn}.m4s")),
            );
            t
        })
    };
    let load = ViewerLoad::start(vec![edge.addr("listen").unwrap()], 4, targets);
    std::thread::sleep(Duration::from_secs(2));
    primary.stop_with(9, Duration::from_secs(5)).unwrap();
    let killed_at = started.elapsed().as_secs();
    // Until every segment has been asked for, and a little more.
    while started.elapsed() < Duration::from_secs(segments.len() as u64 + 3) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let tally = load.finish();
    report(
        "kill -9 of the primary origin (backup configured)",
        &tally,
        "-",
        "-",
    );
    assert_eq!(tally.errors, 0, "{tally:?}");
    assert!(tally.requests > 100, "{tally:?}");
    assert!(
        segments.len() as u64 > killed_at + 2,
        "{} segments were first asked for after the kill",
        segments.len() as u64 - killed_at
    );
    drop(backup);
}

#[test]
fn kill_9_of_a_shield_then_an_edge_viewers_see_no_error_on_cached_content() {
    let _heavy = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let origin = start_origin(dir.path());
    let shield = || {
        CascadeProcess::start(
            "cascade-shield",
            "shield",
            &format!(
                "[shield]\norigins = [\"{}\"]\n",
                origin.addr("listen").unwrap()
            ),
        )
        .unwrap()
    };
    let (mut shield_a, shield_b) = (shield(), shield());
    let edge = || {
        CascadeProcess::start(
            "cascade-edge",
            "edge",
            &format!(
                "[edge]\nshields = [\"{}\", \"{}\"]\norigin = \"\"\n[edge.cache]\nhealth_check_interval = \"200ms\"\n",
                shield_a.addr("listen").unwrap(),
                shield_b.addr("listen").unwrap()
            ),
        )
        .unwrap()
    };
    let (mut edge_1, edge_2) = (edge(), edge());
    let edges = vec![
        edge_1.addr("listen").unwrap(),
        edge_2.addr("listen").unwrap(),
    ];
    for edge in &edges {
        for script in SCRIPTS {
            assert_eq!(get(*edge, script).map(|r| r.0), Some(200), "{script}");
        }
    }
    let load = ViewerLoad::start(
        edges,
        6,
        Arc::new(|_| SCRIPTS.iter().map(|s| (*s).to_owned()).collect()),
    );
    std::thread::sleep(Duration::from_secs(2));
    shield_a.stop_with(9, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    edge_1.stop_with(9, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let tally = load.finish();
    report("kill -9 of a shield, then an edge", &tally, "-", "-");
    assert_eq!(tally.errors, 0, "{tally:?}");
    assert!(
        tally.moved_edge >= 1,
        "no viewer had to move off the dead edge: {tally:?}"
    );
    // And new content still fills through the surviving shield.
    assert_eq!(
        get(edge_2.addr("listen").unwrap(), "/player/").map(|r| r.0),
        Some(200)
    );
}

/// A tmpfs of `size` mounted at `dir` for the life of the value (the full disk).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this row mounts a small tmpfs as the shield's disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.write_all(&[0u8; 1]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_on_the_shield_memory_keeps_serving() {
    let _heavy = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let origin = start_origin(dir.path());
    let disk = SmallDisk::mount(&dir.path().join("shield-disk"), "4M");
    disk.fill();
    let shield_config = format!(
        "[shield]\norigins = [\"{}\"]\n[shield.disk]\ndir = \"{}\"\ncapacity = \"1GiB\"\n",
        origin.addr("listen").unwrap(),
        disk.0.join("cache").display()
    );
    // A disk tier that cannot even create its directory is a refusal at start; one that fills
    // up later is the row. Make room for the directory, then fill the rest.
    let shield = CascadeProcess::start("cascade-shield", "shield", &shield_config)
        .or_else(|_| {
            std::fs::remove_file(disk.0.join("filler")).unwrap();
            std::fs::create_dir_all(disk.0.join("cache")).unwrap();
            disk.fill();
            CascadeProcess::start("cascade-shield", "shield", &shield_config)
        })
        .unwrap();
    let edge = CascadeProcess::start(
        "cascade-edge",
        "edge",
        &format!(
            "[edge]\nshields = [\"{}\"]\norigin = \"\"\n[edge.cache]\ncapacity = \"1MiB\"\nmax_object_size = \"1MiB\"\n",
            shield.addr("listen").unwrap()
        ),
    )
    .unwrap();
    // The edge's memory is too small for the scripts, so every round asks the shield.
    let load = ViewerLoad::start(
        vec![edge.addr("listen").unwrap()],
        4,
        Arc::new(|_| SCRIPTS.iter().map(|s| (*s).to_owned()).collect()),
    );
    std::thread::sleep(Duration::from_secs(6));
    let tally = load.finish();
    report("a full disk on the shield", &tally, "-", "-");
    assert_eq!(tally.errors, 0, "{tally:?}");
    let failed_writes = shield.metric("cascade_disk_cache_write_errors_total")
        + shield.metric("cascade_disk_cache_skipped_writes_total");
    assert!(
        failed_writes > 0.0,
        "the disk tier never failed a write:\n{}",
        shield.process().log_tail()
    );
    let direct = fetch(shield.addr("listen").unwrap(), SCRIPTS[0]).unwrap();
    assert_eq!(direct.status, 200);
    assert!(
        direct
            .header("x-cache")
            .is_some_and(|c| c.to_ascii_lowercase().contains("hit")),
        "the shield's memory serves: {:?}",
        direct.header("x-cache")
    );
    assert_eq!(
        shield.metric("cascade_ready"),
        1.0,
        "the shield stays ready"
    );
}

#[test]
fn an_origin_crash_mid_recording_loses_at_most_one_segment() {
    let _heavy = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("objects");
    let mut origin = CascadeProcess::start(
        "cascade-origin",
        "origin",
        &origin_config(dir.path(), &dir.path().join("registry.db"), &store),
    )
    .unwrap();
    let (_, stream) = api(
        &origin,
        "POST",
        "/api/v1/livestreams",
        r#"{"title":"crash","settings":{"resolutions":["240p"]}}"#,
    );
    let id = stream["id"].as_str().unwrap().to_owned();
    let mut publisher = publish(&stream);
    let live = |origin: &CascadeProcess| live_msns(origin.addr("listen").unwrap(), &id);
    wait_for("6 segments", Duration::from_secs(90), || {
        live(&origin).len() >= 6
    });
    let load = ViewerLoad::start(
        vec![origin.addr("listen").unwrap()],
        2,
        Arc::new({
            let id = id.clone();
            move |_| vec![format!("/live/{id}/240p/playlist.m3u8")]
        }),
    );
    std::thread::sleep(Duration::from_secs(3));
    let listed = live(&origin);
    origin.stop_with(9, Duration::from_secs(5)).unwrap();
    publisher.kill().unwrap();
    let tally = load.finish();
    let last_listed = *listed.last().unwrap();

    let again = origin.start_again().unwrap();
    let recordings = api(
        &again,
        "GET",
        &format!("/api/v1/livestreams/{id}/recordings"),
        "",
    )
    .1;
    let rec = recordings["recordings"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        recordings["recordings"][0]["status"], "ready",
        "{recordings}"
    );
    let index: Value = serde_json::from_slice(
        &std::fs::read(store.join(format!("recordings/{rec}/index.json"))).unwrap(),
    )
    .unwrap();
    // Renditions are listed in the order they first archived a segment: audio may be first.
    let recorded: Vec<u64> = index["renditions"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == "240p"))
        .and_then(|video| video["segments"].as_array())
        .unwrap_or_else(|| panic!("no 240p segments in {index}"))
        .iter()
        .map(|s| s["msn"].as_u64().unwrap())
        .collect();
    let first = recorded[0];
    let lost: Vec<u64> = (first..=last_listed)
        .filter(|m| !recorded.contains(m))
        .collect();
    report(
        "an origin crash mid-recording",
        &tally,
        "-",
        &format!(
            "{} (of {} listed live before the crash)",
            lost.len(),
            last_listed - first + 1
        ),
    );
    assert!(
        lost.len() <= 1,
        "lost {lost:?}; recorded {recorded:?}; listed {listed:?}"
    );
    if let Some(m) = lost.first() {
        assert_eq!(*m, last_listed, "only the newest segment may be lost");
    }
    let vod = fetch(
        again.addr("listen").unwrap(),
        &format!("/vod/{rec}/240p/playlist.m3u8"),
    )
    .unwrap();
    assert_eq!(vod.status, 200, "{}", vod.text());
}
