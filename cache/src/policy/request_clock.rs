//! When a client's request must have arrived, worked out from the bytes of its connection.
//!
//! Pingora bounds only each single read (60 s), which a client defeats by sending a byte now
//! and then. A [`RequestClock`] follows what a connection reads and writes and says by when the
//! request now being received must be complete: [`HeaderClock`] for HTTP/1 (a header ends at
//! its blank line), [`FrameClock`] for HTTP/2 (the connection preface, each frame, and each
//! header block split over CONTINUATION frames). No IO and no clock of their own: callers pass
//! the time, and the IO wrapper in the server's `downstream` module acts on [`RequestClock::due`].

use std::time::{Duration, Instant};

/// Follows one client connection and knows when the request being received is due.
pub trait RequestClock {
    /// When what is being received must be complete; `None` when nothing is awaited.
    fn due(&self) -> Option<Instant>;
    /// Bytes read from the client. `now` is called at most once, and only when these bytes
    /// start something that must be complete in time.
    fn on_read(&mut self, bytes: &[u8], now: impl FnOnce() -> Instant);
    /// Some of an answer was written to the client.
    fn on_write(&mut self);
}

/// Where a connection is in its request/response cycle, as seen from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request header that must be complete by `due`.
    Header {
        due: Instant,
        /// Whether anything other than line ends has arrived (blank lines before a request
        /// line are tolerated and do not end the header).
        started: bool,
        /// Whether the current line has had anything other than `\r`.
        line_has_content: bool,
    },
    /// The header is complete; the request is being answered.
    Answering,
    /// Part of the answer has been written: the next bytes read begin a new request.
    BetweenRequests,
}

/// Follows a connection's reads and writes and says by when the current request header must
/// have arrived. No IO, no clock of its own: callers pass the time.
#[derive(Debug)]
pub struct HeaderClock {
    limit: Duration,
    phase: Phase,
}

impl HeaderClock {
    /// A new connection, whose first request header is due `limit` after `opened`.
    pub fn new(limit: Duration, opened: Instant) -> Self {
        Self {
            limit,
            phase: Phase::Header {
                due: opened + limit,
                started: false,
                line_has_content: false,
            },
        }
    }
}

impl RequestClock for HeaderClock {
    /// When the header being received must be complete; `None` when no header is awaited.
    fn due(&self) -> Option<Instant> {
        match self.phase {
            Phase::Header { due, .. } => Some(due),
            Phase::Answering | Phase::BetweenRequests => None,
        }
    }

    /// Bytes read from the client. `now` is called only when they begin a new request, so
    /// the reads of a request in progress cost no clock call.
    fn on_read(&mut self, bytes: &[u8], now: impl FnOnce() -> Instant) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::BetweenRequests {
            self.phase = Phase::Header {
                due: now() + self.limit,
                started: false,
                line_has_content: false,
            };
        }
        let Phase::Header {
            due,
            mut started,
            mut line_has_content,
        } = self.phase
        else {
            // A body, or bytes sent ahead while the answer is prepared: not a header.
            return;
        };
        for &byte in bytes {
            match byte {
                b'\n' if started && !line_has_content => {
                    self.phase = Phase::Answering;
                    return;
                }
                b'\n' => line_has_content = false,
                b'\r' => {}
                _ => {
                    started = true;
                    line_has_content = true;
                }
            }
        }
        self.phase = Phase::Header {
            due,
            started,
            line_has_content,
        };
    }

    /// Some of an answer was written to the client.
    fn on_write(&mut self) {
        if self.phase == Phase::Answering {
            self.phase = Phase::BetweenRequests;
        }
    }
}

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const PREFACE_LEN: usize = 24;
/// Every HTTP/2 frame starts with a 9-byte header: length (24 bits), type, flags, stream.
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;

