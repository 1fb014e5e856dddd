//! What only a viewer-facing tier needs: HTTPS certificates picked by SNI and reloaded from
//! disk ([`tls`]), and HTTP/3 over QUIC ([`http3`], with the request bridge in
//! [`h3_session`]) driving the same proxy as HTTP/1.1 and HTTP/2.

pub mod h3_session;
pub mod http3;
pub mod tls;
