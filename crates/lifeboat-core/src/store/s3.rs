//! A store in an S3 bucket (AWS S3, Cloudflare R2, MinIO, or any S3-compatible server).
//!
//! Uploads stream: bytes written to an [`S3Writer`] go through a small in-memory pipe to an
//! upload task that cuts them into parts of `part_size` bytes and uploads at most
//! `parts_in_flight` of them at once, so memory is bounded by part size x (parts in flight + 1)
//! plus the pipe, never by the size of the stream. All parts have the same size except the last
//! (R2 requires it). A stream that fits in one part is sent with a single PUT. The upload is
//! completed only when [`ObjectWriter::finish`] says so; any error, an explicit abort, or a
//! dropped writer aborts the multipart upload, so no partial object ever appears under the key.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockLegalHoldStatus, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::stall;
use super::{ObjectKey, ObjectMeta, ObjectReader, ObjectWriter, Protection, Store};
use crate::error::{Error, ErrorKind, Result};

/// S3 allows at most 10,000 parts per multipart upload.
pub const MAX_PARTS: u32 = 10_000;
/// S3's minimum part size (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Settings of an S3 store (from the `[store]` table).
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Custom endpoint for R2, MinIO and others; `None` for AWS.
    pub endpoint: Option<String>,
    /// `auto` for R2; default: the standard chain (AWS_REGION, profile), else us-east-1.
    pub region: Option<String>,
    /// The shared-credentials profile to use instead of the default chain's.
    pub profile: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO and most test servers.
    pub path_style: bool,
    /// Multipart part size in bytes (streams with a larger size hint get larger parts).
    pub part_size: usize,
    /// Parts uploaded at once.
    pub parts_in_flight: usize,
    /// Send SDK checksum headers on every request (`true`) or only where S3 requires them.
    /// Lifeboat's own SHA-256 digests are the integrity source of truth; some S3-compatible
    /// stores reject the SDK's default CRC headers, so the default is "when required".
    pub checksums_when_supported: bool,
    /// The storage class of every object (`STANDARD_IA`...); default the bucket's.
    pub storage_class: Option<String>,
    /// A request that makes no progress for this long fails: nothing sent or received (an
    /// upload that is merely slow goes on; see `stall.rs`). Other requests are also retried.
    pub timeout: Duration,
    /// Attempts per request (throttling, 5xx, timeouts and dropped connections are retried
    /// with exponential backoff and jitter).
    pub max_attempts: u32,
    /// Server-side encryption of every object.
    pub encryption: Option<Encryption>,
    /// Retention written on every snapshot object (never on locks or verification records,
    /// which must stay deletable).
    pub object_lock: Option<ObjectLock>,
}

/// Server-side encryption requested on every upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// `AES256`: keys managed by S3.
    S3Managed,
    /// `aws:kms`, with a key id or the account's default key.
    Kms {
        /// The key (`None`: the account's `aws/s3` key).
        key_id: Option<String>,
    },
}

/// Object lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete; Lifeboat never bypasses.
    Governance,
    /// Nobody can delete, not even the root account, until the date passes.
    Compliance,
}

/// Write-once retention for snapshot objects.
#[derive(Debug, Clone, Copy)]
pub struct ObjectLock {
    /// Governance or compliance.
    pub mode: LockMode,
    /// Days from the write.
    pub days: u32,
    /// Which objects it protects. The repository's layout decides (the catalog's snapshot
    /// objects, not locks or verification records, which must stay deletable); the store
    /// knows no layout.
    pub applies_to: fn(&ObjectKey) -> bool,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            profile: None,
            path_style: false,
            // 6 MiB x (4 in flight + the one being filled) keeps an upload's buffers at 30 MiB:
            // a whole PostgreSQL backup to S3 peaked at 58-61 MiB, against 66-70 MiB with 8 MiB
            // parts (over the 64 MiB budget) and 97 MiB with 16 MiB parts, at the same speed on
            // loopback; larger streams get larger parts from their size hint.
            part_size: 6 * 1024 * 1024,
            parts_in_flight: 4,
            checksums_when_supported: false,
            storage_class: None,
            timeout: Duration::from_secs(60),
            max_attempts: 6,
            encryption: None,
            object_lock: None,
        }
    }
}

