//! Persistent background jobs: imports (inspect, convert, hash, publish) and copies.
//!
//! Jobs live in the `jobs` table, so they survive a restart: at start, jobs that were running
//! are queued again and redone from the beginning (a job publishes its output only at its very
//! end, so a half-done job leaves nothing visible). A pool of workers — one per core — claims
//! queued jobs atomically, reports progress about twice a second, and notices cancellation
//! there too.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use domain::{ImageStatus, JobKind, JobStatus, LocationStatus};
use records::{Db, JobFailure, JobRow};
use tokio::sync::Notify;

use crate::ingest::{self, IngestError, JobControl, Plan, ReceivedData, Rules};
use imageops::units::human_bytes;
use imageops::Stores;

/// How often a running job writes its progress (and reads whether it was cancelled).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long an idle worker sleeps before looking for work it was not told about.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Handle to the worker pool: `wake` after queueing a job so a worker takes it at once;
/// `shutdown` to stop it.
#[derive(Clone, Debug)]
pub struct Jobs {
    db: Db,
    notify: Arc<Notify>,
    running: Arc<Running>,
}

/// The jobs running now, so a shutdown can stop them; and whether the pool is stopping.
#[derive(Debug, Default)]
struct Running {
    jobs: std::sync::Mutex<std::collections::HashMap<String, Arc<JobControl>>>,
    stopping: std::sync::atomic::AtomicBool,
    changed: Notify,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<JobControl>>> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Jobs {
    /// Queues a job and wakes a worker.
    pub async fn submit(&self, new: &records::NewJob) -> Result<JobRow, records::DbError> {
        let job = self.db.create_job(new).await?;
        self.notify.notify_one();
        Ok(job)
    }

    /// Wakes a worker (after a retry, for example).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Stops the pool for a server stop: no job is claimed any more, and every running job is
    /// stopped at its next step (a conversion within 16 MiB) and queued again with its image
    /// and upload intact, to run at the next start. Waits at most `bound` for them; returns the
    /// ids of the jobs that were stopped and requeued, and of those still running at the bound
    /// (they are queued again at the next start, as after a crash).
    pub async fn shutdown(&self, bound: Duration) -> (Vec<String>, Vec<String>) {
        self.running.stopping.store(true, Ordering::Relaxed);
        self.notify.notify_waiters();
        let stopped: Vec<String> = {
            let jobs = self.running.lock();
            for ctl in jobs.values() {
                ctl.stop_for_shutdown();
            }
            jobs.keys().cloned().collect()
        };
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let changed = self.running.changed.notified();
            let left: Vec<String> = self.running.lock().keys().cloned().collect();
            if left.is_empty() {
                return (stopped, Vec::new());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let done = stopped.iter().filter(|id| !left.contains(id)).cloned().collect();
                return (done, left);
            }
        }
    }
}

