//! Hangar's upload data plane: a [tus 1.0](https://tus.io/protocols/resumable-upload) server as
//! plain axum routes (no Leptos, no server functions).
//!
//! Extensions: `creation`, `creation-with-upload`, `termination`, `checksum` (sha1, sha256;
//! 460 on mismatch), `expiration`, `concatenation` (parallel uploads: one `partial` upload per
//! stream, joined by a `final` one). Bodies stream to disk through bounded buffers; the offset in
//! the database moves only after the bytes are durable (fdatasync), so a restart loses nothing
//! that was acknowledged and a client resumes with `HEAD` + `PATCH`.
//!
//! # Mounting and wiring (for the server)
//!
//! ```text
//! let config = uploads::UploadConfig::new(&data_dir);          // data_dir/uploads, /uploads
//! let on_complete: uploads::OnComplete = Arc::new(move |done: uploads::CompletedUpload| {
//!     // Must not block: hand `done` to the ingest pipeline (a channel, a spawned task).
//!     let _ = ingest_tx.send(done);
//! });
//! let uploads = uploads::Uploads::open(db.clone(), config, on_complete).await?;
//! let _cleanup = uploads::spawn_cleanup(uploads.clone());
//! let app = Router::new()
//!     .merge(uploads::router(uploads))        // routes carry the full path (`/uploads…`)
//!     /* … the rest, then the authentication middleware as a layer over all of it … */;
//! ```
//!
//! * The router expects an [`accounts::Authn`] in the request extensions (the server's
//!   `authenticate` middleware puts it there). Anonymous requests get 401. Creating an upload
//!   needs `policy::Action::CreateImage` in the principal's current project (403 otherwise); the
//!   upload belongs to that user and project. Only its creator (while still a member of the
//!   project) or an admin may `PATCH`/`HEAD`/`DELETE` it; anyone else gets 404.
//! * The server's CSRF middleware applies as usual: browsers send `Origin`; API clients send
//!   `X-Auth-Token`. The routes are same-origin, so no CORS headers are added.
//! * Routes (with the default prefix): `OPTIONS /uploads`, `POST /uploads` (and `/uploads/`),
//!   `HEAD|PATCH|DELETE /uploads/{id}`, and `POST /uploads/{id}` with `X-HTTP-Method-Override`.
//!   `Location` is `/uploads/{id}` (relative, as tus allows).
//! * Browsers must send chunks of at most [`UploadConfig::max_request_body`] (tus-js-client
//!   `chunkSize`); a larger request is refused with 413 before its body is read. For parallel
//!   uploads, tus-js-client's `parallelUploads` uses the concatenation extension as is.
//!
//! # What the consumer receives
//!
//! [`OnComplete`] is called once per complete upload (ordinary, or final after its parts were
//! joined; never for parts) with a [`CompletedUpload`]: the path of the complete file, its length,
//! owner, project, decoded metadata and its SHA-256, MD5 and SHA-512 (MD5 and SHA-512 only with
//! [`UploadHashes::All`], the default, unless [`Uploads::set_hashes_for`] narrows it for an
//! upload; see its docs for the cost). The hashes are computed
//! while the bytes arrive when they arrive in order, else by reading the file once at completion
//! (after a restart, and for joined parts). **The file then belongs to the consumer**: move it
//! (rename, same file system) or delete it; whatever is left in [`UploadConfig::dir`] when the
//! upload's record expires is deleted by the cleanup task. Delivery is at least once: if the
//! process dies between the callback and recording the hand-over, the next start calls it again
//! with the same id, so the consumer should ignore an id it already has.
//!
//! # Protocol details
//!
//! * Every request but OPTIONS needs `Tus-Resumable: 1.0.0` (412 with `Tus-Version` otherwise);
//!   every answer but OPTIONS carries it. Errors have a plain-text message for people.
//! * PATCH: `Content-Type: application/offset+octet-stream` (else 415); `Upload-Offset` must be
//!   the upload's offset (else 409, nothing changed); `Upload-Checksum: sha1|sha256 <base64>`
//!   optional (unknown algorithm 400, mismatch 460 and the request's bytes are discarded). The
//!   204's `Upload-Offset` is durable. A body that breaks off keeps what arrived (unless it came
//!   with a checksum, which cannot be verified then). A second request on the same upload waits
//!   up to [`LOCK_WAIT`] for the first (423 after that), then usually meets a 409.
//! * Every PATCH pushes `Upload-Expires` [`UploadConfig::expiry`] ahead; an expired upload
//!   answers 410 until the cleanup task removes it (then 404).
//! * Concatenation: parts are `Upload-Concat: partial` uploads; `Upload-Concat: final;<urls>`
//!   (absolute or path URLs, at most [`tus::MAX_PARTS`], no `Upload-Length`) joins complete
//!   parts of the same user and project in the background; HEAD on the final shows no
//!   `Upload-Offset` until then, PATCH on it is 403, and the parts are removed once joined.
//!   `concatenation-unfinished` and `creation-defer-length` are not offered.
//! * DELETE (termination) of an unfinished upload removes its file (a final takes its parts);
//!   a part claimed by a final, or an upload already handed over, answers 403.
//!
//! # Quotas and limits at creation
//!
//! 413 when `Upload-Length` exceeds [`UploadConfig::max_upload_size`], when the project's
//! `max_bytes` would be exceeded (images' bytes + declared lengths of uploads in flight + this
//! one), when the project's `max_concurrent_uploads` would be exceeded (ordinary and final
//! uploads in flight; parts count for bytes but not as uploads, since their final takes the
//! slot), or when the user already has [`MAX_OPEN_UPLOADS_PER_USER`] uploads open. 507 when the
//! file system has less free space than the declared length; the length is then reserved
//! (`fallocate`), so a disk that fills later fails other writers rather than this upload.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use records::Db;
use tokio::task::JoinHandle;

