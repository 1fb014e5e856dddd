//! `POST /purge` on the admin listener: applies a purge to this node's cache at once. Same body
//! as the purge bus (`{"kind": "url|prefix|host|tag|all", "targets": [...], "action":
//! "delete|expire"}`), so operators and the bus speak one language; bearer-token auth with a
//! constant-time comparison; disabled while no token is configured.
//!
//! [`BusApplier`] applies the same requests arriving from the purge bus.

use bytes::Bytes;
use cascade_config::Secret;
use std::time::{Duration, UNIX_EPOCH};

use cascade_purge_follower::message::PurgeMessage;
use cascade_purge_follower::node::PurgeApplier;
use cascade_purge_follower::{PurgeAction as RequestedAction, PurgeKind, PurgeRequest};
use cascade_service::admin::{AdminExtension, PeerAddr};
use cascade_service::auth::BearerSecret;
use cascade_service::json::auth_refusal;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use crate::policy::key::{normalise_host, url_key};
use crate::policy::purge::Selector;
use crate::storage::{PurgeAction, TieredStorage};

/// The purge endpoint of one node.
pub struct PurgeEndpoint {
    storage: &'static TieredStorage,
    /// The admin token; `None`: the endpoint is disabled.
    token: Option<BearerSecret>,
    keyed_query: Vec<String>,
}

impl PurgeEndpoint {
    /// An endpoint purging `storage`, accepting `token` (disabled when empty).
    pub fn new(storage: &'static TieredStorage, token: &Secret, keyed_query: Vec<String>) -> Self {
        let token = (!token.is_empty()).then(|| BearerSecret::new(token.expose()));
        Self {
            storage,
            token,
            keyed_query,
        }
    }

    /// The refusal to send, if the request may not purge.
    fn refusal(&self, parts: &Parts) -> Option<Response<Full<Bytes>>> {
        let Some(token) = &self.token else {
            return Some(error(
                StatusCode::NOT_FOUND,
                "the purge endpoint is disabled: set edge.admin_token",
            ));
        };
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        token.check(header, peer).err().map(|e| auth_refusal(&e))
    }
}

/// Turns a validated request's targets into selectors; errors name the bad target.
pub fn selectors(request: &PurgeRequest, keyed_query: &[String]) -> Result<Vec<Selector>, String> {
    let (selected, refused) = selectors_and_refusals(request, keyed_query);
    match refused.into_iter().next() {
        Some(why) => Err(why),
        None => Ok(selected),
    }
}

/// The selectors of every target that can be keyed, and why each other one cannot: a node
/// applies the good targets of a message from the bus rather than none of them.
pub fn selectors_and_refusals(
    request: &PurgeRequest,
    keyed_query: &[String],
) -> (Vec<Selector>, Vec<String>) {
    if request.kind == PurgeKind::All {
        // `all` carries no targets.
        return (vec![Selector::All], Vec::new());
    }
    let mut selected = Vec::new();
    let mut refused = Vec::new();
    for (i, t) in request.targets.iter().enumerate() {
        let selector = match request.kind {
            PurgeKind::Url => url_key(t, keyed_query).map(|k| Selector::Url(k.to_string())),
            PurgeKind::Prefix => url_key(t, keyed_query).map(|k| Selector::Prefix(k.to_string())),
            PurgeKind::Host => normalise_host(t).map(Selector::Host),
            PurgeKind::Tag => Ok(Selector::Tag(t.clone())),
            PurgeKind::All => Ok(Selector::All),
        };
        match selector {
            Ok(s) => selected.push(s),
            Err(e) => refused.push(format!("targets[{i}]: {t:?}: {e}")),
        }
    }
    (selected, refused)
}

/// The storage's action for a requested one.
pub fn storage_action(action: RequestedAction) -> PurgeAction {
    match action {
        RequestedAction::Delete => PurgeAction::Delete,
        RequestedAction::Expire => PurgeAction::Expire,
    }
}

/// Applies purges from the bus to this node's cache.
pub struct BusApplier {
    /// The node's cache.
    pub storage: &'static TieredStorage,
    /// Query parameters that are part of cache keys (URL targets are keyed the same way).
    pub keyed_query: Vec<String>,
}

impl PurgeApplier for BusApplier {
    fn apply(&self, message: &PurgeMessage) -> Result<usize, String> {
        let (selectors, refused) = selectors_and_refusals(&message.request, &self.keyed_query);
        if !refused.is_empty() {
            tracing::warn!(purge = %message.id, refused = ?refused, "purge targets this node cannot key were skipped");
        }
        if selectors.is_empty() {
            return Err(refused.join("; "));
        }
        let action = storage_action(message.request.action);
        let accepted = UNIX_EPOCH + Duration::from_millis(message.issued_ms);
        Ok(selectors
            .iter()
            .map(|s| self.storage.purge_matching_since(s, action, accepted))
            .sum())
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{value}\n"))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

#[async_trait::async_trait]
impl AdminExtension for PurgeEndpoint {
    async fn handle(&self, parts: &Parts, body: Bytes) -> Option<Response<Full<Bytes>>> {
        if parts.uri.path() != "/purge" {
            return None;
        }
        if parts.method != Method::POST {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
            return Some(r);
        }
        if let Some(refusal) = self.refusal(parts) {
            return Some(refusal);
        }
        let request: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid purge request: {e}"),
                ));
            }
        };
        if let Err(e) = request.validate() {
            return Some(error(StatusCode::BAD_REQUEST, &e.to_string()));
        }
        let selectors = match selectors(&request, &self.keyed_query) {
            Ok(s) => s,
            Err(e) => return Some(error(StatusCode::BAD_REQUEST, &e)),
        };
        let action = storage_action(request.action);
        let purged: usize = selectors
            .iter()
            .map(|s| self.storage.purge_matching(s, action))
            .sum();
        tracing::info!(kind = ?request.kind, targets = request.targets.len(), ?action, purged, "purge applied");
        Some(json(
            StatusCode::OK,
            &serde_json::json!({ "purged": purged }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_the_good_targets_of_a_message_and_names_the_bad() {
        let request = PurgeRequest {
            kind: PurgeKind::Prefix,
            targets: vec![
                "https://cdn.example/live/a/".into(),
                "https://cdn.example/live/a%zz/".into(),
                "https://CDN.example/live/b/".into(),
            ],
            action: RequestedAction::Delete,
            confirm_all: false,
        };
        let (selected, refused) = selectors_and_refusals(&request, &[]);
        assert_eq!(
            selected,
            [
                Selector::Prefix("cdn.example/live/a/".into()),
                Selector::Prefix("cdn.example/live/b/".into())
            ]
        );
        assert_eq!(refused.len(), 1);
        assert!(refused[0].starts_with("targets[1]:"), "{refused:?}");
        assert!(
            selectors(&request, &[]).is_err(),
            "the API refuses the whole request"
        );
    }
}
