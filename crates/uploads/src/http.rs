//! The tus routes: OPTIONS, POST (creation, creation-with-upload, concatenation), HEAD, PATCH,
//! DELETE, and the `X-HTTP-Method-Override` form of the last three.

use std::collections::BTreeMap;
use std::sync::Arc;

use accounts::Authn;
use axum::body::{Body, HttpBody as _};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{head, options};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use policy::{Action, Principal, Role};
use records::{NewUpload, UploadRow, CONCAT_FINAL, CONCAT_NONE, CONCAT_PARTIAL};
use tokio::sync::mpsc;

use crate::pipeline::{self, Block, ChunkCheck, RunningHashes, BLOCK_SIZE, QUEUE};
use crate::tus::{self, Concat};
use crate::{http_date, lifecycle, now, UploadError, UploadHashes, Uploads, MAX_OPEN_UPLOADS_PER_USER};

/// The tus routes, under `uploads.config().path_prefix` (see the crate docs for how to mount).
pub fn router(uploads: Arc<Uploads>) -> Router {
    let prefix = uploads.config.path_prefix.clone();
    let collection = options(options_handler).post(create);
    Router::new()
        .route(&prefix, collection.clone())
        .route(&format!("{prefix}/"), collection)
        .route(&format!("{prefix}/{{id}}"), head(head_handler).patch(patch).delete(delete).post(method_override))
        .route_layer(middleware::from_fn(tus_resumable))
        // Bodies are streamed and limited by this crate (max_request_body), not buffered by axum.
        .layer(DefaultBodyLimit::disable())
        .with_state(uploads)
}

/// `Tus-Resumable: 1.0.0` on every request and response except OPTIONS (412 otherwise).
async fn tus_resumable(req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let mut res = if tus::version_ok(req.headers()) { next.run(req).await } else { UploadError::UnsupportedVersion.into_response() };
    res.headers_mut().insert(tus::TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
    res
}

fn set(res: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        res.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

async fn options_handler(State(u): State<Arc<Uploads>>) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    set(&mut res, tus::TUS_VERSION, tus::VERSION);
    set(&mut res, tus::TUS_EXTENSION, tus::EXTENSIONS);
    set(&mut res, tus::TUS_MAX_SIZE, u.config.max_upload_size);
    set(&mut res, tus::TUS_CHECKSUM_ALGORITHM, tus::CHECKSUM_ALGORITHMS);
    res
}

// ---- who may do what -------------------------------------------------------------------------

fn authn_of(authn: &Option<Extension<Authn>>) -> Result<&Authn, UploadError> {
    authn.as_ref().map(|a| &a.0).ok_or(UploadError::NotSignedIn)
}

fn principal(authn: &Option<Extension<Authn>>) -> Result<&Principal, UploadError> {
    authn.as_ref().and_then(|a| a.principal.as_ref()).ok_or(UploadError::NotSignedIn)
}

/// The creator or an admin may see an upload; for anyone else it does not exist.
fn may_see<'a>(authn: &'a Option<Extension<Authn>>, row: &UploadRow) -> Result<&'a Principal, UploadError> {
    let p = principal(authn)?;
    if p.is_admin || p.user_id == row.user_id {
        Ok(p)
    } else {
        Err(UploadError::NotFound)
    }
}

/// Writing needs upload rights in the upload's project still (a revoked role stops an upload).
fn may_write(authn: &Option<Extension<Authn>>, row: &UploadRow) -> Result<(), UploadError> {
    let p = may_see(authn, row)?;
    if p.is_admin {
        return Ok(());
    }
    let scopes = authn.as_ref().map(|a| a.scopes.as_slice()).unwrap_or_default();
    let member = p.scope.iter().chain(scopes).any(|s| s.project_id == row.project_id && s.role == Role::Member);
    if member {
        Ok(())
    } else {
        Err(UploadError::Forbidden("You no longer have upload rights in this upload's project.".into()))
    }
}

