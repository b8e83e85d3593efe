//! Background jobs: imports (inspect, convert, store) and copies to another backend.

use domain::{JobKind, JobStatus};
use sqlx::FromRow;

use crate::{Db, DbError};

/// A background job (an import's inspection/conversion, or a copy to another backend).
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct JobRow {
    pub id: String,
    pub kind: JobKind,
    pub image_id: String,
    pub image_name: String,
    pub backend: String,
    pub status: JobStatus,
    pub params: String,
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub attempts: i64,
    pub cancel_requested: bool,
    /// What the worker is doing now (`inspecting`, `converting`, …; '' before it starts). The
    /// last one stays after the job ends: a failed job says where it failed.
    pub stage: String,
    /// The last step the job completed durably ('' if none): JSON only the server reads (its
    /// `ingest::Checkpoint`). A resumed job starts after it; a retry starts from nothing.
    pub checkpoint: String,
    pub error: String,
    /// Why it did not succeed ([`JobFailure::None`] while it runs or once it succeeded).
    pub failure: JobFailure,
    pub summary: String,
    pub created_by: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
}

/// What a caller supplies to queue a job.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: JobKind,
    pub image_id: String,
    pub backend: String,
    /// JSON object text the worker needs to run (or re-run) the job.
    pub params: String,
    pub bytes_total: i64,
    pub created_by: Option<String>,
}

impl NewJob {
    /// A job of `kind` for `image_id` on `backend`, with no parameters yet.
    pub fn new(kind: JobKind, image_id: impl Into<String>, backend: impl Into<String>) -> Self {
        NewJob { kind, image_id: image_id.into(), backend: backend.into(), params: String::new(), bytes_total: 0, created_by: None }
    }

    /// An import of `image_id`'s arrived data into `backend`.
    pub fn import(image_id: impl Into<String>, backend: impl Into<String>) -> Self {
        Self::new(JobKind::Import, image_id, backend)
    }

    /// A copy of `image_id` to `backend`.
    pub fn copy(image_id: impl Into<String>, backend: impl Into<String>) -> Self {
        Self::new(JobKind::Copy, image_id, backend)
    }
}

/// Why a job that did not succeed failed; the Glance door answers each differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum JobFailure {
    /// Running, succeeded, or ended before this was recorded.
    #[default]
    None,
    /// Its data was refused (the inspector, the converter, the declaration): 415 at Glance.
    Refused,
    /// What it would store exceeds the project's quota: 413 at Glance.
    OverQuota,
    /// Hangar could not finish it (storage, database): 503 at Glance.
    Error,
    /// The image was no longer waiting for this data (deleted, or changed by another request):
    /// 409 at Glance.
    Conflict,
}

/// The most jobs one listing returns.
pub const MAX_JOB_PAGE: u32 = 500;

const JOB_SELECT: &str = "SELECT j.id, j.kind, j.image_id, COALESCE(i.name, '') AS image_name, j.backend, j.status, \
     j.params, j.bytes_done, j.bytes_total, j.attempts, j.cancel_requested, j.stage, j.checkpoint, j.error, j.failure, j.summary, j.created_by, \
     j.created_at, j.started_at, j.finished_at, j.updated_at FROM jobs j LEFT JOIN images i ON i.id = j.image_id";

