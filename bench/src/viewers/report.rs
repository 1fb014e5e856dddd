//! What a viewers run measured, no IO: the per-second series, the summary with its
//! thresholds judged, the JSON report, and an HTML report with charts over time (inline SVG,
//! nothing fetched from elsewhere).

use serde::Serialize;

use super::figures::{Second, Verdict, quantile, sorted};
use super::model::ViewerStats;
use super::scenario::Threshold;

/// The whole run in figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// `h1`, `h2` or `h3`.
    pub protocol: String,
    /// The multivariant playlist's URL.
    pub url: String,
    /// Seconds run.
    pub seconds: f64,
    /// Viewers that joined.
    pub viewers: u64,
    /// Most viewers at once.
    pub peak_viewers: u32,
    /// Share of viewers that got a first frame.
    pub viewers_started: f64,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_ratio: f64,
    /// Body bytes received.
    pub egress_bytes: u64,
    /// Average egress, Mbit/s.
    pub egress_mbps: f64,
    /// Stalls after playback began.
    pub stalls: u64,
    /// Seconds stalled / (played + stalled).
    pub rebuffer_ratio: f64,
    /// Stalls per minute of viewing.
    pub stalls_per_viewer_minute: f64,
    /// Startup (join to first frame), median and 95th percentile, seconds.
    pub startup_p50: Option<f64>,
    /// 95th percentile.
    pub startup_p95: Option<f64>,
    /// Live latency over every sample (one per viewer per second), seconds.
    pub latency_p50: Option<f64>,
    /// 95th percentile.
    pub latency_p95: Option<f64>,
    /// 99th percentile.
    pub latency_p99: Option<f64>,
    /// Rendition switches.
    pub switches: u64,
    /// Share of play time per variant.
    pub variant_share: Vec<f64>,
    /// Thresholds and their verdicts.
    pub thresholds: Vec<Verdict>,
    /// Whether every threshold passed.
    pub passed: bool,
}

/// A run's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The figures.
    pub summary: Summary,
    /// Variant labels (`720p 3.2 Mbit/s`).
    pub variants: Vec<String>,
    /// Second by second.
    pub series: Vec<Second>,
    /// Each stage that held its viewers steady, judged on its own (a ramp-to-break run).
    pub steps: Vec<super::steps::Step>,
    /// The most viewers a step held with its thresholds met, before the first that missed
    /// them (`None` without steps, or if the first step missed them).
    pub capacity: Option<u32>,
    /// The same with the live-latency thresholds left out.
    pub capacity_ignoring_latency: Option<u32>,
}

/// Adds up the viewers' figures into `summary` (its scenario, protocol, URL and seconds are
/// the caller's), with `latencies` every latency sample taken.
pub fn summarise(summary: &mut Summary, viewers: &[ViewerStats], latencies: Vec<f64>) {
    summary.viewers = viewers.len() as u64;
    let started = viewers.iter().filter(|v| v.startup.is_some()).count();
    summary.viewers_started = started as f64 / viewers.len().max(1) as f64;
    summary.requests = viewers.iter().map(|v| v.requests).sum();
    summary.errors = viewers.iter().map(|v| v.errors).sum();
    summary.error_ratio = summary.errors as f64 / summary.requests.max(1) as f64;
    summary.egress_bytes = viewers.iter().map(|v| v.bytes).sum();
    summary.egress_mbps = summary.egress_bytes as f64 * 8.0 / 1e6 / summary.seconds.max(1e-9);
    summary.stalls = viewers.iter().map(|v| u64::from(v.stalls)).sum();
    let played: f64 = viewers.iter().map(|v| v.played).sum();
    let stalled: f64 = viewers.iter().map(|v| v.stalled).sum();
    summary.rebuffer_ratio = stalled / (played + stalled).max(1e-9);
    summary.stalls_per_viewer_minute = summary.stalls as f64 / (played / 60.0).max(1e-9);
    let startups = sorted(viewers.iter().filter_map(|v| v.startup).collect());
    summary.startup_p50 = quantile(&startups, 0.5);
    summary.startup_p95 = quantile(&startups, 0.95);
    let latencies = sorted(latencies);
    summary.latency_p50 = quantile(&latencies, 0.5);
    summary.latency_p95 = quantile(&latencies, 0.95);
    summary.latency_p99 = quantile(&latencies, 0.99);
    summary.switches = viewers.iter().map(|v| u64::from(v.switches)).sum();
    let slots = viewers
        .iter()
        .map(|v| v.played_by_variant.len())
        .max()
        .unwrap_or(0);
    summary.variant_share = (0..slots)
        .map(|i| {
            viewers
                .iter()
                .filter_map(|v| v.played_by_variant.get(i))
                .sum::<f64>()
                / played.max(1e-9)
        })
        .collect();
}

