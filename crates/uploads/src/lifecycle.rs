//! Everything after and around the bytes: files on disk, completion and hand-over, joining
//! parts, termination, expiry, and finishing what a previous process left undone.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use records::{UploadRow, CONCAT_FINAL, CONCAT_PARTIAL};

use crate::pipeline::{self, Digests};
use crate::{now, CompletedUpload, UploadError, UploadHashes, Uploads};

/// Expired uploads handled per database query by the cleanup task.
const CLEANUP_BATCH: u32 = 256;
/// Directory entries the stray-file sweep looks at per run: bounds one run's work if something
/// filled the directory with junk.
const MAX_SWEEP_ENTRIES: usize = 100_000;

/// Makes a directory entry durable (a new or removed file survives a power loss).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates an upload's empty file and reserves `length` bytes for it (without changing its
/// size), so that a disk filling up later cannot fail this upload half-way. File systems
/// without `fallocate` just skip the reservation.
pub(crate) fn create_file(path: &Path, length: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    if let Err(e) = reserve(&file, 0, length) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn reserve(file: &File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, from, to - from) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Throws away everything after `offset` (a discarded chunk) and renews the reservation that
/// truncation released.
pub(crate) fn discard_tail(file: &File, offset: u64, length: u64) -> io::Result<()> {
    file.set_len(offset)?;
    let _ = reserve(file, offset, length);
    Ok(())
}

pub(crate) fn metadata_of(row: &UploadRow) -> BTreeMap<String, String> {
    serde_json::from_str(&row.metadata).unwrap_or_default()
}

fn part_ids(row: &UploadRow) -> Vec<String> {
    serde_json::from_str(row.parts.as_deref().unwrap_or("[]")).unwrap_or_default()
}

/// Finishes an upload in the background: joins a final's parts, or hashes a complete file
/// whose running hashes were lost, then hands it over. Safe to call twice (it re-checks under
/// the upload's lock).
pub(crate) fn spawn_finish(u: Arc<Uploads>, id: String) {
    tokio::spawn(async move {
        if let Err(e) = finish(&u, &id).await {
            tracing::error!(upload = %id, error = %e, "finishing an upload failed; it will be retried by the cleanup task");
        }
    });
}

async fn finish(u: &Arc<Uploads>, id: &str) -> Result<(), UploadError> {
    let _permit = u.completing.acquire().await.map_err(|e| UploadError::Internal(e.to_string()))?;
    let mut live = u.slot(id).lock_owned().await;
    let Some(row) = u.db.upload_by_id(id).await? else { return Ok(()) };
    if row.completed_at.is_some() || row.concat == CONCAT_PARTIAL {
        return Ok(());
    }
    let length = u64::try_from(row.upload_length).unwrap_or(0);
    if row.concat == CONCAT_FINAL && row.upload_offset < row.upload_length {
        let digests = join_parts(u, &row).await?;
        let row = u.db.upload_by_id(id).await?.ok_or(UploadError::NotFound)?;
        return hand_over(u, &row, digests).await;
    }
    if row.upload_offset != row.upload_length {
        return Ok(());
    }
    // The running hashes if they cover the whole upload (waiting for their threads to catch
    // up), else one read of the file.
    let running = match live.hashes.take() {
        Some(h) if live.hashed_to == length => {
            tokio::task::spawn_blocking(move || h.resolve().and_then(pipeline::Hashes::digests)).await.ok().flatten()
        }
        _ => None,
    };
    let digests = match running {
        Some(d) => d,
        None => {
            let (path, pool) = (u.path_of(id), Arc::clone(&u.pool));
            let all = u.hashes_for(&row).await == UploadHashes::All;
            let hashed = tokio::task::spawn_blocking(move || pipeline::hash_file(&path, &pool, all)).await;
            hashed.map_err(|e| UploadError::Internal(e.to_string()))??
        }
    };
    hand_over(u, &row, digests).await
}

/// Writes a final upload's file from its parts (hashing on the way), records it complete, and
/// removes the parts. A failure leaves no final file behind.
async fn join_parts(u: &Arc<Uploads>, row: &UploadRow) -> Result<Digests, UploadError> {
    let ids = part_ids(row);
    let claimed: HashMap<String, UploadRow> = u.db.parts_of_final(&row.id).await?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let mut paths: Vec<PathBuf> = Vec::with_capacity(ids.len());
    for part in &ids {
        match claimed.get(part) {
            Some(p) if p.upload_offset == p.upload_length => paths.push(u.path_of(part)),
            _ => return Err(UploadError::Internal(format!("part {part} of final upload {} is missing or incomplete", row.id))),
        }
    }
    let dest = u.path_of(&row.id);
    let all = u.hashes_for(row).await == UploadHashes::All;
    let (d, pool) = (dest.clone(), Arc::clone(&u.pool));
    let joined = tokio::task::spawn_blocking(move || {
        let out = pipeline::concatenate(&paths, &d, &pool, all);
        if out.is_err() {
            let _ = std::fs::remove_file(&d);
        }
        if let Some(dir) = d.parent() {
            sync_dir(dir)?;
        }
        out
    })
    .await
    .map_err(|e| UploadError::Internal(e.to_string()))?;
    let (n, digests) = joined.map_err(UploadError::from_io)?;
    if i64::try_from(n).ok() != Some(row.upload_length) {
        let _ = tokio::fs::remove_file(&dest).await;
        return Err(UploadError::Internal(format!("the parts of {} add up to {n} bytes, not {}", row.id, row.upload_length)));
    }
    u.db.advance_upload(&row.id, 0, row.upload_length, row.expires_at).await?;
    remove_parts(u, &row.id).await?;
    Ok(digests)
}

async fn remove_parts(u: &Uploads, final_id: &str) -> Result<(), UploadError> {
    for part in u.db.parts_of_final(final_id).await? {
        remove_file(&u.path_of(&part.id)).await?;
        u.forget(&part.id);
    }
    u.db.delete_parts_of_final(final_id).await?;
    Ok(())
}

async fn remove_file(path: &Path) -> Result<(), UploadError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Calls the completion callback and records the hand-over (in that order: a crash between
/// the two repeats the callback at the next start rather than losing it).
async fn hand_over(u: &Arc<Uploads>, row: &UploadRow, d: Digests) -> Result<(), UploadError> {
    if row.concat == CONCAT_FINAL {
        remove_parts(u, &row.id).await?;
    }
    let done = CompletedUpload {
        id: row.id.clone(),
        path: u.path_of(&row.id),
        length: u64::try_from(row.upload_length).unwrap_or(0),
        user_id: row.user_id.clone(),
        project_id: row.project_id.clone(),
        metadata: metadata_of(row),
        sha256: Some(d.sha256),
        md5: d.md5,
        sha512: d.sha512,
    };
    tracing::info!(upload = %row.id, length = done.length, sha256 = ?done.sha256, "upload complete");
    (u.on_complete)(done);
    u.db.mark_upload_completed(&row.id, now()).await?;
    u.forget(&row.id);
    Ok(())
}

/// Removes an upload: its file, a final's parts, and the row. The caller holds its lock.
pub(crate) async fn remove(u: &Uploads, row: &UploadRow) -> Result<(), UploadError> {
    if row.concat == CONCAT_FINAL {
        remove_parts(u, &row.id).await?;
    }
    remove_file(&u.path_of(&row.id)).await?;
    u.db.delete_upload(&row.id).await?;
    u.forget(&row.id);
    Ok(())
}

pub(crate) async fn remove_expired(u: &Uploads) -> Result<usize, UploadError> {
    let mut removed = 0;
    loop {
        let rows = u.db.expired_uploads(now(), CLEANUP_BATCH).await?;
        let mut progressed = false;
        for row in &rows {
            // An upload being written right now is left for the next run.
            let Ok(_guard) = u.slot(&row.id).try_lock_owned() else { continue };
            match u.db.upload_by_id(&row.id).await? {
                Some(current) if current.expires_at <= now() => {
                    remove(u, &current).await?;
                    if current.completed_at.is_none() {
                        u.event(crate::UploadEvent::Expired(crate::UploadInfo::of(&current)));
                    }
                    removed += 1;
                    progressed = true;
                }
                _ => u.forget(&row.id),
            }
        }
        if !progressed || rows.len() < CLEANUP_BATCH as usize {
            break;
        }
    }
    sweep_strays(u).await?;
    Ok(removed)
}

/// Spawns [`finish`] again for complete uploads not handed over that nobody is working on.
pub(crate) async fn retry_unfinished(u: &Arc<Uploads>) -> Result<(), UploadError> {
    for row in u.db.uploads_to_finish().await? {
        let idle = u.slot(&row.id).try_lock().is_ok();
        if idle && row.expires_at > now() {
            spawn_finish(Arc::clone(u), row.id);
        }
    }
    Ok(())
}

/// Removes files in the upload directory that no row claims and that are older than the
/// expiry (left by a crash between creating a file and its row, or by a consumer that did not
/// take its file).
async fn sweep_strays(u: &Uploads) -> Result<(), UploadError> {
    let mut dir = tokio::fs::read_dir(&u.config.dir).await?;
    let mut seen = 0;
    while let Some(entry) = dir.next_entry().await? {
        seen += 1;
        if seen > MAX_SWEEP_ENTRIES {
            break;
        }
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(crate::tus::parse_id) else { continue };
        if name.to_str() != Some(id.as_str()) {
            continue;
        }
        let Ok(meta) = entry.metadata().await else { continue };
        let old = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).is_some_and(|age| age >= u.config.expiry);
        if meta.is_file() && old && !u.db.upload_exists(&id).await? {
            tracing::info!(file = %entry.path().display(), "removing a stray upload file");
            remove_file(&entry.path()).await?;
        }
    }
    Ok(())
}
