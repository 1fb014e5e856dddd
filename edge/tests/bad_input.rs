//! The bad-input suite: malformed input on every listener of a real stack (edge with TLS and
//! HTTP/3, shield, origin with RTMP, purge bus), and malformed configuration for every binary.
//! Each input has its expected answer: a 4xx with a message, or a refusal. Afterwards every
//! process still serves, the right bytes, and what was stored before is intact.
//!
//! The inputs are listed in `docs/bad-inputs.md`; the last test checks that the list and the
//! table agree.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_testkit::{CascadeProcess, HttpResponse, json_request, raw_request};

const OPS: &str = "ops-token-0123456789";
const READER: &str = "reader-token-0123456789";
const PURGER: &str = "purge-token-0123456789";
const ADMIN: &str = "edge-admin-token-0123456789";
const FILL: &str = "fill-secret-0123456789abcdef";

/// What an input must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An HTTP answer with one of these statuses (a 4xx carries a message).
    Status(&'static [u16]),
    /// The connection is closed without an HTTP answer.
    Refused,
    /// HTTP/2: the connection or the stream is ended with an error (GOAWAY or RST_STREAM).
    H2Error,
    /// HTTP/2 (through curl, which decodes the response): this status.
    H2Status(u16),
    /// QUIC: a Version Negotiation packet.
    VersionNegotiation,
    /// QUIC: no answer at all (the datagram is dropped).
    Dropped,
    /// RTMP: the connection is closed; the text, if any, is in what the origin sent first.
    RtmpClosed(Option<&'static str>),
    /// A binary's `--check` exits with an error whose text contains this.
    ConfigRefused(&'static str),
}

/// One malformed input.
struct Case {
    id: &'static str,
    input: Input,
    expect: Expect,
}

enum Input {
    /// Raw bytes to a TCP listener.
    Tcp(Listener, Vec<u8>),
    /// An HTTP request to a listener, with a bearer token.
    Api(Listener, &'static str, String, Option<&'static str>, String),
    /// HTTP/2 frames after the preface and SETTINGS, over TLS.
    H2(Vec<u8>),
    /// An HTTP/2 request by curl: method, `:authority`, path.
    Curl(&'static str, &'static str, &'static str),
    /// A UDP datagram to the HTTP/3 port.
    Quic(Vec<u8>),
    /// Bytes after a completed RTMP handshake (`None`: instead of a handshake).
    Rtmp(Option<Vec<u8>>),
    /// A config file for a binary's `--check`.
    Config(&'static str, String),
}

#[derive(Debug, Clone, Copy)]
enum Listener {
    Edge,
    EdgeTls,
    EdgeAdmin,
    Shield,
    Origin,
    Bus,
}

struct Stack {
    origin: CascadeProcess,
    shield: CascadeProcess,
    edge: CascadeProcess,
    bus: CascadeProcess,
    dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let players = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../player/node_modules");
        let bus = CascadeProcess::start(
            "cascade-purge-bus",
            "purge_bus",
            &format!(
                "[purge_bus]\nnodes = []\n[[purge_bus.tokens]]\nname = \"ops\"\ntoken = \"{PURGER}\"\nscope = \"write\"\n"
            ),
        )
        .unwrap();
        let origin = CascadeProcess::start(
            "cascade-origin",
            "origin",
            &format!(
                "[origin]\ndatabase_url = \"sqlite://{path}/registry.db\"\nplayer_dir = \"{}\"\n\
                 [origin.transcoder]\nwork_dir = \"{path}\"\n\
                 [[origin.tokens]]\nname = \"ops\"\ntoken = \"{OPS}\"\nscope = \"write\"\n\
                 [[origin.tokens]]\nname = \"reader\"\ntoken = \"{READER}\"\nscope = \"read\"\n\
                 [storage.fs]\nroot = \"{path}/objects\"\n",
                players.display()
            ),
        )
        .unwrap();
        let shield = CascadeProcess::start(
            "cascade-shield",
            "shield",
            &format!(
                "[shield]\norigins = [\"{}\"]\nfill_secret = \"{FILL}\"\n[shield.disk]\ndir = \"{path}/disk\"\n",
                origin.addr("listen").unwrap()
            ),
        )
        .unwrap();
        let edge = CascadeProcess::start(
            "cascade-edge",
            "edge",
            &format!(
                "[edge]\nshields = [\"{}\"]\norigin = \"\"\nfill_secret = \"{FILL}\"\nadmin_token = \"{ADMIN}\"\n\
                 [[edge.sites]]\nhosts = [\"localhost\", \"127.0.0.1\"]\n\
                 [[edge.sites]]\nhosts = [\"secure.test\"]\ntoken_secret = \"signed-url-secret-0123456789abcdef\"\n",
                shield.addr("listen").unwrap()
            ),
        )
        .unwrap();
        Self {
            origin,
            shield,
            edge,
            bus,
            dir,
        }
    }

    fn addr(&self, listener: Listener) -> SocketAddr {
        match listener {
            Listener::Edge => self.edge.addr("listen"),
            Listener::EdgeTls => self.edge.addr("tls_listen"),
            Listener::EdgeAdmin => self.edge.addr("admin_listen"),
            Listener::Shield => self.shield.addr("listen"),
            Listener::Origin => self.origin.addr("listen"),
            Listener::Bus => self.bus.addr("listen"),
        }
        .unwrap()
    }

    fn get(&self, listener: Listener, target: &str) -> HttpResponse {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        raw_request(self.addr(listener), request.as_bytes()).unwrap()
    }
}

fn req(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n")
        .into_bytes()
}

fn tcp(listener: Listener, bytes: impl Into<Vec<u8>>) -> Input {
    Input::Tcp(listener, bytes.into())
}

fn api(
    listener: Listener,
    method: &'static str,
    path: &str,
    token: Option<&'static str>,
    body: &str,
) -> Input {
    Input::Api(listener, method, path.to_owned(), token, body.to_owned())
}

const BAD: &[u16] = &[400];

fn cases(stream_id: &str) -> Vec<Case> {
    use Expect::*;
    use Listener::*;
    let mut c = Vec::new();
    let mut add =
        |id: &'static str, input: Input, expect: Expect| c.push(Case { id, input, expect });

    // HTTP/1.1 on the edge.
    add(
        "edge-no-host",
        tcp(Edge, "GET /player/ HTTP/1.1\r\nConnection: close\r\n\r\n"),
        Status(BAD),
    );
    add(
        "edge-garbage-line",
        tcp(Edge, "HELLO THERE\r\n\r\n"),
        Status(BAD),
    );
    add(
        "edge-binary-garbage",
        tcp(
            Edge,
            vec![
                0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, b'\r', b'\n', b'\r', b'\n',
            ],
        ),
        Status(BAD),
    );
    add("edge-http09", tcp(Edge, "GET /\r\n\r\n"), Status(BAD));
    add(
        "edge-traversal",
        tcp(Edge, req("/live/../../etc/passwd", "")),
        Status(&[400, 404]),
    );
    add(
        "edge-encoded-traversal",
        tcp(Edge, req("/live/%2e%2e/%2e%2e/etc/passwd", "")),
        Status(BAD),
    );
    add(
        "edge-encoded-slash",
        tcp(Edge, req("/live/a%2f..%2fb", "")),
        Status(BAD),
    );
    add(
        "edge-nul-escape",
        tcp(Edge, req("/live/a%00b/x.m4s", "")),
        Status(BAD),
    );
    add(
        "edge-bad-escape",
        tcp(Edge, req("/live/a%zz/x.m4s", "")),
        Status(BAD),
    );
    add(
        "edge-backslash",
        tcp(Edge, req("/live/a\\..\\b", "")),
        Status(BAD),
    );
    add(
        "edge-relative-target",
        tcp(Edge, req("live/a/x.m4s", "")),
        Status(BAD),
    );
    add(
        "edge-huge-header",
        tcp(
            Edge,
            req("/player/", &format!("X-Big: {}\r\n", "a".repeat(70_000))),
        ),
        Status(&[400, 431]),
    );
    add(
        "edge-many-headers",
        tcp(Edge, req("/player/", &"X-N: 1\r\n".repeat(300))),
        Status(&[400, 431]),
    );
    add(
        "edge-space-in-header-name",
        tcp(Edge, req("/player/", "X Bad: 1\r\n")),
        Status(BAD),
    );
    add(
        "edge-nul-in-header",
        tcp(Edge, req("/player/", "X-Nul: a\0b\r\n")),
        Status(BAD),
    );
    add(
        "edge-bad-content-length",
        tcp(Edge, req("/player/", "Content-Length: abc\r\n")),
        Status(BAD),
    );
    add(
        "edge-two-content-lengths",
        tcp(
            Edge,
            req("/player/", "Content-Length: 1\r\nContent-Length: 2\r\n"),
        ),
        Status(BAD),
    );
    add(
        "edge-cl-and-te",
        tcp(
            Edge,
            "POST /player/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        Status(&[400, 405]),
    );
    add(
        "edge-bad-chunk-size",
        tcp(
            Edge,
            "POST /player/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ),
        Status(&[400, 405]),
    );
    add(
        "edge-absolute-form-elsewhere",
        tcp(
            Edge,
            "GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        Status(&[400, 403, 421]),
    );
    add(
        "edge-connect",
        tcp(
            Edge,
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        ),
        Status(&[400, 405]),
    );
    add(
        "edge-unknown-host",
        tcp(
            Edge,
            "GET /player/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        Status(&[421]),
    );
    add(
        "edge-two-hosts",
        tcp(
            Edge,
            "GET /player/ HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        Status(BAD),
    );
    add(
        "edge-bad-host-port",
        tcp(
            Edge,
            "GET /player/ HTTP/1.1\r\nHost: localhost:99999\r\nConnection: close\r\n\r\n",
        ),
        Status(BAD),
    );
    add(
        "edge-unknown-method",
        tcp(
            Edge,
            "BREW /player/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        Status(&[400, 405]),
    );
    add(
        "edge-post",
        tcp(
            Edge,
            "POST /live/x/master.m3u8 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        ),
        Status(&[405]),
    );
    add(
        "edge-non-utf8-target",
        tcp(
            Edge,
            &b"GET /live/\xff\xfe/x.m4s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        ),
        Status(BAD),
    );
    add(
        "edge-long-uri",
        tcp(Edge, req(&format!("/live/{}", "a".repeat(20_000)), "")),
        Status(&[400, 414]),
    );
    add(
        "edge-msn-not-a-number",
        tcp(
            Edge,
            req(
                &format!("/live/{stream_id}/240p/playlist.m3u8?_HLS_msn=abc"),
                "",
            ),
        ),
        Status(BAD),
    );
    add(
        "edge-part-without-msn",
        tcp(
            Edge,
            req(
                &format!("/live/{stream_id}/240p/playlist.m3u8?_HLS_part=1"),
                "",
            ),
        ),
        Status(BAD),
    );
    add(
        "edge-msn-overflow",
        tcp(
            Edge,
            req(
                &format!("/live/{stream_id}/240p/playlist.m3u8?_HLS_msn=99999999999999999999999"),
                "",
            ),
        ),
        Status(BAD),
    );
    add(
        "edge-bad-skip",
        tcp(
            Edge,
            req(
                &format!("/live/{stream_id}/240p/playlist.m3u8?_HLS_skip=MAYBE"),
                "",
            ),
        ),
        Status(BAD),
    );
    add(
        "edge-unknown-stream",
        tcp(Edge, req("/live/no-such-stream/master.m3u8", "")),
        Status(&[404]),
    );
    add(
        "edge-unknown-rendition",
        tcp(
            Edge,
            req(&format!("/live/{stream_id}/999p/playlist.m3u8"), ""),
        ),
        Status(&[404]),
    );
    add(
        "edge-bad-segment-name",
        tcp(Edge, req(&format!("/live/{stream_id}/240p/abc.m4s"), "")),
        Status(&[400, 404]),
    );
    add(
        "edge-token-garbage",
        tcp(
            Edge,
            "GET /t/garbage/live/x/master.m3u8 HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n",
        ),
        Status(&[403]),
    );
    add(
        "edge-token-missing",
        tcp(
            Edge,
            "GET /live/x/master.m3u8 HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n",
        ),
        Status(&[403]),
    );
    add(
        "edge-token-forged",
        tcp(
            Edge,
            "GET /t/4102444800.0.L2xpdmUv.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/live/x/master.m3u8 HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n",
        ),
        Status(&[403]),
    );

    // The edge's TLS port.
    add(
        "tls-plain-http",
        tcp(EdgeTls, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        Refused,
    );
    add(
        "tls-garbage-record",
        tcp(
            EdgeTls,
            vec![
                0x16, 0x03, 0x01, 0x00, 0x10, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0,
            ],
        ),
        Refused,
    );
    add(
        "tls-ssl2-hello",
        tcp(
            EdgeTls,
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        Refused,
    );

    // HTTP/2 frames over TLS.
    let h = |name: &str, value: &str| literal(name, value);
    let good_block = [
        h(":method", "GET"),
        h(":scheme", "https"),
        h(":authority", "localhost"),
        h(":path", "/player/"),
    ]
    .concat();
    add(
        "h2-headers-on-stream-0",
        Input::H2(frame(1, 0x5, 0, &good_block)),
        H2Error,
    );
    add(
        "h2-data-on-idle-stream",
        Input::H2(frame(0, 0x1, 3, b"data")),
        H2Error,
    );
    add(
        "h2-settings-bad-length",
        Input::H2(frame(4, 0, 0, &[0, 1, 2])),
        H2Error,
    );
    add(
        "h2-settings-bad-window",
        Input::H2(frame(4, 0, 0, &[0, 4, 0xff, 0xff, 0xff, 0xff])),
        H2Error,
    );
    add(
        "h2-settings-bad-frame-size",
        Input::H2(frame(4, 0, 0, &[0, 5, 0, 0, 0, 1])),
        H2Error,
    );
    add(
        "h2-window-update-zero",
        Input::H2(frame(8, 0, 0, &[0, 0, 0, 0])),
        H2Error,
    );
    add(
        "h2-ping-bad-length",
        Input::H2(frame(6, 0, 0, &[1, 2, 3])),
        H2Error,
    );
    add(
        "h2-rst-on-idle-stream",
        Input::H2(frame(3, 0, 5, &[0, 0, 0, 8])),
        H2Error,
    );
    add(
        "h2-continuation-alone",
        Input::H2(frame(9, 0x4, 1, &good_block)),
        H2Error,
    );
    add(
        "h2-hpack-garbage",
        Input::H2(frame(1, 0x5, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])),
        H2Error,
    );
    add(
        "h2-missing-path",
        Input::H2(frame(
            1,
            0x5,
            1,
            &[
                h(":method", "GET"),
                h(":scheme", "https"),
                h(":authority", "localhost"),
            ]
            .concat(),
        )),
        H2Error,
    );
    add(
        "h2-uppercase-header",
        Input::H2(frame(
            1,
            0x5,
            1,
            &[good_block.clone(), h("X-Upper", "1")].concat(),
        )),
        H2Error,
    );
    add(
        "h2-connection-header",
        Input::H2(frame(
            1,
            0x5,
            1,
            &[good_block.clone(), h("connection", "keep-alive")].concat(),
        )),
        H2Error,
    );
    add(
        "h2-even-stream-id",
        Input::H2(frame(1, 0x5, 2, &good_block)),
        H2Error,
    );
    add(
        "h2-frame-too-large",
        Input::H2(frame(0, 0, 1, &vec![0u8; 20_000])),
        H2Error,
    );
    add(
        "h2-self-dependency",
        Input::H2(frame(2, 0, 1, &[0, 0, 0, 1, 16])),
        H2Error,
    );
    add(
        "h2-unknown-host",
        Input::Curl("GET", "evil.example", "/player/"),
        H2Status(421),
    );
    add(
        "h2-traversal",
        Input::Curl("GET", "localhost", "/live/%2e%2e/%2e%2e/x"),
        H2Status(400),
    );
    add(
        "h2-post",
        Input::Curl("POST", "localhost", "/live/x/master.m3u8"),
        H2Status(405),
    );

    // QUIC datagrams to the HTTP/3 port.
    add("quic-empty", Input::Quic(Vec::new()), Dropped);
    add("quic-one-byte", Input::Quic(vec![0x40]), Dropped);
    add(
        "quic-short-header-garbage",
        Input::Quic(
            (0..100u8)
                .map(|i| i.wrapping_mul(37) & 0x7f | 0x40)
                .collect(),
        ),
        Dropped,
    );
    add(
        "quic-unknown-version",
        Input::Quic(long_header(0x1a2a_3a4a, 1200)),
        VersionNegotiation,
    );
    add(
        "quic-small-initial",
        Input::Quic(long_header(1, 200)),
        Dropped,
    );
    add(
        "quic-initial-garbage",
        Input::Quic(long_header(1, 1200)),
        Dropped,
    );
    add(
        "quic-bad-cid-length",
        Input::Quic({
            let mut d = long_header(1, 1200);
            d[5] = 200;
            d
        }),
        Dropped,
    );

    // RTMP.
    add("rtmp-garbage", Input::Rtmp(None), RtmpClosed(None));
    add(
        "rtmp-huge-message",
        Input::Rtmp(Some(vec![0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0])),
        RtmpClosed(None),
    );
    add(
        "rtmp-huge-chunk-size",
        Input::Rtmp(Some(rtmp_message(2, 1, &0x7fff_ffffu32.to_be_bytes()))),
        RtmpClosed(None),
    );
    add(
        "rtmp-zero-chunk-size",
        Input::Rtmp(Some(rtmp_message(2, 1, &0u32.to_be_bytes()))),
        RtmpClosed(None),
    );
    add(
        "rtmp-unknown-chunk-stream",
        Input::Rtmp(Some(vec![0xc7, 1, 2, 3])),
        RtmpClosed(None),
    );
    add(
        "rtmp-interleaved",
        Input::Rtmp(Some(
            [
                &[0x04u8, 0, 0, 0, 0, 0x10, 0, 9, 1, 0, 0, 0][..],
                &[0u8; 128],
                &rtmp_message(6, 8, &[1, 2, 3]),
            ]
            .concat(),
        )),
        RtmpClosed(None),
    );
    add(
        "rtmp-short-command",
        Input::Rtmp(Some(rtmp_message(3, 20, &amf0_string("connect")))),
        RtmpClosed(None),
    );
    add(
        "rtmp-wrong-app",
        Input::Rtmp(Some(rtmp_message(3, 20, &connect_command("notlive")))),
        RtmpClosed(Some("unknown application")),
    );

    // The management API.
    let streams = "/api/v1/livestreams";
    add(
        "api-no-token",
        api(Origin, "GET", streams, None, ""),
        Status(&[401]),
    );
    add(
        "api-wrong-token",
        api(Origin, "GET", streams, Some("wrong-token-0123456789"), ""),
        Status(&[401]),
    );
    add(
        "api-read-token-writes",
        api(Origin, "POST", streams, Some(READER), "{}"),
        Status(&[403]),
    );
    add(
        "api-invalid-json",
        api(Origin, "POST", streams, Some(OPS), "{not json"),
        Status(BAD),
    );
    add(
        "api-unknown-field",
        api(Origin, "POST", streams, Some(OPS), r#"{"colour":"red"}"#),
        Status(BAD),
    );
    add(
        "api-bad-resolution",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"settings":{"resolutions":["4k"]}}"#,
        ),
        Status(BAD),
    );
    add(
        "api-repeated-resolution",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"settings":{"resolutions":["720p","720p"]}}"#,
        ),
        Status(BAD),
    );
    add(
        "api-bad-codec",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"settings":{"codec":"vp9"}}"#,
        ),
        Status(BAD),
    );
    add(
        "api-segment-zero",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"settings":{"segment_duration":0}}"#,
        ),
        Status(BAD),
    );
    add(
        "api-part-longer-than-segment",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"settings":{"segment_duration":2,"part_duration":3}}"#,
        ),
        Status(BAD),
    );
    add(
        "api-title-too-long",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            &format!(r#"{{"title":"{}"}}"#, "t".repeat(1000)),
        ),
        Status(BAD),
    );
    add(
        "api-control-characters",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"title":"a\u0007b"}"#,
        ),
        Status(BAD),
    );
    add(
        "api-wrong-type",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            r#"{"low_latency":"yes"}"#,
        ),
        Status(BAD),
    );
    add(
        "api-body-too-large",
        api(
            Origin,
            "POST",
            streams,
            Some(OPS),
            &format!(r#"{{"title":"{}"}}"#, "t".repeat(100_000)),
        ),
        Status(&[413]),
    );
    add(
        "api-bad-status-filter",
        api(
            Origin,
            "GET",
            &format!("{streams}?status=paused"),
            Some(OPS),
            "",
        ),
        Status(BAD),
    );
    add(
        "api-bad-limit",
        api(
            Origin,
            "GET",
            &format!("{streams}?limit=abc"),
            Some(OPS),
            "",
        ),
        Status(BAD),
    );
    add(
        "api-unknown-stream",
        api(
            Origin,
            "GET",
            &format!("{streams}/no-such-id"),
            Some(OPS),
            "",
        ),
        Status(&[404]),
    );
    add(
        "api-rotate-unknown",
        api(
            Origin,
            "POST",
            &format!("{streams}/no-such-id/rotate_key"),
            Some(OPS),
            "",
        ),
        Status(&[404]),
    );
    add(
        "api-put",
        api(
            Origin,
            "PUT",
            &format!("{streams}/{stream_id}"),
            Some(OPS),
            "{}",
        ),
        Status(&[405]),
    );
    add(
        "api-patch-bad-codec",
        api(
            Origin,
            "PATCH",
            &format!("{streams}/{stream_id}"),
            Some(OPS),
            r#"{"settings":{"codec":"vp9"}}"#,
        ),
        Status(BAD),
    );
    add(
        "api-delete-read-token",
        api(
            Origin,
            "DELETE",
            &format!("{streams}/{stream_id}"),
            Some(READER),
            "",
        ),
        Status(&[403]),
    );
    add(
        "origin-delivery-traversal",
        tcp(Origin, req("/live/%2e%2e/%2e%2e/x", "")),
        Status(BAD),
    );
    add(
        "origin-vod-traversal",
        tcp(Origin, req("/vod/../../etc/passwd", "")),
        Status(&[400, 404]),
    );
    add(
        "origin-unknown-path",
        tcp(Origin, req("/nothing/here", "")),
        Status(&[404]),
    );
    add(
        "origin-garbage",
        tcp(Origin, "\x01\x02\x03 garbage\r\n\r\n"),
        Status(BAD),
    );

    // The purge bus.
    let good_purge = r#"{"kind":"url","targets":["http://localhost/player/"]}"#;
    add(
        "bus-no-token",
        api(Bus, "POST", "/v1/purge", None, good_purge),
        Status(&[401]),
    );
    add(
        "bus-wrong-token",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some("guess-0123456789"),
            good_purge,
        ),
        Status(&[401]),
    );
    add(
        "bus-invalid-json",
        api(Bus, "POST", "/v1/purge", Some(PURGER), "{"),
        Status(BAD),
    );
    add(
        "bus-unknown-kind",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            r#"{"kind":"everything"}"#,
        ),
        Status(BAD),
    );
    add(
        "bus-unknown-field",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            r#"{"kind":"url","targets":["http://a/b"],"force":true}"#,
        ),
        Status(BAD),
    );
    add(
        "bus-unkeyable-target",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            r#"{"kind":"url","targets":["http://localhost/ok","http://localhost/a%zz"]}"#,
        ),
        Status(BAD),
    );
    add(
        "bus-no-targets",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            r#"{"kind":"prefix","targets":[]}"#,
        ),
        Status(BAD),
    );
    add(
        "bus-all-unconfirmed",
        api(Bus, "POST", "/v1/purge", Some(PURGER), r#"{"kind":"all"}"#),
        Status(BAD),
    );
    add(
        "bus-all-with-targets",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            r#"{"kind":"all","confirm_all":true,"targets":["x"]}"#,
        ),
        Status(BAD),
    );
    add(
        "bus-too-many-targets",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            &format!(
                r#"{{"kind":"tag","targets":[{}]}}"#,
                vec!["\"t\""; 2000].join(",")
            ),
        ),
        Status(BAD),
    );
    add(
        "bus-body-too-large",
        api(
            Bus,
            "POST",
            "/v1/purge",
            Some(PURGER),
            &format!(r#"{{"kind":"tag","targets":["{}"]}}"#, "t".repeat(2 << 20)),
        ),
        Status(&[413]),
    );
    add(
        "bus-wrong-method",
        api(Bus, "DELETE", "/v1/purge", Some(PURGER), ""),
        Status(&[405]),
    );
    add(
        "bus-unknown-purge",
        api(Bus, "GET", "/v1/purge/no-such-purge", Some(PURGER), ""),
        Status(&[404]),
    );
    add(
        "bus-unknown-path",
        api(Bus, "GET", "/v2/everything", Some(PURGER), ""),
        Status(&[404]),
    );
    add(
        "bus-feed-from-garbage",
        api(Bus, "GET", "/v1/feed?from=abc", None, ""),
        Status(BAD),
    );

    // The nodes' admin listeners.
    add(
        "admin-post-metrics",
        api(EdgeAdmin, "POST", "/metrics", None, ""),
        Status(&[405]),
    );
    add(
        "admin-unknown-path",
        api(EdgeAdmin, "GET", "/secrets", None, ""),
        Status(&[404]),
    );
    add(
        "admin-purge-no-token",
        api(EdgeAdmin, "POST", "/purge", None, good_purge),
        Status(&[401]),
    );
    add(
        "admin-purge-bad-json",
        api(EdgeAdmin, "POST", "/purge", Some(ADMIN), "[1,2"),
        Status(BAD),
    );
    add(
        "admin-purge-bad-target",
        api(
            EdgeAdmin,
            "POST",
            "/purge",
            Some(ADMIN),
            r#"{"kind":"url","targets":["http://localhost/a%zz"]}"#,
        ),
        Status(BAD),
    );
    add(
        "admin-body-too-large",
        api(
            EdgeAdmin,
            "POST",
            "/purge",
            Some(ADMIN),
            &"x".repeat(100_000),
        ),
        Status(&[413]),
    );

    // The shield, reached without the edge.
    add(
        "shield-no-fill-secret",
        tcp(Shield, req("/player/", "")),
        Status(&[403]),
    );
    add(
        "shield-wrong-fill-secret",
        tcp(Shield, req("/player/", "X-Cascade-Fill-Secret: wrong\r\n")),
        Status(&[403]),
    );
    add(
        "shield-garbage",
        tcp(Shield, "\x00\x00\x00\x00\r\n\r\n"),
        Status(BAD),
    );

    // Configuration, through each binary's --check.
    add(
        "config-syntax",
        Input::Config("cascade-edge", "[edge\nlisten = 1".into()),
        ConfigRefused("TOML"),
    );
    add(
        "config-unknown-field",
        Input::Config("cascade-edge", "[edge]\nlisen = \"127.0.0.1:1\"\n".into()),
        ConfigRefused("lisen"),
    );
    add(
        "config-bad-address",
        Input::Config("cascade-edge", "[edge]\nlisten = \"nowhere\"\n".into()),
        ConfigRefused("edge.listen"),
    );
    add(
        "config-bad-duration",
        Input::Config(
            "cascade-edge",
            "[edge.clients]\nheader_timeout = \"soon\"\n".into(),
        ),
        ConfigRefused("header_timeout"),
    );
    add(
        "config-out-of-range",
        Input::Config(
            "cascade-edge",
            "[edge.clients]\nwrite_timeout = \"2h\"\n".into(),
        ),
        ConfigRefused("edge.clients.write_timeout"),
    );
    add(
        "config-wrong-type",
        Input::Config("cascade-shield", "[shield]\norigins = \"one\"\n".into()),
        ConfigRefused("origins"),
    );
    add(
        "config-open-shield",
        Input::Config(
            "cascade-shield",
            "[shield]\nlisten = \"0.0.0.0:8081\"\norigins = [\"127.0.0.1:8080\"]\n".into(),
        ),
        ConfigRefused("fill_secret"),
    );
    add("config-missing-cert", Input::Config("cascade-edge", "[tls]\nself_signed = false\n[[tls.certificates]]\nhosts = [\"a.test\"]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n".into()), ConfigRefused("nonexistent"));
    add(
        "config-half-tier-tls",
        Input::Config(
            "cascade-shield",
            "[shield.tls]\ncert = \"/nonexistent.pem\"\n".into(),
        ),
        ConfigRefused("shield.tls.key"),
    );
    add(
        "config-upstream-tls-off-with-ca",
        Input::Config(
            "cascade-edge",
            "[edge.upstream_tls]\nca_file = \"/etc/hostname\"\n".into(),
        ),
        ConfigRefused("edge.upstream_tls.enabled"),
    );
    add(
        "config-upstream-tls-bad-name",
        Input::Config(
            "cascade-shield",
            "[shield.upstream_tls]\nenabled = true\nserver_name = \"https://origin\"\n".into(),
        ),
        ConfigRefused("server_name"),
    );
    add(
        "config-bad-token-scope",
        Input::Config(
            "cascade-origin",
            "[[origin.tokens]]\nname = \"x\"\ntoken = \"abcdefghijklmnop\"\nscope = \"admin\"\n"
                .into(),
        ),
        ConfigRefused("scope"),
    );
    add(
        "config-bad-database-url",
        Input::Config(
            "cascade-origin",
            "[origin]\ndatabase_url = \"mysql://x\"\n".into(),
        ),
        ConfigRefused("database_url"),
    );
    add(
        "config-bus-bad-rate",
        Input::Config(
            "cascade-purge-bus",
            "[purge_bus]\nrate_limit_per_second = -1\n".into(),
        ),
        ConfigRefused("rate_limit_per_second"),
    );
    add(
        "config-bus-short-log-retention",
        Input::Config(
            "cascade-purge-bus",
            "[purge_bus]\nlog_retention = \"5s\"\n".into(),
        ),
        ConfigRefused("log_retention"),
    );
    add(
        "config-binary-garbage",
        Input::Config("cascade-purge-bus", "\u{0}\u{1}\u{2}\u{ffff}".into()),
        ConfigRefused("TOML"),
    );
    c
}

