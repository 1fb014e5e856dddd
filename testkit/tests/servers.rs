//! Every server binary follows the shared conventions, checked on the real processes: the admin
//! endpoints, `--check`, `--version`, graceful shutdown on SIGINT and SIGTERM, JSON logs, and
//! clear one-line errors for bad configuration.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use cascade_testkit::{CascadeProcess, binary_path, http_get};

const SERVERS: [(&str, &str); 4] = [
    ("cascade-origin", "origin"),
    ("cascade-shield", "shield"),
    ("cascade-edge", "edge"),
    ("cascade-purge-bus", "purge_bus"),
];

#[test]
fn every_server_serves_healthz_readyz_metrics_and_stops_on_sigterm() {
    for (binary, section) in SERVERS {
        let mut server = CascadeProcess::start(binary, section, "").unwrap();
        let admin = server.addr("admin_listen").unwrap();

        let health = http_get(admin, "/healthz").unwrap();
        assert_eq!(
            (health.status, health.text().as_str()),
            (200, "ok\n"),
            "{binary}"
        );
        let ready = http_get(admin, "/readyz").unwrap();
        assert_eq!(ready.status, 200, "{binary}: {}", ready.text());

        let metrics = http_get(admin, "/metrics").unwrap();
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = metrics.text();
        let build_info = format!(
            "cascade_build_info{{service=\"{section}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            text.contains(&build_info),
            "{binary}: no {build_info} in\n{text}"
        );
        assert!(
            text.contains(&format!("cascade_ready{{service=\"{section}\"}} 1")),
            "{binary}"
        );
        assert!(
            text.contains("process_resident_memory_bytes"),
            "{binary}: no process metrics"
        );

        assert_eq!(http_get(admin, "/nope").unwrap().status, 404);

        let (status, took) = server
            .stop_with(libc::SIGTERM, Duration::from_secs(15))
            .unwrap();
        assert!(
            status.success(),
            "{binary} exited with {status} after SIGTERM:\n{}",
            server.process().log()
        );
        assert!(
            took < Duration::from_secs(5),
            "{binary} took {took:?} to stop"
        );
        assert!(
            server.process().log().contains("shutting down"),
            "{binary} did not log its shutdown"
        );
    }
}

#[test]
fn sigint_stops_gracefully_and_logs_can_be_json() {
    let mut edge =
        CascadeProcess::start("cascade-edge", "edge", "[log]\nformat = \"json\"\n").unwrap();
    let (status, _) = edge
        .stop_with(libc::SIGINT, Duration::from_secs(15))
        .unwrap();
    assert!(status.success(), "exit {status}");
    let log = edge.process().log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(messages.contains(&"started"), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.starts_with("shutting down")),
        "{messages:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string()),
        "{log}"
    );
}

#[test]
fn an_admin_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = Command::new(binary_path("cascade-shield").unwrap())
        .env("CASCADE_SHIELD__ADMIN_LISTEN", &port)
        .env("CASCADE_SHIELD__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("shield.admin_listen: cannot listen on {port}")),
        "{stderr}"
    );
}

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(binary_path(binary).unwrap())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help_describe_each_binary() {
    for (binary, _) in SERVERS {
        let (code, stdout, _) = run(binary, &["--version"], &[]);
        assert_eq!(
            (code, stdout.trim()),
            (
                Some(0),
                format!("{binary} {}", env!("CARGO_PKG_VERSION")).as_str()
            )
        );
        let (code, stdout, _) = run(binary, &["--help"], &[]);
        assert_eq!(code, Some(0));
        for flag in ["--config", "--check", "--version", "CASCADE_"] {
            assert!(
                stdout.contains(flag),
                "{binary} --help lacks {flag}:\n{stdout}"
            );
        }
        let (code, _, stderr) = run(binary, &["--frobnicate"], &[]);
        assert_eq!(code, Some(2), "{binary}: unknown flag must fail");
        assert!(stderr.contains("--frobnicate"), "{stderr}");
    }
}

#[test]
fn check_accepts_a_good_file_and_refuses_bad_ones_with_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = write(
        "good.toml",
        "[edge]\nlisten = \"0.0.0.0:8000\"\n[log]\nlevel = \"debug,cascade_edge=trace\"\n",
    );
    let (code, stdout, stderr) = run("cascade-edge", &["--config", &good, "--check"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), format!("{good}: configuration is valid"));

    // (config file, environment, fragment of the one-line error)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            write("addr.toml", "[edge]\nlisten = \"abc\"\n"),
            vec![],
            "edge.listen: \"abc\" is not a socket address",
        ),
        (
            write("type.toml", "[edge]\nshutdown_grace = true\n"),
            vec![],
            "edge.shutdown_grace: invalid type: boolean",
        ),
        (
            write("unknown.toml", "[edge]\ncolour = \"blue\"\n"),
            vec![],
            "unknown field `colour`",
        ),
        (
            write("filter.toml", "[log]\nlevel = \"info,cascade=loudest\"\n"),
            vec![],
            "log.level: \"info,cascade=loudest\" is not a log filter",
        ),
        (
            "/nonexistent/cascade.toml".into(),
            vec![],
            "/nonexistent/cascade.toml: cannot read the config file",
        ),
        (
            good.clone(),
            vec![("CASCADE_EDGE__ADMIN_LISTEN", "nowhere")],
            "environment CASCADE_EDGE__ADMIN_LISTEN: edge.admin_listen",
        ),
    ];
    for (file, env, expected) in cases {
        let (code, stdout, stderr) = run("cascade-edge", &["--config", &file, "--check"], &env);
        assert_eq!(code, Some(2), "{file} {env:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
        assert!(stderr.starts_with("cascade-edge: error: "), "{stderr}");
        assert!(stderr.contains(expected), "{stderr:?} lacks {expected:?}");
        if !env.is_empty() || file.starts_with("/nonexistent") {
            continue;
        }
        assert!(stderr.contains(&file), "{stderr:?} does not name the file");
    }
}