/// The upload, if the caller may see it and it has not expired.
async fn visible_upload(u: &Uploads, id: &str, authn: &Option<Extension<Authn>>) -> Result<UploadRow, UploadError> {
    principal(authn)?;
    let id = tus::parse_id(id).ok_or(UploadError::NotFound)?;
    let row = u.db.upload_by_id(&id).await?.ok_or(UploadError::NotFound)?;
    may_see(authn, &row)?;
    if row.expires_at <= now() {
        return Err(UploadError::Gone);
    }
    Ok(row)
}

// ---- creation ---------------------------------------------------------------------------------

async fn create(
    State(u): State<Arc<Uploads>>,
    authn: Option<Extension<Authn>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    let p = principal(&authn)?;
    let project = p
        .scope
        .as_ref()
        .map(|s| s.project_id.clone())
        .ok_or_else(|| UploadError::Forbidden("Choose a project before uploading.".into()))?;
    policy::authorize(Some(p), &Action::CreateImage { project: &project }).map_err(|d| match d {
        policy::Denial::NotSignedIn => UploadError::NotSignedIn,
        policy::Denial::Forbidden(why) => UploadError::Forbidden(why),
    })?;

    let concat = tus::concat(&headers, &u.config.path_prefix)?;
    let metadata = tus::metadata(&headers)?;
    let room = u
        .check_metadata(crate::NewUploadCheck { authn: authn_of(&authn)?.clone(), project_id: project.clone(), metadata: metadata.clone() })
        .await?;
    if headers.contains_key(tus::UPLOAD_DEFER_LENGTH) {
        return Err(UploadError::BadRequest("Upload-Defer-Length is not supported; send Upload-Length.".into()));
    }
    let length = tus::number(&headers, tus::UPLOAD_LENGTH)?;
    let body_len = tus::number(&headers, header::CONTENT_LENGTH.as_str())?;
    // A body is there unless it is known to be empty (no Content-Length and no chunked
    // encoding on the wire, or Content-Length: 0).
    let has_body = body_len.is_some_and(|n| n > 0) || body.size_hint().exact() != Some(0);
    if has_body && !tus::is_offset_octet_stream(&headers) {
        return Err(UploadError::UnsupportedMediaType);
    }
    if let Some(n) = body_len {
        if n > u.config.max_request_body {
            return Err(too_big_request(u.config.max_request_body));
        }
    }
    let metadata_json = serde_json::to_string(&metadata).map_err(|e| UploadError::Internal(e.to_string()))?;
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let created = now();
    let expires = u.expires_from_now();

    let row = match &concat {
        Concat::Final(parts) => {
            if length.is_some() {
                return Err(UploadError::BadRequest("A final upload's length is the sum of its parts; omit Upload-Length.".into()));
            }
            if has_body {
                return Err(UploadError::Forbidden("A final upload takes no data; upload the parts.".into()));
            }
            create_final(&u, p, &project, &id, parts, &metadata_json, created, expires, room).await?
        }
        Concat::None | Concat::Partial => {
            let length = length.ok_or_else(|| UploadError::BadRequest("Upload-Length is required.".into()))?;
            let kind = if concat == Concat::Partial { CONCAT_PARTIAL } else { CONCAT_NONE };
            let new = NewUpload {
                id: &id,
                user_id: &p.user_id,
                project_id: &project,
                length: i64::try_from(length).map_err(|_| UploadError::TooLarge("Upload-Length is too large.".into()))?,
                metadata: &metadata_json,
                concat: kind,
                parts: None,
                created_at: created,
                expires_at: expires,
            };
            // A part's import happens once the parts are joined: the final reserves its room.
            let room = if concat == Concat::Partial { crate::RoomAfter::default() } else { room };
            create_plain(&u, &new, length, room).await?
        }
    };
    tracing::info!(upload = %row.id, user = %p.username, project = %project, length = row.upload_length, concat = %row.concat, "upload created");

    let mut offset = 0;
    if row.concat == CONCAT_FINAL {
        lifecycle::spawn_finish(Arc::clone(&u), row.id.clone());
    } else if has_body {
        // creation-with-upload: the upload exists whatever happens to the body; the client
        // learns from Upload-Offset how much of it was kept. Its own task, as for PATCH, so a
        // client that goes away mid-body still has what arrived recorded.
        let (task_u, id) = (Arc::clone(&u), row.id.clone());
        let written = tokio::spawn(async move { write_request(&task_u, &id, 0, &headers, body).await }).await;
        match written {
            Ok(Ok(o)) => offset = o,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::info!(upload = %row.id, error = %why, "data sent with the creation request was not kept");
                if let Ok(Some(r)) = u.db.upload_by_id(&row.id).await {
                    offset = u64::try_from(r.upload_offset).unwrap_or(0);
                }
            }
        }
    } else if row.upload_length == 0 {
        lifecycle::spawn_finish(Arc::clone(&u), row.id.clone());
    }

    let mut res = StatusCode::CREATED.into_response();
    set(&mut res, "location", u.location(&row.id));
    set(&mut res, tus::UPLOAD_EXPIRES, http_date(expires));
    if row.concat != CONCAT_FINAL {
        set(&mut res, tus::UPLOAD_OFFSET, offset);
    }
    Ok(res)
}

