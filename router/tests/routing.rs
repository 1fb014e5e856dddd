//! The router end to end: real edges (fed by a real origin), a real router, a GeoIP database
//! built by a MaxMind-format writer, `dig` for DNS, and bad input of every kind.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_testkit::{
    CascadeProcess, HttpResponse, binary_path, free_port, raw_request, wait_for,
};
use serde_json::Value;

/// Made-up PoPs: Amsterdam, Frankfurt (the default) and New York.
const POPS: [(&str, f64, f64); 3] = [
    ("ams", 52.37, 4.90),
    ("fra", 50.11, 8.68),
    ("nyc", 40.71, -74.01),
];

/// The test GeoIP database: London, Boston and Frankfurt ranges.
const CITIES: &str = r#"[
  {"network": "198.51.100.0/24", "city": "London", "latitude": 51.51, "longitude": -0.13},
  {"network": "203.0.113.0/24", "city": "Boston", "latitude": 42.36, "longitude": -71.06},
  {"network": "2001:db8:1::/48", "city": "Frankfurt", "latitude": 50.11, "longitude": 8.68}
]"#;

fn python() -> PathBuf {
    PathBuf::from(std::env::var("CASCADE_PYTHON").expect(
        "CASCADE_PYTHON is not set: run `eval \"$(.ci/install-tools)\"` (it installs mmdb-writer)",
    ))
}

/// Writes a GeoIP2-City-shaped database mapping each entry of `cities` (JSON) to its place.
fn write_mmdb(path: &Path, cities: &str) {
    let script = r#"
import json, sys
from mmdb_writer import MMDBWriter
from netaddr import IPSet
writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"], description="cascade router tests")
for c in json.loads(sys.argv[2]):
    writer.insert_network(IPSet([c["network"]]), {
        "city": {"names": {"en": c["city"]}},
        "location": {"latitude": float(c["latitude"]), "longitude": float(c["longitude"])},
    })
writer.to_db_file(sys.argv[1])
"#;
    let out = Command::new(python())
        .args(["-c", script, &path.display().to_string(), cities])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mmdb writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn edge() -> CascadeProcess {
    // The edges' upstream does not matter to routing: an origin that is not running.
    CascadeProcess::start(
        "cascade-edge",
        "edge",
        "[edge]\nshields = []\norigin = \"127.0.0.1:9\"\n",
    )
    .unwrap()
}

fn edge_url(edge: &CascadeProcess) -> String {
    format!("http://{}", edge.addr("listen").unwrap())
}

/// `[[router.pops]]` for `edges` (one per PoP of [`POPS`], in order), with `capacity` each.
fn pops_toml(edges: &[&CascadeProcess], capacity: &str) -> String {
    let mut toml = String::new();
    for (i, edge) in edges.iter().enumerate() {
        let (id, lat, lon) = POPS[i];
        toml.push_str(&format!(
            "[[router.pops]]\nid = \"{id}\"\nlatitude = {lat}\nlongitude = {lon}\ncapacity = \"{capacity}\"\n\
             [[router.pops.edges]]\nid = \"{id}-1\"\nurl = \"{}\"\nadmin = \"{}\"\naddress = \"{}\"\n",
            edge_url(edge),
            edge.addr("admin_listen").unwrap(),
            if i == 2 { "2001:db8:99::3".to_owned() } else { format!("192.0.2.{}", 11 + i) },
        ));
    }
    toml
}

fn router(dir: &Path, extra: &str, pops: &str) -> CascadeProcess {
    let config = format!(
        "[router]\ndefault_pop = \"fra\"\nprobe_interval = \"500ms\"\nprobe_timeout = \"300ms\"\n\
         probe_failures = 2\nprobe_successes = 2\n{extra}\n{pops}"
    );
    std::fs::write(dir.join("router.toml"), &config).unwrap();
    CascadeProcess::start("cascade-router", "router", &config).unwrap()
}

fn get(addr: SocketAddr, target: &str, headers: &str) -> HttpResponse {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: cdn.test\r\n{headers}Connection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).unwrap()
}

fn redirect_for(router: &CascadeProcess, target: &str, client: &str) -> String {
    let r = get(
        router.addr("listen").unwrap(),
        target,
        &format!("X-Forwarded-For: {client}\r\n"),
    );
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.header("location").unwrap().to_owned()
}