/// A literal header field without indexing, new name, no Huffman coding.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A QUIC long-header Initial packet of `version`, padded to `size` with garbage.
fn long_header(version: u32, size: usize) -> Vec<u8> {
    let mut out = vec![0xc3];
    out.extend_from_slice(&version.to_be_bytes());
    out.push(8);
    out.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    out.push(8);
    out.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    while out.len() < size {
        out.push((out.len() * 31) as u8);
    }
    out
}

fn rtmp_message(csid: u8, type_id: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![csid, 0, 0, 0, len[1], len[2], len[3], type_id, 0, 0, 0, 0];
    for (i, chunk) in payload.chunks(128).enumerate() {
        if i > 0 {
            out.push(0xc0 | csid);
        }
        out.extend_from_slice(chunk);
    }
    out
}

fn amf0_string(s: &str) -> Vec<u8> {
    let mut out = vec![0x02];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn connect_command(app: &str) -> Vec<u8> {
    let mut out = amf0_string("connect");
    out.extend_from_slice(&[
        0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x03, 0, 3, b'a', b'p', b'p',
    ]);
    out.extend(amf0_string(app));
    out.extend_from_slice(&[0, 0, 0x09]);
    out
}

/// What an input got, in words for the failure message.
#[derive(Debug)]
enum Outcome {
    Http(u16, String),
    Closed(Vec<u8>),
    Open,
    H2(Vec<String>),
    Datagram(Vec<u8>),
    Nothing,
    Exit(Option<i32>, String),
}

fn send_tcp(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let (got, closed) = cascade_testkit::read_until_closed(&mut stream, Duration::from_secs(12));
    if let Ok(response) = cascade_testkit::parse_response(&got) {
        return Outcome::Http(response.status, response.text());
    }
    match closed {
        Some(_) => Outcome::Closed(got),
        None => Outcome::Open,
    }
}

fn tls_client() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Sends the preface, an empty SETTINGS, then `frames`; reads frames until the connection
/// ends, a GOAWAY or RST_STREAM arrives, or a response HEADERS does.
fn send_h2(addr: SocketAddr, frames: &[u8]) -> Outcome {
    let conn =
        rustls::ClientConnection::new(tls_client(), "localhost".try_into().unwrap()).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let _ = tls.write_all(&frame(4, 0, 0, &[]));
    let _ = tls.write_all(frames);
    let mut seen = Vec::new();
    let mut buffer = Vec::new();
    let started = Instant::now();
    let mut chunk = [0u8; 16384];
    while started.elapsed() < Duration::from_secs(10) {
        match tls.read(&mut chunk) {
            Ok(0) => {
                seen.push("closed".to_owned());
                break;
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                seen.push("closed".to_owned());
                break;
            }
        }
        while buffer.len() >= 9 {
            let len = u32::from_be_bytes([0, buffer[0], buffer[1], buffer[2]]) as usize;
            if buffer.len() < 9 + len {
                break;
            }
            match buffer[3] {
                7 => seen.push("goaway".to_owned()),
                3 => seen.push("rst_stream".to_owned()),
                1 => seen.push("headers".to_owned()),
                _ => {}
            }
            buffer.drain(..9 + len);
        }
        if seen.iter().any(|s| s != "closed") {
            break;
        }
    }
    Outcome::H2(seen)
}

/// An HTTP/2 request by curl (over TLS, any certificate) to the edge.
fn send_curl(addr: SocketAddr, method: &str, authority: &str, path: &str) -> Outcome {
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "--path-as-is",
            "-X",
            method,
            "--max-time",
            "10",
        ])
        .args(["-o", "-", "-w", "\n%{http_code} %{http_version}"])
        .arg("--connect-to")
        .arg(format!("{authority}:{}:{}", addr.port(), addr))
        .arg(format!("https://{authority}:{}{path}", addr.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    match tail.split_once(' ') {
        Some((status, "2")) => Outcome::Http(status.parse().unwrap_or(0), body.to_owned()),
        _ => Outcome::Closed(text.into_bytes()),
    }
}

fn send_quic(addr: SocketAddr, datagram: &[u8]) -> Outcome {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    socket.send_to(datagram, addr).unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv(&mut buf) {
        Ok(n) => Outcome::Datagram(buf[..n].to_vec()),
        Err(_) => Outcome::Nothing,
    }
}

fn send_rtmp(addr: SocketAddr, after_handshake: Option<&[u8]>) -> Outcome {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match after_handshake {
        None => {
            let _ = stream.write_all(&[0xAB; 4096]);
        }
        Some(bytes) => {
            let mut c0c1 = vec![3u8];
            c0c1.extend(std::iter::repeat_n(7u8, 1536));
            c0c1[1..9].fill(0);
            stream.write_all(&c0c1).unwrap();
            let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream.read_exact(&mut s0s1s2).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            stream.write_all(&s0s1s2[1..1537]).unwrap();
            let _ = stream.write_all(bytes);
        }
    }
    let (got, closed) = cascade_testkit::read_until_closed(&mut stream, Duration::from_secs(20));
    match closed {
        Some(_) => Outcome::Closed(got),
        None => Outcome::Open,
    }
}

fn check_config(dir: &std::path::Path, binary: &str, text: &str) -> Outcome {
    let file = dir.join(format!("bad-{binary}.toml"));
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(cascade_testkit::binary_path(binary).unwrap())
        .arg("--check")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    Outcome::Exit(
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn run(stack: &Stack, input: &Input) -> Outcome {
    match input {
        Input::Tcp(listener, bytes) => send_tcp(stack.addr(*listener), bytes),
        Input::Api(listener, method, path, token, body) => {
            match json_request(stack.addr(*listener), method, path, *token, body) {
                Ok(r) => Outcome::Http(r.status, r.text()),
                Err(_) => Outcome::Closed(Vec::new()),
            }
        }
        Input::H2(frames) => send_h2(stack.addr(Listener::EdgeTls), frames),
        Input::Quic(datagram) => send_quic(stack.addr(Listener::EdgeTls), datagram),
        Input::Rtmp(bytes) => {
            send_rtmp(stack.origin.addr("rtmp_listen").unwrap(), bytes.as_deref())
        }
        Input::Config(binary, text) => check_config(stack.dir.path(), binary, text),
        Input::Curl(method, authority, path) => {
            send_curl(stack.addr(Listener::EdgeTls), method, authority, path)
        }
    }
}

/// Why `outcome` is not what `expect` asks, if it is not.
fn mismatch(expect: Expect, outcome: &Outcome) -> Option<String> {
    let ok = match (expect, outcome) {
        (Expect::Status(allowed), Outcome::Http(status, body)) => {
            allowed.contains(status) && (*status < 400 || !body.trim().is_empty())
        }
        (Expect::H2Status(want), Outcome::Http(status, body)) => {
            *status == want && !body.trim().is_empty()
        }
        (Expect::Refused, Outcome::Closed(got)) => {
            // Nothing, or a TLS alert record: never an HTTP answer.
            got.is_empty() || got.first() == Some(&0x15)
        }
        (Expect::H2Error, Outcome::H2(seen)) => seen
            .iter()
            .any(|s| s == "goaway" || s == "rst_stream" || s == "closed"),
        (Expect::VersionNegotiation, Outcome::Datagram(d)) => {
            d.len() > 5 && d[0] & 0x80 != 0 && d[1..5] == [0, 0, 0, 0]
        }
        (Expect::Dropped, Outcome::Nothing) => true,
        (Expect::RtmpClosed(text), Outcome::Closed(got)) => {
            text.is_none_or(|t| String::from_utf8_lossy(got).contains(t))
        }
        (Expect::ConfigRefused(text), Outcome::Exit(code, out)) => {
            code.is_some_and(|c| c != 0) && out.contains(text)
        }
        _ => false,
    };
    (!ok).then(|| format!("expected {expect:?}, got {outcome:?}"))
}

#[test]
fn every_malformed_input_gets_its_answer_and_breaks_nothing() {
    let stack = Stack::start();
    // What is stored before: a stream in the registry, an object in the edge's cache, a
    // purge in the bus's log.
    let (status, stream) = {
        let r = json_request(
            stack.addr(Listener::Origin),
            "POST",
            "/api/v1/livestreams",
            Some(OPS),
            r#"{"title":"kept","settings":{"resolutions":["240p"]}}"#,
        )
        .unwrap();
        (
            r.status,
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        )
    };
    assert_eq!(status, 201, "{stream}");
    let stream_id = stream["id"].as_str().unwrap().to_owned();
    let page = stack.get(Listener::Origin, "/player/");
    assert_eq!(page.status, 200);
    let through_edge = stack.get(Listener::Edge, "/player/");
    assert_eq!(through_edge.body, page.body);
    let purge = json_request(
        stack.addr(Listener::Bus),
        "POST",
        "/v1/purge",
        Some(PURGER),
        r#"{"kind":"tag","targets":["kept"]}"#,
    )
    .unwrap();
    assert_eq!(purge.status, 202, "{}", purge.text());
    let purge_id = serde_json::from_slice::<serde_json::Value>(&purge.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let cases = cases(&stream_id);
    assert!(cases.len() >= 100, "only {} inputs", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let outcome = run(&stack, &case.input);
        if let Some(why) = mismatch(case.expect, &outcome) {
            failures.push(format!("{}: {why}", case.id));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs got the wrong answer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Every process still serves, the right bytes, and nothing stored was lost.
    for (name, process) in [
        ("origin", &stack.origin),
        ("shield", &stack.shield),
        ("edge", &stack.edge),
        ("bus", &stack.bus),
    ] {
        let health =
            cascade_testkit::http_get(process.addr("admin_listen").unwrap(), "/healthz").unwrap();
        assert_eq!(health.status, 200, "{name} is not healthy");
    }
    let again = stack.get(Listener::Edge, "/player/");
    assert_eq!(again.status, 200);
    assert_eq!(again.body, page.body, "the edge serves other bytes");
    let kept = json_request(
        stack.addr(Listener::Origin),
        "GET",
        &format!("/api/v1/livestreams/{stream_id}"),
        Some(OPS),
        "",
    )
    .unwrap();
    assert_eq!(kept.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&kept.body).unwrap()["title"],
        "kept"
    );
    let purge_status = json_request(
        stack.addr(Listener::Bus),
        "GET",
        &format!("/v1/purge/{purge_id}"),
        Some(PURGER),
        "",
    )
    .unwrap();
    assert_eq!(purge_status.status, 200, "{}", purge_status.text());
}

#[test]
fn the_docs_list_every_input() {
    let table = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bad-inputs.md"),
    )
    .unwrap();
    let missing: Vec<&str> = cases("<id>")
        .iter()
        .map(|c| c.id)
        .filter(|id| !table.contains(&format!("`{id}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/bad-inputs.md does not list: {missing:?}"
    );
}