/// Queues the jobs a previous run left running and starts `workers` workers.
pub async fn start(db: &Db, data_dir: PathBuf, workers: usize, stores: Stores) -> Result<Jobs, records::DbError> {
    let requeued = db.requeue_interrupted_jobs().await?;
    if requeued > 0 {
        tracing::info!(requeued, "jobs interrupted by the last stop were queued again");
    }
    let reset = db.reset_orphaned_imports().await?;
    if reset > 0 {
        tracing::info!(reset, "images whose data was arriving when the server stopped are queued again");
    }
    // No job runs yet: what an interrupted job left in the staging directory (half-written
    // conversions, unpacked packages) is garbage, except the outputs that queued jobs'
    // checkpoints name (they resume from them, after checking them again).
    let keep: std::collections::HashSet<PathBuf> = db
        .live_job_checkpoints()
        .await?
        .iter()
        .filter_map(|c| serde_json::from_str::<ingest::Checkpoint>(c).ok())
        .map(|c| c.output)
        .collect();
    let removed = clear_staging(&data_dir.join("staging"), &keep);
    if removed.files > 0 || !keep.is_empty() {
        tracing::info!(
            removed = removed.files,
            bytes = removed.bytes,
            kept = keep.len(),
            "staging directory: removed the leftovers of interrupted jobs, kept the outputs jobs resume from"
        );
    }
    // Request bodies a stop cut off (Glance PUT, web-download) that no job will read, and staged
    // data whose image no longer waits for it.
    let swept = sweep_incoming(db, &data_dir.join("uploads-glance")).await?;
    if swept.files > 0 {
        tracing::info!(files = swept.files, bytes = swept.bytes, "reclaimed Glance uploads and downloads nothing will import");
    }
    let notify = stores.job_signal();
    let running = Arc::new(Running::default());
    for n in 0..workers.max(1) {
        let (db, data_dir, notify, stores, running) = (db.clone(), data_dir.clone(), notify.clone(), stores.clone(), running.clone());
        tokio::spawn(async move {
            tracing::debug!(worker = n, "job worker started");
            loop {
                if running.stopping.load(Ordering::Relaxed) {
                    tracing::debug!(worker = n, "job worker stopped");
                    return;
                }
                match db.claim_job().await {
                    Ok(Some(job)) => run(&db, &data_dir, &stores, job, &running).await,
                    Ok(None) => {
                        let _ = tokio::time::timeout(IDLE_POLL, notify.notified()).await;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot claim a job");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    let jobs = Jobs { db: db.clone(), notify, running };
    Ok(jobs)
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

impl Swept {
    /// Removes `entry` (a file, or a directory with what is in it: an unpacked package) and
    /// counts it; a failure is logged as `what` could not be removed, and the sweep goes on.
    fn remove(&mut self, entry: &std::fs::DirEntry, what: &str) {
        let path = entry.path();
        let bytes = tree_bytes(&path);
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match gone {
            Ok(()) => {
                self.files += 1;
                self.bytes = self.bytes.saturating_add(bytes);
            }
            Err(err) => tracing::warn!(path = %path.display(), error = %err, "cannot remove {what}"),
        }
    }
}

/// At start-up, before any request: removes from `dir` (`uploads-glance`) every file that no
/// queued or running import job will read and that is not the staged data (`<id>.staged`,
/// `<id>.staged.json`) of an image still `uploading`. Such files are bodies a stop cut off, or
/// staged data of deleted or imported images: nothing else will ever remove them.
pub async fn sweep_incoming(db: &Db, dir: &std::path::Path) -> Result<Swept, records::DbError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Swept::default()) };
    let read_by_jobs: std::collections::HashSet<PathBuf> =
        db.live_import_params().await?.iter().filter_map(|p| serde_json::from_str::<ReceivedData>(p).ok()).map(|up| up.path).collect();
    let staged_for: std::collections::HashSet<String> = db.uploading_image_ids().await?.into_iter().collect();
    let mut swept = Swept::default();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let staged_image = name.strip_suffix(".staged").or_else(|| name.strip_suffix(".staged.json"));
        let keep = read_by_jobs.contains(&path) || staged_image.is_some_and(|id| staged_for.contains(id));
        if !keep && entry.file_type().is_ok_and(|t| t.is_file()) {
            swept.remove(&entry, "an orphaned upload");
        }
    }
    Ok(swept)
}

/// Empties `dir` (files and directories in it; the directory itself stays) but for the files in
/// `keep`. Returns what was removed; a missing directory is empty.
pub fn clear_staging(dir: &std::path::Path, keep: &std::collections::HashSet<PathBuf>) -> Swept {
    let Ok(entries) = std::fs::read_dir(dir) else { return Swept::default() };
    let mut removed = Swept::default();
    for entry in entries.flatten() {
        if !keep.contains(&entry.path()) {
            removed.remove(&entry, "a staging leftover");
        }
    }
    removed
}

/// Bytes under `path` (a file, or a directory's files one level down: unpacked packages).
fn tree_bytes(path: &std::path::Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// While the server runs: removes from the staging areas (`staging`, `uploads-glance`) every
/// entry older than `grace` that belongs to no busy image ([`Db::busy_image_ids`]: a queued or
/// running job, data arriving or importing). Every name there starts with its image's id.
/// These are what a failure path could not remove (a full disk, a crash between two steps, a
/// process killed at a bad moment); the grace period protects a file between its creation and
/// the record that makes its image busy.
pub async fn sweep_staging_areas(db: &Db, data_dir: &std::path::Path, grace: Duration) -> Result<Swept, records::DbError> {
    let busy: std::collections::HashSet<String> = db.busy_image_ids().await?.into_iter().collect();
    let mut swept = Swept::default();
    for area in ["staging", "uploads-glance"] {
        let Ok(entries) = std::fs::read_dir(data_dir.join(area)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let image = name.split('.').next().unwrap_or_default();
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= grace));
            if !busy.contains(image) && old {
                swept.remove(&entry, "an orphaned staging file");
            }
        }
    }
    Ok(swept)
}

/// Runs [`sweep_staging_areas`] while the server runs: every quarter of `grace` (at least a
/// second, at most ten minutes), logging what it reclaimed.
pub fn spawn_orphan_sweeper(db: Db, data_dir: PathBuf, grace: Duration) {
    let every = (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match sweep_staging_areas(&db, &data_dir, grace).await {
                Ok(s) if s.files > 0 => tracing::info!(files = s.files, bytes = s.bytes, "reclaimed staging files no job or upload uses"),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "cannot sweep the staging areas"),
            }
        }
    });
}

