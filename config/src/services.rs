//! `[origin]`, `[shield]`, `[edge]`, `[purge_bus]`: where each server listens and how it stops.
//! Later capabilities add their own fields to these sections.

use serde::{Deserialize, Serialize};

use crate::validate::Problems;
use crate::values::{HumanDuration, ListenAddr};

/// The longest graceful shutdown we accept: a stuck drain must not hold a deploy for ever.
pub const MAX_SHUTDOWN_GRACE: HumanDuration = HumanDuration::secs(600);

/// What the shared runtime needs from any server's section.
pub trait ServiceSection {
    /// Section name in the file, e.g. `edge`.
    const NAME: &'static str;
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`).
    fn admin_listen(&self) -> ListenAddr;
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    fn shutdown_grace(&self) -> HumanDuration;
    /// Every listener of the service with its field name, for clash checks and printing.
    fn listeners(&self) -> Vec<(&'static str, ListenAddr)>;
}

/// `[origin]`: ingest, packaging and delivery of live and on-demand streams.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Delivery (HLS, DASH) and the management API.
    pub listen: ListenAddr,
    /// RTMP ingest.
    pub rtmp_listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8080),
            rtmp_listen: ListenAddr::loopback(1935),
            admin_listen: ListenAddr::loopback(9080),
            shutdown_grace: HumanDuration::secs(10),
        }
    }
}

/// `[shield]`: the parent cache tier between edges and the origin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShieldConfig {
    /// HTTP listener that edges fill from.
    pub listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8081),
            admin_listen: ListenAddr::loopback(9081),
            shutdown_grace: HumanDuration::secs(10),
        }
    }
}

/// `[edge]`: the viewer-facing cache.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Plain HTTP listener.
    pub listen: ListenAddr,
    /// HTTPS (TCP) and HTTP/3 (UDP) listener.
    pub tls_listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8000),
            tls_listen: ListenAddr::loopback(8443),
            admin_listen: ListenAddr::loopback(9000),
            shutdown_grace: HumanDuration::secs(10),
        }
    }
}

/// `[purge_bus]`: the operators' purge API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PurgeBusConfig {
    /// Purge API listener.
    pub listen: ListenAddr,
    /// Admin listener.
    pub admin_listen: ListenAddr,
    /// Graceful shutdown bound.
    pub shutdown_grace: HumanDuration,
}

impl Default for PurgeBusConfig {
    fn default() -> Self {
        Self {
            listen: ListenAddr::loopback(8090),
            admin_listen: ListenAddr::loopback(9090),
            shutdown_grace: HumanDuration::secs(10),
        }
    }
}

macro_rules! service_section {
    ($ty:ty, $name:literal, [$($field:ident),*]) => {
        impl ServiceSection for $ty {
            const NAME: &'static str = $name;
            fn admin_listen(&self) -> ListenAddr {
                self.admin_listen
            }
            fn shutdown_grace(&self) -> HumanDuration {
                self.shutdown_grace
            }
            fn listeners(&self) -> Vec<(&'static str, ListenAddr)> {
                vec![$((stringify!($field), self.$field)),*]
            }
        }
    };
}

service_section!(OriginConfig, "origin", [listen, rtmp_listen, admin_listen]);
service_section!(ShieldConfig, "shield", [listen, admin_listen]);
service_section!(EdgeConfig, "edge", [listen, tls_listen, admin_listen]);
service_section!(PurgeBusConfig, "purge_bus", [listen, admin_listen]);

/// Checks that apply to every server section: distinct listeners, a sane grace period.
pub(crate) fn validate_service<S: ServiceSection>(section: &S, p: &mut Problems) {
    let listeners = section.listeners();
    for (i, (field, addr)) in listeners.iter().enumerate() {
        if let Some((earlier, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
            p.push(
                format!("{}.{field}", S::NAME),
                format!(
                    "{addr} is also {}.{earlier}; give each listener its own port",
                    S::NAME
                ),
            );
        }
    }
    if section.shutdown_grace() > MAX_SHUTDOWN_GRACE {
        p.push(
            format!("{}.shutdown_grace", S::NAME),
            format!(
                "{} is longer than the {MAX_SHUTDOWN_GRACE} maximum",
                section.shutdown_grace()
            ),
        );
    }
}
