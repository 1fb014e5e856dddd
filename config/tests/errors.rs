//! Every refused configuration gives one line naming where the value came from, the field, and
//! what to write instead; every accepted one yields the values the operator wrote.

use cascade_config::{CascadeConfig, ConfigError, LogFormat};
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn refuse(toml: &str, vars: &[(&str, &str)]) -> String {
    match CascadeConfig::parse_with_env("cascade.toml", toml, env(vars)) {
        Ok(c) => panic!("accepted a bad config: {toml:?} {vars:?} -> {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// What is wrong, the file, the environment, fragments the message must contain.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn bad_configs_are_refused_with_a_line_naming_origin_field_and_fix() {
    let cases: &[Case] = &[
        (
            "no HTTP/3 streams",
            "[edge.http3]\nmax_concurrent_streams = 0\n",
            &[],
            &["edge.http3.max_concurrent_streams: 0 must be between 1 and 10000"],
        ),
        (
            "unknown congestion controller",
            "[edge.http3]\ncongestion = \"reno\"\n",
            &[],
            &[
                "cascade.toml: edge.http3.congestion",
                "unknown variant `reno`",
                "cubic",
                "bbr",
            ],
        ),
        (
            "a live playlist kept fresh for longer than a minute",
            "[shield.cache]\nlive_playlist_fresh = \"2m\"\n",
            &[],
            &["cascade.toml: shield.cache.live_playlist_fresh: 120s is longer than a minute"],
        ),
        (
            "HTTP/3 connection limit of zero, from the environment",
            "",
            &[("CASCADE_EDGE__HTTP3__MAX_CONNECTIONS", "0")],
            &["edge.http3.max_connections: must be at least 1"],
        ),
        (
            "a header timeout too short to receive any header",
            "[edge.clients]\nheader_timeout = \"10ms\"\n",
            &[],
            &["edge.clients.header_timeout: 10ms must be between 100ms and 1h"],
        ),
        (
            "a TLS handshake limit of two hours",
            "[shield.clients]\nhandshake_timeout = \"2h\"\n",
            &[],
            &["shield.clients.handshake_timeout: 7200s must be between 100ms and 1h"],
        ),
        (
            "a TLS listener on an ephemeral port",
            "[edge]\ntls_listen = \"127.0.0.1:0\"\n",
            &[],
            &["edge.tls_listen: 127.0.0.1:0: give the TLS listener a fixed port"],
        ),
        (
            "a keep-alive limit of zero, from the environment",
            "",
            &[("CASCADE_SHIELD__CLIENTS__KEEPALIVE_TIMEOUT", "0")],
            &["shield.clients.keepalive_timeout: 0s must be between 1s and 1h"],
        ),
        (
            "unparsable address",
            "[edge]\nlisten = \"abc\"\n",
            &[],
            &["cascade.toml: edge.listen: \"abc\" is not a socket address (write IP:port"],
        ),
        (
            "port out of range",
            "[origin]\nlisten = \"127.0.0.1:99999\"\n",
            &[],
            &["cascade.toml: origin.listen:", "not a socket address"],
        ),
        (
            "wrong type",
            "[kafka]\npartitions = \"three\"\n",
            &[],
            &[
                "cascade.toml: kafka.partitions:",
                "invalid type: string \"three\"",
                "u32",
            ],
        ),
        (
            "unknown key in a section",
            "[edge]\nlisne = \"127.0.0.1:1\"\n",
            &[],
            &["cascade.toml: edge", "unknown field `lisne`", "listen"],
        ),
        (
            "unknown section",
            "[egde]\nlisten = \"127.0.0.1:1\"\n",
            &[],
            &["cascade.toml:", "unknown field `egde`", "edge"],
        ),
        (
            "not TOML",
            "[edge\nlisten = 1\n",
            &[],
            &["cascade.toml: line 1, column", "not valid TOML"],
        ),
        (
            "bad duration",
            "[shield]\nshutdown_grace = \"soon\"\n",
            &[],
            &[
                "cascade.toml: shield.shutdown_grace: \"soon\" is not a duration (write e.g. \"500ms\"",
            ],
        ),
        (
            "shield without origins",
            "[shield]\norigins = []\n",
            &[],
            &["shield.origins: is empty: the shield needs at least one origin to fill from"],
        ),
        (
            "public shield without a fill secret",
            "[shield]\nlisten = \"0.0.0.0:8081\"\n",
            &[],
            &[
                "shield.fill_secret: is required when shield.listen (0.0.0.0:8081) is not a loopback address",
            ],
        ),
        (
            "shield origin not host:port",
            "[shield]\norigins = [\"127.0.0.1:8080\", \"http://backup\"]\n",
            &[],
            &["shield.origins[1]: \"http://backup\" is not host:port"],
        ),
        (
            "zero duration in a tier's cache section",
            "[edge.cache]\ncollapse_timeout = \"0s\"\n",
            &[],
            &["cascade.toml: edge.cache.collapse_timeout: must be longer than 0s"],
        ),
        (
            "env override of a nested cache field",
            "",
            &[("CASCADE_SHIELD__DISK__CAPACITY", "1KiB")],
            &["shield.disk.capacity: 1KiB is below the 1MiB minimum"],
        ),
        (
            "grace too long",
            "[edge]\nshutdown_grace = \"2h\"\n",
            &[],
            &["cascade.toml: edge.shutdown_grace: 7200s is longer than the 600s maximum"],
        ),
        (
            "listener clash",
            "[edge]\nadmin_listen = \"127.0.0.1:8000\"\n",
            &[],
            &[
                "cascade.toml: edge.admin_listen: 127.0.0.1:8000 is also edge.listen; give each listener its own port",
            ],
        ),
        (
            "unknown enum value",
            "[log]\nformat = \"xml\"\n",
            &[],
            &[
                "cascade.toml: log.format:",
                "unknown variant `xml`",
                "human",
                "json",
            ],
        ),
        (
            "bad broker",
            "[kafka]\nbrokers = [\"kafka\"]\n",
            &[],
            &["cascade.toml: kafka.brokers[0]: \"kafka\" is not host:port"],
        ),
        (
            "bad bucket",
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"Bad_Bucket\"\n",
            &[],
            &["cascade.toml: storage.s3.bucket: \"Bad_Bucket\" is not a valid bucket name"],
        ),
        (
            "missing certificate file",
            "[[tls.certificates]]\nhosts = [\"a.example\"]\ncert = \"/nonexistent/c.pem\"\nkey = \"/dev/null\"\n",
            &[],
            &["cascade.toml: tls.certificates[0].cert: cannot read /nonexistent/c.pem"],
        ),
        (
            "half the S3 credentials",
            "[storage]\nbackend = \"s3\"\n[storage.s3]\naccess_key_id = \"GK1\"\n",
            &[],
            &["storage.s3.access_key_id: set both access_key_id and secret_access_key"],
        ),
        (
            "bad env address",
            "",
            &[("CASCADE_EDGE__LISTEN", "abc")],
            &["environment CASCADE_EDGE__LISTEN: edge.listen: \"abc\" is not a socket address"],
        ),
        (
            "unknown env field",
            "",
            &[("CASCADE_EDGE__LISTNE", "127.0.0.1:1")],
            &[
                "environment CASCADE_EDGE__LISTNE:",
                "unknown field `listne`",
            ],
        ),
        (
            "env value fails validation",
            "",
            &[("CASCADE_KAFKA__PARTITIONS", "0")],
            &["environment CASCADE_KAFKA__PARTITIONS: kafka.partitions: must be at least 1"],
        ),
        (
            "env empty segment",
            "",
            &[("CASCADE_EDGE____LISTEN", "x")],
            &["environment CASCADE_EDGE____LISTEN: empty name"],
        ),
    ];
    assert!(cases.len() >= 10);
    for (what, toml, vars, fragments) in cases {
        let message = refuse(toml, vars);
        assert_eq!(
            message.lines().count(),
            1,
            "{what}: not one line: {message}"
        );
        for fragment in *fragments {
            assert!(
                message.contains(fragment),
                "{what}: {message:?} lacks {fragment:?}"
            );
        }
    }
}

#[test]
fn missing_file_names_the_path_and_the_flag() {
    let err = CascadeConfig::load_with_env(
        Some(std::path::Path::new("/nonexistent/cascade.toml")),
        env(&[]),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let message = err.to_string();
    assert!(
        message.starts_with("/nonexistent/cascade.toml: cannot read the config file:"),
        "{message}"
    );
    assert!(message.contains("check the --config path"), "{message}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let toml = "[kafka]\npartitions = 0\nreplication = 0\n";
    let message = refuse(toml, &[]);
    assert_eq!(message.lines().count(), 2, "{message}");
}

#[test]
fn no_file_gives_the_local_stack_defaults() {
    let c = CascadeConfig::load_with_env(None, env(&[])).unwrap();
    let ports = [
        c.origin.listen.0.port(),
        c.origin.rtmp_listen.0.port(),
        c.origin.admin_listen.0.port(),
        c.shield.listen.0.port(),
        c.shield.admin_listen.0.port(),
        c.edge.listen.0.port(),
        c.edge.tls_listen.0.port(),
        c.edge.admin_listen.0.port(),
        c.purge_bus.listen.0.port(),
        c.purge_bus.admin_listen.0.port(),
    ];
    assert_eq!(
        ports,
        [8080, 1935, 9080, 8081, 9081, 8000, 8443, 9000, 8090, 9090]
    );
    assert!(c.kafka.is_embedded());
    assert_eq!(c.storage.backend, cascade_config::StorageBackend::Fs);
}

#[test]
fn file_values_and_env_overrides_are_applied() {
    let toml = "[log]\nformat = \"json\"\n[edge]\nlisten = \"0.0.0.0:80\"\nshutdown_grace = 3\n[kafka]\nbrokers = [\"k1:9092\"]\n";
    let c = CascadeConfig::parse_with_env(
        "cascade.toml",
        toml,
        env(&[
            ("CASCADE_EDGE__LISTEN", "127.0.0.1:8001"),
            ("CASCADE_PURGE_BUS__SHUTDOWN_GRACE", "1500ms"),
            ("CASCADE_KAFKA__BROKERS", "[\"a:1\", \"b:2\"]"),
            ("CASCADE_STORAGE__S3__BUCKET", "true"),
            ("CASCADE_CACHE", "/not/a/config/override"),
        ]),
    )
    .unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.edge.listen.to_string(), "127.0.0.1:8001");
    assert_eq!(c.edge.shutdown_grace.0, Duration::from_secs(3));
    assert_eq!(c.purge_bus.shutdown_grace.0, Duration::from_millis(1500));
    assert_eq!(c.kafka.brokers, ["a:1", "b:2"]);
    assert_eq!(
        c.storage.s3.bucket, "true",
        "string fields take the variable verbatim"
    );
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let toml = "[kafka]\nbrokers = [\"k:9092\"]\nsecurity_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\nsasl_password = \"topsecret\"\n";
    let c = CascadeConfig::parse_with_env("cascade.toml", toml, env(&[])).unwrap();
    assert!(!format!("{c:?}").contains("topsecret"));
    assert_eq!(c.kafka.sasl_password.expose(), "topsecret");
}

#[test]
fn the_example_file_documents_the_real_defaults() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cascade.example.toml");
    let example = CascadeConfig::load_with_env(Some(&path), env(&[])).unwrap();
    assert_eq!(
        example,
        CascadeConfig::default(),
        "deploy/cascade.example.toml drifted from the defaults"
    );
}

#[test]
fn router_pops_come_from_the_file_or_one_environment_variable() {
    let pops = r#"[{id="west",latitude=48.86,longitude=2.35,capacity="10Gbps",edges=[{id="edge-1",url="http://127.0.0.1:8000",admin="127.0.0.1:9000"}]},{id="east",latitude=52.52,longitude=13.4,capacity="1.5Gbps",edges=[{id="edge-2",url="http://127.0.0.1:8001",admin="127.0.0.1:9001",address="192.0.2.2"}]}]"#;
    let c = CascadeConfig::parse_with_env(
        "cascade.toml",
        "",
        env(&[
            ("CASCADE_ROUTER__POPS", pops),
            ("CASCADE_ROUTER__DEFAULT_POP", "east"),
        ]),
    )
    .unwrap();
    assert_eq!(c.router.pops.len(), 2);
    assert_eq!(c.router.pops[1].capacity.0, 1_500_000_000);
    assert_eq!(
        c.router.pops[1].edges[0].address,
        Some("192.0.2.2".parse().unwrap())
    );
    assert_eq!(c.router.default_pop, "east");

    let bad = "[[router.pops]]\nid = \"x\"\nlatitude = 1.0\nlongitude = 1.0\ncapacity = \"fast\"\nedges = []\n";
    let err = CascadeConfig::parse_with_env("cascade.toml", bad, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("router.pops[0].capacity") && err.contains("\"fast\" is not a bandwidth"),
        "{err}"
    );
    let no_edges = "[router]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
                    [[router.pops]]\nid = \"x\"\nlatitude = 1.0\nlongitude = 1.0\ncapacity = \"1Gbps\"\nedges = []\n";
    let err = CascadeConfig::parse_with_env("cascade.toml", no_edges, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("router.pops[0].edges: lists no edge"), "{err}");
    let bad_proxy = "[router]\ntrusted_proxies = [\"10.0.0.0/40\"]\n";
    let err = CascadeConfig::parse_with_env("cascade.toml", bad_proxy, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("router.trusted_proxies") && err.contains("prefix length"),
        "{err}"
    );
}
