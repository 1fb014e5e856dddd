//! Content steering in a real player: hls.js in Chromium opens the player page through the
//! router, plays a live stream from one PoP's edge (origin → shield → two edges, ffmpeg
//! publishing), and moves to the other PoP without a stall when its edge is killed.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use cascade_testkit::{
    BroadcastOptions, Broadcaster, CascadeProcess, PlayOptions, Viewer, json_request, raw_request,
    wait_for,
};
use serde_json::Value;

const OPS: &str = "ops-token-0123456789";

fn get(addr: std::net::SocketAddr, target: &str) -> cascade_testkit::HttpResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).unwrap()
}

#[test]
fn a_playing_hls_viewer_follows_steering_to_the_other_pop_without_a_stall_when_its_edge_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display();
    let players = Path::new(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules");
    let origin = CascadeProcess::start(
        "cascade-origin",
        "origin",
        &format!(
            "[origin]\ndatabase_url = \"sqlite://{path}/registry.db\"\nplayer_dir = \"{}\"\n\
             [origin.transcoder]\npreset = \"ultrafast\"\nwork_dir = \"{path}\"\n\
             [[origin.tokens]]\nname = \"ops\"\ntoken = \"{OPS}\"\nscope = \"write\"\n\
             [storage.fs]\nroot = \"{path}/objects\"\n",
            players.display()
        ),
    )
    .unwrap();
    let shield = CascadeProcess::start(
        "cascade-shield",
        "shield",
        &format!(
            "[shield]\norigins = [\"{}\"]\n",
            origin.addr("listen").unwrap()
        ),
    )
    .unwrap();
    let edge_config = format!(
        "[edge]\nshields = [\"{}\"]\norigin = \"\"\n",
        shield.addr("listen").unwrap()
    );
    let mut near = CascadeProcess::start("cascade-edge", "edge", &edge_config).unwrap();
    let far = CascadeProcess::start("cascade-edge", "edge", &edge_config).unwrap();
    let pop = |id: &str, lat: f64, edge: &CascadeProcess| {
        format!(
            "[[router.pops]]\nid = \"{id}\"\nlatitude = {lat}\nlongitude = 0.0\ncapacity = \"10Gbps\"\n\
             [[router.pops.edges]]\nid = \"{id}-1\"\nurl = \"http://{}\"\nadmin = \"{}\"\n",
            edge.addr("listen").unwrap(),
            edge.addr("admin_listen").unwrap()
        )
    };
    let router = CascadeProcess::start(
        "cascade-router",
        "router",
        &format!(
            "[router]\ndefault_pop = \"near\"\nprobe_interval = \"500ms\"\nprobe_timeout = \"300ms\"\n\
             steering_ttl = \"2s\"\n{}{}",
            pop("near", 10.0, &near),
            pop("far", 40.0, &far)
        ),
    )
    .unwrap();

    let created = json_request(
        origin.addr("listen").unwrap(),
        "POST",
        "/api/v1/livestreams",
        Some(OPS),
        r#"{"title":"steering","settings":{"resolutions":["360p","240p"]}}"#,
    )
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let stream: Value = serde_json::from_slice(&created.body).unwrap();
    let id = stream["id"].as_str().unwrap().to_owned();
    let _publisher = Broadcaster::start(
        stream["rtmp_ingest_url"].as_str().unwrap(),
        &BroadcastOptions::default(),
    )
    .unwrap();
    wait_for(
        "the stream to play through both edges",
        Duration::from_secs(40),
        || {
            [&near, &far].iter().all(|e| {
                get(
                    e.addr("listen").unwrap(),
                    &format!("/live/{id}/master.m3u8"),
                )
                .status
                    == 200
            })
        },
    );

    // The router's playlist offers both PoPs, nearest first, with steering.
    let master = get(
        router.addr("listen").unwrap(),
        &format!("/live/{id}/master.m3u8"),
    );
    assert_eq!(master.status, 200, "{}", master.text());
    let text = master.text();
    assert!(
        text.contains(&format!(
            "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/v1/steering?stream=live%2F{id}\",PATHWAY-ID=\"near\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "PATHWAY-ID=\"far\"\nhttp://{}/live/{id}/",
            far.addr("listen").unwrap()
        )),
        "{text}"
    );
    let steering = get(
        router.addr("listen").unwrap(),
        &format!("/v1/steering?stream=live%2F{id}"),
    );
    let manifest: Value = serde_json::from_slice(&steering.body).unwrap();
    assert_eq!(
        manifest["PATHWAY-PRIORITY"],
        serde_json::json!(["near", "far"]),
        "{manifest}"
    );

    let seconds = 45;
    let page = format!("http://{}/player/{id}", router.addr("listen").unwrap());
    let viewer = Viewer::start(
        &page,
        &PlayOptions {
            seconds,
            ..PlayOptions::default()
        },
    )
    .unwrap();
    wait_for(
        "the viewer to play from the near edge",
        Duration::from_secs(40),
        || near.metric("cascade_proxy_requests_total") > 30.0,
    );
    std::thread::sleep(Duration::from_secs(8));
    let far_before = far.metric("cascade_proxy_requests_total");
    near.stop_with(libc::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let report = viewer
        .finish(Duration::from_secs(u64::from(seconds) + 90))
        .unwrap();
    let context = format!("{report:#?}");
    assert!(report.started, "{context}");
    assert!(report.errors.is_empty(), "player errors: {context}");
    assert_eq!(report.stalls, Some(0), "stalls: {context}");
    assert_eq!(report.state, "playing", "{context}");
    assert!(
        report.played_seconds >= f64::from(seconds) - 20.0,
        "{context}"
    );
    let far_after = far.metric("cascade_proxy_requests_total");
    eprintln!(
        "after the near edge died: the far edge served {} requests; stalls {:?}, played {:.1} s, first frame {:?} ms, latency median {:?} s",
        far_after - far_before,
        report.stalls,
        report.played_seconds,
        report.first_frame_ms,
        report.latency.median
    );
    assert!(
        far_after - far_before > 20.0,
        "the far edge served {} requests after the near one died: {context}",
        far_after - far_before
    );
    let metrics = get(router.addr("admin_listen").unwrap(), "/metrics").text();
    let steered: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("cascade_router_decisions_total{answer=\"steering\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        steered >= 1.0,
        "the player never asked for steering:\n{metrics}"
    );
}