/// The figure a threshold names (`NaN` when the run has none, which fails any comparison).
pub fn metric(summary: &Summary, name: &str) -> f64 {
    let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    match name {
        "rebuffer_ratio" => summary.rebuffer_ratio,
        "errors" => summary.error_ratio,
        "startup_p95" => or_nan(summary.startup_p95),
        "p50_live_latency" => or_nan(summary.latency_p50),
        "p95_live_latency" => or_nan(summary.latency_p95),
        "p99_live_latency" => or_nan(summary.latency_p99),
        "stalls_per_viewer_minute" => summary.stalls_per_viewer_minute,
        "viewers_started" => summary.viewers_started,
        _ => f64::NAN,
    }
}

/// Judges `thresholds` against the summary; a run with no viewer that played fails.
pub fn judge(summary: &mut Summary, thresholds: &[Threshold]) {
    summary.thresholds = thresholds
        .iter()
        .map(|t| {
            let actual = metric(summary, &t.metric);
            Verdict {
                threshold: t.line.clone(),
                actual,
                passed: t.passes(actual),
            }
        })
        .collect();
    summary.passed = summary.viewers_started > 0.0 && summary.thresholds.iter().all(|v| v.passed);
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
];

/// One line chart: each series is (label, points as (t, value)).
fn chart(title: &str, unit: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, bottom) = (720.0, 220.0, 56.0, 28.0);
    let t_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(t, _)| *t))
        .fold(1.0f64, f64::max);
    let v_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |t: f64| left + t / t_max * (w - left - 10.0);
    let y = |v: f64| (h - bottom) - v / v_max * (h - bottom - 10.0);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\">",
        escape(title)
    );
    for i in 0..=4 {
        let v = v_max / 1.1 * f64::from(i) / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            w - 10.0,
            left - 4.0,
            y(v) + 4.0,
            format_value(v, unit),
            y = y(v)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{t_max:.0} s</text>",
        w - 10.0,
        h - 8.0
    ));
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{colour}\" class=\"legend\">{}</text>",
            path.join(" "),
            left + 8.0 + 150.0 * i as f64,
            14,
            escape(label)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

fn format_value(v: f64, unit: &str) -> String {
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.2} {unit}"))
}

