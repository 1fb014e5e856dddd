//! The workspace keeps its architecture: no module of any crate imports a module that imports
//! it back, the media, keys and RTMP crates do no IO, and cache nodes do not link the purge bus's
//! server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cascade_layout::{ModuleGraph, cycles, dependencies};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the layout crate sits in the workspace")
        .to_path_buf()
}

/// Member directories from the workspace's `Cargo.toml`.
fn members() -> Vec<String> {
    let toml = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("workspace manifest");
    let start = toml.find("members = [").expect("a members list");
    let end = start + toml[start..].find(']').expect("the members list ends");
    toml[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn deps(member: &str) -> BTreeSet<String> {
    let path = workspace().join(member).join("Cargo.toml");
    dependencies(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let members = members();
    assert!(members.len() >= 10, "members: {members:?}");
    let mut found = Vec::new();
    let mut modules = 0;
    for member in &members {
        let graph = ModuleGraph::read(&workspace().join(member).join("src"))
            .unwrap_or_else(|e| panic!("{member}/src: {e}"));
        modules += graph.edges.len();
        for cycle in cycles(&graph) {
            let names: Vec<String> = cycle
                .iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect();
            found.push(format!("{member}: {}", names.join(" ↔ ")));
        }
    }
    assert!(
        modules > 100,
        "only {modules} modules read: is the tree where the test looks?"
    );
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// Asserts that `member` links none of the crates that do IO, apart from `allowed`.
fn assert_no_io(member: &str, allowed: &[&str]) {
    let linked = deps(member);
    for io in [
        "tokio",
        "hyper",
        "sqlx",
        "reqwest",
        "aws-sdk-s3",
        "rml_rtmp",
        "pingora-core",
    ] {
        assert!(
            allowed.contains(&io) || !linked.contains(io),
            "{member} depends on {io}: {linked:?}"
        );
    }
}

#[test]
fn the_rtmp_protocol_crate_does_no_io() {
    // rml_rtmp is sans-IO itself: sessions take bytes and return bytes.
    assert_no_io("rtmp", &["rml_rtmp"]);
    assert!(deps("rtmp").contains("rml_rtmp"));
}

#[test]
fn the_media_keys_and_cmcd_crates_do_no_io() {
    assert_no_io("media", &[]);
    assert_no_io("keys", &[]);
    assert_no_io("cmcd", &[]);
}

#[test]
fn cache_nodes_link_the_purge_follower_not_the_bus_server() {
    for member in ["cache", "edge", "shield"] {
        let d = deps(member);
        assert!(
            !d.iter().any(|n| n.starts_with("cascade-purge-bus")),
            "{member}: {d:?}"
        );
    }
    assert!(deps("cache").contains("cascade-purge-follower"));
}

#[test]
fn the_shield_does_not_link_the_viewers_listeners() {
    let shield =
        std::fs::read_to_string(workspace().join("shield/Cargo.toml")).expect("shield manifest");
    assert!(
        !shield.contains("viewers"),
        "the shield enables the viewers feature"
    );
    for (member, dep) in [("cache", "quinn"), ("cache", "h3"), ("service", "rcgen")] {
        let manifest =
            std::fs::read_to_string(workspace().join(member).join("Cargo.toml")).expect("manifest");
        let line = manifest
            .lines()
            .find(|l| l.starts_with(&format!("{dep} ")) || l.starts_with(&format!("{dep}.")))
            .unwrap_or_else(|| panic!("{member}/Cargo.toml has no {dep}"));
        assert!(
            line.contains("optional = true"),
            "{dep} is not optional in {member}: {line}"
        );
    }
}

#[test]
fn the_router_stands_beside_the_tiers_and_its_decisions_do_no_io() {
    let d = deps("router");
    for tier in [
        "cascade-cache",
        "cascade-origin",
        "cascade-edge",
        "cascade-shield",
        "pingora-proxy",
    ] {
        assert!(!d.contains(tier), "the router links {tier}: {d:?}");
    }
    assert_modules_do_no_io(
        "router",
        &[
            "choose", "client", "coverage", "geo", "health", "locate", "steering",
        ],
        &["maxminddb"],
    );
}

/// Asserts that the named modules of `member` (files under `src/`) touch no sockets, files or
/// runtime, nor any of `also`.
fn assert_modules_do_no_io(member: &str, modules: &[&str], also: &[&str]) {
    for module in modules {
        let path = workspace().join(format!("{member}/src/{module}.rs"));
        let source = std::fs::read_to_string(&path).expect("core module");
        let code = cascade_layout::strip_comments_and_strings(&source);
        for io in [
            "tokio",
            "hyper",
            "std::fs",
            "TcpStream",
            "UdpSocket",
            "rdkafka",
            "sqlx",
        ]
        .iter()
        .chain(also)
        {
            assert!(!code.contains(io), "{member}/src/{module}.rs uses {io}");
        }
    }
}

#[test]
fn analytics_decisions_do_no_io_and_the_crate_stands_below_the_tiers() {
    let d = deps("analytics");
    for tier in [
        "cascade-cache",
        "cascade-origin",
        "cascade-edge",
        "pingora-proxy",
    ] {
        assert!(!d.contains(tier), "cascade-analytics links {tier}: {d:?}");
    }
    assert_modules_do_no_io(
        "analytics",
        &["device", "events", "live", "minute", "record", "session"],
        &[],
    );
    assert_modules_do_no_io("cmcd", &["cmsd"], &[]);
}

#[test]
fn the_simulated_players_decisions_do_no_io() {
    assert_modules_do_no_io(
        "bench",
        &[
            "viewers/hls_player",
            "viewers/dash_player",
            "viewers/model",
            "viewers/mpd",
            "viewers/playlist",
            "viewers/scenario",
            "viewers/report",
            "viewers/steps",
            "viewers/figures",
        ],
        &["Instant", "SystemTime", "quinn", "rustls"],
    );
    assert_modules_do_no_io("cmcd", &["write"], &[]);
}
