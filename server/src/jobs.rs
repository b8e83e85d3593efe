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

use records::{Db, JobRow};
use tokio::sync::Notify;

use crate::ingest::{self, IngestError, JobControl, Rules, UploadedFile};

/// How often a running job writes its progress (and reads whether it was cancelled).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long an idle worker sleeps before looking for work it was not told about.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Handle to the worker pool: `wake` after queueing a job so a worker takes it at once.
#[derive(Clone, Debug)]
pub struct Jobs {
    db: Db,
    notify: Arc<Notify>,
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
}

/// Queues the jobs a previous run left running and starts `workers` workers.
pub async fn start(db: &Db, data_dir: PathBuf, workers: usize) -> Result<Jobs, records::DbError> {
    let requeued = db.requeue_interrupted_jobs().await?;
    if requeued > 0 {
        tracing::info!(requeued, "jobs interrupted by the last stop were queued again");
    }
    let notify = Arc::new(Notify::new());
    for n in 0..workers.max(1) {
        let (db, data_dir, notify) = (db.clone(), data_dir.clone(), notify.clone());
        tokio::spawn(async move {
            tracing::debug!(worker = n, "job worker started");
            loop {
                match db.claim_job().await {
                    Ok(Some(job)) => run(&db, &data_dir, job).await,
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
    Ok(Jobs { db: db.clone(), notify })
}

/// Runs one claimed job to its end and records the outcome.
async fn run(db: &Db, data_dir: &std::path::Path, job: JobRow) {
    tracing::info!(job = %job.id, kind = %job.kind, image = %job.image_id, attempt = job.attempts, "job started");
    let ctl = Arc::new(JobControl::default());
    let outcome = match job.kind.as_str() {
        "import" => with_progress(db, &job, ctl.clone(), run_import(db, data_dir, &job, ctl.clone())).await,
        other => Err(format!("unknown job kind '{other}'")),
    };
    let (status, error, summary) = match outcome {
        Ok(summary) => ("succeeded", String::new(), summary),
        Err(e) if ctl.cancel.load(Ordering::Relaxed) => ("cancelled", e, String::new()),
        Err(e) => ("failed", e, String::new()),
    };
    match db.finish_job(&job.id, status, &error, &summary).await {
        Ok(_) => tracing::info!(job = %job.id, status, error = %error, "job ended"),
        Err(err) => tracing::warn!(job = %job.id, error = %err, "cannot record the end of a job"),
    }
}

/// Drives `work` while writing the job's progress and watching for cancellation.
async fn with_progress(
    db: &Db,
    job: &JobRow,
    ctl: Arc<JobControl>,
    work: impl std::future::Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let done = i64::try_from(ctl.done.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                let total = i64::try_from(ctl.total.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                if db.job_progress(&job.id, done, total).await.unwrap_or(false) {
                    ctl.cancel.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn run_import(db: &Db, data_dir: &std::path::Path, job: &JobRow, ctl: Arc<JobControl>) -> Result<String, String> {
    let up: UploadedFile = serde_json::from_str(&job.params).map_err(|e| format!("bad job parameters: {e}"))?;
    let backend_kind = "local";
    let rules = Rules::load(db, backend_kind).await.map_err(|e| e.to_string())?;
    match ingest::ingest_with(db, data_dir, up, &rules, &job.backend, ctl).await {
        Ok(done) if done.converted => Ok(format!(
            "{} → {}: {} → {}",
            done.uploaded_format,
            done.disk_format,
            human(done.uploaded_size),
            human(done.size)
        )),
        Ok(done) => Ok(format!("{} kept as uploaded: {}", done.disk_format, human(done.size))),
        Err(IngestError::Cancelled) => Err("Cancelled; nothing was kept.".into()),
        Err(e) => Err(e.to_string()),
    }
}
