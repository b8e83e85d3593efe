//! Resumable uploads (tus): offsets, parts, expiry. The rules (quotas, who may write, when an
//! upload is complete) live in `crates/uploads`; this module only stores and counts.
//!
//! Times are Unix seconds chosen by the caller, so that tests can control the clock.

use sqlx::FromRow;

use crate::{Db, DbError};

/// `uploads.concat` for an ordinary upload.
pub const CONCAT_NONE: &str = "none";
/// `uploads.concat` for a part of a parallel upload.
pub const CONCAT_PARTIAL: &str = "partial";
/// `uploads.concat` for the upload that joins parts.
pub const CONCAT_FINAL: &str = "final";

/// One upload as stored.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct UploadRow {
    pub id: String,
    pub user_id: String,
    pub project_id: String,
    pub upload_length: i64,
    /// Bytes durably written (for finals: 0 until the parts are joined, then the length).
    pub upload_offset: i64,
    /// A JSON object of strings (the decoded Upload-Metadata).
    pub metadata: String,
    /// `none`, `partial` or `final`.
    pub concat: String,
    /// Finals: a JSON list of part ids, in order.
    pub parts: Option<String>,
    /// Partials: the final upload that claimed this part.
    pub final_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
}

/// An upload to create.
#[derive(Clone, Debug)]
pub struct NewUpload<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub project_id: &'a str,
    pub length: i64,
    pub metadata: &'a str,
    /// `none`, `partial` or `final`.
    pub concat: &'a str,
    /// Finals only: the JSON list of part ids.
    pub parts: Option<&'a str>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The outcome of [`Db::create_final_upload_within_quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalCreated {
    Created,
    /// A part is not a complete partial upload of this user and project, or another final has it.
    BadParts,
    /// The project has `max_concurrent_uploads` uploads in flight already.
    OverSlots,
}

/// What a project has in flight, for quota checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadUsage {
    /// Declared lengths of uploads not yet handed over (parts count; finals do not, since their
    /// bytes are their parts').
    pub bytes: u64,
    /// Uploads not yet handed over, counting ordinary and final uploads (one per image being
    /// uploaded) but not parts, which belong to the final that will join them.
    pub uploads: u64,
}

const UPLOAD_COLUMNS: &str = "id, user_id, project_id, upload_length, upload_offset, metadata, concat, parts, \
     final_id, created_at, expires_at, completed_at";