/// A repository in an S3-compatible bucket, under a prefix; large objects go up as
/// multipart uploads.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    options: S3Options,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({})", self.describe())
    }
}

fn s3_error<E>(what: String, e: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::store(format!("{what}: {}", DisplayErrorContext(&e))).with_hint(
        "check the bucket name, endpoint, region and credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
         AWS_PROFILE, or an instance role)",
    )
}

/// An endpoint is an `http://` or `https://` URL with a host and nothing after its path: the
/// SDK would otherwise fail on the first request with a transport error (exit 1) for what is a
/// mistake in the configuration (exit 2).
fn check_endpoint(endpoint: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::config(format!("the S3 endpoint {endpoint:?} {why}")).with_hint(
            "write it as a URL, e.g. --s3-endpoint https://ACCOUNT.r2.cloudflarestorage.com or http://127.0.0.1:9000",
        )
    };
    let url = url::Url::parse(endpoint).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(())
}

impl S3Store {
    /// Opens `s3://bucket/prefix` with the standard AWS credential chain.
    pub async fn open(url: &str, options: S3Options) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::config(format!("{url:?} is not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::config(format!(
                "{url:?} names no bucket; use s3://bucket/prefix"
            )));
        }
        if let Some(endpoint) = &options.endpoint {
            check_endpoint(endpoint)?;
        }
        if options.part_size < MIN_PART_SIZE {
            return Err(Error::config(format!(
                "part-size-mib must be at least 5 (S3's minimum part size), got {} bytes",
                options.part_size
            )));
        }
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            options.region.clone().map(Region::new),
        )
        .or_default_provider()
        .or_else(Region::new("us-east-1"));
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.timeout.min(Duration::from_secs(10)))
                    .read_timeout(options.timeout)
                    .build(),
            );
        // S3 requires a checksum header on uploads that carry object-lock retention.
        if options.checksums_when_supported || options.object_lock.is_some() {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
                .response_checksum_validation(ResponseChecksumValidation::WhenSupported);
        } else {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            options,
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn relative_key(&self, full: &str) -> Option<String> {
        if self.prefix.is_empty() {
            Some(full.to_string())
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .map(str::to_string)
        }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }
}

/// What every upload carries: storage class, encryption, and (snapshot objects only) retention.
#[derive(Debug, Clone, Default)]
struct WriteSettings {
    storage_class: Option<String>,
    encryption: Option<Encryption>,
    retention: Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)>,
}

/// Applies [`WriteSettings`] to a PutObject or CreateMultipartUpload request (their builders
/// share these setters but no trait).
macro_rules! with_write_settings {
    ($req:expr, $settings:expr) => {{
        let settings: &WriteSettings = $settings;
        let mut req = $req;
        if let Some(class) = &settings.storage_class {
            req = req.storage_class(class.as_str().into());
        }
        match &settings.encryption {
            Some(Encryption::S3Managed) => {
                req = req.server_side_encryption(ServerSideEncryption::Aes256);
            }
            Some(Encryption::Kms { key_id }) => {
                req = req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone());
            }
            None => {}
        }
        if let Some((mode, until)) = &settings.retention {
            req = req
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(*until);
        }
        req
    }};
}

