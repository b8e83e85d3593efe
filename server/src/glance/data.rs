//! Image bytes through the Glance API: `PUT /file` (upload), `PUT /stage` + `POST /import`
//! (glance-direct, copy-image; web-download is in `web.rs`), and `GET /tasks` (the image's jobs).
//!
//! A request body streams to a file under `<data_dir>/uploads-glance/`, hashed on the way
//! (MD5, SHA-256, SHA-512, so the pipeline need not read it again when it keeps it as it is),
//! bounded by the project's byte quota, Glance's 1 TiB `image_size_cap` and the size the client
//! declared (`x-openstack-image-size`, else `Content-Length`). It then becomes the same `import`
//! job as a dashboard upload: Hangar's inspector judges it, the storage matrix converts or keeps
//! it, and the image becomes `active` or `killed` with the reason.
//!
//! `PUT /file` waits (up to [`UPLOAD_WAIT`]) for that job, because Glance's clients read the
//! answer of the PUT as the verdict: 204 once the image is `active`, 415 with the inspector's
//! reason when it was refused (glanceclient prints it and exits 1). Hangar keeps a refused
//! image `killed` with its reason — Glance would put it back to `queued` — so the reason stays
//! visible in the dashboard; upload again to a new image. If the job takes longer than the
//! bound, the answer is 204 with the image still `importing`, as Glance's asynchronous imports
//! look. `POST /import` answers 202 at once, as Glance does.
//!
//! An image's data is imported once. Every way in moves the image out of the status it needs
//! with one conditional update (`transition_image`: `queued` → `saving` for `PUT /file`,
//! `queued` → `uploading` for `PUT /stage`, `uploading` → `importing` for glance-direct,
//! `queued` → `importing` for web-download) before it starts anything, so of two concurrent
//! requests exactly one wins and the other is answered 409. An image that is `importing` (or
//! past it), or has an import job queued or running, is refused with 409 at once.

use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use accounts::Authn;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use digests::Algorithm;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::{empty, import_methods, Caller, GlanceError, Result};
use crate::AppState;
use domain::{ImageStatus, JobStatus};
use imageops::{Admitted, Arrival, BodyHold, ReceivedData, Restore, IMAGE_SIZE_CAP};

/// How long `PUT /file` waits for the import job's verdict before answering 204 anyway
/// (glanceclient's own timeout is 600 s).
pub const UPLOAD_WAIT: Duration = Duration::from_secs(300);

/// How often the waiting upload reads its job's status.
const JOB_POLL: Duration = Duration::from_millis(200);

/// Where request bodies land before the import job takes them (`imageops::Images`).
pub(super) fn incoming_dir(state: &AppState) -> PathBuf {
    state.images.incoming_dir().to_owned()
}

fn staged_path(state: &AppState, id: &str) -> PathBuf {
    state.images.staged_paths(id).0
}

fn staged_meta_path(state: &AppState, id: &str) -> PathBuf {
    state.images.staged_paths(id).1
}

/// Bytes staged for `project`'s images (for `/v2/info/usage`).
pub async fn staged_bytes(state: &AppState, project: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(incoming_dir(state)) else { return 0 };
    let mut total = 0u64;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".staged") else { continue };
        if let Ok(Some(img)) = state.db.image(id).await {
            if img.owner.as_deref() == Some(project) {
                total = total.saturating_add(e.metadata().map(|m| m.len()).unwrap_or(0));
            }
        }
    }
    total
}

pub(super) use imageops::Received;

/// The three digests Glance and the pipeline want, computed as the bytes pass: on blocking
/// threads (one per digest, `digests::hash_parallel`), never on the async worker that receives
/// the body. The bounded channel holds the receiver back when hashing lags.
pub(super) struct Digests {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<std::io::Result<Vec<String>>>,
    size: u64,
}

/// Chunks in flight towards the hash threads.
const DIGEST_QUEUE: usize = 16;

