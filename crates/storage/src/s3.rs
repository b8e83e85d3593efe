//! S3 backend: objects through the S3 API (Ceph's RADOS Gateway, or any S3 service) with
//! `object_store`.
//!
//! Writes of more than one part are multipart uploads with two parts in flight (memory stays at
//! 2 × part size whatever the image size); the object appears only when the upload completes.
//! On any failure the parts still running are cancelled and the upload is aborted: one attempt
//! is awaited for at most [`ABORT_WAIT`], and if the gateway does not answer (it is stopped, or
//! the cluster is full) the abort is retried in the background for a while, so a gateway that
//! comes back does not keep the orphaned parts.
//!
//! `object_store` has no bucket calls, so the bucket is checked and created with requests signed
//! by its `AwsAuthorizer` and sent through its HTTP client.
//!
//! Timeouts: reqwest's whole-request timeout is off (it would cut long downloads); instead every
//! call, every part and every read of a download stream is bounded by `timeout_secs`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt;

use crate::{
    bounded, Backend, BackendConfig, BackendKind, ByteStream, Key, PutMode, Space, StoreError, DEFAULT_PART_SIZE_MIB, MAX_PARTS,
    MAX_PART_SIZE_MIB, MIN_PART_SIZE_MIB,
};

/// Longest wait of a failed write for its first abort attempt (the timeout, if shorter) before
/// it returns its error; the abort goes on in the background after that.
pub const ABORT_WAIT: Duration = Duration::from_secs(5);
/// Background abort attempts after a failed write, and the pause between them.
const ABORT_RETRIES: u32 = 12;
const ABORT_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;

pub struct S3Backend {
    name: String,
    endpoint: String,
    bucket: String,
    region: String,
    credential: AwsCredential,
    store: Arc<AmazonS3>,
    http: HttpClient,
    timeout: Duration,
    part_size: u64,
    bucket_ready: AtomicBool,
}

/// Names the endpoint and bucket, never the credentials.
impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("timeout", &self.timeout)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// S3 bucket naming rules (the subset that matters for path-style requests).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && !b.starts_with(['-', '.'])
        && !b.ends_with(['-', '.'])
}