/// Runs one claimed job to its end and records the outcome; a job stopped by a shutdown is
/// queued again instead.
async fn run(db: &Db, data_dir: &std::path::Path, stores: &Stores, job: JobRow, running: &Running) {
    tracing::info!(job = %job.id, kind = %job.kind, image = %job.image_id, attempt = job.attempts, "job started");
    let ctl = Arc::new(JobControl::default());
    running.lock().insert(job.id.clone(), ctl.clone());
    if running.stopping.load(Ordering::Relaxed) {
        // Claimed just as the shutdown began: not started, so queued again as it is.
        ctl.stop_for_shutdown();
    }
    run_claimed(db, data_dir, stores, &job, &ctl).await;
    running.lock().remove(&job.id);
    running.changed.notify_waiters();
}

async fn run_claimed(db: &Db, data_dir: &std::path::Path, stores: &Stores, job: &JobRow, ctl: &Arc<JobControl>) {
    if ctl.is_stopping() {
        requeue(db, job).await;
        return;
    }
    let outcome = match job.kind {
        JobKind::Import => with_progress(db, job, ctl.clone(), run_import(db, data_dir, stores, job, ctl.clone())).await,
        JobKind::Copy => {
            with_progress(db, job, ctl.clone(), async { run_copy(db, data_dir, stores, job, ctl.clone()).await.map_err(Failure::from) })
                .await
        }
    };
    if outcome.is_err() && ctl.is_stopping() {
        requeue(db, job).await;
        return;
    }
    let (status, error, summary, failure) = match outcome {
        Ok(summary) => (JobStatus::Succeeded, String::new(), summary, JobFailure::None),
        Err(e) if ctl.cancel.load(Ordering::Relaxed) => (JobStatus::Cancelled, e.message, String::new(), JobFailure::None),
        Err(e) => (JobStatus::Failed, e.message, String::new(), e.kind),
    };
    match db.finish_job(&job.id, status, &error, &summary, failure).await {
        Ok(_) => tracing::info!(job = %job.id, %status, error = %error, "job ended"),
        Err(err) => tracing::warn!(job = %job.id, error = %err, "cannot record the end of a job"),
    }
}

/// Puts a job stopped by a shutdown back in the queue (its image and input untouched).
async fn requeue(db: &Db, job: &JobRow) {
    match db.requeue_job(&job.id).await {
        Ok(true) => {
            tracing::info!(job = %job.id, image = %job.image_id, "job stopped by the shutdown; queued to run again at the next start")
        }
        Ok(false) => {}
        Err(err) => tracing::warn!(job = %job.id, error = %err, "cannot queue a stopped job again; the next start will"),
    }
}

/// Drives `work` while writing the job's progress and watching for cancellation.
/// Why a job did not succeed: what users read, and the kind of failure (its data refused, over
/// the quota, or Hangar unable to finish), which the Glance door answers differently.
struct Failure {
    message: String,
    kind: JobFailure,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, kind: JobFailure::Error }
    }
}

