//! The body of `POST /v1/purge`: what to purge and how. Parsed by the API, built by the CLI,
//! validated in one place so both refuse the same things with the same words.

use serde::{Deserialize, Serialize};

/// Most targets one request may carry; larger purges are split by the caller or use `prefix`.
pub const MAX_TARGETS: usize = 1000;

/// What the targets name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeKind {
    /// Exact URLs (`https://host/path`).
    Url,
    /// URL prefixes: everything under `https://host/live/abc/`.
    Prefix,
    /// Every object of a host.
    Host,
    /// Surrogate keys (`stream/abc`).
    Tag,
    /// Everything cached, on every node.
    All,
}

/// What nodes do with matching objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeAction {
    /// Remove them.
    #[default]
    Delete,
    /// Mark them stale so the next request revalidates (bodies can be reused on 304).
    Expire,
}

/// One purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// What the targets are.
    pub kind: PurgeKind,
    /// URLs, prefixes, hosts or tags; empty for `all`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Delete or expire.
    #[serde(default)]
    pub action: PurgeAction,
    /// Must be true for `all`, so that nobody empties every cache by a typo.
    #[serde(default)]
    pub confirm_all: bool,
}

/// Why a purge request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No targets for a kind that needs them.
    #[error("targets: a {0} purge needs at least one target")]
    NoTargets(&'static str),
    /// Too many targets.
    #[error(
        "targets: {0} targets is more than the {MAX_TARGETS} allowed in one request; split it or purge a prefix"
    )]
    TooManyTargets(usize),
    /// A target is malformed.
    #[error("targets[{index}]: {value:?} {why}")]
    BadTarget {
        /// Position in the list.
        index: usize,
        /// The target.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// `all` without confirmation.
    #[error("confirm_all: purging everything needs \"confirm_all\": true")]
    AllNotConfirmed,
    /// `all` with targets.
    #[error("targets: an all purge takes no targets")]
    TargetsWithAll,
}

impl PurgeKind {
    fn name(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Prefix => "prefix",
            Self::Host => "host",
            Self::Tag => "tag",
            Self::All => "all",
        }
    }
}

impl PurgeRequest {
    /// Checks the request; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.kind == PurgeKind::All {
            if !self.targets.is_empty() {
                return Err(RequestError::TargetsWithAll);
            }
            return if self.confirm_all {
                Ok(())
            } else {
                Err(RequestError::AllNotConfirmed)
            };
        }
        if self.targets.is_empty() {
            return Err(RequestError::NoTargets(self.kind.name()));
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(RequestError::TooManyTargets(self.targets.len()));
        }
        for (index, value) in self.targets.iter().enumerate() {
            let bad = |why: &str| {
                Err(RequestError::BadTarget {
                    index,
                    value: value.clone(),
                    why: why.to_owned(),
                })
            };
            match self.kind {
                PurgeKind::Url | PurgeKind::Prefix => {
                    if let Err(why) = check_url(value) {
                        return bad(why);
                    }
                    // Exactly as nodes key it, so that every node can apply what is accepted.
                    if let Err(e) = cascade_keys::url_key(value, &[]) {
                        return bad(&format!("cannot be keyed: {e}"));
                    }
                }
                PurgeKind::Host => {
                    if !is_host(value) || cascade_keys::normalise_host(value).is_err() {
                        return bad(
                            "is not a host name (write e.g. \"cdn.example.com\", no scheme or path)",
                        );
                    }
                }
                PurgeKind::Tag => {
                    if value.is_empty()
                        || value.len() > 256
                        || value.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return bad("is not a surrogate key (1 to 256 characters, no spaces)");
                    }
                }
                PurgeKind::All => {}
            }
        }
        Ok(())
    }
}

/// `http(s)://host[:port]/path...` with a host and an absolute path.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    let (authority, path) = rest.split_at(
        rest.find('/')
            .ok_or("has no path (write e.g. \"https://host/live/abc/\")")?,
    );
    let host = authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.parse::<u16>().is_ok() {
            h
        } else {
            authority
        }
    });
    if !is_host(host) {
        return Err("has no valid host");
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) || path.contains('#') {
        return Err("has spaces, control characters or a fragment in its path");
    }
    Ok(())
}

fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: PurgeKind, targets: &[&str]) -> PurgeRequest {
        PurgeRequest {
            kind,
            targets: targets.iter().map(|s| s.to_string()).collect(),
            action: PurgeAction::Delete,
            confirm_all: false,
        }
    }

    #[test]
    fn good_requests_pass() {
        assert_eq!(
            req(
                PurgeKind::Url,
                &["https://cdn.example.com/live/a/master.m3u8"]
            )
            .validate(),
            Ok(())
        );
        assert_eq!(
            req(PurgeKind::Prefix, &["http://127.0.0.1:8000/live/a/"]).validate(),
            Ok(())
        );
        assert_eq!(
            req(PurgeKind::Host, &["cdn.example.com"]).validate(),
            Ok(())
        );
        assert_eq!(
            req(PurgeKind::Tag, &["stream/abc", "rendition/abc/720p"]).validate(),
            Ok(())
        );
        assert_eq!(
            PurgeRequest {
                confirm_all: true,
                ..req(PurgeKind::All, &[])
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases = [
            (
                req(PurgeKind::Url, &[]),
                "targets: a url purge needs at least one target",
            ),
            (
                req(PurgeKind::Url, &["ftp://x/y"]),
                "targets[0]: \"ftp://x/y\" is not an http:// or https:// URL",
            ),
            (
                req(PurgeKind::Url, &["https://cdn.example.com"]),
                "has no path",
            ),
            (req(PurgeKind::Url, &["https:///x"]), "has no valid host"),
            // Targets nodes could not key (the bus once accepted them, and nodes then skipped
            // the whole message): refused here, naming why.
            (
                req(PurgeKind::Url, &["https://h/a\\b"]),
                "targets[0]: \"https://h/a\\\\b\" cannot be keyed: the path is malformed: backslash",
            ),
            (
                req(PurgeKind::Prefix, &["https://h/ok/", "https://h/a%zz/"]),
                "targets[1]: \"https://h/a%zz/\" cannot be keyed",
            ),
            (
                req(PurgeKind::Url, &["https://h/../x"]),
                "cannot be keyed: the path climbs above the root",
            ),
            (
                req(PurgeKind::Host, &["https://cdn.example.com"]),
                "is not a host name",
            ),
            (
                req(PurgeKind::Tag, &["two words"]),
                "is not a surrogate key",
            ),
            (req(PurgeKind::All, &[]), "confirm_all"),
            (req(PurgeKind::All, &["x"]), "an all purge takes no targets"),
        ];
        for (request, expected) in cases {
            let message = request.validate().unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        let many: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("t{i}")).collect();
        let too_many = PurgeRequest {
            targets: many,
            ..req(PurgeKind::Tag, &[])
        };
        assert_eq!(
            too_many.validate(),
            Err(RequestError::TooManyTargets(MAX_TARGETS + 1))
        );
    }

    #[test]
    fn json_shape_and_unknown_fields() {
        let parsed: PurgeRequest =
            serde_json::from_str(r#"{"kind":"tag","targets":["stream/a"],"action":"expire"}"#)
                .unwrap();
        assert_eq!(
            (parsed.kind, parsed.action),
            (PurgeKind::Tag, PurgeAction::Expire)
        );
        let err =
            serde_json::from_str::<PurgeRequest>(r#"{"kind":"tags","targets":[]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `tags`"), "{err}");
        assert!(serde_json::from_str::<PurgeRequest>(r#"{"kind":"tag","target":[]}"#).is_err());
    }
}
