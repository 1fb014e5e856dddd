//! `[storage]`: where the origin archives segments, DVR windows and recordings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::Problems;
use crate::values::{ByteSize, Secret};

/// Object storage selection and settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `fs` (embedded default) or `s3`.
    pub backend: StorageBackend,
    /// Settings of the filesystem store.
    pub fs: FsStorageConfig,
    /// Settings of the S3 store.
    pub s3: S3StorageConfig,
    /// Where objects the store cannot take wait until it answers again (relative paths are
    /// taken from the working directory at start); empty: no spool, an upload is retried for
    /// 10 minutes and then given up.
    pub spool_dir: PathBuf,
    /// Most bytes the spool holds; past it, segments are lost and recorded as gaps.
    pub spool_capacity: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::default(),
            fs: FsStorageConfig::default(),
            s3: S3StorageConfig::default(),
            spool_dir: PathBuf::from("data/origin/spool"),
            spool_capacity: ByteSize(2 << 30),
        }
    }
}

/// Which object store the origin writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A directory on the local filesystem.
    #[default]
    Fs,
    /// An S3-compatible service.
    S3,
}

/// `[storage.fs]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsStorageConfig {
    /// Directory holding the objects; created when missing.
    pub root: PathBuf,
}

impl Default for FsStorageConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("data/objects"),
        }
    }
}

/// `[storage.s3]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3StorageConfig {
    /// Endpoint URL (`http://127.0.0.1:3900`); empty for AWS's regional endpoint.
    pub endpoint: String,
    /// Region the bucket lives in (must match the server's, e.g. Garage's `s3_region`).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub path_style: bool,
    /// Access key id; empty to take credentials from the AWS environment variables.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: "cascade".into(),
            path_style: true,
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
        }
    }
}

impl StorageConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        match self.backend {
            StorageBackend::Fs => {
                if self.fs.root.as_os_str().is_empty() {
                    p.push(
                        "storage.fs.root",
                        "is empty (name the directory for stored objects)",
                    );
                }
            }
            StorageBackend::S3 => self.s3.validate(p),
        }
        if !self.spool_dir.as_os_str().is_empty() && self.spool_capacity.0 < 1 << 20 {
            p.push(
                "storage.spool_capacity",
                format!("{} is below the 1MiB minimum", self.spool_capacity),
            );
        }
    }
}

impl S3StorageConfig {
    fn validate(&self, p: &mut Problems) {
        let scheme_ok =
            self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        if !self.endpoint.is_empty() && !scheme_ok {
            p.push(
                "storage.s3.endpoint",
                format!("{:?} is not an http:// or https:// URL", self.endpoint),
            );
        }
        if self.region.is_empty() {
            p.push(
                "storage.s3.region",
                "is empty (use the server's region, e.g. \"us-east-1\")",
            );
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            p.push(
                "storage.s3.bucket",
                format!("{:?} is not a valid bucket name (3 to 63 lowercase letters, digits, '-' or '.')", self.bucket),
            );
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            p.push(
                "storage.s3.access_key_id",
                "set both access_key_id and secret_access_key, or neither (to use AWS_* environment credentials)",
            );
        }
    }
}