impl S3Store {
    fn write_settings(&self, key: &ObjectKey) -> WriteSettings {
        let retention = self
            .options
            .object_lock
            .filter(|lock| (lock.applies_to)(key))
            .map(|lock| {
                let until = SystemTime::now() + Duration::from_secs(u64::from(lock.days) * 86_400);
                let mode = match lock.mode {
                    LockMode::Governance => ObjectLockMode::Governance,
                    LockMode::Compliance => ObjectLockMode::Compliance,
                };
                (mode, aws_sdk_s3::primitives::DateTime::from(until))
            });
        WriteSettings {
            storage_class: self.options.storage_class.clone(),
            encryption: self.options.encryption.clone(),
            retention,
        }
    }
}

/// 412 (the condition does not hold), or 409 (a concurrent conditional write won the race).
fn is_precondition_failure<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    matches!(
        e.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || e
        .raw_response()
        .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412))
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Store for S3Store {
    type Writer = S3Writer;

    fn describe(&self) -> String {
        let mut s = format!("s3://{}/{}", self.bucket, self.prefix);
        if let Some(e) = &self.options.endpoint {
            s.push_str(&format!(" at {e}"));
        }
        s
    }

    async fn create(&self, key: &ObjectKey) -> Result<S3Writer> {
        self.create_sized(key, None).await
    }

    async fn create_sized(&self, key: &ObjectKey, size_hint: Option<u64>) -> Result<S3Writer> {
        let part_size = part_size_for(self.options.part_size, size_hint);
        if part_size != self.options.part_size {
            tracing::info!(
                "Using {} MiB parts for {} (about {} MiB expected), so the upload stays within {MAX_PARTS} parts.",
                part_size / (1024 * 1024),
                self.location(key.as_str()),
                size_hint.unwrap_or(0) / (1024 * 1024)
            );
        }
        // The pipe is small: the upload task holds the parts, so memory stays bounded.
        let (writer, reader) = tokio::io::duplex(256 * 1024);
        let (commit_tx, commit_rx) = oneshot::channel();
        let upload = Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.full_key(key.as_str()),
            part_size,
            parts_in_flight: self.options.parts_in_flight.max(1),
            settings: self.write_settings(key),
            stall_timeout: self.options.timeout,
        };
        let task = tokio::spawn(upload.run(reader, commit_rx));
        Ok(S3Writer {
            pipe: Some(writer),
            commit: Some(commit_tx),
            task: Some(task),
            key: key.clone(),
        })
    }

    async fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .body(ByteStream::from(bytes.to_vec()));
        with_write_settings!(req, &self.write_settings(key))
            .send()
            .await
            .map_err(|e| s3_error(format!("cannot write {}", self.location(key.as_str())), e))?;
        Ok(())
    }

    async fn create_exclusive(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .if_none_match("*")
            .body(ByteStream::from(bytes.to_vec()));
        match with_write_settings!(req, &self.write_settings(key))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failure(&e) => Ok(false),
            Err(e) => Err(s3_error(
                format!("cannot create {}", self.location(key.as_str())),
                e,
            )),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        Ok(self.get_tagged(key).await?.map(|(bytes, _)| bytes))
    }

    async fn get_tagged(&self, key: &ObjectKey) -> Result<Option<(Vec<u8>, String)>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(s3_error(
                    format!("cannot read {}", self.location(key.as_str())),
                    e,
                ))
            }
        };
        let tag = out.e_tag().unwrap_or_default().to_string();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| s3_error(format!("cannot read {}", self.location(key.as_str())), e))?;
        Ok(Some((bytes.into_bytes().to_vec(), tag)))
    }

    async fn replace_if(&self, key: &ObjectKey, bytes: &[u8], tag: &str) -> Result<Option<String>> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .if_match(tag)
            .body(ByteStream::from(bytes.to_vec()));
        match with_write_settings!(req, &self.write_settings(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            // `If-Match` on an object that is gone: NoSuchKey (a missing bucket stays an error).
            Err(e) if is_precondition_failure(&e) || e.code() == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(s3_error(
                format!("cannot write {}", self.location(key.as_str())),
                e,
            )),
        }
    }

    async fn open(&self, key: &ObjectKey, offset: u64) -> Result<ObjectReader> {
        let full = self.full_key(key.as_str());
        let (body, total) = self.get_range(&full, offset).await?;
        Ok(Box::new(ResumingReader {
            store: self.clone(),
            key: full,
            offset,
            total,
            body: Some(body),
            reopening: None,
            resumes_left: self.options.max_attempts,
        }))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        Ok(self.head_object(key).await?.map(|out| ObjectMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: to_system_time(out.last_modified()),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| s3_error(format!("cannot list {}", self.location(prefix)), e))?;
            for object in page.contents() {
                let Some(rel) = object.key().and_then(|k| self.relative_key(k)) else {
                    continue;
                };
                // Keys Lifeboat did not write (or cannot address) are not part of the repository.
                let Ok(key) = ObjectKey::new(rel) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key,
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: to_system_time(object.last_modified()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .send()
            .await
            .map_err(|e| s3_error(format!("cannot delete {}", self.location(key.as_str())), e))?;
        Ok(())
    }

    async fn protection(&self, key: &ObjectKey) -> Result<Option<Protection>> {
        let Some(out) = self.head_object(key).await? else {
            return Ok(None);
        };
        if out.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On) {
            return Ok(Some(Protection {
                reason: "legal hold".to_string(),
                until: None,
            }));
        }
        let until = out
            .object_lock_retain_until_date()
            .and_then(|d| chrono::DateTime::from_timestamp(d.secs(), d.subsec_nanos()));
        Ok(until.filter(|u| *u > chrono::Utc::now()).map(|until| {
            let mode = out
                .object_lock_mode()
                .map_or("retention", |m| m.as_str())
                .to_ascii_lowercase();
            Protection {
                reason: format!("object lock ({mode})"),
                until: Some(until),
            }
        }))
    }

    async fn remove_incomplete(&self, prefix: &str, older_than: Duration) -> Result<Vec<String>> {
        let cutoff = SystemTime::now() - older_than;
        let mut removed = Vec::new();
        for upload in self.unfinished_uploads(prefix).await? {
            if upload.initiated <= cutoff {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&upload.key)
                    .upload_id(&upload.upload_id)
                    .send()
                    .await
                    .map_err(|e| {
                        s3_error(
                            format!(
                                "cannot abort the unfinished upload of s3://{}/{}",
                                self.bucket, upload.key
                            ),
                            e,
                        )
                    })?;
                removed.push(format!(
                    "s3://{}/{} (upload {})",
                    self.bucket, upload.key, upload.upload_id
                ));
            } else {
                let age = SystemTime::now()
                    .duration_since(upload.initiated)
                    .unwrap_or_default();
                super::report_young_leftover(
                    &format!(
                        "s3://{}/{} (upload {})",
                        self.bucket, upload.key, upload.upload_id
                    ),
                    age,
                );
            }
        }
        Ok(removed)
    }
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone)]
pub struct UnfinishedUpload {
    /// Full key in the bucket.
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: SystemTime,
}

