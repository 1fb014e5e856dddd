//! Object storage for the origin's archive: CMAF segments, playlists and manifests, DVR windows
//! and recordings, kept under validated keys in a local directory ([`FsStore`]) or an
//! S3-compatible bucket ([`S3Store`]); [`open`] builds the one `[storage]` selects.
//!
//! Keys are validated once, in [`ObjectKey::new`], so that no key can name a path outside the
//! filesystem store's root and every key means the same object on both backends.

mod fs;
mod s3;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use cascade_config::{StorageBackend, StorageConfig};

pub use fs::FsStore;
pub use s3::S3Store;

/// Longest key, in bytes (S3's limit).
const MAX_KEY_LEN: usize = 1024;

/// Longest key echoed back in an [`StoreError::InvalidKey`], in bytes.
const MAX_ECHOED_KEY_LEN: usize = 128;

/// Validated object key: '/'-separated segments, each non-empty, of [A-Za-z0-9._-], not "." or
/// "..", no leading '/', at most 1024 bytes.
///
/// Nothing is decoded: `%2e%2e` is not a key (`%` is outside the alphabet), and no key can
/// address a parent directory, an absolute path, a Windows path or a NUL-terminated prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, StoreError> {
        let key = key.into();
        match key_problem(&key) {
            None => Ok(Self(key)),
            Some(why) => Err(StoreError::invalid_key(&key, why)),
        }
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why `key` is not a valid [`ObjectKey`], or `None` when it is.
fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Some("is longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return Some("starts with '/' (keys are relative)");
    }
    key.split('/').find_map(segment_problem)
}

/// Why `segment` is not a valid key segment, or `None` when it is.
fn segment_problem(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return Some("has an empty segment ('//' or a trailing '/')");
    }
    if segment == "." || segment == ".." {
        return Some("has a '.' or '..' segment");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("has a character outside [A-Za-z0-9._-]");
    }
    None
}

/// True when `name` is a valid single key segment (a file or directory name a key can produce).
fn is_key_segment(name: &str) -> bool {
    segment_problem(name).is_none()
}

/// Checks a listing or deletion prefix: empty (only when `allow_empty`), or a valid key
/// followed by '/'.
fn check_prefix(prefix: &str, allow_empty: bool) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(StoreError::invalid_key(
                prefix,
                "is empty (deleting needs a prefix ending in '/')",
            ))
        };
    }
    let Some(dir) = prefix.strip_suffix('/') else {
        return Err(StoreError::invalid_key(
            prefix,
            "is not a prefix (it must end in '/')",
        ));
    };
    match key_problem(dir) {
        None => Ok(()),
        Some(why) => Err(StoreError::invalid_key(prefix, why)),
    }
}

/// A failed storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A key or prefix was refused before touching the store.
    #[error("invalid object key {key:?}: {why}")]
    InvalidKey {
        /// The refused key (cut short when very long).
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The filesystem store failed.
    #[error("storage I/O failed on {key:?}: {source}")]
    Io {
        /// The key or prefix being worked on (the root directory when opening the store).
        key: String,
        /// The failure, naming the operation and path.
        #[source]
        source: std::io::Error,
    },
    /// The S3 service (or the way to it) failed.
    #[error("S3 {op} of {key:?} failed: {message}")]
    Backend {
        /// The operation: "put", "get", "list", "delete".
        op: &'static str,
        /// The key or prefix being worked on.
        key: String,
        /// The SDK's description, with the service error code when there is one.
        message: String,
    },
}

impl StoreError {
    /// True when trying again later may succeed (I/O and service failures); false for keys
    /// that will never be valid.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidKey { .. } => false,
            Self::Io { .. } | Self::Backend { .. } => true,
        }
    }

    /// A `op` of `key` that got no answer within `limit` (retryable: the store may come back).
    pub fn timed_out(op: &'static str, key: &str, limit: std::time::Duration) -> Self {
        Self::Backend {
            op,
            key: key.to_owned(),
            message: format!("no answer within {limit:?}"),
        }
    }

    fn invalid_key(key: &str, why: &'static str) -> Self {
        let key = if key.len() > MAX_ECHOED_KEY_LEN {
            let mut end = MAX_ECHOED_KEY_LEN;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &key[..end])
        } else {
            key.to_owned()
        };
        Self::InvalidKey { key, why }
    }
}