impl Digests {
    pub fn start() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(DIGEST_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut source = ChannelReader { rx, current: Bytes::new() };
            digests::hash_parallel(&mut source, &[Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512], |_| Ok(()))
        });
        Digests { tx, task, size: 0 }
    }

    /// Adds `chunk`; returns the running size.
    pub async fn update(&mut self, chunk: &Bytes) -> u64 {
        // A send fails only if the hashing ended early (it failed): `finish` reports that.
        let _ = self.tx.send(chunk.clone()).await;
        self.size = self.size.saturating_add(chunk.len() as u64);
        self.size
    }

    /// None if hashing failed: the bytes cannot be vouched for.
    pub async fn finish(self) -> Option<Received> {
        drop(self.tx);
        let mut d = self.task.await.ok()?.ok()?.into_iter();
        let (md5, sha256, sha512) = (d.next()?, d.next()?, d.next()?);
        Some(Received { size: self.size, md5, sha256, sha512 })
    }
}

/// The chunks sent to a [`Digests`], as a `Read` for its blocking thread; EOF when the sender
/// is dropped.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// The size the client says it sends: `x-openstack-image-size`, else `Content-Length`.
fn declared_size(headers: &HeaderMap) -> Result<Option<u64>> {
    for name in ["x-openstack-image-size", "content-length"] {
        if let Some(v) = headers.get(name) {
            let n = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| GlanceError::bad_request(format!("The {name} header is not a number of bytes.")))?;
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Checks what an upload or stage needs before reading a byte: the one admission rule of every
/// door (`imageops::Images::admit_data`: the image, the caller's right, its status, the store),
/// then the body's type and declared size. Returns the image, what was admitted and the size.
async fn admit(
    state: &AppState,
    caller: &Caller,
    id: &str,
    arrival: Arrival,
    store: Option<&str>,
    headers: &HeaderMap,
) -> Result<(records::ImageDetail, Admitted, Option<u64>)> {
    let admitted = state.images.admit_data(&caller.authn, id, arrival, store).await.map_err(|e| match e {
        imageops::Error::NotFound(_) => GlanceError::no_image(id),
        e => e.into(),
    })?;
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream");
    if ctype.split(';').next().unwrap_or("").trim() != "application/octet-stream" {
        return Err(GlanceError::unsupported(format!("Image data must be sent as application/octet-stream, not {ctype}.")));
    }
    let declared = declared_size(headers)?;
    if let Some(n) = declared {
        if n > admitted.byte_limit {
            return Err(GlanceError::too_large(format!(
                "This image ({n} bytes) would exceed the project's storage quota or the {IMAGE_SIZE_CAP}-byte image size cap."
            )));
        }
    }
    let image = state.db.image_detail(id).await?.ok_or_else(|| GlanceError::no_image(id))?;
    Ok((image, admitted, declared))
}

/// The store a `PUT /file` names (`x-image-meta-store`); a value that is not text names no store
/// that exists.
fn store_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-image-meta-store").map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

use crate::ingest::free_bytes;

/// 507 with what is free and what was needed: the disk (or its quota) is full.
fn disk_full(dir: &FsPath, needed: Option<u64>) -> GlanceError {
    let free = free_bytes(dir).map_or_else(|| "unknown".to_owned(), |f| format!("{f} bytes"));
    let needed = needed.map_or_else(String::new, |n| format!(", this image needs {n}"));
    GlanceError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        format!("The server's upload disk is full ({free} free{needed}); nothing of this request was kept. Try again later."),
    )
}

/// A write error as the answer: 507 when the disk is full, else an internal error.
fn write_failed(dir: &FsPath, what: &str, e: &std::io::Error, needed: Option<u64>) -> GlanceError {
    if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
        disk_full(dir, needed)
    } else {
        GlanceError::internal(what, e)
    }
}

