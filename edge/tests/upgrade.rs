//! Zero-downtime upgrade (also how configuration is reloaded): a new instance started with
//! `--upgrade` takes over the running one's listening sockets on SIGQUIT, and a client polling
//! throughout sees no failed request.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cascade_testkit::{CascadeProcess, Route, TestUpstream, raw_request};

#[test]
fn a_new_instance_takes_over_without_dropping_a_request() {
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let config = format!("[edge]\nshields = []\norigin = \"{}\"\n", upstream.addr());
    let mut old = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
    let listen = old.addr("listen").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let request =
                    b"GET /live/s/1.m4s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
                match raw_request(listen, request) {
                    Ok(r) if r.status == 200 && r.body == b"segment" => {
                        ok.fetch_add(1, Ordering::AcqRel)
                    }
                    Ok(r) => panic!("unexpected answer {} {:?}", r.status, r.text()),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed.fetch_add(1, Ordering::AcqRel)
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    let mut new = old.spawn_upgrade().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the new instance waits on the upgrade socket
    old.process().signal(libc::SIGQUIT).unwrap();
    // The old instance hands its sockets over, serves what it has in flight, then exits.
    let status = old.wait_for_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "old instance exited with {status}");
    new.wait_until_ready(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    poller.join().unwrap();

    assert_eq!(
        failed.load(Ordering::Acquire),
        0,
        "requests failed during the hand-over"
    );
    assert!(
        ok.load(Ordering::Acquire) > 50,
        "the client kept being served"
    );
    assert!(
        new.process()
            .log()
            .contains("waiting for the running instance's sockets")
    );
    let health = cascade_testkit::http_get(new.addr("admin_listen").unwrap(), "/readyz").unwrap();
    assert_eq!(
        health.status, 200,
        "the new instance serves the admin port too"
    );
    // HTTP/3 is not handed over (only TCP sockets are): the new instance binds the UDP port
    // once the old one is gone, and serves it.
    let tls_port = new.addr("tls_listen").unwrap().port();
    let python = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h3client.py");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .args([
                "--timeout",
                "2",
                "--connect",
                &format!("127.0.0.1:{tls_port}"),
            ])
            .arg(format!("https://localhost:{tls_port}/live/s/1.m4s"))
            .output()
            .expect("python with aioquic (CASCADE_PYTHON, set by .ci/install-tools)");
        if String::from_utf8_lossy(&out.stdout).contains("\"status\": 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new instance does not serve HTTP/3: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