/// The report as a standalone HTML page.
pub fn html(report: &Report) -> String {
    let s = &report.summary;
    let series = &report.series;
    let points = |f: &dyn Fn(&Second) -> Option<f64>| -> Vec<(f64, f64)> {
        series
            .iter()
            .filter_map(|x| f(x).map(|v| (f64::from(x.t), v)))
            .collect()
    };
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>cascade-bench viewers: {}</h1><p>{} over {}, {:.0} s, {} viewers (peak {}). <strong class=\"{}\">{}</strong></p>",
        escape(&s.scenario),
        escape(&s.url),
        escape(&s.protocol),
        s.seconds,
        s.viewers,
        s.peak_viewers,
        if s.passed { "pass" } else { "fail" },
        if s.passed { "PASSED" } else { "FAILED" }
    ));
    body.push_str("<table><tr><th>figure</th><th>value</th></tr>");
    for (name, value) in [
        (
            "viewers that played",
            format!("{:.1} %", s.viewers_started * 100.0),
        ),
        (
            "startup p50 / p95",
            format!(
                "{} / {}",
                fmt_opt(s.startup_p50, "s"),
                fmt_opt(s.startup_p95, "s")
            ),
        ),
        (
            "live latency p50 / p95 / p99",
            format!(
                "{} / {} / {}",
                fmt_opt(s.latency_p50, "s"),
                fmt_opt(s.latency_p95, "s"),
                fmt_opt(s.latency_p99, "s")
            ),
        ),
        (
            "stalls",
            format!(
                "{} ({:.3} per viewer-minute)",
                s.stalls, s.stalls_per_viewer_minute
            ),
        ),
        (
            "rebuffer ratio",
            format!("{:.3} %", s.rebuffer_ratio * 100.0),
        ),
        (
            "requests / errors",
            format!(
                "{} / {} ({:.3} %)",
                s.requests,
                s.errors,
                s.error_ratio * 100.0
            ),
        ),
        ("egress", format!("{:.1} Mbit/s average", s.egress_mbps)),
        ("rendition switches", s.switches.to_string()),
    ] {
        body.push_str(&format!(
            "<tr><td>{name}</td><td>{}</td></tr>",
            escape(&value)
        ));
    }
    body.push_str("</table>");
    if !s.thresholds.is_empty() {
        body.push_str("<table><tr><th>threshold</th><th>measured</th><th></th></tr>");
        for v in &s.thresholds {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{:.4}</td><td class=\"{}\">{}</td></tr>",
                escape(&v.threshold),
                v.actual,
                if v.passed { "pass" } else { "fail" },
                if v.passed { "pass" } else { "fail" }
            ));
        }
        body.push_str("</table>");
    }
    if !report.steps.is_empty() {
        let words = |c| super::steps::describe_capacity(&report.steps, c);
        body.push_str(&format!(
            "<p>Capacity: <strong>{}</strong> viewers with every step threshold met, {} ignoring live latency.</p>",
            words(report.capacity),
            words(report.capacity_ignoring_latency)
        ));
        body.push_str("<table><tr><th>step</th><th>seconds</th><th>rebuffer</th><th>latency p95</th><th>errors</th><th></th></tr>");
        for step in &report.steps {
            body.push_str(&format!(
                "<tr><td>{} viewers</td><td>{}–{}</td><td>{:.3} %</td><td>{}</td><td>{:.3} %</td><td class=\"{}\">{}</td></tr>",
                step.viewers,
                step.from_second,
                step.to_second,
                step.rebuffer_ratio * 100.0,
                fmt_opt(step.latency_p95, "s"),
                step.error_ratio * 100.0,
                if step.passed { "pass" } else { "fail" },
                if step.passed { "pass" } else { "fail" }
            ));
        }
        body.push_str("</table>");
    }
    body.push_str(&chart(
        "Viewers",
        "",
        &[
            ("joined".into(), points(&|x| Some(f64::from(x.viewers)))),
            ("playing".into(), points(&|x| Some(f64::from(x.playing)))),
            ("stalled".into(), points(&|x| Some(f64::from(x.stalled)))),
        ],
    ));
    body.push_str(&chart(
        "Throughput",
        "",
        &[
            (
                "Mbit/s".into(),
                points(&|x| Some(x.bytes as f64 * 8.0 / 1e6)),
            ),
            ("requests/s".into(), points(&|x| Some(x.requests as f64))),
        ],
    ));
    body.push_str(&chart(
        "Live latency, s",
        " s",
        &[
            ("p50".into(), points(&|x| x.latency_p50)),
            ("p95".into(), points(&|x| x.latency_p95)),
        ],
    ));
    body.push_str(&chart(
        "Stalls begun per second",
        "",
        &[("stalls".into(), points(&|x| Some(f64::from(x.new_stalls))))],
    ));
    let mix: Vec<(String, Vec<(f64, f64)>)> = report
        .variants
        .iter()
        .enumerate()
        .map(|(i, label)| {
            (
                label.clone(),
                points(&|x| x.variants.get(i).map(|n| f64::from(*n))),
            )
        })
        .collect();
    body.push_str(&chart("Rendition mix (viewers per variant)", "", &mix));
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cascade-bench viewers: {}</title><style>{}</style></head><body><main>{body}</main></body></html>\n",
        escape(&s.scenario),
        "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#fff;color:#222}main{max-width:760px;margin:0 auto;padding:16px}table{border-collapse:collapse;margin:12px 0}td,th{padding:2px 14px 2px 0;text-align:left}th{color:#666;font-weight:normal}.pass{color:#2a7a2a}.fail{color:#b00}figure{margin:18px 0}figcaption{font-weight:bold}.grid{stroke:#ddd}.axis{font-size:11px;fill:#666}.legend{font-size:12px}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewers::scenario::Threshold;

    fn viewer(startup: Option<f64>, played: f64, stalled: f64, stalls: u32) -> ViewerStats {
        ViewerStats {
            startup,
            stalls,
            stalled,
            played,
            played_by_variant: vec![played * 0.75, played * 0.25],
            requests: 100,
            errors: 1,
            bytes: 1_000_000,
            ..ViewerStats::default()
        }
    }

    #[test]
    fn the_summary_adds_up_the_viewers() {
        let mut s = Summary {
            seconds: 10.0,
            ..Summary::default()
        };
        let viewers = [
            viewer(Some(0.5), 100.0, 1.0, 1),
            viewer(Some(1.5), 100.0, 0.0, 0),
            viewer(None, 0.0, 0.0, 0),
            viewer(Some(1.0), 100.0, 0.0, 0),
        ];
        summarise(&mut s, &viewers, (1..=100).map(f64::from).collect());
        assert_eq!(s.viewers, 4);
        assert!((s.viewers_started - 0.75).abs() < 1e-12);
        assert_eq!((s.requests, s.errors), (400, 4));
        assert!((s.error_ratio - 0.01).abs() < 1e-12);
        assert!((s.egress_mbps - 3.2).abs() < 1e-9);
        assert!((s.rebuffer_ratio - 1.0 / 301.0).abs() < 1e-12);
        assert!((s.stalls_per_viewer_minute - 0.2).abs() < 1e-12);
        assert_eq!(s.startup_p50, Some(1.0));
        assert_eq!(s.startup_p95, Some(1.5));
        assert_eq!(
            (s.latency_p50, s.latency_p95, s.latency_p99),
            (Some(50.0), Some(95.0), Some(99.0))
        );
        assert!((s.variant_share[0] - 0.75).abs() < 1e-12);

        judge(&mut s, &[Threshold::parse("rebuffer_ratio < 1%").unwrap()]);
        assert!(s.passed);
        judge(
            &mut s,
            &[
                Threshold::parse("errors < 0.1%").unwrap(),
                Threshold::parse("rebuffer_ratio < 1%").unwrap(),
            ],
        );
        assert!(!s.passed);
        assert!(!s.thresholds[0].passed && s.thresholds[1].passed);
    }

    #[test]
    fn a_run_where_nobody_played_fails_and_missing_figures_fail_their_threshold() {
        let mut s = Summary::default();
        summarise(&mut s, &[viewer(None, 0.0, 0.0, 0)], Vec::new());
        judge(
            &mut s,
            &[Threshold::parse("p95_live_latency < 2s").unwrap()],
        );
        assert!(s.thresholds[0].actual.is_nan());
        assert!(!s.thresholds[0].passed && !s.passed);
        judge(&mut s, &[]);
        assert!(!s.passed, "no viewer played");
    }

    #[test]
    fn the_html_report_escapes_names_and_draws_each_chart() {
        let report = Report {
            summary: Summary {
                scenario: "<smoke>".into(),
                passed: true,
                ..Summary::default()
            },
            variants: vec!["720p".into(), "360p".into()],
            series: (0..5)
                .map(|t| Second {
                    t,
                    viewers: t,
                    latency_p50: Some(1.2),
                    variants: vec![t, 1],
                    ..Second::default()
                })
                .collect(),
            ..Report::default()
        };
        let page = html(&report);
        assert!(page.contains("&lt;smoke&gt;") && !page.contains("<smoke>"));
        assert_eq!(page.matches("<svg").count(), 5);
        assert!(page.contains("PASSED"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("Capacity"), "no steps, no capacity");
    }

    #[test]
    fn the_html_report_shows_each_step_and_the_capacity() {
        let step = |viewers, passed| crate::viewers::steps::Step {
            viewers,
            from_second: 6,
            to_second: 30,
            viewer_seconds: 100,
            rebuffer_ratio: if passed { 0.0 } else { 0.05 },
            error_ratio: 0.0,
            latency_p50: Some(1.1),
            latency_p95: Some(1.4),
            latency_p99: Some(1.5),
            thresholds: Vec::new(),
            passed,
        };
        let report = Report {
            steps: vec![step(20, true), step(40, false)],
            capacity: Some(20),
            capacity_ignoring_latency: Some(20),
            ..Report::default()
        };
        let page = html(&report);
        assert!(page.contains("Capacity: <strong>20</strong>"), "{page}");
        assert!(page.contains("<td>20 viewers</td>") && page.contains("<td>40 viewers</td>"));
        assert!(page.contains("5.000 %"));
    }
}
