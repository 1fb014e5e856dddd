//! Bearer API tokens of the purge bus and the origin's management API: kept only as SHA-256
//! digests, compared in constant time, each with a scope (`read` may look, `write` may change).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct ApiTokens {
    tokens: Vec<StoredToken>,
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

    /// Checks an `Authorization` header value for `needs`; returns the token's name (the rate
    /// limit key). Every stored token is compared, so timing does not tell which one matched.
    pub fn authorise(&self, authorization: Option<&str>, needs: Scope) -> Result<&str, AuthError> {
        let presented = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest_and_scope() {
        let mut tokens = ApiTokens::default();
        tokens.add("ops", "w-secret", Scope::Write);
        tokens.add("dashboard", "r-secret", Scope::Read);
        assert_eq!(
            tokens.authorise(Some("Bearer w-secret"), Scope::Write),
            Ok("ops")
        );
        assert_eq!(
            tokens.authorise(Some("Bearer w-secret"), Scope::Read),
            Ok("ops")
        );
        assert_eq!(
            tokens.authorise(Some("Bearer r-secret"), Scope::Read),
            Ok("dashboard")
        );
        assert!(matches!(
            tokens.authorise(Some("Bearer r-secret"), Scope::Write),
            Err(AuthError::Forbidden { .. })
        ));
        assert_eq!(
            tokens.authorise(Some("Bearer nope"), Scope::Read),
            Err(AuthError::Unknown)
        );
        assert_eq!(tokens.authorise(None, Scope::Read), Err(AuthError::Missing));
        assert_eq!(
            tokens.authorise(Some("Basic abc"), Scope::Read),
            Err(AuthError::Missing)
        );
        assert_eq!(
            tokens.authorise(Some("Bearer "), Scope::Read),
            Err(AuthError::Missing)
        );
        assert!(
            !format!("{tokens:?}").contains("w-secret"),
            "secrets are not kept, so never printed"
        );
    }
}