type Body = Pin<Box<dyn tokio::io::AsyncBufRead + Send>>;
type Reopening = Pin<Box<dyn std::future::Future<Output = Result<(Body, u64)>> + Send>>;

impl S3Store {
    /// Starts a GET from `offset`; returns the body and the object's total length.
    async fn get_range(&self, full_key: &str, offset: u64) -> Result<(Body, u64)> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(full_key);
        if offset > 0 {
            req = req.range(format!("bytes={offset}-"));
        }
        match req.send().await {
            Ok(out) => {
                let total = offset + out.content_length().unwrap_or(0).max(0) as u64;
                Ok((Box::pin(out.body.into_async_read()), total))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Err(
                Error::integrity(format!("s3://{}/{full_key} does not exist", self.bucket)),
            ),
            Err(e) => Err(s3_error(
                format!("cannot read s3://{}/{full_key}", self.bucket),
                e,
            )),
        }
    }

    /// Lists unfinished multipart uploads under `prefix` without touching them.
    async fn head_object(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key.as_str()))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error(
                format!("cannot inspect {}", self.location(key.as_str())),
                e,
            )),
        }
    }

    /// Multipart uploads under `prefix` that were started and neither completed nor aborted.
    pub async fn unfinished_uploads(&self, prefix: &str) -> Result<Vec<UnfinishedUpload>> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(upload_marker.clone())
                .send()
                .await
            {
                Ok(page) => page,
                // Some S3-compatible servers (s3s-fs, some gateways) do not list uploads: the
                // bucket lifecycle rule is then the only net, as the runbook says.
                Err(e)
                    if e.code() == Some("NotImplemented")
                        || e.raw_response().is_some_and(|r| r.status().as_u16() == 501) =>
                {
                    tracing::warn!(
                        "{} cannot list unfinished multipart uploads; uploads of crashed runs are \
                         left to the bucket's lifecycle rule (see RUNBOOK.md).",
                        self.describe()
                    );
                    return Ok(out);
                }
                Err(e) => {
                    return Err(s3_error(
                        format!(
                            "cannot list unfinished uploads under {}",
                            self.location(prefix)
                        ),
                        e,
                    ))
                }
            };
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    out.push(UnfinishedUpload {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        initiated: to_system_time(upload.initiated()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_marker = page.next_upload_id_marker().map(str::to_string);
        }
        Ok(out)
    }
}