/// Streams `body` into `dest`, hashing it and enforcing `limit`, the declared size and the
/// project's quota (`hold` is raised as bytes arrive). A full disk answers 507 with the free
/// and needed bytes: at once when the declared size, with the `room` its import will need
/// after it (`ingest::room_after_upload`), does not fit; else when a write fails.
async fn receive(
    body: Body,
    dest: &FsPath,
    limit: u64,
    declared: Option<u64>,
    room: uploads::RoomAfter,
    hold: &mut BodyHold,
) -> Result<Received> {
    let dir = dest.parent().unwrap_or(FsPath::new("."));
    tokio::fs::create_dir_all(dir).await.map_err(|e| write_failed(dir, "create upload dir", &e, declared))?;
    if let (Some(n), Some(free)) = (declared, free_bytes(dir)) {
        let room = room.for_length(n);
        if n.saturating_add(room) > free {
            if room == 0 {
                return Err(disk_full(dir, Some(n)));
            }
            return Err(GlanceError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "The server's upload disk has {free} bytes free; this image needs {n} and {room} more to convert it. \
                     Nothing of this request was kept. Try again later."
                ),
            ));
        }
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(|e| write_failed(dir, "create upload file", &e, declared))?;
    let mut digests = Digests::start();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| GlanceError::bad_request(format!("The upload was interrupted: {e}")))?;
        let size = digests.update(&chunk).await;
        if size > limit {
            return Err(GlanceError::too_large("The image exceeds the project's storage quota or the image size cap."));
        }
        if declared.is_some_and(|d| size > d) {
            return Err(GlanceError::bad_request("More data was sent than x-openstack-image-size (or Content-Length) declared."));
        }
        hold.cover(size).await?;
        file.write_all(&chunk).await.map_err(|e| write_failed(dir, "write upload", &e, declared))?;
    }
    let got = digests.finish().await.ok_or_else(|| GlanceError::internal("hash upload", &"a digest failed"))?;
    let size = got.size;
    if let Some(d) = declared {
        if d != size {
            return Err(GlanceError::bad_request(format!("The upload declared {d} bytes but {size} arrived.")));
        }
    }
    file.sync_all().await.map_err(|e| write_failed(dir, "sync upload", &e, declared))?;
    Ok(got)
}

/// 409 when `image`'s import already started: its data is arriving (`saving`), being imported
/// (`importing`) or in place (`active`, `deactivated`), or an import job is queued or running.
/// The conditional transition each method then makes is what holds under concurrent requests;
/// this answers the plain case clearly, whatever the method.
async fn import_not_started(state: &AppState, image: &records::ImageDetail) -> Result<()> {
    if matches!(image.status, ImageStatus::Saving | ImageStatus::Importing | ImageStatus::Active | ImageStatus::Deactivated) {
        return Err(GlanceError::conflict(format!(
            "Image status is {}: this image's import already started, and an image is imported once \
             (an import needs a queued image, or staged data for glance-direct).",
            image.status
        )));
    }
    Ok(state.images.no_import_job(&image.id).await?)
}

/// Hands received bytes to the import, as every door does (`imageops::Images::queue_import`).
pub(super) async fn submit_import(
    state: &AppState,
    user_id: &str,
    image: &records::ImageDetail,
    path: PathBuf,
    got: &Received,
    backend: String,
) -> Result<records::JobRow> {
    let data = ReceivedData::of_body(&image.id, image.owner.as_deref().unwrap_or(""), user_id, path, got);
    Ok(state.images.queue_import(&data, got.size, &backend).await?)
}

/// The room an import of `image` into `backend` will need after its body (see
/// `ingest::room_after_upload`); none when the backend or the matrix cannot be read.
async fn import_room(state: &AppState, image: &records::ImageDetail, backend: &str) -> uploads::RoomAfter {
    let Some(store) = state.stores.get(backend) else { return uploads::RoomAfter::default() };
    let declared = imageops::declared::declared(image.disk_format, image.container_format);
    match crate::ingest::Rules::load(&state.db, store.kind().as_str()).await {
        Ok(rules) => crate::ingest::room_after_upload(&rules, declared.inspect_as()),
        Err(_) => uploads::RoomAfter::default(),
    }
}

