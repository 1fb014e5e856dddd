//! Cascade's RTMP ingest protocol, without IO: a publisher's connection after the handshake.
//! The bytes pass the [`limits`] first, then `rml_rtmp`'s server session, whose events the
//! origin's ingest shell acts on.
//!
//! The session library panics on some malformed messages (an AMF0 command with fewer than
//! three values, found by the `rtmp` fuzz target). [`PublisherSession`] turns such a panic
//! into an error for that connection alone; the session is not used again afterwards.

pub mod limits;

use std::panic::{AssertUnwindSafe, catch_unwind};

use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionResult};

use limits::{Bounds, ChunkLimits, LimitError};

/// Why a publisher's connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    /// The chunk stream passed a limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The session refused the input.
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    /// The session library panicked on the input.
    #[error("RTMP input the session library could not read")]
    Unreadable,
}

/// One publisher's RTMP session, behind the chunk limits.
pub struct PublisherSession {
    limits: ChunkLimits,
    session: ServerSession,
    broken: bool,
}

impl PublisherSession {
    /// A session for a connection whose handshake is done; the results are what to send first.
    pub fn new(bounds: Bounds) -> Result<(Self, Vec<ServerSessionResult>), RtmpError> {
        let (session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| RtmpError::Protocol(format!("{e:?}")))?;
        let this = Self {
            limits: ChunkLimits::new(bounds),
            session,
            broken: false,
        };
        Ok((this, initial))
    }

    /// Reads the next bytes from the publisher.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Vec<ServerSessionResult>, RtmpError> {
        self.limits.check(bytes)?;
        self.guarded(|session| session.handle_input(bytes))
    }

    /// Accepts request `request_id` (connect or publish).
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<ServerSessionResult>, RtmpError> {
        self.guarded(|session| session.accept_request(request_id))
    }

    /// Rejects request `request_id` with an RTMP status `code` and a description.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        why: &str,
    ) -> Result<Vec<ServerSessionResult>, RtmpError> {
        self.guarded(|session| session.reject_request(request_id, code, why))
    }

    fn guarded<E: std::fmt::Debug>(
        &mut self,
        call: impl FnOnce(&mut ServerSession) -> Result<Vec<ServerSessionResult>, E>,
    ) -> Result<Vec<ServerSessionResult>, RtmpError> {
        if self.broken {
            return Err(RtmpError::Unreadable);
        }
        match catch_unwind(AssertUnwindSafe(|| call(&mut self.session))) {
            Ok(Ok(results)) => Ok(results),
            Ok(Err(e)) => Err(RtmpError::Protocol(format!("{e:?}"))),
            Err(_) => {
                self.broken = true;
                Err(RtmpError::Unreadable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::sessions::ServerSessionEvent;

    /// An AMF0 command message (type 20) on chunk stream 3 holding `amf0`.
    fn command(amf0: &[u8]) -> Vec<u8> {
        let len = (amf0.len() as u32).to_be_bytes();
        let mut out = vec![0x03, 0, 0, 0, len[1], len[2], len[3], 20, 0, 0, 0, 0];
        out.extend_from_slice(amf0);
        out
    }

    fn amf0_string(s: &str) -> Vec<u8> {
        let mut out = vec![0x02];
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn a_connect_is_raised_and_can_be_accepted() {
        let (mut session, _) = PublisherSession::new(Bounds::default()).unwrap();
        let mut amf0 = amf0_string("connect");
        amf0.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]); // number 1
        amf0.extend_from_slice(&[0x03]); // object { app: "live" }
        amf0.extend_from_slice(&[0, 3, b'a', b'p', b'p']);
        amf0.extend(amf0_string("live"));
        amf0.extend_from_slice(&[0, 0, 0x09]);
        let results = session.input(&command(&amf0)).unwrap();
        let request_id = results
            .iter()
            .find_map(|r| match r {
                ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                    request_id,
                    app_name,
                }) if app_name == "live" => Some(*request_id),
                _ => None,
            })
            .expect("a connection request");
        assert!(!session.accept(request_id).unwrap().is_empty());
    }

    #[test]
    fn a_command_the_library_panics_on_closes_only_this_session() {
        // Found by the rtmp fuzz target: a command of one AMF0 value made rml_rtmp index past
        // the end of its argument list.
        let (mut session, _) = PublisherSession::new(Bounds::default()).unwrap();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let first = session.input(&command(&amf0_string("connect")));
        std::panic::set_hook(previous);
        assert!(matches!(first, Err(RtmpError::Unreadable)));
        assert!(matches!(session.input(&[0x03]), Err(RtmpError::Unreadable)));
    }
}