fn route(router: &CascadeProcess, query: &str) -> (u16, Value) {
    let r = get(
        router.addr("listen").unwrap(),
        &format!("/v1/route?{query}"),
        "",
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn viewers_land_on_the_nearest_pop_a_coverage_zone_wins_and_unknowns_go_to_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let (ams, fra, nyc) = (edge(), edge(), edge());
    write_mmdb(&dir.path().join("cities.mmdb"), CITIES);
    std::fs::write(
        dir.path().join("zones.txt"),
        "# a partner network served from New York\n198.51.100.128/25 nyc\n",
    )
    .unwrap();
    let r = router(
        dir.path(),
        &format!(
            "trusted_proxies = [\"127.0.0.1/32\"]\ngeoip_database = \"{0}/cities.mmdb\"\ncoverage_zone_file = \"{0}/zones.txt\"\n",
            dir.path().display()
        ),
        &pops_toml(&[&ams, &fra, &nyc], "10Gbps"),
    );
    let target = "/t/1767225600.a.bGl2ZQ.c2ln/live/s1/720p/12.3.m4s?CMCD=sid%3D%22x%22";
    // GeoIP: London is nearest Amsterdam, Boston nearest New York; an IPv6 Frankfurt range.
    assert_eq!(
        redirect_for(&r, target, "198.51.100.7"),
        format!("{}{target}", edge_url(&ams))
    );
    assert_eq!(
        redirect_for(&r, target, "203.0.113.9"),
        format!("{}{target}", edge_url(&nyc))
    );
    assert_eq!(
        redirect_for(&r, target, "2001:db8:1::9"),
        format!("{}{target}", edge_url(&fra))
    );
    // The coverage zone overrides GeoIP for its half of the London range.
    assert_eq!(
        redirect_for(&r, target, "198.51.100.200"),
        format!("{}{target}", edge_url(&nyc))
    );
    // Nothing knows 192.0.2.1: the default PoP.
    assert_eq!(
        redirect_for(&r, target, "192.0.2.1"),
        format!("{}{target}", edge_url(&fra))
    );

    let (status, london) = route(&r, "ip=198.51.100.7&stream=/live/s1/master.m3u8");
    assert_eq!(status, 200, "{london}");
    assert_eq!(london["located_by"], "geoip");
    assert_eq!(london["pop"], "ams");
    assert_eq!(london["stream"], "live/s1");
    assert_eq!(london["pathways"], serde_json::json!(["ams", "fra", "nyc"]));
    let reason = london["reason"].as_str().unwrap();
    assert!(
        reason.contains("(London)") && reason.contains("nearest PoP ams"),
        "{reason}"
    );
    let (_, zoned) = route(&r, "ip=198.51.100.200");
    assert_eq!(zoned["located_by"], "coverage-zone");
    assert!(
        zoned["reason"]
            .as_str()
            .unwrap()
            .contains("198.51.100.128/25"),
        "{zoned}"
    );
    let (_, unknown) = route(&r, "ip=192.0.2.1");
    assert_eq!(
        (unknown["located_by"].as_str(), unknown["pop"].as_str()),
        (Some("default"), Some("fra"))
    );
    assert!(r.metric("cascade_router_decisions_total") >= 5.0);
}

#[test]
fn killing_an_edge_moves_new_viewers_within_two_seconds_and_it_returns_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ams, fra) = (edge(), edge());
    write_mmdb(&dir.path().join("cities.mmdb"), CITIES);
    let r = router(
        dir.path(),
        &format!(
            "trusted_proxies = [\"127.0.0.1/32\"]\ngeoip_database = \"{}/cities.mmdb\"\n",
            dir.path().display()
        ),
        &pops_toml(&[&ams, &fra], "10Gbps"),
    );
    let london = "198.51.100.7";
    let target = "/live/s1/720p/playlist.m3u8";
    assert!(redirect_for(&r, target, london).starts_with(&edge_url(&ams)));

    ams.stop_with(libc::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let killed = Instant::now();
    wait_for(
        "new London viewers to leave the dead edge",
        Duration::from_secs(5),
        || redirect_for(&r, target, london).starts_with(&edge_url(&fra)),
    );
    let moved = killed.elapsed();
    assert!(
        moved < Duration::from_secs(2),
        "viewers moved only after {moved:?}"
    );
    let (_, decision) = route(&r, &format!("ip={london}"));
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("ams has no healthy edge; spilled to fra"),
        "{decision}"
    );
    assert_eq!(
        r.metric("cascade_router_edge_up"),
        1.0,
        "one edge of two is up"
    );

    let _back = ams.start_again().unwrap();
    wait_for(
        "viewers to return to the restarted edge",
        Duration::from_secs(10),
        || redirect_for(&r, target, london).starts_with(&edge_url(&ams)),
    );
}

