//! HTTPS on the edge with curl as the client: HTTP/1.1 and HTTP/2 by ALPN, certificates
//! chosen by SNI, and a renewed certificate served without a restart.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_testkit::{CascadeProcess, Route, TestUpstream};

fn write_cert(dir: &Path, name: &str) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), generated.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        generated.signing_key.serialize_pem(),
    )
    .unwrap();
}

/// `curl` over HTTPS to `host` (resolved to the edge), trusting `ca`; returns (status, version).
fn curl(
    edge: &CascadeProcess,
    host: &str,
    ca: &Path,
    version_flag: &str,
) -> Result<(String, String), String> {
    let port = edge.addr("tls_listen").unwrap().port();
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            version_flag,
            "--max-time",
            "5",
        ])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{host}:{port}/live/s/1.m4s"))
        .output()
        .expect("curl is installed by .ci/install-tools");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once(' ').unwrap();
    Ok((status.to_owned(), version.to_owned()))
}

#[test]
fn https_with_sni_certificates_h1_h2_and_renewal() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), "a.test");
    write_cert(dir.path(), "b.test");
    let upstream = TestUpstream::start().unwrap();
    upstream.route("/live/s/1.m4s", Route::ok("segment"));
    let d = dir.path().display();
    let config = format!(
        "[edge]\nshields = []\norigin = \"{}\"\n[[edge.sites]]\nhosts = [\"a.test\", \"b.test\"]\n\
         [tls]\nself_signed = false\n\
         [[tls.certificates]]\nhosts = [\"a.test\"]\ncert = \"{d}/a.test.pem\"\nkey = \"{d}/a.test.key\"\n\
         [[tls.certificates]]\nhosts = [\"b.test\"]\ncert = \"{d}/b.test.pem\"\nkey = \"{d}/b.test.key\"\n",
        upstream.addr()
    );
    let edge = CascadeProcess::start("cascade-edge", "edge", &config).unwrap();
    let a_ca = dir.path().join("a.test.pem");
    let b_ca = dir.path().join("b.test.pem");

    assert_eq!(
        curl(&edge, "a.test", &a_ca, "--http1.1").unwrap(),
        ("200".into(), "1.1".into())
    );
    assert_eq!(
        curl(&edge, "a.test", &a_ca, "--http2").unwrap(),
        ("200".into(), "2".into())
    );
    assert_eq!(
        curl(&edge, "b.test", &b_ca, "--http2").unwrap(),
        ("200".into(), "2".into()),
        "b.test gets its own certificate"
    );
    assert!(
        curl(&edge, "b.test", &a_ca, "--http2").is_err(),
        "and not a.test's"
    );
    assert_eq!(
        upstream.hits("/live/s/1.m4s"),
        2,
        "one cache per host: a.test and b.test are different sites"
    );

    // Renew a.test's certificate in place: the edge serves the new one without a restart.
    let old_ca = dir.path().join("a.test.old.pem");
    std::fs::copy(&a_ca, &old_ca).unwrap();
    write_cert(dir.path(), "a.test");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&edge, "a.test", &a_ca, "--http2").is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        curl(&edge, "a.test", &old_ca, "--http2").is_err(),
        "the old certificate is no longer served"
    );
}