async fn with_progress<E>(
    db: &Db,
    job: &JobRow,
    ctl: Arc<JobControl>,
    work: impl std::future::Future<Output = Result<String, E>>,
) -> Result<String, E> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let done = i64::try_from(ctl.done.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                let total = i64::try_from(ctl.total.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                if db.job_progress(&job.id, done, total, ctl.stage().as_str()).await.unwrap_or(false) {
                    ctl.cancel.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn run_import(db: &Db, data_dir: &std::path::Path, stores: &Stores, job: &JobRow, ctl: Arc<JobControl>) -> Result<String, Failure> {
    let up: ReceivedData = serde_json::from_str(&job.params).map_err(|e| format!("bad job parameters: {e}"))?;
    let Some(store) = stores.get(&job.backend) else {
        let reason = format!("The storage backend '{}' is no longer configured.", job.backend);
        let _ = std::fs::remove_file(&up.path);
        let _ = db.kill_image(&job.image_id, &reason, "[]").await;
        return Err(reason.into());
    };
    let rules = Rules::load(db, store.kind().as_str()).await.map_err(|e| e.to_string())?;
    match ingest::ingest_job(db, data_dir, up, &rules, store, ctl, ingest::Journal::for_job(db, job)).await {
        Ok(done) if done.converted => {
            Ok(format!("{} → {}: {} → {}", done.uploaded_format, done.disk_format, human_bytes(done.uploaded_size), human_bytes(done.size)))
        }
        Ok(done) => Ok(format!("{} kept as uploaded: {}", done.disk_format, human_bytes(done.size))),
        Err(IngestError::Cancelled) => Err(String::from("Cancelled; nothing was kept.").into()),
        Err(IngestError::Refused(why)) => Err(Failure { message: why, kind: JobFailure::Refused }),
        Err(IngestError::OverQuota(why)) => Err(Failure { message: why, kind: JobFailure::OverQuota }),
        Err(IngestError::NotAccepted(why)) => Err(Failure { message: why, kind: JobFailure::Conflict }),
        Err(e) => Err(e.to_string().into()),
    }
}

/// Copies an active image to another backend, converting it when the target's matrix column
/// says so. The new copy is recorded only once it is complete and durable.
async fn run_copy(db: &Db, data_dir: &std::path::Path, stores: &Stores, job: &JobRow, ctl: Arc<JobControl>) -> Result<String, String> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    let target = stores.get(&job.backend).ok_or_else(|| format!("The storage backend '{}' is not configured.", job.backend))?.clone();
    let image = db.image(&job.image_id).await.map_err(|e| e.to_string())?.ok_or("The image was deleted.")?;
    if image.status != ImageStatus::Active {
        return Err(format!("Only active images can be copied; this one is {}.", image.status));
    }
    let locations = db.image_locations(&image.id).await.map_err(|e| e.to_string())?;
    if locations.iter().any(|l| l.backend == target.name() && l.status == LocationStatus::Active) {
        return Ok(format!("Already stored on {}.", target.name()));
    }
    let (src_loc, source) = locations
        .iter()
        .filter(|l| l.status == LocationStatus::Active)
        .find_map(|l| stores.get(&l.backend).map(|b| (l.clone(), b.clone())))
        .ok_or("No readable copy of this image exists on a configured backend.")?;
    let rules = Rules::load(db, target.kind().as_str()).await.map_err(|e| e.to_string())?;
    let plan = rules.plan(src_loc.disk_format.as_str());
    if let Plan::Refuse(reason) = &plan {
        return Err(reason.clone());
    }
    let staging = data_dir.join("staging");
    tokio::fs::create_dir_all(&staging).await.map_err(|e| format!("cannot create the staging directory: {e}"))?;
    let src_size = u64::try_from(src_loc.size).unwrap_or(0);
    ctl.total.store(src_size.saturating_mul(2), Ordering::Relaxed);

    // A local path to read from: the source's own file, or a staged download of it.
    let mut temp_files: Vec<PathBuf> = Vec::new();
    let cleanup = |files: &Vec<PathBuf>| {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    };
    let src_path = match source.local_path(&src_loc.key) {
        Some(p) => p,
        None => {
            let path = staging.join(format!("{}.{}.download", image.id, job.id));
            temp_files.push(path.clone());
            let result: Result<(), String> = async {
                ctl.enter(ingest::Stage::Downloading).await;
                let mut stream = source.get(&src_loc.key, None).await.map_err(|e| e.to_string())?;
                let mut out = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| e.to_string())?;
                    out.write_all(&chunk).await.map_err(|e| e.to_string())?;
                    n += chunk.len() as u64;
                    ctl.done.store(n / 2, Ordering::Relaxed);
                    if ctl.cancel.load(Ordering::Relaxed) {
                        return Err("Cancelled; nothing was kept.".to_owned());
                    }
                }
                out.sync_all().await.map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = result {
                cleanup(&temp_files);
                return Err(e);
            }
            path
        }
    };
    let (publish, disk_format) = match plan {
        Plan::Convert(to) => {
            let ext = match to {
                diskimage::convert::TargetFormat::Qcow2 => "qcow2",
                diskimage::convert::TargetFormat::Raw => "raw",
            };
            let out = staging.join(format!("{}.{}.{ext}", image.id, job.id));
            temp_files.push(out.clone());
            let (src2, out2, from, ctl2) = (src_path.clone(), out.clone(), src_loc.disk_format, ctl.clone());
            let converted = tokio::task::spawn_blocking(move || ingest::convert_copy(&src2, from.as_str(), to, &out2, &ctl2))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            if let Err(e) = converted {
                cleanup(&temp_files);
                return Err(e);
            }
            (out, domain::ImageFormat::from(ingest::target_disk_format(to)))
        }
        _ => (src_path.clone(), src_loc.disk_format),
    };
    if ctl.cancel.load(Ordering::Relaxed) {
        cleanup(&temp_files);
        return Err("Cancelled; nothing was kept.".to_owned());
    }
    let (publish2, ctl2) = (publish.clone(), ctl.clone());
    let sums = tokio::task::spawn_blocking(move || ingest::checksums(&publish2, &ctl2)).await.map_err(|e| e.to_string()).and_then(|r| r);
    let (md5, sha512) = match sums {
        Ok(s) => s,
        Err(e) => {
            cleanup(&temp_files);
            return Err(e);
        }
    };
    // The copy counts against the project's quota like any stored bytes: held (checked against
    // everything else the project uses) before it is written, released once its location row
    // counts instead, or when the copy fails.
    let hold = format!("copy:{}", target.name());
    let out_size = tokio::fs::metadata(&publish).await.map(|m| m.len()).unwrap_or(0);
    match db.hold_quota(image.owner.as_deref().unwrap_or(""), &image.id, &hold, out_size, false).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            cleanup(&temp_files);
            return Err(format!("This copy ({}) cannot be stored: {why}.", human_bytes(out_size)));
        }
        Err(e) => {
            cleanup(&temp_files);
            return Err(e.to_string());
        }
    }
    let ext = if disk_format == domain::ImageFormat::Ami { "raw" } else { disk_format.as_str() };
    let key = target.key_for(&image.id, ext);
    // A staged file may be moved into place; the source's own file must stay where it is.
    let mode = if temp_files.contains(&publish) { storage::PutMode::Move } else { storage::PutMode::Copy };
    let base = src_size;
    let ctl3 = ctl.clone();
    ctl.enter(ingest::Stage::Storing).await;
    let put = target.put_file(&key, &publish, mode, &move |n| ctl3.done.store(base.saturating_add(n), Ordering::Relaxed)).await;
    cleanup(&temp_files);
    let size = match put {
        Ok(n) => n,
        Err(e) => {
            let _ = target.delete(&key).await;
            let _ = db.release_quota(&image.id, &hold).await;
            return Err(format!("The {} storage did not take the copy: {e}", target.name()));
        }
    };
    let row = records::LocationRow {
        image_id: image.id.clone(),
        backend: target.name().to_owned(),
        key,
        disk_format,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        checksum: Some(md5),
        os_hash_value: Some(sha512),
        status: LocationStatus::Active,
        created_at: String::new(),
    };
    db.put_location(&row).await.map_err(|e| e.to_string())?;
    db.release_quota(&image.id, &hold).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "Copied from {} to {}: {} {} → {} {}",
        src_loc.backend,
        target.name(),
        src_loc.disk_format,
        human_bytes(src_size),
        disk_format,
        human_bytes(size)
    ))
}
