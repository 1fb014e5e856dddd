//! Bearer API tokens of the purge bus and the origin's management API: kept only as SHA-256
//! digests, compared in constant time, each with a scope (`read` may look, `write` may change).

use std::net::IpAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limits::AuthFailures;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read status and lists.
    Read,
    /// Change things (and read).
    Write,
}

#[derive(Debug)]
struct StoredToken {
    name: String,
    digest: [u8; 32],
    scope: Scope,
}

/// Why a request is not authorised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (401).
    #[error("missing bearer token (send Authorization: Bearer <token>)")]
    Missing,
    /// Unknown token (401).
    #[error("unknown token")]
    Unknown,
    /// Known token, insufficient scope (403).
    #[error("token {name:?} has the {has:?} scope; this needs {needs:?}")]
    Forbidden {
        /// The token's name.
        name: String,
        /// Its scope.
        has: Scope,
        /// The scope needed.
        needs: Scope,
    },
    /// This address failed too often; it may try again after `retry_after` seconds.
    #[error("too many failed authentications from this address; retry in {retry_after}s")]
    TooManyFailures {
        /// Seconds to wait.
        retry_after: u64,
    },
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct ApiTokens {
    tokens: Vec<StoredToken>,
    failures: AuthFailures,
}

impl ApiTokens {
    /// The tokens of a config section (`[[purge_bus.tokens]]`, `[[origin.tokens]]`).
    pub fn from_config(tokens: &[cascade_config::ApiTokenConfig]) -> Self {
        let mut stored = Self::default();
        for token in tokens {
            let scope = match token.scope {
                cascade_config::TokenScope::Read => Scope::Read,
                cascade_config::TokenScope::Write => Scope::Write,
            };
            stored.add(&token.name, token.token.expose(), scope);
        }
        stored
    }

    /// Adds a token; only its digest is kept.
    pub fn add(&mut self, name: &str, secret: &str, scope: Scope) {
        self.tokens.push(StoredToken {
            name: name.to_owned(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            scope,
        });
    }

    /// Checks an `Authorization` header value from `peer` for `needs`; returns the token's name
    /// (the rate limit key). Every stored token is compared, so timing does not tell which one
    /// matched. An address whose missing or unknown tokens pass the failure limit is refused
    /// without a check until its window ends.
    pub fn authorise(
        &self,
        authorization: Option<&str>,
        needs: Scope,
        peer: Option<IpAddr>,
    ) -> Result<&str, AuthError> {
        let now = Instant::now();
        if let Some(wait) = peer.and_then(|ip| self.failures.blocked(ip, now)) {
            return Err(AuthError::TooManyFailures {
                retry_after: wait.as_secs().max(1),
            });
        }
        let result = self.check(authorization, needs);
        if let (Err(AuthError::Missing | AuthError::Unknown), Some(ip)) = (&result, peer) {
            self.failures.record(ip, now);
        }
        result
    }

    fn check(&self, authorization: Option<&str>, needs: Scope) -> Result<&str, AuthError> {
        let presented = bearer(authorization).ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&StoredToken> = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        let token = found.ok_or(AuthError::Unknown)?;
        if token.scope < needs {
            return Err(AuthError::Forbidden {
                name: token.name.clone(),
                has: token.scope,
                needs,
            });
        }
        Ok(&token.name)
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// One shared secret presented as a bearer token (a node's admin token, the bus's node
/// token): kept as a digest, compared in constant time, failures limited per address.
#[derive(Debug)]
pub struct BearerSecret {
    digest: [u8; 32],
    failures: AuthFailures,
}

impl BearerSecret {
    /// Keeps `secret`'s digest.
    pub fn new(secret: &str) -> Self {
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
            failures: AuthFailures::default(),
        }
    }

    /// Checks an `Authorization` header value from `peer`.
    pub fn check(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let now = Instant::now();
        if let Some(wait) = peer.and_then(|ip| self.failures.blocked(ip, now)) {
            return Err(AuthError::TooManyFailures {
                retry_after: wait.as_secs().max(1),
            });
        }
        let given = bearer(authorization);
        let matched = given.is_some_and(|given| {
            let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
            bool::from(digest.ct_eq(&self.digest))
        });
        if matched {
            return Ok(());
        }
        if let Some(ip) = peer {
            self.failures.record(ip, now);
        }
        Err(if given.is_some() {
            AuthError::Unknown
        } else {
            AuthError::Missing
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest_and_scope() {
        let mut tokens = ApiTokens::default();
        tokens.add("ops", "w-secret", Scope::Write);
        tokens.add("dashboard", "r-secret", Scope::Read);
        assert_eq!(
            tokens.authorise(Some("Bearer w-secret"), Scope::Write, None),
            Ok("ops")
        );
        assert_eq!(
            tokens.authorise(Some("Bearer w-secret"), Scope::Read, None),
            Ok("ops")
        );
        assert_eq!(
            tokens.authorise(Some("Bearer r-secret"), Scope::Read, None),
            Ok("dashboard")
        );
        assert!(matches!(
            tokens.authorise(Some("Bearer r-secret"), Scope::Write, None),
            Err(AuthError::Forbidden { .. })
        ));
        assert_eq!(
            tokens.authorise(Some("Bearer nope"), Scope::Read, None),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            tokens.authorise(None, Scope::Read, None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            tokens.authorise(Some("Basic abc"), Scope::Read, None),
            Err(AuthError::Missing)
        );
        assert_eq!(
            tokens.authorise(Some("Bearer "), Scope::Read, None),
            Err(AuthError::Missing)
        );
        assert!(
            !format!("{tokens:?}").contains("w-secret"),
            "secrets are not kept, so never printed"
        );
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_even_with_a_good_token() {
        let mut tokens = ApiTokens::default();
        tokens.add("ops", "w-secret", Scope::Write);
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(
                tokens.authorise(Some("Bearer guess"), Scope::Read, Some(attacker)),
                Err(AuthError::Unknown)
            );
        }
        assert!(matches!(
            tokens.authorise(Some("Bearer w-secret"), Scope::Read, Some(attacker)),
            Err(AuthError::TooManyFailures { retry_after }) if (1..=60).contains(&retry_after)
        ));
        assert_eq!(
            tokens.authorise(Some("Bearer w-secret"), Scope::Read, Some(other)),
            Ok("ops")
        );
    }

    #[test]
    fn a_bearer_secret_is_checked_and_its_failures_limited() {
        let secret = BearerSecret::new("node-secret");
        let peer: Option<IpAddr> = "192.0.2.3".parse().ok();
        assert_eq!(secret.check(Some("Bearer node-secret"), peer), Ok(()));
        assert_eq!(secret.check(None, peer), Err(AuthError::Missing));
        for _ in 0..9 {
            assert_eq!(
                secret.check(Some("Bearer other"), peer),
                Err(AuthError::Unknown)
            );
        }
        assert!(matches!(
            secret.check(Some("Bearer node-secret"), peer),
            Err(AuthError::TooManyFailures { .. })
        ));
        assert!(!format!("{secret:?}").contains("node-secret"));
    }
}