mod error;
mod http;
mod lifecycle;
mod pipeline;
pub mod tus;

pub use error::UploadError;
pub use http::router;

/// The most uploads (parts included) one user may have open at once, whatever the project's
/// quota: bounds the rows, files and in-memory state one account can pin.
pub const MAX_OPEN_UPLOADS_PER_USER: u64 = 256;

/// How long a request waits for another request on the same upload to finish before 423. A
/// client that lost its connection and resumes at once may find the old request still
/// finishing (making its bytes durable); a few seconds covers that.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Completions (joining parts, hashing a file, handing over) that run at once. Each reads a
/// whole file with a thread per hash; more of them at a time (say, after a restart with many
/// unfinished uploads) would only thrash the disk and the two cores.
pub const MAX_CONCURRENT_COMPLETIONS: usize = 2;

/// Where uploads go and how big they may be.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    /// Where incomplete (and just completed) uploads are kept: `data_dir/uploads`. It should be
    /// on the same file system as image storage so the consumer can rename the file.
    pub dir: PathBuf,
    /// The path the routes are served under and `Location` points to (no trailing slash).
    pub path_prefix: String,
    /// Largest `Upload-Length` accepted (also `Tus-Max-Size`).
    pub max_upload_size: u64,
    /// Largest body of one PATCH (or creation-with-upload POST).
    pub max_request_body: u64,
    /// How long an upload lives without progress: each PATCH pushes its expiry this far ahead.
    pub expiry: Duration,
    /// How often [`spawn_cleanup`] looks for expired uploads.
    pub cleanup_interval: Duration,
    /// Which digests of the whole upload [`CompletedUpload`] carries.
    pub hashes: UploadHashes,
}

/// Which digests of the whole upload are computed (as the bytes arrive when they arrive in
/// order, else by one read at completion) and handed over.
///
/// Cost on this project's 2-core machines (see `benches/ingest.rs`): SHA-256 runs at about
/// 1.8 GB/s per core (SHA-NI), MD5 and SHA-512 at about 0.6 GB/s each, so `All` needs roughly
/// three times the CPU of `Sha256` and, with a client on the same two cores, caps ingest well
/// below a fast disk's speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UploadHashes {
    /// SHA-256 only; `md5` and `sha512` are `None` (the consumer computes what it needs, for
    /// example over the bytes it stores after converting).
    Sha256,
    /// SHA-256, MD5 (Glance's `checksum`) and SHA-512 (Glance's default `os_hash_algo`).
    #[default]
    All,
}

/// Default maximum image size: 1 TiB covers any VM disk image Hangar expects.
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 1 << 40;
/// Default per-request body limit: 64 MiB is large enough for full disk speed per request and
/// small enough that a retried request re-sends little.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 64 << 20;
/// Default expiry: a day without progress (tus servers commonly use this).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Default cleanup interval.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(15 * 60);

impl UploadConfig {
    /// The defaults, with uploads in `data_dir/uploads` served under `/uploads`.
    pub fn new(data_dir: &Path) -> Self {
        UploadConfig {
            dir: data_dir.join("uploads"),
            path_prefix: "/uploads".to_owned(),
            max_upload_size: DEFAULT_MAX_UPLOAD_SIZE,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            expiry: DEFAULT_EXPIRY,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            hashes: UploadHashes::All,
        }
    }
}