#[test]
fn a_pop_at_capacity_spills_to_the_next_and_takes_viewers_again_when_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let origin = CascadeProcess::start(
        "cascade-origin",
        "origin",
        &format!(
            "[origin]\ndatabase_url = \"sqlite://{0}/registry.db\"\nplayer_dir = \"{1}\"\n[storage.fs]\nroot = \"{0}/objects\"\n",
            dir.path().display(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules").display()
        ),
    )
    .unwrap();
    let edge_config = format!(
        "[edge]\nshields = []\norigin = \"{}\"\n",
        origin.addr("listen").unwrap()
    );
    let ams = CascadeProcess::start("cascade-edge", "edge", &edge_config).unwrap();
    let fra = CascadeProcess::start("cascade-edge", "edge", &edge_config).unwrap();
    // 4 Mbps is what one busy viewer pulls; the default PoP is fra, so pin the viewer to ams.
    std::fs::write(dir.path().join("zones.txt"), "127.0.0.0/8 ams\n").unwrap();
    let r = router(
        dir.path(),
        &format!(
            "coverage_zone_file = \"{}/zones.txt\"\n",
            dir.path().display()
        ),
        &pops_toml(&[&ams, &fra], "4Mbps"),
    );
    assert_eq!(route(&r, "").1["pop"], "ams");

    // A viewer pulling a 0.5 MB object from ams as fast as it can: far over 4 Mbps.
    let script = raw_request(
        ams.addr("listen").unwrap(),
        b"GET /player/assets/v1/hls.min.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        script.status, 200,
        "the player's scripts are installed (npm ci in player/)"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let puller = {
        let stop = std::sync::Arc::clone(&stop);
        let addr = ams.addr("listen").unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = raw_request(
                    addr,
                    b"GET /player/assets/v1/hls.min.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                );
            }
        })
    };
    let loaded = wait_until(Duration::from_secs(15), || route(&r, "").1["pop"] == "fra");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    puller.join().unwrap();
    let (_, spilled) = route(&r, "");
    assert!(
        loaded,
        "ams never filled up: {spilled}, ams egress {}",
        r.metric("cascade_router_edge_egress_bits_per_second")
    );
    assert!(
        spilled["reason"]
            .as_str()
            .unwrap()
            .contains("ams is over capacity"),
        "{spilled}"
    );
    assert_eq!(spilled["pathways"], serde_json::json!(["fra", "ams"]));
    wait_for(
        "ams to take viewers again once idle",
        Duration::from_secs(15),
        || route(&r, "").1["pop"] == "ams",
    );
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is missing: apt install dnsutils (.ci/install-tools installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dig_gets_the_nearest_edge_with_and_without_client_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let (ams, fra, nyc) = (edge(), edge(), edge());
    write_mmdb(&dir.path().join("cities.mmdb"), CITIES);
    let r = router(
        dir.path(),
        &format!(
            "dns_name = \"cdn.cascade.test\"\ndns_ttl = \"15s\"\ngeoip_database = \"{}/cities.mmdb\"\n",
            dir.path().display()
        ),
        &pops_toml(&[&ams, &fra, &nyc], "10Gbps"),
    );
    let dns = r.addr("dns_listen").unwrap();
    // From 127.0.0.1, which nothing locates: the default PoP's edge.
    assert_eq!(
        dig(dns, &["cdn.cascade.test", "A", "+short"]).trim(),
        "192.0.2.12"
    );
    // A resolver passing its client's subnet: London, so Amsterdam.
    let london = dig(dns, &["cdn.cascade.test", "A", "+subnet=198.51.100.0/24"]);
    assert!(
        london.contains("cdn.cascade.test.\t15\tIN\tA\t192.0.2.11"),
        "{london}"
    );
    assert!(
        london.contains("CLIENT-SUBNET: 198.51.100.0/24/24"),
        "{london}"
    );
    assert!(london.contains("flags: qr aa"), "authoritative: {london}");
    // Boston: New York, whose edge has an IPv6 address only.
    assert_eq!(
        dig(
            dns,
            &[
                "cdn.cascade.test",
                "AAAA",
                "+short",
                "+subnet=203.0.113.0/24"
            ]
        )
        .trim(),
        "2001:db8:99::3"
    );
    let no_v4 = dig(dns, &["cdn.cascade.test", "A", "+subnet=203.0.113.0/24"]);
    assert!(
        no_v4.contains("status: NOERROR") && no_v4.contains("ANSWER: 0"),
        "{no_v4}"
    );
    // Over TCP too.
    assert_eq!(
        dig(dns, &["+tcp", "cdn.cascade.test", "A", "+short"]).trim(),
        "192.0.2.12"
    );
    // Other names in the zone do not exist; names outside it are refused.
    let other = dig(dns, &["www.cdn.cascade.test", "A"]);
    assert!(
        other.contains("status: NXDOMAIN") && other.contains("SOA"),
        "{other}"
    );
    assert!(dig(dns, &["example.com", "A"]).contains("status: REFUSED"));
    assert!(r.metric("cascade_router_decisions_total") >= 4.0);
}

fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn bad_input_is_refused_clearly_and_the_router_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (ams, fra) = (edge(), edge());
    write_mmdb(&dir.path().join("cities.mmdb"), CITIES);
    // No trusted proxies: forwarding headers are the viewer's own claims.
    let r = router(
        dir.path(),
        &format!(
            "dns_name = \"cdn.cascade.test\"\ngeoip_database = \"{}/cities.mmdb\"\n",
            dir.path().display()
        ),
        &pops_toml(&[&ams, &fra], "10Gbps"),
    );
    let http = r.addr("listen").unwrap();
    let fra_url = edge_url(&fra);

    // A viewer claiming to be in London is not believed.
    assert!(redirect_for(&r, "/live/s1/master.m3u8", "198.51.100.7").starts_with(&fra_url));
    let (_, me) = route(&r, "");
    assert_eq!(me["client"], "127.0.0.1");
    // Absolute-form and protocol-relative targets still go to our edge, never elsewhere.
    let absolute = get(http, "http://evil.example/live/s1/x.m4s", "");
    assert_eq!(
        absolute.header("location"),
        Some(format!("{fra_url}/live/s1/x.m4s").as_str())
    );
    let slashes = get(http, "//evil.example/x", "");
    assert!(
        slashes
            .header("location")
            .unwrap()
            .starts_with(&format!("{fra_url}/")),
        "{:?}",
        slashes.header("location")
    );
    // Malformed requests get a 4xx that says what is wrong.
    let garbage = send_raw(http, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&garbage).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&garbage)
    );
    let post = raw_request(http, b"POST /live/s1/master.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let (status, bad_ip) = route(&r, "ip=999.1.1.1");
    assert_eq!(status, 400);
    assert!(
        bad_ip["error"]
            .as_str()
            .unwrap()
            .contains("\"999.1.1.1\" is not an IP address"),
        "{bad_ip}"
    );
    assert_eq!(get(http, "/v1/steering?stream=%zz", "").status, 400);
    assert_eq!(get(http, "/v1/steering", "").status, 400);
    assert_eq!(get(http, "/v1/nothing", "").status, 404);
    let huge = format!("X-Junk: {}\r\n", "a".repeat(600 * 1024));
    let oversized = send_raw(
        http,
        format!("GET /live/s1/a HTTP/1.1\r\nHost: x\r\n{huge}\r\n").as_bytes(),
    );
    assert!(
        String::from_utf8_lossy(&oversized).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&oversized)
    );

    // DNS: garbage, a truncated query, an oversized datagram, and a TCP length that lies.
    let dns = r.addr("dns_listen").unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let query = {
        // A well-formed query for cdn.cascade.test A, id 0x1234.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["cdn", "cascade", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    };
    socket.send_to(b"\x00\x01garbage", dns).unwrap();
    socket.send_to(&query[..query.len() - 3], dns).unwrap();
    socket.send_to(&vec![0xff; 4000], dns).unwrap();
    let mut tcp = TcpStream::connect(dns).unwrap();
    tcp.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    drop(tcp);
    // A compression pointer that points at itself.
    let mut looped = query[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    socket.send_to(&looped, dns).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.send_to(&query, dns).unwrap();
    let mut answer = [0u8; 512];
    loop {
        let (n, _) = socket.recv_from(&mut answer).unwrap();
        if answer[..2] == [0x12, 0x34] && n > query.len() && answer[3] & 0x0f == 0 {
            assert!(
                answer[..n].ends_with(&[192, 0, 2, 12]),
                "{:?}",
                &answer[..n]
            );
            break;
        }
    }
    assert_eq!(
        dig(dns, &["cdn.cascade.test", "A", "+short"]).trim(),
        "192.0.2.12"
    );

    // A GeoIP database replaced by garbage: an error in the log, the last good one serves on.
    let mmdb = dir.path().join("cities.mmdb");
    std::fs::write(dir.path().join("garbage"), b"not a maxmind database").unwrap();
    std::fs::rename(dir.path().join("garbage"), &mmdb).unwrap();
    wait_for(
        "the router to report the bad database",
        Duration::from_secs(15),
        || {
            r.process()
                .log()
                .contains("the previous database keeps serving")
        },
    );
    assert_eq!(route(&r, "ip=198.51.100.7").1["located_by"], "geoip");
    // A good replacement is picked up: London now maps to Boston's coordinates.
    let moved = CITIES.replace(
        "\"latitude\": 51.51, \"longitude\": -0.13",
        "\"latitude\": 42.36, \"longitude\": -71.06",
    );
    write_mmdb(
        &dir.path().join("new.mmdb"),
        &moved.replace("\"London\"", "\"Elsewhere\""),
    );
    std::fs::rename(dir.path().join("new.mmdb"), &mmdb).unwrap();
    wait_for(
        "the router to load the new database",
        Duration::from_secs(15),
        || {
            route(&r, "ip=198.51.100.7").1["reason"]
                .as_str()
                .is_some_and(|s| s.contains("Elsewhere"))
        },
    );
}

/// Starts the router binary with `config` and expects it to refuse to start, saying each of
/// `expected`.
fn refuses_to_start(dir: &Path, config: &str, expected: &[&str]) {
    let path = dir.join("refused.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary_path("cascade-router").unwrap())
        .args(["--config", &path.display().to_string()])
        .env(
            "CASCADE_ROUTER__LISTEN",
            format!("127.0.0.1:{}", free_port().unwrap()),
        )
        .env(
            "CASCADE_ROUTER__ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port().unwrap()),
        )
        .env("CASCADE_ROUTER__DNS_NAME", "")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started with {config}: {said}");
    for fragment in expected {
        assert!(said.contains(fragment), "expected {fragment:?} in: {said}");
    }
}

#[test]
fn a_missing_or_corrupt_database_or_zone_file_stops_the_router_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let pops = "[[router.pops]]\nid = \"ams\"\nlatitude = 52.37\nlongitude = 4.9\ncapacity = \"1Gbps\"\n\
                [[router.pops.edges]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n";
    refuses_to_start(
        dir.path(),
        &format!("[router]\ngeoip_database = \"{d}/missing.mmdb\"\n{pops}"),
        &["router.geoip_database:", "missing.mmdb"],
    );
    std::fs::write(dir.path().join("corrupt.mmdb"), vec![0xab; 4096]).unwrap();
    refuses_to_start(
        dir.path(),
        &format!("[router]\ngeoip_database = \"{d}/corrupt.mmdb\"\n{pops}"),
        &["router.geoip_database:", "not a MaxMind database"],
    );
    std::fs::write(
        dir.path().join("zones.txt"),
        "10.0.0.0/8 ams\n10.0.0.0/40 ams\n",
    )
    .unwrap();
    refuses_to_start(
        dir.path(),
        &format!("[router]\ncoverage_zone_file = \"{d}/zones.txt\"\n{pops}"),
        &[
            "zones.txt: line 2: ",
            "10.0.0.0/40",
            "the prefix length must be 0 to 32",
        ],
    );
    refuses_to_start(
        dir.path(),
        &format!("[router]\ndefault_pop = \"mars\"\n{pops}"),
        &[
            "router.default_pop",
            "\"mars\" is not the id of any [[router.pops]]",
        ],
    );
}