/// A download that picks up where it stopped: after a dropped connection (an error, or an
/// end of stream before the object's length), it asks again with a ranged GET from the last
/// byte received, up to `resumes_left` times.
struct ResumingReader {
    store: S3Store,
    key: String,
    offset: u64,
    total: u64,
    body: Option<Body>,
    reopening: Option<Reopening>,
    resumes_left: u32,
}

/// A resume whose ranged GET failed: the object was deleted meanwhile (`NotFound`, so the
/// reader can say "forgotten while it was read"), or the store is unreachable.
fn resume_failed(e: &Error) -> std::io::Error {
    let kind = if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::NotFound) {
        std::io::ErrorKind::NotFound
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, e.to_string())
}

impl ResumingReader {
    fn resume(&mut self, why: &str) -> std::io::Result<()> {
        if self.resumes_left == 0 {
            return Err(std::io::Error::other(format!(
                "reading s3://{}/{} failed at byte {} of {}: {why}",
                self.store.bucket, self.key, self.offset, self.total
            )));
        }
        self.resumes_left -= 1;
        tracing::warn!(
            "Reading s3://{}/{} stopped at byte {} of {} ({why}); resuming with a ranged GET.",
            self.store.bucket,
            self.key,
            self.offset,
            self.total
        );
        self.body = None;
        let store = self.store.clone();
        let key = self.key.clone();
        let offset = self.offset;
        self.reopening = Some(Box::pin(async move { store.get_range(&key, offset).await }));
        Ok(())
    }
}