/// The HTTP/2 counterpart of [`HeaderClock`]. Something is awaited while the preface is
/// incomplete, while a frame has begun but not ended, and while a header block is open (a
/// HEADERS frame without END_HEADERS, until the CONTINUATION that carries it); it must be
/// complete `limit` after it began. A connection between frames is idle, which is the
/// keep-alive limit's business, not this clock's.
#[derive(Debug)]
pub struct FrameClock {
    limit: Duration,
    preface_left: usize,
    /// The header of the frame being received, as far as it has arrived.
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// Payload bytes of the current frame still to come (once its header is complete).
    payload_left: usize,
    header_block_open: bool,
    due: Option<Instant>,
}

impl FrameClock {
    /// A connection that has just finished its TLS handshake: the preface is due `limit` after
    /// `opened`.
    pub fn new(limit: Duration, opened: Instant) -> Self {
        Self {
            limit,
            preface_left: PREFACE_LEN,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            payload_left: 0,
            header_block_open: false,
            due: Some(opened + limit),
        }
    }

    fn frame_complete(&mut self) {
        let kind = self.head[3];
        let end_headers = self.head[4] & FLAG_END_HEADERS != 0;
        match kind {
            FRAME_HEADERS => self.header_block_open = !end_headers,
            FRAME_CONTINUATION if end_headers => self.header_block_open = false,
            _ => {}
        }
        self.head_len = 0;
    }

    fn awaiting(&self) -> bool {
        self.preface_left > 0 || self.head_len > 0 || self.header_block_open
    }
}

impl RequestClock for FrameClock {
    fn due(&self) -> Option<Instant> {
        self.due
    }