impl S3Backend {
    pub fn open(config: &BackendConfig) -> Result<Self, StoreError> {
        let err = |what: String| StoreError::Config(format!("storage '{}' (s3): {what}", config.name));
        let endpoint = config
            .endpoint
            .clone()
            .ok_or_else(|| err("`endpoint` is required (the RADOS Gateway URL, e.g. http://127.0.0.1:8480)".into()))?;
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(err(format!("endpoint '{endpoint}' must start with http:// or https://")));
        }
        let bucket = config.bucket.clone().ok_or_else(|| err("`bucket` is required".into()))?;
        if !valid_bucket(&bucket) {
            return Err(err(format!("bucket '{bucket}' is not a valid S3 bucket name (3-63 of a-z, 0-9, '-', '.')")));
        }
        let key_id = config
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"))
            .ok_or_else(|| err("no access key: set `access_key_id` or AWS_ACCESS_KEY_ID".into()))?;
        let secret = config
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| err("no secret key: set `secret_access_key` or AWS_SECRET_ACCESS_KEY".into()))?;
        let region =
            config.region.clone().or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        let part_mib = config.part_size_mib.unwrap_or(DEFAULT_PART_SIZE_MIB);
        if !(MIN_PART_SIZE_MIB..=MAX_PART_SIZE_MIB).contains(&part_mib) {
            return Err(err(format!("part_size_mib = {part_mib} is outside {MIN_PART_SIZE_MIB}..={MAX_PART_SIZE_MIB}")));
        }
        let timeout = config.timeout()?;

        let options =
            ClientOptions::new().with_allow_http(endpoint.starts_with("http://")).with_connect_timeout(timeout).with_timeout_disabled();
        // Retries must fit inside our own bound; past it the caller gets Timeout anyway.
        let retry = RetryConfig { backoff: BackoffConfig::default(), max_retries: 2, retry_timeout: timeout };
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&bucket)
            .with_region(&region)
            .with_access_key_id(&key_id)
            .with_secret_access_key(&secret)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_client_options(options.clone())
            .with_retry(retry)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let http = ReqwestConnector::default().connect(&options).map_err(|e| err(e.to_string()))?;
        Ok(S3Backend {
            name: config.name.clone(),
            endpoint,
            bucket,
            region,
            credential: AwsCredential { key_id, secret_key: secret, token: None },
            store: Arc::new(store),
            http,
            timeout,
            part_size: part_mib << 20,
            bucket_ready: AtomicBool::new(false),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A signed request to the bucket (`query`, e.g. `?uploads` or `/key?uploadId=…`, is
    /// appended as is).
    async fn bucket_request(&self, method: http::Method, query: &str) -> Result<(http::StatusCode, String), StoreError> {
        let url = format!("{}/{}{}", self.endpoint, self.bucket, query);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(HttpRequestBody::empty())
            .map_err(|e| StoreError::Remote(format!("bad request URL {url}: {e}")))?;
        AwsAuthorizer::new(&self.credential, "s3", &self.region).authorize(&mut req, None);
        let op = match method {
            http::Method::PUT => "bucket creation",
            http::Method::DELETE => "multipart abort",
            _ => "bucket request",
        };
        bounded(op, self.timeout, async {
            let resp = self.http.execute(req).await.map_err(|e| StoreError::Remote(format!("{method} {url}: {e}")))?;
            let status = resp.status();
            let body = resp.into_body().bytes().await.unwrap_or_default();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        })
        .await
    }

    /// Checks that the bucket exists and creates it if it does not.
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        let (status, _) = self.bucket_request(http::Method::HEAD, "").await?;
        if status.is_success() {
            self.bucket_ready.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if status != http::StatusCode::NOT_FOUND {
            return Err(StoreError::Remote(format!(
                "bucket '{}' at {}: HTTP {status} (check the credentials and the bucket's owner)",
                self.bucket, self.endpoint
            )));
        }
        let (status, body) = self.bucket_request(http::Method::PUT, "").await?;
        // 409 BucketAlreadyOwnedByYou: someone (another Hangar) created it meanwhile.
        if status.is_success() || (status == http::StatusCode::CONFLICT && body.contains("BucketAlreadyOwnedByYou")) {
            tracing::info!(backend = %self.name, bucket = %self.bucket, "created the bucket");
            self.bucket_ready.store(true, Ordering::Relaxed);
            return Ok(());
        }
        Err(StoreError::Remote(format!(
            "could not create bucket '{}' at {}: HTTP {status} {}",
            self.bucket,
            self.endpoint,
            body.chars().take(300).collect::<String>()
        )))
    }

    /// Multipart uploads that were started and neither completed nor aborted, as (key, upload
    /// id). A write that failed while the gateway was unreachable leaves one until its
    /// background abort gets through; a process that died mid-write leaves one for good.
    pub async fn incomplete_uploads(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.incomplete_uploads_since().await?.into_iter().map(|(k, id, _)| (k, id)).collect())
    }

    /// [`Self::incomplete_uploads`] with when each was initiated (`None` if the gateway did not
    /// say in a form we read).
    async fn incomplete_uploads_since(&self) -> Result<Vec<(String, String, Option<SystemTime>)>, StoreError> {
        let (status, body) = self.bucket_request(http::Method::GET, "?uploads").await?;
        if !status.is_success() {
            return Err(StoreError::Remote(format!("listing incomplete uploads in bucket '{}': HTTP {status}", self.bucket)));
        }
        // <ListMultipartUploadsResult>…<Upload><Key>k</Key><UploadId>id</UploadId>…</Upload>…
        let field = |u: &str, tag: &str| {
            let rest = u.split_once(&format!("<{tag}>"))?.1;
            Some(rest.split_once(&format!("</{tag}>"))?.0.to_owned())
        };
        Ok(body
            .split("<Upload>")
            .skip(1)
            .filter_map(|u| {
                let since = field(u, "Initiated").and_then(|t| parse_s3_time(&t));
                Some((field(u, "Key")?, field(u, "UploadId")?, since))
            })
            .collect())
    }

    /// Aborts every incomplete multipart upload in the bucket, freeing its parts; returns how
    /// many. Only for when no write to this bucket is running (by an operator, in tests): it
    /// would also abort a write in progress. Servers use [`Backend::sweep_abandoned_writes`].
    pub async fn abort_incomplete_uploads(&self) -> Result<usize, StoreError> {
        self.abort_uploads_older_than(None).await
    }

    /// Aborts the incomplete uploads initiated more than `age` ago (all of them for `None`).
    /// One whose start time cannot be read is kept: it might be a write in progress.
    async fn abort_uploads_older_than(&self, age: Option<Duration>) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let uploads: Vec<_> = self
            .incomplete_uploads_since()
            .await?
            .into_iter()
            .filter(|(_, _, since)| match (age, since) {
                (None, _) => true,
                (Some(age), Some(t)) => now.duration_since(*t).is_ok_and(|d| d >= age),
                (Some(_), None) => false,
            })
            .collect();
        for (key, id, _) in &uploads {
            let key = Key::parse(key)?; // never build a URL from a name Hangar did not make
            let query = format!("/{}?uploadId={}", key.as_str(), percent_encode(id));
            let (status, body) = self.bucket_request(http::Method::DELETE, &query).await?;
            if !(status.is_success() || status == http::StatusCode::NOT_FOUND) {
                return Err(StoreError::Remote(format!(
                    "aborting the incomplete upload of '{}': HTTP {status} {}",
                    key.as_str(),
                    body.chars().take(300).collect::<String>()
                )));
            }
            tracing::info!(backend = %self.name, key = key.as_str(), "aborted an incomplete multipart upload");
        }
        Ok(uploads.len())
    }

    fn remote(op: &str, key: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound { key: key.to_owned() },
            e => StoreError::Remote(format!("{op} '{key}': {e}")),
        }
    }

    async fn multipart(
        &self,
        key: &str,
        mut input: tokio::fs::File,
        src: &Path,
        len: u64,
        part_size: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        let t = self.timeout;
        let path = ObjectPath::from(key); // a checked key
        let mut upload = bounded("multipart start", t, async {
            self.store.put_multipart(&path).await.map_err(|e| Self::remote("multipart start", key, e))
        })
        .await?;
        let mut running = std::collections::VecDeque::new();
        let result = async {
            let mut sent = 0u64;
            let mut done = 0u64;
            while sent < len {
                let n = part_size.min(len - sent);
                let part = read_exact(&mut input, n, src).await?;
                sent += n;
                let fut = upload.put_part(PutPayload::from(part));
                let key = key.to_owned();
                // Spawned, so a part keeps going while the next one is read from disk; the
                // bound starts now, when the part starts.
                running.push_back((
                    n,
                    tokio::spawn(bounded("part upload", t, async move { fut.await.map_err(|e| Self::remote("part upload", &key, e)) })),
                ));
                while running.len() >= PARTS_IN_FLIGHT || (sent == len && !running.is_empty()) {
                    let (n, handle) = running.pop_front().expect("not empty");
                    handle.await.map_err(|e| StoreError::Remote(format!("part upload task: {e}")))??;
                    done += n;
                    progress(done);
                }
            }
            bounded("multipart completion", t, async { upload.complete().await.map_err(|e| Self::remote("multipart completion", key, e)) })
                .await?;
            Ok(done)
        }
        .await;
        if result.is_err() {
            for (_, handle) in running {
                handle.abort();
            }
            self.abort(key, upload).await;
        }
        result
    }

    /// Aborts a failed upload: waits up to [`ABORT_WAIT`], then leaves the retries to a task.
    async fn abort(&self, key: &str, mut upload: Box<dyn MultipartUpload>) {
        let t = self.timeout.min(ABORT_WAIT);
        let (name, key) = (self.name.clone(), key.to_owned());
        let task = tokio::spawn(async move {
            for attempt in 0..=ABORT_RETRIES {
                if attempt > 0 {
                    tokio::time::sleep(ABORT_RETRY_PAUSE).await;
                }
                match tokio::time::timeout(t, upload.abort()).await {
                    Ok(Ok(())) => {
                        tracing::info!(backend = %name, %key, attempt, "aborted the failed multipart upload");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(backend = %name, %key, attempt, error = %e, "multipart abort failed")
                    }
                    Err(_) => {
                        tracing::warn!(backend = %name, %key, attempt, "multipart abort timed out")
                    }
                }
            }
            tracing::error!(backend = %name, %key, "gave up aborting a failed multipart upload; its parts stay in the bucket until aborted");
        });
        // Returns when the first attempt has finished (it is bounded by the same `t`), so a
        // failed write returns within its timeout plus `t`; later attempts go on in the task.
        let _ = tokio::time::timeout(t + Duration::from_millis(100), task).await;
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (for a query value).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads exactly `n` bytes of the local source (a file that is complete by contract).
async fn read_exact(input: &mut tokio::fs::File, n: u64, src: &Path) -> Result<Bytes, StoreError> {
    let mut buf = vec![0u8; n as usize];
    input.read_exact(&mut buf).await.map_err(|e| StoreError::io("read the source", src, e))?;
    Ok(Bytes::from(buf))
}

#[async_trait]
impl Backend for S3Backend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::S3
    }

    #[tracing::instrument(level = "debug", skip(self, progress), fields(backend = %self.name))]
    async fn put_file(&self, key: &str, src: &Path, mode: PutMode, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<u64, StoreError> {
        let path = ObjectPath::from(Key::parse(key)?.as_str());
        if !self.bucket_ready.load(Ordering::Relaxed) {
            self.ensure_bucket().await?;
        }
        let mut input = tokio::fs::File::open(src).await.map_err(|e| StoreError::io("open the source", src, e))?;
        let meta = input.metadata().await.map_err(|e| StoreError::io("stat the source", src, e))?;
        if !meta.is_file() {
            return Err(StoreError::io("read the source", src, std::io::ErrorKind::InvalidInput.into()));
        }
        let len = meta.len();
        // S3 allows 10,000 parts: larger files get larger parts.
        let part_size = self.part_size.max(len.div_ceil(MAX_PARTS));
        let size = if len <= part_size {
            // One PUT is as atomic as a multipart upload: all of it or nothing.
            let body = read_exact(&mut input, len, src).await?;
            bounded("upload", self.timeout, async {
                self.store.put(&path, PutPayload::from(body)).await.map_err(|e| Self::remote("upload", key, e))
            })
            .await?;
            progress(len);
            len
        } else {
            self.multipart(key, input, src, len, part_size, progress).await?
        };
        if mode == PutMode::Move {
            if let Err(e) = tokio::fs::remove_file(src).await {
                tracing::warn!(src = %src.display(), error = %e, "could not remove the moved source");
            }
        }
        Ok(size)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StoreError> {
        let path = ObjectPath::from(Key::parse(key)?.as_str());
        let t = self.timeout;
        if let Some(r) = &range {
            if r.start >= r.end {
                // S3 has no empty range; answer it (or refuse it) from the size.
                let size = self.size(key).await?.ok_or_else(|| StoreError::NotFound { key: key.to_owned() })?;
                if r.start > r.end || r.end > size {
                    return Err(StoreError::InvalidRange { start: r.start, end: r.end, size });
                }
                return Ok(futures::stream::empty().boxed());
            }
        }
        let options = GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
        let result =
            bounded("download", t, async { self.store.get_opts(&path, options).await.map_err(|e| Self::remote("download", key, e)) }).await;
        let result = match (result, &range) {
            // The gateway refuses a range that starts past the end; say so in our terms.
            (Err(StoreError::Remote(msg)), Some(r)) if msg.contains("416") || msg.contains("Range") => {
                let size = self.size(key).await?.ok_or_else(|| StoreError::NotFound { key: key.to_owned() })?;
                return Err(StoreError::InvalidRange { start: r.start, end: r.end, size });
            }
            (r, _) => r?,
        };
        if let Some(r) = &range {
            if result.range != *r {
                return Err(StoreError::InvalidRange { start: r.start, end: r.end, size: result.meta.size });
            }
        }
        let key = key.to_owned();
        let stream = futures::stream::unfold((result.into_stream(), false), move |(mut s, failed)| {
            let key = key.clone();
            async move {
                if failed {
                    return None;
                }
                match tokio::time::timeout(t, s.next()).await {
                    Ok(None) => None,
                    Ok(Some(Ok(b))) => Some((Ok(b), (s, false))),
                    Ok(Some(Err(e))) => Some((Err(Self::remote("download", &key, e)), (s, true))),
                    Err(_) => Some((Err(StoreError::Timeout { op: "download", after: t }), (s, true))),
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = ObjectPath::from(Key::parse(key)?.as_str());
        bounded("size", self.timeout, async {
            match self.store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Self::remote("size", key, e)),
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = ObjectPath::from(Key::parse(key)?.as_str());
        bounded("delete", self.timeout, async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Self::remote("delete", key, e)),
            }
        })
        .await
    }

    async fn space(&self) -> Result<Space, StoreError> {
        // The S3 API has no notion of free space (RGW quotas would need its admin API).
        Ok(Space::default())
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.ensure_bucket().await
    }

    async fn sweep_abandoned_writes(&self, age: Duration) -> Result<usize, StoreError> {
        self.abort_uploads_older_than(Some(age)).await
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

/// An S3 timestamp (`2026-11-27T20:45:00.000Z`, RFC 3339 in UTC) as a `SystemTime`.
fn parse_s3_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, t.nanosecond()))
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn s3_timestamps_parse() {
        let t = parse_s3_time("2026-11-27T20:45:01.500Z").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d, Duration::new(1_795_812_301, 500_000_000));
        assert_eq!(parse_s3_time("1970-01-01T00:00:00Z"), Some(SystemTime::UNIX_EPOCH));
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "1969-12-31T23:59:59Z"] {
            assert_eq!(parse_s3_time(bad), None, "{bad}");
        }
    }
}
