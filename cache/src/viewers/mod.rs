//! What only a viewer-facing tier needs: HTTP/3 over QUIC ([`http3`], with the request bridge
//! in [`h3_session`]) driving the same proxy as HTTP/1.1 and HTTP/2. The certificates it
//! presents come from `cascade_service::tls`.

pub mod h3_session;
pub mod http3;