/// `PUT /v2/images/{id}/file`: `queued` → `saving` while the body arrives → `importing` → the
/// import job's verdict (see the module docs).
pub async fn upload(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (image, Admitted { byte_limit: limit, backend, .. }, declared) =
        admit(&state, &caller, &id, Arrival::Body, store_header(&headers), &headers).await?;
    if !state.db.transition_image(&id, &[ImageStatus::Queued], ImageStatus::Saving, "").await? {
        return Err(GlanceError::conflict("Image status transition to saving is not allowed: another upload started first."));
    }
    let dest = incoming_dir(&state).join(format!("{id}.{:08x}.upload", super::rand_ref()));
    // Glance's `_restore()`: on any failure before the job has the data, the image waits for
    // data again and its quota hold is given back.
    let restore = Restore::new(&state.db, &id, &[ImageStatus::Saving, ImageStatus::Importing], vec![dest.clone()])
        .hold("upload", None)
        .hold("import", None);
    let handed_over = async {
        let mut hold = BodyHold::start(&state.db, &image, "upload", declared).await?;
        let room = import_room(&state, &image, &backend).await;
        let got = receive(body, &dest, limit, declared, room, &mut hold).await?;
        // `importing` is a state the pipeline accepts (as for a resumed job).
        if !state.db.transition_image(&id, &[ImageStatus::Saving], ImageStatus::Importing, "").await? {
            return Err(GlanceError::new(StatusCode::GONE, "The image was deleted during the upload."));
        }
        // The bytes stay held for the import job, which gives them back once the image is
        // active (its stored copy then counts) or killed.
        state.db.move_quota_hold(&id, "upload", "import", got.size).await?;
        let job = submit_import(&state, &caller.me.user_id, &image, dest.clone(), &got, backend).await?;
        Ok((got, job))
    }
    .await;
    let (got, job) = match handed_over {
        Ok(done) => {
            restore.disarm();
            done
        }
        Err(e) => {
            restore.now().await;
            return Err(e);
        }
    };
    caller.audit(&state, "image.upload", "image", &id, &format!("{} bytes", got.size)).await?;
    let deadline = tokio::time::Instant::now() + UPLOAD_WAIT;
    loop {
        let Some(row) = state.db.job(&job.id).await? else {
            return Err(GlanceError::new(StatusCode::GONE, "The image was deleted during the upload."));
        };
        match row.status.as_str() {
            "succeeded" => return Ok(empty(StatusCode::NO_CONTENT)),
            "failed" | "cancelled" => {
                let reason = state.db.image_detail(&id).await?.map(|i| i.status_reason).filter(|r| !r.is_empty()).unwrap_or(row.error);
                // As Glance answers (docs/glance-api.md §1.6): the data refused, 415
                // (InvalidImageData); over the quota, 413 (StorageQuotaFull); Hangar unable to
                // keep it (the store, the database), 503 (StorageWriteDenied).
                return Err(match row.failure {
                    _ if row.status == JobStatus::Cancelled => {
                        GlanceError::conflict(format!("The import of image {id} was cancelled: {reason}"))
                    }
                    records::JobFailure::Refused => GlanceError::unsupported(format!("Image {id} was refused: {reason}")),
                    records::JobFailure::OverQuota => {
                        GlanceError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("Image {id} was not kept: {reason}"))
                    }
                    records::JobFailure::Conflict => GlanceError::conflict(format!("Image {id} changed during its import: {reason}")),
                    records::JobFailure::Error | records::JobFailure::None => {
                        GlanceError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Image {id} could not be stored: {reason}"))
                    }
                });
            }
            _ if tokio::time::Instant::now() >= deadline => return Ok(empty(StatusCode::NO_CONTENT)),
            _ => tokio::time::sleep(JOB_POLL).await,
        }
    }
}