impl tokio::io::AsyncRead for ResumingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some(fut) = this.reopening.as_mut() {
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        this.reopening = None;
                        return Poll::Ready(Err(resume_failed(&e)));
                    }
                    Poll::Ready(Ok((body, _))) => {
                        this.reopening = None;
                        this.body = Some(body);
                    }
                }
            }
            let Some(body) = this.body.as_mut() else {
                // After a failed resume there is no body: that is not the end of the object.
                if this.offset < this.total {
                    return Poll::Ready(Err(std::io::Error::other(format!(
                        "reading s3://{}/{} stopped at byte {} of {}",
                        this.store.bucket, this.key, this.offset, this.total
                    ))));
                }
                return Poll::Ready(Ok(()));
            };
            let before = buf.filled().len();
            match body.as_mut().poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let n = (buf.filled().len() - before) as u64;
                    this.offset += n;
                    if n == 0 && this.offset < this.total {
                        if let Err(e) = this.resume("the connection ended early") {
                            return Poll::Ready(Err(e));
                        }
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    if let Err(e) = this.resume(&e.to_string()) {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

/// The part size for an upload of about `hint` bytes: the configured size, or larger so that
/// twice the hint (room to grow) fits in [`MAX_PARTS`] parts; whole MiB, at most 5 GiB.
pub fn part_size_for(configured: usize, hint: Option<u64>) -> usize {
    const MIB: u64 = 1024 * 1024;
    let Some(hint) = hint else { return configured };
    let needed = (hint.saturating_mul(2)).div_ceil(u64::from(MAX_PARTS));
    let needed = needed.div_ceil(MIB) * MIB;
    (configured as u64).max(needed).min(5 * 1024 * MIB) as usize
}

/// What the upload task needs.
struct Upload {
    client: Client,
    bucket: String,
    key: String,
    part_size: usize,
    parts_in_flight: usize,
    settings: WriteSettings,
    /// An upload request that makes no progress for this long fails.
    stall_timeout: Duration,
}

/// Uploads carry their own stall timeout (`stall.rs`): the SDK's read timeout, which counts
/// from the first byte sent, would cut slow uploads that are still moving.
fn without_read_timeout() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .disable_read_timeout()
            .disable_operation_attempt_timeout()
            .build(),
    )
}

/// The error of an upload request that stopped moving.
fn stalled(what: String, timeout: Duration) -> Error {
    Error::store(format!(
        "{what}: no progress for {} s (timeout-secs); the upload was stopped",
        timeout.as_secs_f32()
    ))
    .with_hint("check the network to the store; raise timeout-secs in [store] for a link that pauses longer")
}

