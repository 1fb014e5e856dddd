//! Following the embedded bus over HTTP: long-polls its feed, applies what it returns, and
//! posts reports back.

use std::time::Duration;

use async_trait::async_trait;
use hyper::Method;

use crate::client;
use crate::node::{FeedPage, Node, ReportSink};
use crate::report::NodeReport;

/// Longest a feed request waits at the bus for a new purge.
const FEED_WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn follow(url: &str, token: Option<&str>, node: &Node) {
    let mut epoch = String::new();
    let mut next = 0usize;
    loop {
        let wait = if node.is_caught_up() {
            FEED_WAIT
        } else {
            Duration::ZERO
        };
        let path = format!(
            "/v1/feed?from={next}&wait_ms={}&epoch={epoch}",
            wait.as_millis()
        );
        let answer = client::send(
            url,
            Method::GET,
            &path,
            token,
            None,
            wait + Duration::from_secs(10),
        )
        .await;
        let page = match answer {
            Ok(a) if a.is_success() => serde_json::from_slice::<FeedPage>(&a.body)
                .map_err(|e| format!("{url}/v1/feed: unreadable page: {e}")),
            Ok(a) => Err(format!(
                "{url}/v1/feed answered {}: {}",
                a.status,
                a.text().trim()
            )),
            Err(e) => Err(e),
        };
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "following the purge bus; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if page.epoch != epoch {
            if !epoch.is_empty() {
                tracing::info!("the purge bus restarted; following its new log from the start");
            }
            epoch = page.epoch;
            if next != 0 {
                next = 0;
                continue;
            }
        }
        if next < page.first {
            tracing::warn!(
                missed = page.first - next,
                "the purge bus trimmed purges this node had not read (purge_bus.log_max_entries or log_retention); objects cached before them may be stale"
            );
        }
        let mut reports = Vec::with_capacity(page.messages.len());
        for message in &page.messages {
            match message.request.validate() {
                Ok(()) => reports.extend(node.apply(message)),
                Err(e) => {
                    node.skipped();
                    tracing::warn!(purge = %message.id, error = %e, "skipping an invalid purge from the bus");
                }
            }
        }
        next = page.next;
        node.report(reports).await;
        if next >= page.end {
            node.caught_up();
        }
    }
}

/// Reports to an embedded bus's `POST /v1/reports`.
pub(crate) struct HttpReports {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
}

#[async_trait]
impl ReportSink for HttpReports {
    async fn send(&self, reports: Vec<NodeReport>) {
        let body = serde_json::to_vec(&reports).unwrap_or_default();
        match client::send(
            &self.url,
            Method::POST,
            "/v1/reports",
            self.token.as_deref(),
            Some(body),
            Duration::from_secs(5),
        )
        .await
        {
            Ok(a) if a.is_success() => {}
            Ok(a) => {
                tracing::warn!(status = a.status, answer = %a.text().trim(), "the purge bus refused reports")
            }
            Err(e) => tracing::debug!(error = %e, "could not send reports to the purge bus"),
        }
    }
}