/// A complete upload, handed to the ingest pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedUpload {
    pub id: String,
    /// The complete file (now the consumer's: see the crate docs).
    pub path: PathBuf,
    pub length: u64,
    pub user_id: String,
    pub project_id: String,
    /// The decoded `Upload-Metadata` (for a final upload: the final's own, as tus says).
    pub metadata: BTreeMap<String, String>,
    /// Lower-case hex digests of the whole file. This crate always fills `sha256`, and `md5`
    /// and `sha512` with [`UploadHashes::All`] (the default).
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub sha512: Option<String>,
}

/// The completion callback. It runs on a runtime thread: it must not block.
pub type OnComplete = Arc<dyn Fn(CompletedUpload) + Send + Sync>;

/// Something that happened to an unfinished upload, for a consumer that shows progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadEvent {
    /// The first bytes of an upload (ordinary or part) are durable.
    Started(UploadInfo),
    /// An upload expired before it was complete and was removed.
    Expired(UploadInfo),
}

/// Who an upload belongs to and what it says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    pub id: String,
    pub user_id: String,
    pub project_id: String,
    /// The decoded `Upload-Metadata`.
    pub metadata: BTreeMap<String, String>,
}

impl UploadInfo {
    fn of(row: &records::UploadRow) -> Self {
        UploadInfo {
            id: row.id.clone(),
            user_id: row.user_id.clone(),
            project_id: row.project_id.clone(),
            metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
        }
    }
}

/// The event callback ([`Uploads::set_on_event`]). It runs on a runtime thread: it must not
/// block.
pub type OnEvent = Arc<dyn Fn(UploadEvent) + Send + Sync>;

/// What a new upload is, for the consumer's creation check: who creates it, in which project,
/// with which decoded metadata.
#[derive(Clone, Debug)]
pub struct NewUploadCheck {
    /// The caller, signed in with a project (`project_id`, the project that holds the bytes).
    pub authn: accounts::Authn,
    pub project_id: String,
    pub metadata: BTreeMap<String, String>,
}

/// Room the consumer will need, next to a complete upload on the same file system, for what it
/// makes of it (a conversion's output): `length × per_mille / 1000 + fixed` bytes. Reserved at
/// creation, on top of the upload itself, so that an upload whose import cannot fit is refused
/// (507) before any byte is sent rather than killed by a full disk after all of them were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomAfter {
    pub per_mille: u64,
    pub fixed: u64,
}

impl RoomAfter {
    /// The bytes needed after an upload of `length` bytes.
    pub fn for_length(self, length: u64) -> u64 {
        if self == RoomAfter::default() {
            return 0;
        }
        (u128::from(length) * u128::from(self.per_mille) / 1000).try_into().unwrap_or(u64::MAX).saturating_add(self.fixed)
    }
}

/// Checks a new upload before anything is stored ([`Uploads::set_check_metadata`]): `Err((status,
/// message))` refuses the creation with that status (400 for bad metadata, 404 for an image
/// that does not exist, 403, 409), so that no upload is accepted whose bytes would be
/// discarded later. `Ok` says how much room the upload's import will need ([`RoomAfter`]).
pub type CheckMetadata = Arc<
    dyn Fn(NewUploadCheck) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<RoomAfter, (u16, String)>> + Send>> + Send + Sync,
>;

