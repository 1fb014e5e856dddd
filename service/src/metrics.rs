//! Prometheus metrics. Every service registers into prometheus's default registry (which also
//! carries the `process_*` metrics), and the admin listener renders it at `/metrics`.

use std::sync::OnceLock;

use prometheus::{IntGaugeVec, Opts, TextEncoder};

/// Unwraps the result of defining a metric from constant names and help texts; an error is a
/// programming mistake, not something input can cause.
pub fn must<T>(result: prometheus::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("static metric definition is invalid: {e}"))
}

/// `cascade_build_info{service, version} 1` and `cascade_ready{service}`.
struct ServiceMetrics {
    build_info: IntGaugeVec,
    ready: IntGaugeVec,
}

fn service_metrics() -> &'static ServiceMetrics {
    static METRICS: OnceLock<ServiceMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let build_info = must(IntGaugeVec::new(
            Opts::new(
                "cascade_build_info",
                "Always 1; labels name the running service and its version",
            ),
            &["service", "version"],
        ));
        let ready = must(IntGaugeVec::new(
            Opts::new("cascade_ready", "1 when /readyz answers 200"),
            &["service"],
        ));
        // Registration fails only if the names are taken, which would be a programming error
        // caught by the first test; keep serving without them rather than abort.
        let _ = prometheus::register(Box::new(build_info.clone()));
        let _ = prometheus::register(Box::new(ready.clone()));
        ServiceMetrics { build_info, ready }
    })
}

/// Records which service and version this process runs.
pub fn register_service(service: &str, version: &str) {
    service_metrics()
        .build_info
        .with_label_values(&[service, version])
        .set(1);
}

/// Records the current readiness of `service`.
pub fn set_ready(service: &str, ready: bool) {
    service_metrics()
        .ready
        .with_label_values(&[service])
        .set(i64::from(ready));
}

fn certificate_expiry() -> &'static IntGaugeVec {
    static EXPIRY: OnceLock<IntGaugeVec> = OnceLock::new();
    EXPIRY.get_or_init(|| {
        let gauge = must(IntGaugeVec::new(
            Opts::new(
                "cascade_tls_certificate_expiry_timestamp_seconds",
                "When each certificate a TLS listener presents expires (Unix seconds), by the config field it comes from",
            ),
            &["certificate"],
        ));
        let _ = prometheus::register(Box::new(gauge.clone()));
        gauge
    })
}

/// Records when the certificate configured at `certificate` (a config field such as
/// `tls.certificates[0]`) expires.
pub fn set_certificate_expiry(certificate: &str, unix_seconds: i64) {
    certificate_expiry()
        .with_label_values(&[certificate])
        .set(unix_seconds);
}

/// The registry in Prometheus text format.
pub fn render() -> Result<String, prometheus::Error> {
    TextEncoder::new().encode_to_string(&prometheus::gather())
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
