//! The embedded transport, as the local stack runs it: no broker, a `cascade-purge-bus` keeping
//! its own log, a shield and an edge following it over HTTP. Purges reach both nodes; a bus
//! restart on a new, empty log is followed; a bus killed and restarted on its log directory
//! loses no accepted purge; nodes must present the node token when one is set.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cascade_testkit::{CascadeProcess, HttpResponse, Route, TestUpstream, raw_request, wait_for};

const OPS_TOKEN: &str = "ops-token-0123456789";
const NODE_TOKEN: &str = "node-token-0123456789";

fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> HttpResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bus\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, request.as_bytes()).unwrap()
}

fn get(node: &CascadeProcess, target: &str) -> String {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_request(node.addr("listen").unwrap(), request.as_bytes())
        .unwrap()
        .text()
}

fn purge_and_wait(bus: &CascadeProcess, body: &str, node: &CascadeProcess) -> serde_json::Value {
    let accepted = call(
        bus.addr("listen").unwrap(),
        "POST",
        "/v1/purge",
        OPS_TOKEN,
        body,
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let id = serde_json::from_slice::<serde_json::Value>(&accepted.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = call(
            bus.addr("listen").unwrap(),
            "GET",
            &format!("/v1/purge/{id}"),
            OPS_TOKEN,
            "",
        );
        let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
        if status["complete"] == true {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "purge never completed: {status}\nnode:\n{}",
            node.process().log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nodes_follow_the_embedded_bus_across_a_bus_restart() {
    let origin = TestUpstream::start().unwrap();
    let bus_config = format!(
        "[purge_bus]\nnodes = [\"shield-1\", \"edge-1\"]\nnode_token = \"{NODE_TOKEN}\"\n[[purge_bus.tokens]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nscope = \"write\"\n"
    );
    let mut bus = CascadeProcess::start("cascade-purge-bus", "purge_bus", &bus_config).unwrap();
    let bus_url = format!("http://{}", bus.addr("listen").unwrap());
    let shield = CascadeProcess::start(
        "cascade-shield",
        "shield",
        &format!(
            "[shield]\norigins = [\"{}\"]\n[shield.disk]\ndir = \"\"\n[shield.purge]\nnode_id = \"shield-1\"\nbus_url = \"{bus_url}\"\nbus_token = \"{NODE_TOKEN}\"\n",
            origin.addr()
        ),
    )
    .unwrap();
    let edge = CascadeProcess::start(
        "cascade-edge",
        "edge",
        &format!(
            "[edge]\nshields = [\"{}\"]\norigin = \"\"\n[edge.purge]\nnode_id = \"edge-1\"\nbus_url = \"{bus_url}\"\nbus_token = \"{NODE_TOKEN}\"\n",
            shield.addr("listen").unwrap()
        ),
    )
    .unwrap();

    let route = |body: &'static str| Route::ok(body).header("cache-control", "max-age=3600");
    origin.route("/a.m4s", route("a1"));
    assert_eq!(get(&edge, "/a.m4s"), "a1");
    origin.route("/a.m4s", route("a2"));
    assert_eq!(get(&edge, "/a.m4s"), "a1", "cached");
    let done = purge_and_wait(
        &bus,
        r#"{"kind":"url","targets":["http://localhost/a.m4s"]}"#,
        &edge,
    );
    assert_eq!(done["applied"].as_object().unwrap().len(), 2, "{done}");
    assert_eq!(get(&edge, "/a.m4s"), "a2");
    assert_eq!(get(&shield, "/a.m4s"), "a2");

    // Without the node token the feed is refused.
    let feed = |token: &str| {
        call(
            bus.addr("listen").unwrap(),
            "GET",
            "/v1/feed?from=0",
            token,
            "",
        )
    };
    assert_eq!(feed("wrong-token-0123456789").status, 401);
    assert_eq!(feed(NODE_TOKEN).status, 200);
    let garbage = call(
        bus.addr("listen").unwrap(),
        "POST",
        "/v1/reports",
        NODE_TOKEN,
        r#"[{"type":"applied","node":""}]"#,
    );
    assert_eq!(garbage.status, 400, "{}", garbage.text());

    // The bus restarts with an empty log; the nodes start over on it.
    bus.stop_with(libc::SIGTERM, Duration::from_secs(15))
        .unwrap();
    let bus = bus.start_again().unwrap();
    origin.route("/a.m4s", route("a3"));
    let done = purge_and_wait(&bus, r#"{"kind":"tag","targets":["none"]}"#, &edge);
    assert_eq!(done["expected"].as_array().unwrap().len(), 2, "{done}");
    let done = purge_and_wait(&bus, r#"{"kind":"host","targets":["localhost"]}"#, &edge);
    assert!(done["latency_ms"].as_u64().is_some());
    assert_eq!(get(&edge, "/a.m4s"), "a3");
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn a_purge_accepted_while_a_shield_is_down_survives_a_bus_crash() {
    let origin = TestUpstream::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display();
    let bus_config = format!(
        "[purge_bus]\nnodes = [\"shield-1\"]\nlog_dir = \"{path}/bus-log\"\n[[purge_bus.tokens]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\nscope = \"write\"\n"
    );
    let mut bus = CascadeProcess::start("cascade-purge-bus", "purge_bus", &bus_config).unwrap();
    let mut shield = CascadeProcess::start(
        "cascade-shield",
        "shield",
        &format!(
            "[shield]\norigins = [\"{}\"]\n[shield.disk]\ndir = \"{path}/shield-disk\"\n[shield.purge]\nnode_id = \"shield-1\"\nbus_url = \"http://{}\"\n",
            origin.addr(),
            bus.addr("listen").unwrap()
        ),
    )
    .unwrap();
    let route = |body: &'static str| Route::ok(body).header("cache-control", "max-age=3600");
    origin.route("/b.m4s", route("b1"));
    assert_eq!(get(&shield, "/b.m4s"), "b1");
    wait_for("the shield's disk copy", Duration::from_secs(10), || {
        files_under(&dir.path().join("shield-disk")) > 0
    });
    origin.route("/b.m4s", route("b2"));
    shield
        .stop_with(libc::SIGTERM, Duration::from_secs(15))
        .unwrap();

    // Accepted while the shield is away: the status names it as pending.
    let accepted = call(
        bus.addr("listen").unwrap(),
        "POST",
        "/v1/purge",
        OPS_TOKEN,
        r#"{"kind":"url","targets":["http://localhost/b.m4s"]}"#,
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let id = serde_json::from_slice::<serde_json::Value>(&accepted.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = call(
        bus.addr("listen").unwrap(),
        "GET",
        &format!("/v1/purge/{id}"),
        OPS_TOKEN,
        "",
    );
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(
        status["pending"],
        serde_json::json!(["shield-1"]),
        "{status}"
    );

    // The bus dies without a chance to flush anything, and comes back on its directory.
    bus.stop_with(libc::SIGKILL, Duration::from_secs(15))
        .unwrap();
    let _bus = bus.start_again().unwrap();
    // The shield is ready only once it has caught up with the bus, and its disk copy is gone.
    let shield = shield.start_again().unwrap();
    assert_eq!(
        get(&shield, "/b.m4s"),
        "b2",
        "the purge accepted before the crash was lost; shield log:\n{}",
        shield.process().log_tail()
    );
}