impl Upload {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Reads the pipe to its end, uploading as it goes; commits only if `commit` fired.
    async fn run(self, mut pipe: DuplexStream, mut commit: oneshot::Receiver<()>) -> Result<u64> {
        let mut upload_id: Option<String> = None;
        let mut parts: Vec<CompletedPart> = Vec::new();
        let mut in_flight: JoinSet<Result<UploadedPart>> = JoinSet::new();
        // Part buffers are reused: a fresh 16 MiB allocation per part makes the allocator
        // keep freed buffers around (measured: 146 MiB peak instead of ~75 for 1 GiB).
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut part_number: u32 = 0;
        let mut total: u64 = 0;
        let result: Result<()> = async {
            loop {
                // Back-pressure first: a part is read only once a slot is free for it, so at
                // most `parts_in_flight` parts plus the one being filled are in memory (reading
                // first held one more, a part's worth of memory for nothing).
                while in_flight.len() >= self.parts_in_flight {
                    parts.push(join_part(&mut in_flight, &mut spare).await?);
                }
                let chunk = read_part(&mut pipe, self.part_size, spare.pop()).await.map_err(|e| {
                    Error::store(format!(
                        "cannot read the stream for {}: {e}",
                        self.location()
                    ))
                })?;
                let last = chunk.len() < self.part_size;
                total += chunk.len() as u64;
                if upload_id.is_none() && last {
                    // Small stream: one PUT, only if committed.
                    if wait_commit(&mut commit).await {
                        let progress = stall::Progress::new(chunk.len());
                        let req = self
                            .client
                            .put_object()
                            .bucket(&self.bucket)
                            .key(&self.key)
                            .body(stall::body(bytes::Bytes::from(chunk), &progress));
                        let request = with_write_settings!(req, &self.settings)
                            .customize()
                            .config_override(without_read_timeout())
                            .send();
                        stall::until_stalled(&progress, self.stall_timeout, request)
                            .await
                            .map_err(|t| stalled(format!("cannot write {}", self.location()), t))?
                            .map_err(|e| {
                                s3_error(format!("cannot write {}", self.location()), e)
                            })?;
                        return Ok(());
                    }
                    return Err(Error::new(ErrorKind::Cancelled, format!(
                        "the upload to {} was abandoned",
                        self.location()
                    )));
                }
                if upload_id.is_none() {
                    let req = self
                        .client
                        .create_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key);
                    let created = with_write_settings!(req, &self.settings).send().await.map_err(|e| {
                        s3_error(
                            format!("cannot start a multipart upload to {}", self.location()),
                            e,
                        )
                    })?;
                    upload_id = created.upload_id().map(str::to_string);
                    if upload_id.is_none() {
                        return Err(Error::store(format!(
                            "the store returned no upload id for {}",
                            self.location()
                        )));
                    }
                }
                if !chunk.is_empty() {
                    part_number += 1;
                    if part_number > MAX_PARTS {
                        return Err(Error::store(format!(
                            "the stream to {} needs more than {MAX_PARTS} parts of {} MiB",
                            self.location(),
                            self.part_size / (1024 * 1024)
                        ))
                        .with_hint(
                            "raise part-size-mib in the [store] table; the next backup also sizes parts from this one",
                        ));
                    }
                    let client = self.client.clone();
                    let (bucket, key, id) = (
                        self.bucket.clone(),
                        self.key.clone(),
                        upload_id.clone().unwrap_or_default(),
                    );
                    let n = part_number;
                    let stall_timeout = self.stall_timeout;
                    in_flight.spawn(async move {
                        let body = bytes::Bytes::from(chunk);
                        // Kept to take the buffer back once the SDK has let go of its copies.
                        let buffer = body.clone();
                        let progress = stall::Progress::new(body.len());
                        let request = client
                            .upload_part()
                            .bucket(&bucket)
                            .key(&key)
                            .upload_id(id)
                            .part_number(n as i32)
                            .body(stall::body(body, &progress))
                            .customize()
                            .config_override(without_read_timeout())
                            .send();
                        let what = || format!("cannot upload part {n} of s3://{bucket}/{key}");
                        let out = stall::until_stalled(&progress, stall_timeout, request)
                            .await
                            .map_err(|t| stalled(what(), t))?
                            .map_err(|e| s3_error(what(), e))?;
                        Ok(UploadedPart {
                            part: CompletedPart::builder()
                                .part_number(n as i32)
                                .set_e_tag(out.e_tag().map(str::to_string))
                                .build(),
                            buffer,
                        })
                    });
                }
                if last {
                    break;
                }
            }
            while !in_flight.is_empty() {
                parts.push(join_part(&mut in_flight, &mut spare).await?);
            }
            if !wait_commit(&mut commit).await {
                return Err(Error::new(ErrorKind::Cancelled, format!(
                    "the upload to {} was abandoned",
                    self.location()
                )));
            }
            parts.sort_by_key(|p| p.part_number());
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(upload_id.clone().unwrap_or_default())
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| {
                    s3_error(
                        format!("cannot complete the upload to {}", self.location()),
                        e,
                    )
                })?;
            if let Some((mode, until)) = &self.settings.retention {
                // Not every server carries retention from CreateMultipartUpload over to the
                // completed object; setting it on the object itself works everywhere.
                let mode = ObjectLockRetentionMode::from(mode.as_str());
                self.client
                    .put_object_retention()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .retention(
                        ObjectLockRetention::builder()
                            .mode(mode)
                            .retain_until_date(*until)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        s3_error(
                            format!("cannot set the object lock on {}", self.location()),
                            e,
                        )
                    })?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            in_flight.abort_all();
            if let Some(id) = upload_id {
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&id)
                    .send()
                    .await
                {
                    tracing::warn!(
                        "Could not abort the multipart upload {id} to {}: {}; the next backup of the job removes it.",
                        self.location(),
                        DisplayErrorContext(&abort)
                    );
                }
            }
            return Err(e);
        }
        Ok(total)
    }
}

/// `true` if the writer committed (the sender sent), `false` if it was dropped.
async fn wait_commit(commit: &mut oneshot::Receiver<()>) -> bool {
    commit.await.is_ok()
}