/// `PUT /v2/images/{id}/stage`: `queued` → `uploading`; the data waits for `POST /import`.
pub async fn stage(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (image, Admitted { byte_limit: limit, .. }, declared) = admit(&state, &caller, &id, Arrival::Stage, None, &headers).await?;
    if !state.db.transition_image(&id, &[ImageStatus::Queued], ImageStatus::Uploading, "").await? {
        return Err(GlanceError::conflict("Image status transition to uploading is not allowed: another upload started first."));
    }
    let dest = staged_path(&state, &id);
    let restore =
        Restore::new(&state.db, &id, &[ImageStatus::Uploading], vec![dest.clone(), staged_meta_path(&state, &id)]).hold("stage", None);
    let staged = async {
        let mut hold = BodyHold::start(&state.db, &image, "stage", declared).await?;
        // Staged data is imported later, to the default backend unless the import names another.
        let room = import_room(&state, &image, state.stores.default_backend().name()).await;
        let got = receive(body, &dest, limit, declared, room, &mut hold).await?;
        // Staged data keeps its bytes held (without an upload slot) until it is imported or
        // the image is deleted.
        state.db.move_quota_hold(&id, "stage", "stage", got.size).await?;
        let meta = serde_json::to_vec(&got).map_err(|e| GlanceError::internal("staged metadata", &e))?;
        tokio::fs::write(staged_meta_path(&state, &id), meta).await.map_err(|e| GlanceError::internal("write staged metadata", &e))?;
        Ok::<_, GlanceError>(got)
    }
    .await;
    let got = match staged {
        Ok(got) => {
            restore.disarm();
            got
        }
        Err(e) => {
            restore.now().await;
            return Err(e);
        }
    };
    caller.audit(&state, "image.stage", "image", &id, &format!("{} bytes", got.size)).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /v2/images/{id}/import`: `glance-direct` (staged data → import job), `copy-image`
/// (an active image → copy jobs to other backends) or `web-download` (`web.rs`). 202 with no body.
pub async fn import(
    State(state): State<AppState>,
    authn: Option<Extension<Authn>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (image, facts) = caller.image(&state, &id).await?;
    caller.allow(&policy::Action::ModifyImage(&facts))?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| GlanceError::bad_request(format!("The body is not JSON: {e}")))?;
    let method = doc
        .get("method")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| GlanceError::bad_request("The body needs {\"method\": {\"name\": …}}."))?;
    for flag in ["all_stores", "all_stores_must_succeed"] {
        if doc.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(GlanceError::bad_request(format!("'{flag}' must be true or false.")));
        }
    }
    let all_stores = doc.get("all_stores").and_then(Value::as_bool).unwrap_or(false);
    let mut stores: Vec<String> = match doc.get("stores") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| GlanceError::bad_request("'stores' must be a list of store ids.")))
            .collect::<Result<_>>()?,
        Some(_) => return Err(GlanceError::bad_request("'stores' must be a list of store ids.")),
    };
    if all_stores {
        stores = state.stores.all().iter().map(|b| b.name().to_owned()).collect();
    }
    if let Some(unknown) = stores.iter().find(|s| state.stores.get(s).is_none()) {
        return Err(GlanceError::conflict(format!("Unknown store {unknown}; see /v2/info/stores.")));
    }
    // copy-image copies an active image's stored bytes; every other method imports its data.
    if method != "copy-image" {
        import_not_started(&state, &image).await?;
    }
    match method {
        "glance-direct" => {
            if stores.len() > 1 {
                return Err(GlanceError::bad_request(
                    "Hangar imports into one store; copy the active image to others with the copy-image method.",
                ));
            }
            state.images.import_staged(&caller.authn, &id, stores.first().map(String::as_str)).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "copy-image" => {
            if stores.is_empty() {
                return Err(GlanceError::bad_request("copy-image needs 'stores' (or 'all_stores': true)."));
            }
            state.images.copy_image(&caller.authn, &id, &stores, all_stores).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "web-download" => super::web::import(&state, &caller, &image, &doc, stores).await,
        other => Err(GlanceError::bad_request(format!(
            "Import method {other} is not supported; the methods are {}.",
            import_methods(&state).join(", ")
        ))),
    }
}

/// A job as a Glance task. `owner` is the image's project, as in Glance; who started the job
/// (`user_id`) is shown only to `insider`s — the image's own project and administrators —
/// never to other projects looking at a public or community image.
fn task_json(j: &records::JobRow, owner: Option<&str>, insider: bool) -> Value {
    let status = match j.status {
        JobStatus::Queued => "pending",
        JobStatus::Running => "processing",
        JobStatus::Succeeded => "success",
        JobStatus::Failed | JobStatus::Cancelled => "failure",
    };
    let message = if !j.error.is_empty() {
        j.error.clone()
    } else if !j.summary.is_empty() {
        j.summary.clone()
    } else {
        format!("{} of {} bytes", j.bytes_done, j.bytes_total)
    };
    json!({
        "id": j.id,
        "type": "api_image_import",
        "status": status,
        "owner": owner,
        "user_id": if insider { j.created_by.clone() } else { None },
        "image_id": j.image_id,
        "request_id": j.id,
        "message": message,
        "input": { "method": j.kind, "store": j.backend },
        "result": Value::Null,
        "expires_at": Value::Null,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
        "self": format!("/v2/tasks/{}", j.id),
        "schema": "/v2/schemas/task",
    })
}

/// `GET /v2/images/{id}/tasks`: the image's import and copy jobs.
pub async fn tasks(State(state): State<AppState>, authn: Option<Extension<Authn>>, Path(id): Path<String>) -> Result<Response> {
    let caller = Caller::from(authn)?;
    let (image, _) = caller.image(&state, &id).await?;
    let insider = caller.me.is_admin || (image.owner.is_some() && image.owner.as_deref() == caller.project());
    let tasks: Vec<Value> = state.db.jobs_for_image(&id).await?.iter().map(|j| task_json(j, image.owner.as_deref(), insider)).collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}