fn too_big_request(limit: u64) -> UploadError {
    UploadError::TooLarge(format!(
        "One request may carry at most {limit} bytes; send the file in chunks of at most that size (tus chunkSize)."
    ))
}

/// Quotas shared by ordinary, partial and final uploads. `bytes` is what this upload adds to
/// the project's bytes in flight; `slot` whether it counts as an upload in flight.
async fn check_quotas(u: &Uploads, user_id: &str, project: &str, bytes: u64, slot: bool) -> Result<(), UploadError> {
    if u.db.open_uploads_of_user(user_id).await? >= MAX_OPEN_UPLOADS_PER_USER {
        return Err(UploadError::TooLarge(format!("You have {MAX_OPEN_UPLOADS_PER_USER} uploads open; finish or cancel some first.")));
    }
    let quota = u.db.quota(project).await?;
    let usage = u.db.quota_usage(project).await?;
    if let Some(max) = quota.max_concurrent_uploads {
        let max = u64::try_from(max).unwrap_or(0);
        if slot && usage.slots >= max {
            return Err(UploadError::TooLarge(format!(
                "The project's quota allows {max} uploads at a time and that many are in progress; wait for one to finish."
            )));
        }
    }
    if let Some(max) = quota.max_bytes {
        let max = u64::try_from(max).unwrap_or(0);
        let total = usage.bytes().saturating_add(bytes);
        if total > max {
            return Err(UploadError::TooLarge(format!(
                "This upload would take the project to {total} bytes (images: {}, uploads and imports in progress: {}, this one: {bytes}); \
                 its quota is {max} bytes. Delete images or ask an administrator for more.",
                usage.stored,
                usage.uploading.saturating_add(usage.held)
            )));
        }
    }
    Ok(())
}

