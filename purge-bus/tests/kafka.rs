//! The purge bus end to end over a real tansu broker: a `cascade-purge-bus` process publishing,
//! real `cascade-edge` and `cascade-shield` processes consuming, a programmable origin behind
//! them. What an operator checks: after a purge completes, every node serves the new content;
//! a node restarted while purges were published applies them before it reports ready; a
//! broker outage gets 503s (nothing acknowledged that was not written) and purges flow again
//! once it is back; an edge does not get the old copy back from a lagging shield.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_service::clock::now_ms;
use cascade_testkit::{
    CascadeProcess, Garage, HttpResponse, Route, Tansu, TestUpstream, binary_path, raw_request,
    wait_for,
};

const OPS_TOKEN: &str = "ops-token-0123456789";

fn kafka_section(tansu: &Tansu) -> String {
    format!(
        "[kafka]\nbrokers = [\"{}\"]\npartitions = 3\nfetch_wait = \"5ms\"\npublish_timeout = \"2s\"\n",
        tansu.bootstrap()
    )
}

fn start_bus(tansu: &Tansu, nodes: &[&str]) -> CascadeProcess {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    let config = format!(
        "[purge_bus]\nnodes = [{}]\n[[purge_bus.tokens]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nscope = \"write\"\n{}",
        nodes.join(", "),
        kafka_section(tansu)
    );
    CascadeProcess::start("cascade-purge-bus", "purge_bus", &config).unwrap()
}

fn start_shield(origin: SocketAddr, node_id: &str, kafka: &str) -> CascadeProcess {
    let config = format!(
        "[shield]\norigins = [\"{origin}\"]\n[shield.disk]\ndir = \"\"\n[shield.purge]\nnode_id = \"{node_id}\"\n{kafka}"
    );
    CascadeProcess::start("cascade-shield", "shield", &config).unwrap()
}

fn start_edge(shield: &CascadeProcess, node_id: &str, kafka: &str) -> CascadeProcess {
    let config = format!(
        "[edge]\nshields = [\"{}\"]\norigin = \"\"\n[edge.purge]\nnode_id = \"{node_id}\"\n{kafka}",
        shield.addr("listen").unwrap()
    );
    CascadeProcess::start("cascade-edge", "edge", &config).unwrap()
}

fn get(node: &CascadeProcess, target: &str) -> HttpResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_request(node.addr("listen").unwrap(), request.as_bytes()).unwrap()
}

fn call(bus: &CascadeProcess, method: &str, path: &str, body: &str) -> HttpResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bus\r\nConnection: close\r\nAuthorization: Bearer {OPS_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(bus.addr("listen").unwrap(), request.as_bytes()).unwrap()
}