    fn on_read(&mut self, mut bytes: &[u8], now: impl FnOnce() -> Instant) {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let taken = self.preface_left.min(bytes.len());
                self.preface_left -= taken;
                bytes = &bytes[taken..];
            } else if self.head_len < FRAME_HEADER_LEN {
                let taken = (FRAME_HEADER_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + taken].copy_from_slice(&bytes[..taken]);
                self.head_len += taken;
                bytes = &bytes[taken..];
                if self.head_len == FRAME_HEADER_LEN {
                    self.payload_left = usize::from(self.head[0]) << 16
                        | usize::from(self.head[1]) << 8
                        | usize::from(self.head[2]);
                    if self.payload_left == 0 {
                        self.frame_complete();
                    }
                }
            } else {
                let taken = self.payload_left.min(bytes.len());
                self.payload_left -= taken;
                bytes = &bytes[taken..];
                if self.payload_left == 0 {
                    self.frame_complete();
                }
            }
        }
        if !self.awaiting() {
            self.due = None;
        } else if self.due.is_none() {
            self.due = Some(now() + self.limit);
        }
    }

    fn on_write(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn first_header_is_due_from_the_connection_start() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
        // Trickled bytes do not move the deadline.
        clock.on_read(b"GET / HT", || at(t0, 4));
        clock.on_read(b"TP/1.1\r\nHost: a\r\n", || at(t0, 8));
        assert_eq!(clock.due(), Some(at(t0, 10)));
        clock.on_read(b"\r\n", || at(t0, 9));
        assert_eq!(clock.due(), None, "a complete header is no longer timed");
    }

    #[test]
    fn header_end_split_across_reads_and_bare_line_feeds() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET / HTTP/1.1\r\nHost: a\r", || t0);
        clock.on_read(b"\n\r", || t0);
        assert!(clock.due().is_some());
        clock.on_read(b"\n", || t0);
        assert_eq!(clock.due(), None);

        let mut lenient = HeaderClock::new(LIMIT, t0);
        lenient.on_read(b"GET / HTTP/1.1\nHost: a\n\n", || t0);
        assert_eq!(lenient.due(), None);
    }

    #[test]
    fn blank_lines_before_the_request_line_do_not_end_the_header() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"\r\n\r\n\n\n", || t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
        clock.on_read(b"GET / HTTP/1.1\r\n", || t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
    }

    #[test]
    fn next_request_is_timed_from_its_first_byte() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET /a HTTP/1.1\r\n\r\n", || at(t0, 1));
        // Reads while answering (the proxy watching for a disconnect) start nothing.
        clock.on_read(b"GET /b", || at(t0, 2));
        assert_eq!(clock.due(), None);
        clock.on_write();
        clock.on_write();
        assert_eq!(clock.due(), None, "idle keep-alive time is not header time");
        clock.on_read(b"GET /c HTTP/1.1\r\n", || at(t0, 100));
        assert_eq!(clock.due(), Some(at(t0, 110)));
        clock.on_read(b"\r\n", || at(t0, 101));
        assert_eq!(clock.due(), None);
    }

    #[test]
    fn a_write_before_the_header_completes_does_not_disarm_it() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET / HTTP/1.1\r\n", || t0);
        clock.on_write();
        assert_eq!(clock.due(), Some(at(t0, 10)));
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// A frame of `kind` with `flags` on stream 1 and `payload`.
    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn the_preface_is_due_from_the_handshake_and_whole_frames_are_not_timed() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(LIMIT, t0);
        clock.on_read(&PREFACE[..10], || at(t0, 5));
        assert_eq!(
            clock.due(),
            Some(at(t0, 10)),
            "a trickled preface keeps its deadline"
        );
        let mut rest = PREFACE[10..].to_vec();
        rest.extend(frame(0x4, 0, &[0, 3, 0, 0, 0, 100]));
        clock.on_read(&rest, || at(t0, 6));
        assert_eq!(clock.due(), None, "between frames the connection is idle");
        let mut frames = frame(0x8, 0, &[0, 0, 1, 0]);
        frames.extend(frame(FRAME_HEADERS, 0x4 | 0x1, &[0x82, 0x87]));
        frames.extend(frame(0x4, 0x1, &[]));
        clock.on_read(&frames, || panic!("whole frames need no clock"));
        assert_eq!(clock.due(), None);
    }

    #[test]
    fn a_frame_split_across_reads_is_due_from_its_first_bytes() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(LIMIT, t0);
        clock.on_read(PREFACE, || t0);
        let headers = frame(FRAME_HEADERS, 0x4, &[0x82, 0x87, 0x84]);
        clock.on_read(&headers[..4], || at(t0, 100));
        assert_eq!(clock.due(), Some(at(t0, 110)));
        clock.on_read(&headers[4..11], || at(t0, 105));
        assert_eq!(clock.due(), Some(at(t0, 110)), "the deadline does not move");
        clock.on_read(&headers[11..], || at(t0, 106));
        assert_eq!(clock.due(), None);
    }

    #[test]
    fn a_header_block_stays_due_until_the_continuation_that_ends_it() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(LIMIT, t0);
        clock.on_read(PREFACE, || t0);
        clock.on_read(&frame(FRAME_HEADERS, 0x1, &[0x82]), || at(t0, 50));
        assert_eq!(clock.due(), Some(at(t0, 60)), "HEADERS without END_HEADERS");
        clock.on_read(&frame(FRAME_CONTINUATION, 0, &[0x87]), || at(t0, 55));
        assert_eq!(
            clock.due(),
            Some(at(t0, 60)),
            "a CONTINUATION that does not end it"
        );
        clock.on_read(&frame(FRAME_CONTINUATION, 0x4, &[0x84]), || at(t0, 56));
        assert_eq!(clock.due(), None);
        // The next block is timed from its own start.
        clock.on_read(&frame(FRAME_HEADERS, 0, &[0x82]), || at(t0, 200));
        assert_eq!(clock.due(), Some(at(t0, 210)));
    }

    #[test]
    fn nothing_read_changes_nothing() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(LIMIT, t0);
        clock.on_read(PREFACE, || t0);
        clock.on_read(&[], || panic!("no bytes, no clock"));
        clock.on_write();
        assert_eq!(clock.due(), None);
    }
}