const NOW_MS: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl Db {
    /// Queues a job.
    pub async fn create_job(&self, new: &NewJob) -> Result<JobRow, DbError> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO jobs (id, kind, image_id, backend, params, bytes_total, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(new.kind)
            .bind(&new.image_id)
            .bind(&new.backend)
            .bind(if new.params.is_empty() { "{}" } else { new.params.as_str() })
            .bind(new.bytes_total.max(0))
            .bind(&new.created_by)
            .execute(self.pool())
            .await?;
        self.job(&id).await?.ok_or(DbError::Sqlx(sqlx::Error::RowNotFound))
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, DbError> {
        let sql = format!("{JOB_SELECT} WHERE j.id = ?");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Takes the oldest queued job: it becomes `running` (one more attempt). None when idle.
    /// The UPDATE claims atomically, so two workers never run the same job.
    pub async fn claim_job(&self) -> Result<Option<JobRow>, DbError> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, stage = '', started_at = {NOW_MS}, updated_at = {NOW_MS} \
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1) AND status = 'queued' \
             RETURNING id"
        );
        let id: Option<String> = sqlx::query_scalar(&sql).fetch_optional(self.pool()).await?;
        match id {
            Some(id) => self.job(&id).await,
            None => Ok(None),
        }
    }

    /// Progress of a running job. Returns whether a cancel was requested (the worker stops).
    pub async fn job_progress(&self, id: &str, bytes_done: i64, bytes_total: i64, stage: &str) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE jobs SET bytes_done = ?, bytes_total = MAX(bytes_total, ?), stage = ?, updated_at = {NOW_MS} \
             WHERE id = ? AND status = 'running' RETURNING cancel_requested"
        );
        let cancel: Option<bool> = sqlx::query_scalar(&sql)
            .bind(bytes_done.max(0))
            .bind(bytes_total.max(0))
            .bind(stage)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(cancel.unwrap_or(true))
    }

    /// Ends a running job as `succeeded`, `failed` or `cancelled`.
    /// `failure`: why a job that did not succeed failed ([`JobRow::failure`]).
    pub async fn finish_job(&self, id: &str, status: JobStatus, error: &str, summary: &str, failure: JobFailure) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE jobs SET status = ?, error = ?, summary = ?, failure = ?, finished_at = {NOW_MS}, updated_at = {NOW_MS}, \
             bytes_done = CASE WHEN ? = 'succeeded' THEN bytes_total ELSE bytes_done END \
             WHERE id = ? AND status = 'running'"
        );
        let done =
            sqlx::query(&sql).bind(status).bind(error).bind(summary).bind(failure).bind(status).bind(id).execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }

    /// A queued job is cancelled at once; a running one is asked to stop (the worker notices at
    /// its next progress report). Returns false when the job had already ended.
    pub async fn cancel_job(&self, id: &str) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE jobs SET status = CASE status WHEN 'queued' THEN 'cancelled' ELSE status END, \
             finished_at = CASE status WHEN 'queued' THEN {NOW_MS} ELSE finished_at END, \
             cancel_requested = 1, updated_at = {NOW_MS} WHERE id = ? AND status IN ('queued', 'running')"
        );
        Ok(sqlx::query(&sql).bind(id).execute(self.pool()).await?.rows_affected() == 1)
    }

    /// Queues a failed or cancelled job again from the start.
    pub async fn retry_job(&self, id: &str) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', bytes_done = 0, error = '', failure = 'none', cancel_requested = 0, checkpoint = '', \
             started_at = NULL, finished_at = NULL, updated_at = {NOW_MS} \
             WHERE id = ? AND status IN ('failed', 'cancelled')"
        );
        Ok(sqlx::query(&sql).bind(id).execute(self.pool()).await?.rows_affected() == 1)
    }

    /// Queues one running job again (it was stopped by a server shutdown and resumes from its
    /// checkpoint, or from the start); false if it was not running.
    pub async fn requeue_job(&self, id: &str) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE jobs SET status = 'queued', bytes_done = 0, stage = '', updated_at = {NOW_MS} WHERE id = ? AND status = 'running'"
        );
        Ok(sqlx::query(&sql).bind(id).execute(self.pool()).await?.rows_affected() == 1)
    }

    /// Records the last step a running job completed durably (see [`JobRow::checkpoint`]).
    pub async fn set_job_checkpoint(&self, id: &str, checkpoint: &str) -> Result<bool, DbError> {
        let sql = format!("UPDATE jobs SET checkpoint = ?, updated_at = {NOW_MS} WHERE id = ? AND status = 'running'");
        Ok(sqlx::query(&sql).bind(checkpoint).bind(id).execute(self.pool()).await?.rows_affected() == 1)
    }

    /// The checkpoints of the jobs that are queued or running: they name staged outputs those
    /// jobs will resume from, which a sweep must leave alone.
    pub async fn live_job_checkpoints(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar("SELECT checkpoint FROM jobs WHERE status IN ('queued', 'running') AND checkpoint <> ''")
            .fetch_all(self.pool())
            .await?)
    }

    /// Ids of the images a running sweep must not touch the files of: those with a queued or
    /// running job, and those whose data is arriving or being imported.
    pub async fn busy_image_ids(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT image_id FROM jobs WHERE status IN ('queued', 'running') \
             UNION SELECT id FROM images WHERE status IN ('uploading', 'saving', 'importing')",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// At start: jobs that were running when the server stopped are queued again (they resume
    /// from their checkpoint, or redo their work from the start; outputs are only published at
    /// the end, so nothing half-done is visible). Returns how many.
    pub async fn requeue_interrupted_jobs(&self) -> Result<u64, DbError> {
        let sql = format!(
            "UPDATE jobs SET status = CASE cancel_requested WHEN 1 THEN 'cancelled' ELSE 'queued' END, \
             bytes_done = 0, updated_at = {NOW_MS} WHERE status = 'running'"
        );
        Ok(sqlx::query(&sql).execute(self.pool()).await?.rows_affected())
    }

    /// At start, after [`Db::requeue_interrupted_jobs`]: images left `saving` or `importing` by
    /// a stop with no job that will finish them (an API upload or a web download cut off by the
    /// stop) go back to `queued`, with a reason, so they can be uploaded again. Returns how many.
    pub async fn reset_orphaned_imports(&self) -> Result<u64, DbError> {
        Ok(sqlx::query(
            "UPDATE images SET status = 'queued',              status_reason = 'The server stopped while this image''s data was arriving; nothing was kept. Upload it again.',              updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')              WHERE status IN ('saving', 'importing') AND NOT EXISTS              (SELECT 1 FROM jobs j WHERE j.image_id = images.id AND j.status IN ('queued', 'running'))",
        )
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// An image's jobs, newest first.
    pub async fn jobs_for_image(&self, image_id: &str) -> Result<Vec<JobRow>, DbError> {
        let sql = format!("{JOB_SELECT} WHERE j.image_id = ? ORDER BY j.created_at DESC, j.id");
        Ok(sqlx::query_as(&sql).bind(image_id).fetch_all(self.pool()).await?)
    }

    /// The parameters (JSON) of import jobs that are queued or running: they name the files
    /// those jobs will read, which a sweep must leave alone.
    pub async fn live_import_params(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar("SELECT params FROM jobs WHERE kind = 'import' AND status IN ('queued', 'running')")
            .fetch_all(self.pool())
            .await?)
    }

    /// Ids of the images that are `uploading` (for Glance, the status of staged data).
    pub async fn uploading_image_ids(&self) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar("SELECT id FROM images WHERE status = 'uploading'").fetch_all(self.pool()).await?)
    }

    /// Jobs, newest first; `owner` limits them to one project's images (None = all).
    pub async fn list_jobs(&self, owner: Option<&str>, limit: u32) -> Result<Vec<JobRow>, DbError> {
        let limit = i64::from(limit.min(MAX_JOB_PAGE));
        let sql = format!("{JOB_SELECT} WHERE (?1 IS NULL OR i.owner = ?1) ORDER BY j.created_at DESC, j.id LIMIT ?2");
        Ok(sqlx::query_as(&sql).bind(owner).bind(limit).fetch_all(self.pool()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewImage;
    use domain::ImageStatus;

    use crate::test_db::temp_db;

    #[tokio::test]
    async fn imports_cut_off_by_a_stop_are_queued_again_unless_a_job_will_finish_them() {
        let (_dir, db) = temp_db().await;
        let mk = |n: &str| NewImage { name: n.into(), ..Default::default() };
        let orphan = db.create_image(&mk("orphan")).await.unwrap();
        let saving = db.create_image(&mk("saving")).await.unwrap();
        let owned = db.create_image(&mk("owned")).await.unwrap();
        let active = db.create_image(&mk("active")).await.unwrap();
        assert!(db.transition_image(&orphan.id, &[ImageStatus::Queued], ImageStatus::Importing, "").await.unwrap());
        assert!(db.transition_image(&saving.id, &[ImageStatus::Queued], ImageStatus::Saving, "").await.unwrap());
        assert!(db.transition_image(&owned.id, &[ImageStatus::Queued], ImageStatus::Importing, "").await.unwrap());
        assert!(db.transition_image(&active.id, &[ImageStatus::Queued], ImageStatus::Active, "").await.unwrap());
        db.create_job(&NewJob::import(owned.id.clone(), "local")).await.unwrap();
        assert_eq!(db.reset_orphaned_imports().await.unwrap(), 2);
        for (id, want) in [
            (&orphan.id, ImageStatus::Queued),
            (&saving.id, ImageStatus::Queued),
            (&owned.id, ImageStatus::Importing),
            (&active.id, ImageStatus::Active),
        ] {
            assert_eq!(db.image(id).await.unwrap().unwrap().status, want);
        }
        assert!(db.image_ingest(&orphan.id).await.unwrap().unwrap().status_reason.contains("server stopped"));
    }

    #[tokio::test]
    async fn an_image_has_one_import_job_at_a_time() {
        let (_dir, db) = temp_db().await;
        let img = db.create_image(&NewImage { name: "once".into(), ..Default::default() }).await.unwrap();
        let import = NewJob::import(img.id.clone(), "local");
        let first = db.create_job(&import).await.unwrap();
        let second = db.create_job(&import).await;
        assert!(second.as_ref().is_err_and(DbError::is_unique_violation), "{second:?}");
        // Copies are not imports; once the import ended, another may start.
        db.create_job(&NewJob { kind: JobKind::Copy, ..import.clone() }).await.unwrap();
        assert!(db.cancel_job(&first.id).await.unwrap());
        db.create_job(&import).await.unwrap();
    }

    #[tokio::test]
    async fn jobs_are_claimed_once_progress_cancel_retry_and_requeue() {
        let (_dir, db) = temp_db().await;
        let img = db.create_image(&NewImage { name: "j".into(), ..Default::default() }).await.unwrap();
        // Copies: an image has at most one import job queued or running (see the next test).
        let new = |backend: &str| NewJob { bytes_total: 100, ..NewJob::copy(img.id.clone(), backend) };
        let a = db.create_job(&new("local")).await.unwrap();
        let b = db.create_job(&new("ceph")).await.unwrap();
        assert_eq!((a.status.as_str(), a.image_name.as_str(), a.params.as_str()), ("queued", "j", "{}"));

        // Jobs made in the same millisecond may be claimed in either order; each exactly once.
        let first = db.claim_job().await.unwrap().unwrap();
        assert_eq!((first.status.as_str(), first.attempts), ("running", 1));
        let second = db.claim_job().await.unwrap().unwrap();
        let mut claimed = [first.id.clone(), second.id.clone()];
        claimed.sort();
        let mut made = [a.id.clone(), b.id.clone()];
        made.sort();
        assert_eq!(claimed, made);
        assert!(db.claim_job().await.unwrap().is_none());
        let (a, b) = (first, second);

        assert_eq!(a.stage, "", "no stage before the worker reports one");
        assert!(!db.job_progress(&a.id, 40, 100, "converting").await.unwrap(), "no cancel requested");
        assert_eq!(db.job(&a.id).await.unwrap().unwrap().stage, "converting");
        assert!(db.cancel_job(&a.id).await.unwrap());
        assert!(db.job_progress(&a.id, 50, 100, "hashing").await.unwrap(), "the worker sees the cancel");
        assert!(db.set_job_checkpoint(&a.id, r#"{"step":"prepared"}"#).await.unwrap());
        assert_eq!(db.live_job_checkpoints().await.unwrap(), vec![r#"{"step":"prepared"}"#.to_owned()]);
        assert!(db.busy_image_ids().await.unwrap().contains(&img.id));
        assert!(db.finish_job(&a.id, JobStatus::Failed, "refused", "", JobFailure::Refused).await.unwrap());
        assert_eq!(db.job(&a.id).await.unwrap().unwrap().failure, JobFailure::Refused);
        assert!(!db.set_job_checkpoint(&a.id, "{}").await.unwrap(), "only a running job records a step");
        assert!(db.live_job_checkpoints().await.unwrap().is_empty(), "an ended job's output is nobody's");
        assert!(!db.cancel_job(&a.id).await.unwrap(), "already ended");
        assert!(db.retry_job(&a.id).await.unwrap());
        let again = db.job(&a.id).await.unwrap().unwrap();
        assert_eq!((again.status.as_str(), again.bytes_done, again.cancel_requested), ("queued", 0, false));
        assert_eq!(again.failure, JobFailure::None, "a retry forgets why it failed");
        assert_eq!(again.checkpoint, "", "a retry starts from nothing");

        // b was running when the "server stopped".
        assert_eq!(db.requeue_interrupted_jobs().await.unwrap(), 1);
        assert_eq!(db.job(&b.id).await.unwrap().unwrap().status, JobStatus::Queued);
        let c = db.claim_job().await.unwrap().unwrap();
        assert!(db.finish_job(&c.id, JobStatus::Succeeded, "", "done", JobFailure::None).await.unwrap());
        let done = db.job(&c.id).await.unwrap().unwrap();
        assert_eq!((done.bytes_done, done.summary.as_str()), (100, "done"));
        assert!(!db.finish_job(&c.id, JobStatus::Failed, "x", "", JobFailure::Refused).await.unwrap(), "only running jobs end");

        assert_eq!(db.jobs_for_image(&img.id).await.unwrap().len(), 2);
        assert_eq!(db.list_jobs(None, 10).await.unwrap().len(), 2);
        assert_eq!(db.list_jobs(Some("nobody"), 10).await.unwrap().len(), 0);

        // A queued job is cancelled at once.
        let d = db.create_job(&new("local")).await.unwrap();
        assert!(db.cancel_job(&d.id).await.unwrap());
        let d = db.job(&d.id).await.unwrap().unwrap();
        assert_eq!(d.status, JobStatus::Cancelled);
        assert!(d.finished_at.is_some());
    }
}