fn json(response: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

/// Submits a purge; returns its id.
fn purge(bus: &CascadeProcess, body: &str) -> String {
    let accepted = call(bus, "POST", "/v1/purge", body);
    assert_eq!(accepted.status, 202, "{body}: {}", accepted.text());
    json(&accepted)["id"].as_str().unwrap().to_owned()
}

fn status(bus: &CascadeProcess, id: &str) -> serde_json::Value {
    let answer = call(bus, "GET", &format!("/v1/purge/{id}"), "");
    assert_eq!(answer.status, 200, "{}", answer.text());
    json(&answer)
}

fn wait_complete(bus: &CascadeProcess, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(
        &format!("purge {id} to complete"),
        Duration::from_secs(20),
        || {
            last = status(bus, id);
            last["complete"] == true
        },
    );
    last
}

struct Stack {
    tansu: Tansu,
    origin: TestUpstream,
    bus: CascadeProcess,
    shield: CascadeProcess,
    edges: Vec<CascadeProcess>,
}

/// A broker, an origin, the bus, one shield and three edges, all following the bus.
fn stack() -> Stack {
    stack_on(Tansu::start().unwrap())
}

fn stack_on(tansu: Tansu) -> Stack {
    let origin = TestUpstream::start().unwrap();
    let bus = start_bus(&tansu, &["shield-1", "edge-1", "edge-2", "edge-3"]);
    let kafka = kafka_section(&tansu);
    let shield = start_shield(origin.addr(), "shield-1", &kafka);
    let edges = (1..=3)
        .map(|i| start_edge(&shield, &format!("edge-{i}"), &kafka))
        .collect();
    Stack {
        tansu,
        origin,
        bus,
        shield,
        edges,
    }
}

impl Stack {
    /// Serves `version` of every path, tagged `t-<name>` by the origin.
    fn publish_version(&self, paths: &[&str], version: &str) {
        for path in paths {
            let tag = path.rsplit('/').next().unwrap().trim_end_matches(".m4s");
            self.origin.route(
                path,
                Route::ok(format!("{path} {version}"))
                    .header("cache-control", "max-age=3600")
                    .header("surrogate-key", &format!("t-{tag}")),
            );
        }
    }

    /// Every node's answer for `path`.
    fn everywhere(&self, path: &str) -> Vec<String> {
        self.edges
            .iter()
            .chain([&self.shield])
            .map(|n| get(n, path).text())
            .collect()
    }
}

#[test]
fn every_kind_of_purge_reaches_every_node_and_only_what_it_names() {
    let s = stack();
    let paths = [
        "/v/url.m4s",
        "/v/dir/prefix.m4s",
        "/v/tag.m4s",
        "/v/soft.m4s",
        "/v/bystander.m4s",
    ];
    s.publish_version(&paths, "v1");
    for path in paths {
        assert!(s.everywhere(path).iter().all(|b| b.ends_with("v1")));
        assert_eq!(get(&s.edges[0], path).header("x-cache"), Some("hit"));
    }
    // The content changes at the origin; caches keep v1 until purged.
    s.publish_version(&paths, "v2");
    assert!(s.everywhere("/v/url.m4s").iter().all(|b| b.ends_with("v1")));

    for (body, path) in [
        (
            r#"{"kind":"url","targets":["http://localhost/v/url.m4s"]}"#,
            "/v/url.m4s",
        ),
        (
            r#"{"kind":"prefix","targets":["http://localhost/v/dir/"]}"#,
            "/v/dir/prefix.m4s",
        ),
        (r#"{"kind":"tag","targets":["t-tag"]}"#, "/v/tag.m4s"),
        (
            r#"{"kind":"tag","targets":["t-soft"],"action":"expire"}"#,
            "/v/soft.m4s",
        ),
    ] {
        let id = purge(&s.bus, body);
        let done = wait_complete(&s.bus, &id);
        assert_eq!(done["expected"].as_array().unwrap().len(), 4, "{done}");
        assert!(done["latency_ms"].as_u64().is_some(), "{done}");
        assert!(
            s.everywhere(path).iter().all(|b| b.ends_with("v2")),
            "{body}: every node serves the new content: {:?}",
            s.everywhere(path)
        );
    }
    assert!(
        s.everywhere("/v/bystander.m4s")
            .iter()
            .all(|b| b.ends_with("v1")),
        "nothing named it"
    );

    let id = purge(&s.bus, r#"{"kind":"host","targets":["localhost"]}"#);
    wait_complete(&s.bus, &id);
    assert!(
        s.everywhere("/v/bystander.m4s")
            .iter()
            .all(|b| b.ends_with("v2"))
    );

    s.publish_version(&paths, "v3");
    let id = purge(&s.bus, r#"{"kind":"all","confirm_all":true}"#);
    wait_complete(&s.bus, &id);
    for path in paths {
        assert!(
            s.everywhere(path).iter().all(|b| b.ends_with("v3")),
            "{path}"
        );
    }

    // Garbage on the purge topic is skipped; the purges after it still apply everywhere.
    let producer: rdkafka::producer::BaseProducer = s.tansu.client_config().create().unwrap();
    for payload in [
        &b"\x00not json"[..],
        br#"{"id":"x","request":{"kind":"all"},"issued_ms":1}"#,
    ] {
        producer
            .send(rdkafka::producer::BaseRecord::<(), [u8]>::to("cascade.purge").payload(payload))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
    s.publish_version(&["/v/url.m4s"], "v4");
    let id = purge(
        &s.bus,
        r#"{"kind":"url","targets":["http://localhost/v/url.m4s"]}"#,
    );
    wait_complete(&s.bus, &id);
    assert!(s.everywhere("/v/url.m4s").iter().all(|b| b.ends_with("v4")));
    for node in s.edges.iter().chain([&s.shield]) {
        assert_eq!(node.metric("cascade_purge_messages_skipped_total"), 2.0);
    }

    // The CLI waits for every node and reports the latency.
    let output = Command::new(binary_path("cascade-purge").unwrap())
        .args([
            "url",
            "http://localhost/v/url.m4s",
            "--wait",
            "--timeout",
            "20s",
        ])
        .args([
            "--api",
            &format!("http://{}", s.bus.addr("listen").unwrap()),
        ])
        .env("CASCADE_PURGE_TOKEN", OPS_TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("applied on all 4 nodes in"), "{stdout}");
}

#[test]
fn a_restarted_node_applies_what_it_missed_before_it_is_ready() {
    let mut s = stack();
    let before = purge(&s.bus, r#"{"kind":"tag","targets":["warm-up"]}"#);
    wait_complete(&s.bus, &before);

    s.edges[0]
        .stop_with(libc::SIGTERM, Duration::from_secs(15))
        .unwrap();
    let missed: Vec<String> = (0..5)
        .map(|i| {
            purge(
                &s.bus,
                &format!(r#"{{"kind":"tag","targets":["while-down-{i}"]}}"#),
            )
        })
        .collect();
    for id in &missed {
        let st = status(&s.bus, id);
        assert_eq!(st["complete"], false, "edge-1 is down: {st}");
    }

    let again = s.edges[0].start_again().unwrap();
    let ready_ms = now_ms();
    for id in &missed {
        let st = status(&s.bus, id);
        let applied = st["applied"]["edge-1"].as_u64();
        // The ack may still be in flight, but the purge was applied before readiness.
        let applied = applied.unwrap_or_else(|| {
            wait_complete(&s.bus, id)["applied"]["edge-1"]
                .as_u64()
                .unwrap()
        });
        assert!(
            applied <= ready_ms,
            "{id} applied at {applied}, ready at {ready_ms}"
        );
    }
    assert_eq!(
        again.metric("cascade_purges_applied_total"),
        5.0,
        "it resumed from its committed offset: the purges it had applied are not replayed"
    );
    s.edges[0] = again;
    let after = purge(&s.bus, r#"{"kind":"tag","targets":["after"]}"#);
    wait_complete(&s.bus, &after);
}

#[test]
fn a_broker_outage_is_503_and_purges_flow_again_once_it_is_back() {
    // The broker keeps its data in S3 (Garage), as a real cluster keeps it on disk.
    let garage = Garage::start().unwrap();
    let mut s = stack_on(Tansu::start_persistent(&garage).unwrap());
    s.publish_version(&["/v/outage.m4s"], "v1");
    assert!(
        s.everywhere("/v/outage.m4s")
            .iter()
            .all(|b| b.ends_with("v1"))
    );
    s.publish_version(&["/v/outage.m4s"], "v2");

    s.tansu.stop().unwrap();
    let refused = call(
        &s.bus,
        "POST",
        "/v1/purge",
        r#"{"kind":"url","targets":["http://localhost/v/outage.m4s"]}"#,
    );
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("retry"), "{}", refused.text());
    let listed = json(&call(&s.bus, "GET", "/v1/purge", ""));
    assert_eq!(
        listed["purges"].as_array().unwrap().len(),
        0,
        "the refused purge is not tracked"
    );
    assert!(
        s.everywhere("/v/outage.m4s")
            .iter()
            .all(|b| b.ends_with("v1")),
        "nodes keep serving while the broker is away"
    );

    s.tansu.restart().unwrap();
    let mut id = None;
    wait_for(
        "the bus to take purges again",
        Duration::from_secs(60),
        || {
            let answer = call(
                &s.bus,
                "POST",
                "/v1/purge",
                r#"{"kind":"url","targets":["http://localhost/v/outage.m4s"]}"#,
            );
            if answer.status == 202 {
                id = Some(json(&answer)["id"].as_str().unwrap().to_owned());
            }
            answer.status == 202
        },
    );
    let id = id.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = status(&s.bus, &id);
        if last["complete"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the purge did not complete after the outage: {last}\nedge-1:\n{}\nbus:\n{}",
            s.edges[0].process().log_tail(),
            s.bus.process().log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.everywhere("/v/outage.m4s")
            .iter()
            .all(|b| b.ends_with("v2"))
    );
}

#[test]
fn a_purge_accepted_just_before_the_bus_is_killed_reaches_every_node() {
    let mut s = stack();
    s.publish_version(&["/v/killed.m4s"], "v1");
    assert!(
        s.everywhere("/v/killed.m4s")
            .iter()
            .all(|b| b.ends_with("v1"))
    );
    s.publish_version(&["/v/killed.m4s"], "v2");
    let accepted = call(
        &s.bus,
        "POST",
        "/v1/purge",
        r#"{"kind":"url","targets":["http://localhost/v/killed.m4s"]}"#,
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    // Accepted means the broker has it: the bus dying at once loses nothing.
    s.bus.stop_with(9, Duration::from_secs(5)).unwrap();
    wait_for(
        "every node to apply the purge the dead bus accepted",
        Duration::from_secs(30),
        || {
            s.everywhere("/v/killed.m4s")
                .iter()
                .all(|b| b.ends_with("v2"))
        },
    );
    eprintln!("fault matrix | kill -9 of the purge bus (Kafka) | - | - | 0 | - |");
    let again = s.bus.start_again().unwrap();
    let after = call(
        &again,
        "POST",
        "/v1/purge",
        r#"{"kind":"url","targets":["http://localhost/v/killed.m4s"]}"#,
    );
    assert_eq!(
        after.status,
        202,
        "the restarted bus takes purges: {}",
        after.text()
    );
}

#[test]
fn an_edge_refilling_after_a_purge_does_not_get_the_old_copy_from_a_lagging_shield() {
    let tansu = Tansu::start().unwrap();
    let origin = TestUpstream::start().unwrap();
    let bus = start_bus(&tansu, &["edge-1"]);
    // The shield does not follow the bus at all: the extreme of a lagging consumer.
    let shield = start_shield(origin.addr(), "shield-lagging", "");
    let edge = start_edge(&shield, "edge-1", &kafka_section(&tansu));
    origin.route(
        "/vod/title.m4s",
        Route::ok("version 1").header("cache-control", "max-age=3600"),
    );
    assert_eq!(get(&edge, "/vod/title.m4s").text(), "version 1");
    origin.route(
        "/vod/title.m4s",
        Route::ok("version 2").header("cache-control", "max-age=3600"),
    );
    let id = purge(
        &bus,
        r#"{"kind":"url","targets":["http://localhost/vod/title.m4s"]}"#,
    );
    wait_complete(&bus, &id);
    assert_eq!(
        get(&shield, "/vod/title.m4s").text(),
        "version 1",
        "the shield has not heard of the purge"
    );
    assert_eq!(get(&edge, "/vod/title.m4s").text(), "version 2");
    assert_eq!(get(&edge, "/vod/title.m4s").header("x-cache"), Some("hit"));
}