/// Where the origin keeps objects.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing any object there; readers never see a partial object.
    async fn put(&self, key: &ObjectKey, body: Bytes, content_type: &str)
    -> Result<(), StoreError>;
    /// The object, or None when absent.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError>;
    /// Keys under `prefix` (a key prefix ending in '/', or empty for all), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError>;
    /// Deletes every object under `prefix` (must be non-empty and end with '/'); returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
    /// A short name for logs and metrics ("fs", "s3").
    fn backend(&self) -> &'static str;
}

/// Builds the configured store.
pub fn open(config: &StorageConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match config.backend {
        StorageBackend::Fs => Arc::new(FsStore::new(config.fs.root.clone())?),
        StorageBackend::S3 => Arc::new(S3Store::new(&config.s3)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(key: &str) -> &'static str {
        match ObjectKey::new(key) {
            Err(StoreError::InvalidKey { why, .. }) => why,
            other => panic!("{key:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "live/abc/720p/init.mp4",
            "live/abc/720p/seg-00001.m4s",
            "vod/x_y/master.m3u8",
            "...",
            ".hidden",
            "a..b/c.",
            "-/_/.-",
        ] {
            let k = ObjectKey::new(key).unwrap();
            assert_eq!(k.as_str(), key);
            assert_eq!(k.to_string(), key);
        }
    }

    #[test]
    fn refuses_traversal_and_odd_characters() {
        assert_eq!(refused(""), "is empty");
        assert_eq!(refused(".."), "has a '.' or '..' segment");
        assert_eq!(refused("."), "has a '.' or '..' segment");
        assert_eq!(refused("a/../b"), "has a '.' or '..' segment");
        assert_eq!(refused("a/./b"), "has a '.' or '..' segment");
        assert_eq!(refused("a/.."), "has a '.' or '..' segment");
        assert!(refused("/etc/passwd").starts_with("starts with '/'"));
        assert!(refused("a//b").starts_with("has an empty segment"));
        assert!(refused("a/").starts_with("has an empty segment"));
        for key in [
            "a\\..\\b", "..\\x", "C:\\x", "a\0b", "a/\0", "%2e%2e/x", "a/%2e%2e", "a b", "a\nb",
            "café", "a:b", "~tmp",
        ] {
            assert_eq!(
                refused(key),
                "has a character outside [A-Za-z0-9._-]",
                "{key:?}"
            );
        }
    }

    #[test]
    fn length_limit_is_1024_bytes() {
        let longest = "a/".repeat(511) + "ab";
        assert_eq!(longest.len(), 1024);
        assert!(ObjectKey::new(longest.clone()).is_ok());
        let err = ObjectKey::new(longest + "c").unwrap_err();
        assert!(!err.is_retryable());
        let StoreError::InvalidKey { key, why } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*why, "is longer than 1024 bytes");
        assert!(key.len() < 200, "long keys are cut short in errors");
        assert!(err.to_string().contains("invalid object key"));
    }

    #[test]
    fn prefixes() {
        assert!(check_prefix("", true).is_ok());
        assert!(check_prefix("", false).is_err());
        assert!(check_prefix("live/", false).is_ok());
        assert!(check_prefix("live/abc/", false).is_ok());
        for bad in ["live", "/live/", "../", "live//", "a/../", "a\\/", "/"] {
            assert!(check_prefix(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let io = StoreError::Io {
            key: "a/b".into(),
            source: std::io::Error::other("write x: disk full"),
        };
        assert!(io.is_retryable());
        assert_eq!(
            io.to_string(),
            "storage I/O failed on \"a/b\": write x: disk full"
        );
        let backend = StoreError::Backend {
            op: "get",
            key: "a/b".into(),
            message: "AccessDenied".into(),
        };
        assert!(backend.is_retryable());
        assert_eq!(
            backend.to_string(),
            "S3 get of \"a/b\" failed: AccessDenied"
        );
    }

    #[tokio::test]
    async fn open_builds_the_configured_backend() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::default();
        config.fs.root = dir.path().join("objects");
        let store = open(&config).unwrap();
        assert_eq!(store.backend(), "fs");
        assert!(dir.path().join("objects").is_dir());
        config.backend = StorageBackend::S3;
        config.s3.endpoint = "http://127.0.0.1:9".into();
        assert_eq!(open(&config).unwrap().backend(), "s3");
    }
}