/// A finished part and the bytes it was sent from.
struct UploadedPart {
    part: CompletedPart,
    buffer: bytes::Bytes,
}

/// Waits for one part; its buffer goes back to `spare` when nothing else holds it.
async fn join_part(
    set: &mut JoinSet<Result<UploadedPart>>,
    spare: &mut Vec<Vec<u8>>,
) -> Result<CompletedPart> {
    match set.join_next().await {
        Some(Ok(Ok(done))) => {
            if let Ok(buffer) = done.buffer.try_into_mut() {
                spare.push(Vec::from(buffer));
            }
            Ok(done.part)
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(Error::store(format!("a part upload task failed: {e}"))),
        None => Err(Error::store("no part upload in flight")),
    }
}

/// Reads up to `size` bytes (less only at the end of the stream).
async fn read_part(
    pipe: &mut DuplexStream,
    size: usize,
    reuse: Option<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    let mut buf = reuse.unwrap_or_default();
    buf.resize(size, 0);
    let mut filled = 0;
    while filled < size {
        let n = pipe.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// A streaming upload to an [`S3Store`].
pub struct S3Writer {
    pipe: Option<DuplexStream>,
    commit: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<u64>>>,
    key: ObjectKey,
}

impl S3Writer {
    fn pipe(&mut self) -> std::io::Result<&mut DuplexStream> {
        self.pipe
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the upload was already finished"))
    }

    async fn end(mut self, commit: bool) -> Result<u64> {
        if commit {
            if let Some(tx) = self.commit.take() {
                let _ = tx.send(());
            }
        } else {
            self.commit.take();
        }
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.shutdown().await;
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| {
                Error::store(format!("the upload task of {} failed: {e}", self.key))
            })?,
            None => Err(Error::store("the upload was already finished")),
        }
    }
}

impl AsyncWrite for S3Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.pipe() {
            Ok(p) => match Pin::new(p).poll_write(cx, buf) {
                // The upload task ended early (an error): its result explains why.
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    Poll::Ready(Err(std::io::Error::other(
                        "the upload failed; see the store error",
                    )))
                }
                other => other,
            },
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe() {
            Ok(p) => Pin::new(p).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Only flushes: ending the stream is `finish` or `abort`, never implicit.
        self.as_mut().poll_flush(cx)
    }
}

impl ObjectWriter for S3Writer {
    async fn finish(self) -> Result<ObjectMeta> {
        let key = self.key.clone();
        let size = self.end(true).await?;
        Ok(ObjectMeta {
            key,
            size,
            modified: SystemTime::now(),
        })
    }

    async fn abort(self) -> Result<()> {
        match self.end(false).await {
            Ok(_) => Ok(()),
            // The task reports the abandonment it was asked for.
            Err(e) if e.kind() == ErrorKind::Cancelled => Ok(()),
            // It had stopped on its own: the store's error is the cause of the failure.
            Err(e) => Err(e),
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropping the pipe without a commit makes the upload task abort the multipart upload;
        // the task runs on (detached) to do so. Nothing is committed here.
        self.commit.take();
        self.pipe.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_with_the_expected_size() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(part_size_for(16 * MIB, None), 16 * MIB);
        assert_eq!(
            part_size_for(16 * MIB, Some(10 * 1024 * MIB as u64)),
            16 * MIB
        );
        // 200 GiB expected: 400 GiB / 10,000 parts = 41 MiB (rounded up to whole MiB).
        let big = 200 * 1024 * MIB as u64;
        let size = part_size_for(16 * MIB, Some(big));
        assert_eq!(size, 41 * MIB);
        assert!((size as u64) * u64::from(MAX_PARTS) >= 2 * big);
        assert_eq!(part_size_for(16 * MIB, Some(u64::MAX)), 5 * 1024 * MIB);
    }
}