/// Chooses, per upload, which digests to compute ([`Uploads::set_hashes_for`]) from its decoded
/// metadata. The consumer knows whether it needs MD5 and SHA-512 of the uploaded bytes: not
/// when it converts them and hashes what it stores instead. It only narrows
/// [`UploadConfig::hashes`]: with [`UploadHashes::Sha256`] there it is not asked.
pub type HashesFor =
    Arc<dyn Fn(BTreeMap<String, String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = UploadHashes> + Send>> + Send + Sync>;

/// Per-upload in-memory state: the running hashes while an upload arrives in order. Lost on
/// restart, which only means the hashes are computed by reading the file at completion.
#[derive(Debug, Default)]
struct Live {
    hashes: Option<pipeline::RunningHashes>,
    /// How many bytes `hashes` covers.
    hashed_to: u64,
}

type Slot = Arc<tokio::sync::Mutex<Live>>;

/// The upload service: database, configuration, completion callback and per-upload locks.
pub struct Uploads {
    db: Db,
    config: UploadConfig,
    on_complete: OnComplete,
    on_event: std::sync::OnceLock<OnEvent>,
    check_metadata: std::sync::OnceLock<CheckMetadata>,
    hashes_for: std::sync::OnceLock<HashesFor>,
    /// One lock per upload with in-memory state: PATCH, DELETE, completion and cleanup of one
    /// upload never overlap.
    live: Mutex<HashMap<String, Slot>>,
    /// Serialises quota checks with the inserts they allow.
    creating: tokio::sync::Mutex<()>,
    /// Bounds background completions ([`MAX_CONCURRENT_COMPLETIONS`]).
    completing: tokio::sync::Semaphore,
    pool: Arc<pipeline::BufferPool>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Uploads {
    /// Creates the upload directory if needed and resumes work a previous process left
    /// unfinished (joining parts, hashing and handing over complete uploads) in the background.
    pub async fn open(db: Db, config: UploadConfig, on_complete: OnComplete) -> Result<Arc<Self>, UploadError> {
        if !config.path_prefix.starts_with('/') || config.path_prefix.ends_with('/') {
            return Err(UploadError::Internal(format!("path_prefix must start with '/' and not end with one: {:?}", config.path_prefix)));
        }
        tokio::fs::create_dir_all(&config.dir).await?;
        let uploads = Arc::new(Uploads {
            db,
            config,
            on_complete,
            on_event: std::sync::OnceLock::new(),
            check_metadata: std::sync::OnceLock::new(),
            hashes_for: std::sync::OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            completing: tokio::sync::Semaphore::new(MAX_CONCURRENT_COMPLETIONS),
            pool: Arc::new(pipeline::BufferPool::default()),
        });
        for row in uploads.db.uploads_to_finish().await? {
            tracing::info!(upload = %row.id, "finishing an upload left incomplete by a previous run");
            lifecycle::spawn_finish(Arc::clone(&uploads), row.id);
        }
        Ok(uploads)
    }

    pub fn config(&self) -> &UploadConfig {
        &self.config
    }

    /// Sets the callback for [`UploadEvent`]s (once; later calls are ignored).
    pub fn set_on_event(&self, f: OnEvent) {
        let _ = self.on_event.set(f);
    }

    /// Sets the check new uploads' metadata must pass (once; later calls are ignored).
    pub fn set_check_metadata(&self, f: CheckMetadata) {
        let _ = self.check_metadata.set(f);
    }

    /// Sets the per-upload choice of digests (once; later calls are ignored).
    pub fn set_hashes_for(&self, f: HashesFor) {
        let _ = self.hashes_for.set(f);
    }

    /// The digests to compute for `row` (asked when they start: at its first bytes, or when
    /// its file is read at completion).
    async fn hashes_for(&self, row: &records::UploadRow) -> UploadHashes {
        match (self.config.hashes, self.hashes_for.get()) {
            (UploadHashes::All, Some(f)) => f(lifecycle::metadata_of(row)).await,
            (configured, _) => configured,
        }
    }

    async fn check_metadata(&self, new: NewUploadCheck) -> Result<RoomAfter, UploadError> {
        match self.check_metadata.get() {
            Some(f) => f(new).await.map_err(|(status, message)| UploadError::Refused {
                status: axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                message,
            }),
            None => Ok(RoomAfter::default()),
        }
    }

    fn event(&self, e: UploadEvent) {
        if let Some(f) = self.on_event.get() {
            f(e);
        }
    }

    /// Deletes expired uploads (rows and files; a final takes its parts along) and stray files
    /// with no row. Returns how many uploads it removed. [`spawn_cleanup`] calls it periodically.
    pub async fn remove_expired(&self) -> Result<usize, UploadError> {
        lifecycle::remove_expired(self).await
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.config.dir.join(id)
    }

    fn location(&self, id: &str) -> String {
        format!("{}/{id}", self.config.path_prefix)
    }

    fn slot(&self, id: &str) -> Slot {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(live.entry(id.to_owned()).or_default())
    }

    fn forget(&self, id: &str) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Locks one upload, waiting at most [`LOCK_WAIT`].
    async fn lock(&self, id: &str) -> Result<tokio::sync::OwnedMutexGuard<Live>, UploadError> {
        tokio::time::timeout(LOCK_WAIT, self.slot(id).lock_owned()).await.map_err(|_| UploadError::Locked)
    }

    /// The expiry of an upload touched now.
    fn expires_from_now(&self) -> i64 {
        now().saturating_add(i64::try_from(self.config.expiry.as_secs()).unwrap_or(i64::MAX))
    }
}

/// Deletes expired uploads every [`UploadConfig::cleanup_interval`], starting now, and retries
/// completions that failed (for example joining parts on a full disk).
pub fn spawn_cleanup(uploads: Arc<Uploads>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match uploads.remove_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed expired uploads"),
                Err(e) => tracing::warn!(error = %e, "cleaning up expired uploads failed"),
            }
            if let Err(e) = lifecycle::retry_unfinished(&uploads).await {
                tracing::warn!(error = %e, "retrying unfinished uploads failed");
            }
            tokio::time::sleep(uploads.config.cleanup_interval).await;
        }
    })
}

/// Unix seconds now.
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// An RFC 9110 date for `Upload-Expires`.
fn http_date(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    httpdate::fmt_http_date(t)
}
