//! The purge API as a real `cascade-purge-bus` process: authentication and scopes, every kind
//! of bad request, acceptance and status, and the per-token rate limit.
#![allow(clippy::unwrap_used)]

use cascade_testkit::{CascadeProcess, HttpResponse, raw_request};

const CONFIG: &str = r#"
[purge_bus]
rate_limit_per_second = 1
rate_limit_burst = 20
nodes = ["edge-1", "shield-1"]

[[purge_bus.tokens]]
name = "ops"
token = "ops-token-0123456789"
scope = "write"

[[purge_bus.tokens]]
name = "dashboard"
token = "dash-token-0123456789"
scope = "read"
"#;

fn call(
    bus: &CascadeProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> HttpResponse {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bus\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    raw_request(bus.addr("listen").unwrap(), request.as_bytes()).unwrap()
}

const OPS: Option<&str> = Some("ops-token-0123456789");
const DASH: Option<&str> = Some("dash-token-0123456789");

#[test]
fn purges_are_authenticated_validated_accepted_and_tracked() {
    let bus = CascadeProcess::start("cascade-purge-bus", "purge_bus", CONFIG).unwrap();
    let good = r#"{"kind":"prefix","targets":["https://cdn.example/live/abc/"],"action":"expire"}"#;

    assert_eq!(call(&bus, "POST", "/v1/purge", None, good).status, 401);
    assert_eq!(
        call(&bus, "POST", "/v1/purge", Some("guess"), good).status,
        401
    );
    let read_only = call(&bus, "POST", "/v1/purge", DASH, good);
    assert_eq!(read_only.status, 403);
    assert!(read_only.text().contains("scope"));

    for (body, says) in [
        ("{not json", "body:"),
        (
            r#"{"kind":"everything","targets":["x"]}"#,
            "unknown variant",
        ),
        (
            r#"{"kind":"url","targets":[]}"#,
            "needs at least one target",
        ),
        (r#"{"kind":"all"}"#, "confirm_all"),
        (
            r#"{"kind":"url","targets":["https://cdn.example/a"],"colour":"red"}"#,
            "unknown field",
        ),
    ] {
        let refused = call(&bus, "POST", "/v1/purge", OPS, body);
        assert_eq!(refused.status, 400, "{body}");
        assert!(refused.text().contains(says), "{body}: {}", refused.text());
    }
    let too_many: Vec<String> = (0..1001)
        .map(|i| format!("\"https://cdn.example/{i}\""))
        .collect();
    let body = format!(r#"{{"kind":"url","targets":[{}]}}"#, too_many.join(","));
    let refused = call(&bus, "POST", "/v1/purge", OPS, &body);
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("1000"));

    let accepted = call(&bus, "POST", "/v1/purge", OPS, good);
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let answer: serde_json::Value = serde_json::from_slice(&accepted.body).unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer["expected"],
        serde_json::json!(["edge-1", "shield-1"])
    );

    let status = call(&bus, "GET", &format!("/v1/purge/{id}"), DASH, "");
    assert_eq!(status.status, 200);
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(status["complete"], false, "no node has applied it yet");
    assert_eq!(status["request"]["kind"], "prefix");
    let list = call(&bus, "GET", "/v1/purge?limit=5", DASH, "");
    assert!(list.text().contains(&id));
    assert_eq!(
        call(&bus, "GET", "/v1/purge/pg-unknown", DASH, "").status,
        404
    );
    assert_eq!(call(&bus, "DELETE", "/v1/purge", OPS, "").status, 405);
}

#[test]
fn each_token_is_rate_limited_with_retry_after() {
    let bus = CascadeProcess::start("cascade-purge-bus", "purge_bus", CONFIG).unwrap();
    let statuses: Vec<u16> = (0..25)
        .map(|_| call(&bus, "GET", "/v1/purge", DASH, "").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        20,
        "{statuses:?}"
    );
    let limited = call(&bus, "GET", "/v1/purge", DASH, "");
    assert_eq!(limited.status, 429);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(
        call(&bus, "GET", "/v1/purge", OPS, "").status,
        200,
        "another token is not affected"
    );
}

#[test]
fn one_address_holds_at_most_its_share_of_connections_and_the_rest_are_told_why() {
    use std::io::Read;
    let bus = CascadeProcess::start("cascade-purge-bus", "purge_bus", CONFIG).unwrap();
    let addr = bus.addr("listen").unwrap();
    // 64 idle connections from 127.0.0.1 (the per-address share) are held open...
    let held: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // ...and the next is answered 503 at once, with the reason.
    let mut extra = std::net::TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    extra.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("this address already holds its 64 connections"));
    // Closing them frees the slots.
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(call(&bus, "GET", "/v1/purge/none", OPS, "").status, 404);
}

#[test]
fn an_address_that_keeps_guessing_tokens_is_told_to_wait() {
    let bus = CascadeProcess::start("cascade-purge-bus", "purge_bus", CONFIG).unwrap();
    for _ in 0..10 {
        assert_eq!(
            call(&bus, "GET", "/v1/purge/x", Some("guess"), "").status,
            401
        );
    }
    let blocked = call(&bus, "GET", "/v1/purge/x", OPS, "");
    assert_eq!(blocked.status, 429);
    assert!(blocked.text().contains("too many failed authentications"));
}
