//! [`S3Store`]: objects in an S3-compatible bucket (AWS S3, Garage, MinIO, ...).

use std::fmt;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use cascade_config::S3StorageConfig;

use super::{ObjectKey, ObjectStore, StoreError, check_prefix};

/// Time to establish a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one attempt of an operation, including sending the body and receiving the
/// response headers.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole operation, all attempts and the back-off between them included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per operation: one retry of transient failures, then the caller decides.
const MAX_ATTEMPTS: u32 = 2;
/// Most keys one DeleteObjects request may name.
const DELETE_BATCH: usize = 1000;

/// Objects in an S3 bucket under their keys, with their content types.
///
/// Each operation fails within about 20 seconds (2 s to connect, 10 s per attempt, 2
/// attempts) rather than hanging on an unreachable service. Listing and prefix deletion only
/// see objects whose keys are valid [`ObjectKey`]s; objects other tools wrote under other names
/// are left alone.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client's config holds credentials: name only the bucket.
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store for `[storage.s3]`. Credentials are the configured key pair, or when
    /// `access_key_id` is empty, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` as they are now. Nothing is contacted until the first operation.
    pub fn new(config: &S3StorageConfig) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style)
            // Garage refuses the streaming-signed uploads the default checksums need.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .http_client(http);
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(&config.endpoint);
        }
        let credentials = if config.access_key_id.is_empty() {
            environment_credentials()
        } else {
            Some(Credentials::new(
                &config.access_key_id,
                config.secret_access_key.expose(),
                None,
                None,
                "cascade-config",
            ))
        };
        match credentials {
            Some(credentials) => builder = builder.credentials_provider(credentials),
            None => tracing::warn!(
                bucket = %config.bucket,
                "no S3 credentials: storage.s3.access_key_id is empty and AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY are not set; requests will fail"
            ),
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        }
    }

    /// The aws-sdk-s3 client, configured as above.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Every valid key under `prefix`, in the service's (byte-wise) order.
    async fn list_keys(
        &self,
        prefix: &str,
        op: &'static str,
    ) -> Result<Vec<ObjectKey>, StoreError> {
        let mut keys = Vec::new();
        let mut continuation = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(continuation)
                .send()
                .await
                .map_err(|e| backend(op, prefix, &e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key())
                    .filter_map(|key| ObjectKey::new(key).ok()),
            );
            continuation = page.next_continuation_token().map(str::to_owned);
            if continuation.is_none() || page.is_truncated() == Some(false) {
                return Ok(keys);
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| backend("put", key.as_str(), &e))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(backend("get", key.as_str(), &e)),
        };
        let body = response
            .body
            .collect()
            .await
            .map_err(|e| backend("get", key.as_str(), &e))?;
        Ok(Some(body.into_bytes()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, StoreError> {
        check_prefix(prefix, true)?;
        let mut keys = self.list_keys(prefix, "list").await?;
        // Services list in byte order already; this makes it a guarantee.
        keys.sort();
        Ok(keys)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        check_prefix(prefix, false)?;
        let keys = self.list_keys(prefix, "delete").await?;
        let mut deleted = 0;
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key.as_str()).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend("delete", prefix, &e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| backend("delete", prefix, &e))?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| backend("delete", prefix, &e))?;
            // Quiet mode reports only the keys that failed.
            if let Some(failed) = output.errors().first() {
                return Err(StoreError::Backend {
                    op: "delete",
                    key: failed.key().unwrap_or(prefix).to_owned(),
                    message: format!(
                        "{} of {} objects not deleted: {}: {}",
                        output.errors().len(),
                        batch.len(),
                        failed.code().unwrap_or("no error code"),
                        failed.message().unwrap_or("no message")
                    ),
                });
            }
            deleted += batch.len() as u64;
        }
        Ok(deleted)
    }

    fn backend(&self) -> &'static str {
        "s3"
    }
}

/// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, when
/// the first two are set.
fn environment_credentials() -> Option<Credentials> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    Some(Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN"),
        None,
        "environment",
    ))
}

/// A [`StoreError::Backend`] describing `error` with its causes and any service error code.
fn backend(op: &'static str, key: &str, error: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Backend {
        op,
        key: key.to_owned(),
        message: DisplayErrorContext(error).to_string(),
    }
}