impl Db {
    /// Creates an ordinary or partial upload at offset 0.
    pub async fn create_upload(&self, new: &NewUpload<'_>) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO uploads (id, user_id, project_id, upload_length, metadata, concat, parts, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id)
        .bind(new.user_id)
        .bind(new.project_id)
        .bind(new.length)
        .bind(new.metadata)
        .bind(new.concat)
        .bind(new.parts)
        .bind(new.created_at)
        .bind(new.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Creates an upload if the project's quotas allow it, checked in the same statement as the
    /// insert (see `quota.rs`): its length on top of everything the project uses must stay within
    /// `max_bytes`, and if `slot`, one more upload within `max_concurrent_uploads`. False when
    /// refused.
    pub async fn create_upload_within_quota(&self, new: &NewUpload<'_>, slot: bool) -> Result<bool, DbError> {
        use crate::quota::{MAX_BYTES, MAX_SLOTS, USAGE_BYTES, USAGE_SLOTS};
        let sql = format!(
            "INSERT INTO uploads (id, user_id, project_id, upload_length, metadata, concat, parts, created_at, expires_at) \
             SELECT ?2, ?3, ?1, ?4, ?5, ?6, ?7, ?8, ?9 \
             WHERE ({MAX_BYTES} IS NULL OR {USAGE_BYTES} + ?4 <= {MAX_BYTES}) \
               AND (?10 = 0 OR {MAX_SLOTS} IS NULL OR {USAGE_SLOTS} < {MAX_SLOTS})"
        );
        let done = sqlx::query(&sql)
            .bind(new.project_id)
            .bind(new.id)
            .bind(new.user_id)
            .bind(new.length)
            .bind(new.metadata)
            .bind(new.concat)
            .bind(new.parts)
            .bind(new.created_at)
            .bind(new.expires_at)
            .bind(i64::from(slot))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates a final upload and claims its parts in one transaction. Each part must be a
    /// complete partial upload of the same user and project, not claimed by another final;
    /// otherwise nothing is written and the answer is `false`. Claimed parts take the final's
    /// expiry so that they never expire before it.
    pub async fn create_final_upload(&self, new: &NewUpload<'_>, part_ids: &[String]) -> Result<bool, DbError> {
        Ok(self.create_final_upload_within_quota(new, part_ids).await? == FinalCreated::Created)
    }

    /// As [`Db::create_final_upload`], also refusing ([`FinalCreated::OverSlots`]) when the
    /// final would take the project past `max_concurrent_uploads`: a final takes an upload slot
    /// (its parts do not), counted inside the transaction after the insert, whose first write
    /// took SQLite's write lock, so parallel finals cannot overshoot.
    pub async fn create_final_upload_within_quota(&self, new: &NewUpload<'_>, part_ids: &[String]) -> Result<FinalCreated, DbError> {
        use crate::quota::{MAX_SLOTS, USAGE_SLOTS};
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO uploads (id, user_id, project_id, upload_length, metadata, concat, parts, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.id)
        .bind(new.user_id)
        .bind(new.project_id)
        .bind(new.length)
        .bind(new.metadata)
        .bind(new.concat)
        .bind(new.parts)
        .bind(new.created_at)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        for part in part_ids {
            let claimed = sqlx::query(
                "UPDATE uploads SET final_id = ?, expires_at = MAX(expires_at, ?) \
                 WHERE id = ? AND concat = 'partial' AND final_id IS NULL AND user_id = ? AND project_id = ? \
                 AND upload_offset = upload_length",
            )
            .bind(new.id)
            .bind(new.expires_at)
            .bind(part)
            .bind(new.user_id)
            .bind(new.project_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed != 1 {
                tx.rollback().await?;
                return Ok(FinalCreated::BadParts);
            }
        }
        let over: bool = sqlx::query_scalar(&format!("SELECT {MAX_SLOTS} IS NOT NULL AND {USAGE_SLOTS} > {MAX_SLOTS}"))
            .bind(new.project_id)
            .fetch_one(&mut *tx)
            .await?;
        if over {
            tx.rollback().await?;
            return Ok(FinalCreated::OverSlots);
        }
        tx.commit().await?;
        Ok(FinalCreated::Created)
    }

    pub async fn upload_by_id(&self, id: &str) -> Result<Option<UploadRow>, DbError> {
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Moves the offset from `from` to `to` (and the expiry to `expires_at`) if it still is
    /// `from`. Returns whether it did.
    pub async fn advance_upload(&self, id: &str, from: i64, to: i64, expires_at: i64) -> Result<bool, DbError> {
        let n = sqlx::query("UPDATE uploads SET upload_offset = ?, expires_at = MAX(expires_at, ?) WHERE id = ? AND upload_offset = ?")
            .bind(to)
            .bind(expires_at)
            .bind(id)
            .bind(from)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Records that the complete file was handed over. Returns false if it already was.
    /// Marks an upload handed over. Its bytes stop counting as in flight and, in the same
    /// transaction, become the `import` hold of the image its metadata names (if that image
    /// exists and is not imported already: the job may have finished first), which its import
    /// job keeps until the image is active or killed (`quota.rs`).
    pub async fn mark_upload_completed(&self, id: &str, at: i64) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query("UPDATE uploads SET completed_at = ? WHERE id = ? AND completed_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            sqlx::query(
                "INSERT INTO quota_holds (image_id, purpose, project_id, bytes, slot) \
                 SELECT i.id, 'import', u.project_id, u.upload_length, 0 FROM uploads u \
                 JOIN images i ON i.id = json_extract(u.metadata, '$.image_id') AND i.owner = u.project_id \
                 WHERE u.id = ? AND json_valid(u.metadata) \
                   AND i.status NOT IN ('active', 'deactivated', 'killed') \
                 ON CONFLICT (image_id, purpose) DO UPDATE SET bytes = MAX(bytes, excluded.bytes)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Deletes one upload row (not its parts). Returns whether it existed.
    pub async fn delete_upload(&self, id: &str) -> Result<bool, DbError> {
        let n = sqlx::query("DELETE FROM uploads WHERE id = ?").bind(id).execute(self.pool()).await?.rows_affected();
        Ok(n == 1)
    }

    /// The parts a final upload claimed (in no particular order: the final's `parts` list has it).
    pub async fn parts_of_final(&self, final_id: &str) -> Result<Vec<UploadRow>, DbError> {
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE final_id = ?");
        Ok(sqlx::query_as(&sql).bind(final_id).fetch_all(self.pool()).await?)
    }

    /// Deletes the part rows of a final upload; returns how many there were.
    pub async fn delete_parts_of_final(&self, final_id: &str) -> Result<u64, DbError> {
        Ok(sqlx::query("DELETE FROM uploads WHERE final_id = ?").bind(final_id).execute(self.pool()).await?.rows_affected())
    }

    /// What `project_id` has in flight (see [`UploadUsage`]).
    pub async fn upload_usage(&self, project_id: &str) -> Result<UploadUsage, DbError> {
        let (bytes, uploads): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN concat != 'final' THEN upload_length ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN concat != 'partial' THEN 1 ELSE 0 END), 0) \
             FROM uploads WHERE project_id = ? AND completed_at IS NULL",
        )
        .bind(project_id)
        .fetch_one(self.pool())
        .await?;
        Ok(UploadUsage { bytes: u64::try_from(bytes).unwrap_or(0), uploads: u64::try_from(uploads).unwrap_or(0) })
    }

    /// Uploads of `user_id` not yet handed over, parts included.
    pub async fn open_uploads_of_user(&self, user_id: &str) -> Result<u64, DbError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM uploads WHERE user_id = ? AND completed_at IS NULL")
            .bind(user_id)
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` uploads whose expiry is at or before `now`, oldest first. Claimed parts are
    /// left out: they go with their final.
    pub async fn expired_uploads(&self, now: i64, limit: u32) -> Result<Vec<UploadRow>, DbError> {
        let sql =
            format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= ? AND final_id IS NULL ORDER BY expires_at, id LIMIT ?");
        Ok(sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(self.pool()).await?)
    }

    /// Uploads whose bytes are all there (or, for finals, whose parts are) but that were not yet
    /// handed over: the work a restart must finish.
    pub async fn uploads_to_finish(&self) -> Result<Vec<UploadRow>, DbError> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE completed_at IS NULL AND \
             ((concat = 'none' AND upload_offset = upload_length) OR concat = 'final') ORDER BY created_at"
        );
        Ok(sqlx::query_as(&sql).fetch_all(self.pool()).await?)
    }

    /// Whether a row with this id exists (the cleanup task's check before removing a stray file).
    pub async fn upload_exists(&self, id: &str) -> Result<bool, DbError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM uploads WHERE id = ?").bind(id).fetch_one(self.pool()).await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_db::temp_db;

    async fn owner(db: &Db) -> (String, String) {
        let u = db.create_user("u", "", "", "x", false).await.unwrap();
        let p = db.create_project("p", "").await.unwrap();
        (u.id, p.id)
    }

    fn new<'a>(id: &'a str, user: &'a str, project: &'a str, length: i64, concat: &'a str) -> NewUpload<'a> {
        NewUpload { id, user_id: user, project_id: project, length, metadata: "{}", concat, parts: None, created_at: 100, expires_at: 200 }
    }

    #[tokio::test]
    async fn offsets_move_only_from_the_expected_value() {
        let (_d, db) = temp_db().await;
        let (u, p) = owner(&db).await;
        db.create_upload(&new("a", &u, &p, 10, CONCAT_NONE)).await.unwrap();
        assert!(db.advance_upload("a", 0, 4, 300).await.unwrap());
        assert!(!db.advance_upload("a", 0, 8, 300).await.unwrap(), "a stale offset must not move it");
        let row = db.upload_by_id("a").await.unwrap().unwrap();
        assert_eq!((row.upload_offset, row.expires_at), (4, 300));
        assert!(db.advance_upload("a", 4, 11, 300).await.is_err(), "past the length is refused by the CHECK");
        assert_eq!(db.uploads_to_finish().await.unwrap(), vec![]);
        assert!(db.advance_upload("a", 4, 10, 300).await.unwrap());
        assert_eq!(db.uploads_to_finish().await.unwrap().len(), 1);
        assert!(db.mark_upload_completed("a", 301).await.unwrap());
        assert!(!db.mark_upload_completed("a", 302).await.unwrap());
    }

    #[tokio::test]
    async fn parallel_finals_and_uploads_cannot_pass_the_slot_quota() {
        let (_d, db) = temp_db().await;
        let (u, p) = owner(&db).await;
        db.set_quota(&p, crate::QuotaRow { max_images: None, max_bytes: None, max_concurrent_uploads: Some(1) }).await.unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("part{i}")).collect();
        for n in &names {
            db.create_upload(&new(n, &u, &p, 4, CONCAT_PARTIAL)).await.unwrap();
            assert!(db.advance_upload(n, 0, 4, 150).await.unwrap());
        }
        let lists: Vec<Vec<String>> = names.iter().map(|n| vec![n.clone()]).collect();
        let ids: Vec<String> = (0..4).map(|i| format!("final{i}")).collect();
        let finals: Vec<NewUpload<'_>> = ids.iter().map(|id| new(id, &u, &p, 4, CONCAT_FINAL)).collect();
        let outcomes =
            futures::future::join_all(finals.iter().zip(&lists).map(|(f, parts)| db.create_final_upload_within_quota(f, parts))).await;
        let created = outcomes.iter().filter(|o| matches!(o, Ok(FinalCreated::Created))).count();
        let refused = outcomes.iter().filter(|o| matches!(o, Ok(FinalCreated::OverSlots))).count();
        assert_eq!((created, refused), (1, 3), "{outcomes:?}");
        // A plain upload cannot take a slot that is full either.
        assert!(!db.create_upload_within_quota(&new("plain", &u, &p, 4, CONCAT_NONE), true).await.unwrap());
    }

    #[tokio::test]
    async fn usage_counts_bytes_of_parts_and_slots_of_finals() {
        let (_d, db) = temp_db().await;
        let (u, p) = owner(&db).await;
        db.create_upload(&new("a", &u, &p, 10, CONCAT_NONE)).await.unwrap();
        db.create_upload(&new("b", &u, &p, 5, CONCAT_PARTIAL)).await.unwrap();
        db.create_upload(&new("c", &u, &p, 7, CONCAT_PARTIAL)).await.unwrap();
        assert_eq!(db.upload_usage(&p).await.unwrap(), UploadUsage { bytes: 22, uploads: 1 });
        assert_eq!(db.open_uploads_of_user(&u).await.unwrap(), 3);

        let parts = vec!["b".to_owned(), "c".to_owned()];
        let fin = NewUpload { parts: Some(r#"["b","c"]"#), ..new("f", &u, &p, 12, CONCAT_FINAL) };
        assert!(!db.create_final_upload(&fin, &parts).await.unwrap(), "incomplete parts cannot be claimed");
        assert!(db.upload_by_id("f").await.unwrap().is_none(), "a refused final leaves nothing behind");
        db.advance_upload("b", 0, 5, 200).await.unwrap();
        db.advance_upload("c", 0, 7, 200).await.unwrap();
        assert!(db.create_final_upload(&fin, &parts).await.unwrap());
        assert_eq!(db.upload_usage(&p).await.unwrap(), UploadUsage { bytes: 22, uploads: 2 });
        let fin2 = NewUpload { parts: Some(r#"["b"]"#), ..new("g", &u, &p, 5, CONCAT_FINAL) };
        assert!(!db.create_final_upload(&fin2, &parts[..1]).await.unwrap(), "a part joins one final only");
        assert_eq!(db.parts_of_final("f").await.unwrap().len(), 2);
        assert_eq!(db.expired_uploads(1000, 10).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a", "f"]);
        assert_eq!(db.delete_parts_of_final("f").await.unwrap(), 2);
        assert!(db.delete_upload("f").await.unwrap());
        assert!(!db.upload_exists("b").await.unwrap());
    }
}