/// Refuses (507) when the upload directory's file system has less free space than `need` for
/// the upload and `room` for its import after it.
fn check_free_space(u: &Uploads, need: u64, room: u64) -> Result<(), UploadError> {
    let st = rustix::fs::statvfs(&u.config.dir).map_err(|e| UploadError::Io(e.into()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let total = need.saturating_add(room);
    if free < total {
        let why = if room > 0 {
            format!("this one needs {total} ({need} for the upload and {room} to convert it)")
        } else {
            format!("this one needs {need}")
        };
        return Err(UploadError::InsufficientStorage(format!(
            "The server has {free} bytes free for uploads and {why}; try again later or ask an administrator."
        )));
    }
    Ok(())
}

async fn create_plain(u: &Uploads, new: &NewUpload<'_>, length: u64, room: crate::RoomAfter) -> Result<UploadRow, UploadError> {
    if length > u.config.max_upload_size {
        return Err(UploadError::TooLarge(format!(
            "Images may have at most {} bytes and this one has {length}.",
            u.config.max_upload_size
        )));
    }
    let _creating = u.creating.lock().await;
    check_quotas(u, new.user_id, new.project_id, length, new.concat == CONCAT_NONE).await?;
    check_free_space(u, length, room.for_length(length))?;
    // The file first: a crash before the row leaves a stray file the cleanup removes, never a
    // row without its file.
    let path = u.path_of(new.id);
    let created = tokio::task::spawn_blocking(move || lifecycle::create_file(&path, length)).await;
    created.map_err(|e| UploadError::Internal(e.to_string()))?.map_err(UploadError::from_io)?;
    // The quota check above explains a refusal; this one, in the insert itself, is what holds
    // when the Glance API or another server adds to the project's usage at the same moment.
    match u.db.create_upload_within_quota(new, new.concat == CONCAT_NONE).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = tokio::fs::remove_file(u.path_of(new.id)).await;
            return Err(UploadError::TooLarge(
                "This upload would take the project past its storage or upload quota (other uploads started meanwhile); \
                 wait for them to finish, delete images or ask an administrator for more."
                    .into(),
            ));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(u.path_of(new.id)).await;
            return Err(e.into());
        }
    }
    u.db.upload_by_id(new.id).await?.ok_or(UploadError::NotFound)
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn create_final(
    u: &Uploads,
    p: &Principal,
    project: &str,
    id: &str,
    parts: &[String],
    metadata_json: &str,
    created: i64,
    expires: i64,
    room: crate::RoomAfter,
) -> Result<UploadRow, UploadError> {
    let mut length: u64 = 0;
    for part in parts {
        let row = u.db.upload_by_id(part).await?;
        let row = row.filter(|r| r.user_id == p.user_id && r.project_id == project && r.concat == CONCAT_PARTIAL);
        let Some(row) = row else {
            return Err(UploadError::BadRequest(format!("{} is not a partial upload of yours in this project.", u.location(part))));
        };
        if row.upload_offset != row.upload_length {
            return Err(UploadError::BadRequest(format!("{} is not complete yet; finish the parts first.", u.location(part))));
        }
        length = length.saturating_add(u64::try_from(row.upload_length).unwrap_or(0));
    }
    if length > u.config.max_upload_size {
        return Err(UploadError::TooLarge(format!(
            "Images may have at most {} bytes and these parts add up to {length}.",
            u.config.max_upload_size
        )));
    }
    let parts_json = serde_json::to_string(parts).map_err(|e| UploadError::Internal(e.to_string()))?;
    let new = NewUpload {
        id,
        user_id: &p.user_id,
        project_id: project,
        length: i64::try_from(length).map_err(|_| UploadError::TooLarge("The parts are too large.".into()))?,
        metadata: metadata_json,
        concat: CONCAT_FINAL,
        parts: Some(&parts_json),
        created_at: created,
        expires_at: expires,
    };
    let _creating = u.creating.lock().await;
    // The parts' bytes are counted already; the final takes an upload slot. Joining needs room
    // for a second copy until the parts are removed.
    check_quotas(u, &p.user_id, project, 0, true).await?;
    check_free_space(u, length, room.for_length(length))?;
    match u.db.create_final_upload_within_quota(&new, parts).await? {
        records::FinalCreated::Created => {}
        records::FinalCreated::BadParts => {
            return Err(UploadError::BadRequest(
                "The parts must be complete partial uploads of yours that no other final upload uses.".into(),
            ))
        }
        records::FinalCreated::OverSlots => {
            return Err(UploadError::TooLarge(
                "The project's quota of uploads at a time is reached (others started meanwhile); wait for one to finish.".into(),
            ))
        }
    }
    u.db.upload_by_id(id).await?.ok_or(UploadError::NotFound)
}

// ---- HEAD ---------------------------------------------------------------------------------------

async fn head_handler(
    State(u): State<Arc<Uploads>>,
    Path(id): Path<String>,
    authn: Option<Extension<Authn>>,
) -> Result<Response, UploadError> {
    let row = visible_upload(&u, &id, &authn).await?;
    let mut res = StatusCode::OK.into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set(&mut res, tus::UPLOAD_LENGTH, row.upload_length);
    let complete = row.upload_offset == row.upload_length;
    // tus: a final upload shows no offset until its parts are joined.
    if row.concat != CONCAT_FINAL || complete {
        set(&mut res, tus::UPLOAD_OFFSET, row.upload_offset);
    }
    match row.concat.as_str() {
        CONCAT_PARTIAL => set(&mut res, tus::UPLOAD_CONCAT, "partial"),
        CONCAT_FINAL => {
            let parts: Vec<String> = serde_json::from_str(row.parts.as_deref().unwrap_or("[]")).unwrap_or_default();
            let urls: Vec<String> = parts.iter().map(|p| u.location(p)).collect();
            set(&mut res, tus::UPLOAD_CONCAT, format!("final;{}", urls.join(" ")));
        }
        _ => {}
    }
    let metadata: BTreeMap<String, String> = serde_json::from_str(&row.metadata).unwrap_or_default();
    if !metadata.is_empty() {
        set(&mut res, tus::UPLOAD_METADATA, tus::encode_metadata(&metadata));
    }
    if !complete {
        set(&mut res, tus::UPLOAD_EXPIRES, http_date(row.expires_at));
    }
    Ok(res)
}

// ---- PATCH --------------------------------------------------------------------------------------

async fn patch(
    State(u): State<Arc<Uploads>>,
    Path(id): Path<String>,
    authn: Option<Extension<Authn>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    let row = visible_upload(&u, &id, &authn).await?;
    if !tus::is_offset_octet_stream(&headers) {
        return Err(UploadError::UnsupportedMediaType);
    }
    let sent = tus::number(&headers, tus::UPLOAD_OFFSET)?.ok_or_else(|| UploadError::BadRequest("Upload-Offset is required.".into()))?;
    if row.concat == CONCAT_FINAL {
        return Err(UploadError::Forbidden("A final upload is assembled from its parts; send data to the parts.".into()));
    }
    may_write(&authn, &row)?;
    let id = row.id;
    // The work runs in its own task: if the client goes away, hyper drops this handler, but the
    // bytes already received must still be made durable and the offset recorded.
    let task = tokio::spawn(async move {
        let offset = write_request(&u, &id, sent, &headers, body).await?;
        let mut res = StatusCode::NO_CONTENT.into_response();
        set(&mut res, tus::UPLOAD_OFFSET, offset);
        if let Some(row) = u.db.upload_by_id(&id).await? {
            if row.upload_offset != row.upload_length {
                set(&mut res, tus::UPLOAD_EXPIRES, http_date(row.expires_at));
            }
        }
        Ok::<_, UploadError>(res)
    });
    task.await.map_err(|e| UploadError::Internal(format!("upload task failed: {e}")))?
}

/// How a request body ended.
enum BodyEnd {
    /// All of it arrived.
    Complete,
    /// The client went away (or the body broke); what arrived before is kept unless checked.
    Broken,
    /// More bytes than allowed.
    TooLong,
    /// The writer stopped (its error is in the report).
    WriterStopped,
}

/// Receives a body into blocks for the writer, up to `limit` bytes.
async fn receive(mut body: Body, limit: u64, tx: mpsc::Sender<Arc<Block>>, u: &Uploads) -> BodyEnd {
    let mut buf = u.pool.take();
    let mut received: u64 = 0;
    let end = loop {
        let frame = match body.frame().await {
            None => break BodyEnd::Complete,
            Some(Err(_)) => break BodyEnd::Broken,
            Some(Ok(frame)) => frame,
        };
        let Ok(mut data) = frame.into_data() else { continue };
        received = received.saturating_add(data.len() as u64);
        if received > limit {
            break BodyEnd::TooLong;
        }
        while !data.is_empty() {
            let take = (BLOCK_SIZE - buf.len()).min(data.len());
            buf.extend_from_slice(&data.split_to(take));
            if buf.len() == BLOCK_SIZE {
                let full = std::mem::replace(&mut buf, u.pool.take());
                if tx.send(Block::new(full, Arc::clone(&u.pool))).await.is_err() {
                    return BodyEnd::WriterStopped;
                }
            }
        }
    };
    if matches!(end, BodyEnd::Complete | BodyEnd::Broken) && !buf.is_empty() && tx.send(Block::new(buf, Arc::clone(&u.pool))).await.is_err()
    {
        return BodyEnd::WriterStopped;
    }
    end
}

/// Writes one request's body at `sent` (which must be the upload's offset), under the upload's
/// lock; returns the new durable offset. Shared by PATCH and creation-with-upload.
async fn write_request(u: &Arc<Uploads>, id: &str, sent: u64, headers: &HeaderMap, body: Body) -> Result<u64, UploadError> {
    let checksum = tus::checksum(headers)?;
    let content_length = tus::number(headers, header::CONTENT_LENGTH.as_str())?;
    let mut live = u.lock(id).await?;
    let row = u.db.upload_by_id(id).await?.ok_or(UploadError::NotFound)?;
    if row.completed_at.is_some() {
        // Handed over (its file may already be the import's): a late PATCH, even an empty one,
        // is told so rather than failing on the missing file.
        return Err(UploadError::Refused {
            status: StatusCode::CONFLICT,
            message: "This upload is complete and was handed over for import; nothing more can be sent to it.".into(),
        });
    }
    let offset = u64::try_from(row.upload_offset).unwrap_or(0);
    let length = u64::try_from(row.upload_length).unwrap_or(0);
    if sent != offset {
        return Err(UploadError::OffsetMismatch { sent, actual: offset });
    }
    let remaining = length - offset.min(length);
    if let Some(n) = content_length {
        if n > u.config.max_request_body {
            return Err(too_big_request(u.config.max_request_body));
        }
        if n > remaining {
            return Err(UploadError::TooLarge(format!(
                "This request carries {n} bytes but only {remaining} remain of the declared Upload-Length."
            )));
        }
    }
    let limit = remaining.min(u.config.max_request_body);

    let path = u.path_of(id);
    // Readable too: hash threads that fall behind read their bytes back from it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| UploadError::Internal(format!("the file of upload {id} cannot be opened: {e}")))?;
    let file = Arc::new(file);
    // Running hashes only for ordinary uploads written in order from byte 0; parts are hashed
    // when their final joins them.
    let hashes = if row.concat != CONCAT_NONE {
        None
    } else if offset == 0 {
        Some(RunningHashes::fresh(u.hashes_for(&row).await == UploadHashes::All))
    } else if live.hashed_to == offset {
        live.hashes.take()
    } else {
        None
    };

    let (tx, mut rx) = mpsc::channel::<Arc<Block>>(QUEUE);
    let check = checksum.as_ref().map(ChunkCheck::new);
    let writer_file = Arc::clone(&file);
    let writer = tokio::task::spawn_blocking(move || pipeline::write_blocks(&writer_file, offset, || rx.blocking_recv(), check, hashes));
    let end = receive(body, limit, tx, u).await;
    let report = writer.await.map_err(|e| UploadError::Internal(format!("writer thread failed: {e}")))?;

    let verdict: Result<(), UploadError> = match (&end, &report.error) {
        (_, Some(e)) if crate::error::is_disk_full(e) => Err(UploadError::InsufficientStorage(crate::error::DISK_FULL.into())),
        (_, Some(e)) => Err(UploadError::Internal(format!("writing upload {id} failed: {e}"))),
        (BodyEnd::WriterStopped, None) => Err(UploadError::Internal(format!("the writer of upload {id} stopped early"))),
        (BodyEnd::TooLong, _) => Err(if limit == remaining && remaining < u.config.max_request_body {
            UploadError::TooLarge(format!(
                "This request carries more than the {remaining} bytes that remain of the declared Upload-Length."
            ))
        } else {
            too_big_request(u.config.max_request_body)
        }),
        // An unverifiable chunk is not kept: the checksum covers the whole request.
        (BodyEnd::Broken, None) if checksum.is_some() => Err(UploadError::BadRequest("The request body broke off.".into())),
        (_, None) if report.checksum_ok == Some(false) => Err(UploadError::ChecksumMismatch),
        (BodyEnd::Broken | BodyEnd::Complete, None) => Ok(()),
    };

    let written = report.written;
    // The hash threads took this request's bytes and wait for the verdict: until it is "keep",
    // they stand for the state at `offset` (and dropping the verdict on any error below makes
    // them discard the bytes).
    let (lanes, keep_hashes) = report.hashes.map_or((None, None), |(l, v)| (Some(l), Some(v)));
    live.hashes = lanes.map(|l| RunningHashes::Pending(Box::new(l)));
    live.hashed_to = offset;
    let keep_file = Arc::clone(&file);
    if let Err(e) = verdict {
        if written > 0 {
            // Discard the request's bytes; the running hashes stay as they were before it.
            let discard = tokio::task::spawn_blocking(move || lifecycle::discard_tail(&keep_file, offset, length)).await;
            if let Ok(Err(io)) | Err(io) = discard.map_err(|j| std::io::Error::other(j.to_string())) {
                tracing::error!(upload = %id, error = %io, "could not truncate a discarded chunk");
            }
        }
        return Err(e);
    }
    if written == 0 {
        return Ok(offset);
    }
    let synced = tokio::task::spawn_blocking(move || keep_file.sync_data()).await;
    synced.map_err(|e| UploadError::Internal(e.to_string()))?.map_err(UploadError::from_io)?;
    let new_offset = offset + written;
    let advanced = u.db.advance_upload(id, row.upload_offset, i64::try_from(new_offset).unwrap_or(i64::MAX), u.expires_from_now()).await?;
    if !advanced {
        return Err(UploadError::NotFound);
    }
    if let Some(v) = keep_hashes {
        v.keep();
        live.hashed_to = new_offset;
    }
    if offset == 0 {
        u.event(crate::UploadEvent::Started(crate::UploadInfo::of(&row)));
    }
    if new_offset == length && row.concat == CONCAT_NONE {
        // Handed over in the background once the hashes catch up (a few blocks at most, or a
        // read of the file if they were lost to a restart); it waits for this lock.
        lifecycle::spawn_finish(Arc::clone(u), id.to_owned());
    }
    Ok(new_offset)
}

// ---- DELETE -----------------------------------------------------------------------------------

async fn delete(State(u): State<Arc<Uploads>>, Path(id): Path<String>, authn: Option<Extension<Authn>>) -> Result<Response, UploadError> {
    let row = visible_upload(&u, &id, &authn).await?;
    if row.completed_at.is_some() {
        return Err(UploadError::Forbidden("This upload is complete and was handed to image processing; delete the image instead.".into()));
    }
    if let Some(final_id) = &row.final_id {
        return Err(UploadError::Forbidden(format!(
            "This part belongs to the final upload {}; delete that instead.",
            u.location(final_id)
        )));
    }
    let _live = u.lock(&row.id).await?;
    // Re-read under the lock: a PATCH may have completed it meanwhile.
    let row = u.db.upload_by_id(&row.id).await?.ok_or(UploadError::NotFound)?;
    if row.completed_at.is_some() || row.final_id.is_some() {
        return Err(UploadError::Forbidden("This upload can no longer be cancelled.".into()));
    }
    lifecycle::remove(&u, &row).await?;
    tracing::info!(upload = %row.id, "upload terminated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /{id}` with `X-HTTP-Method-Override` (for environments without PATCH or DELETE).
async fn method_override(
    state: State<Arc<Uploads>>,
    id: Path<String>,
    authn: Option<Extension<Authn>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    let method = headers.get(tus::METHOD_OVERRIDE).map(|v| v.as_bytes().to_ascii_uppercase());
    match method.as_deref() {
        Some(b"PATCH") => patch(state, id, authn, headers, body).await,
        Some(b"DELETE") => delete(state, id, authn).await,
        Some(b"HEAD") => head_handler(state, id, authn).await,
        _ => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
    }
}
