//! A project's storage quota, counted the same way by every door (the security issue's "exact
//! under concurrency").
//!
//! What a project uses is one SQL expression, [`USAGE_BYTES`]: the bytes stored on every backend
//! (one row per copy in `image_locations`), plus the tus uploads in flight (their declared
//! lengths), plus the *holds* (`quota_holds`): bytes on their way in through other paths — a
//! Glance `PUT /file`, `PUT /stage` or web-download while its body arrives, an upload waiting
//! for or running its import (the upload's size, then the converted output's), a copy to
//! another backend. Upload *slots* (`max_concurrent_uploads`) are counted alike: tus uploads in
//! flight plus holds with `slot = 1`.
//!
//! Every write that adds to the usage checks the quota in the same statement ([`Db::hold_quota`],
//! [`Db::create_upload_within_quota`]): SQLite takes the write lock before the statement reads,
//! so of two concurrent requests at the limit exactly one gets in. A hold is released in the
//! same transaction as what replaces it (an import's hold when the image becomes active), so the
//! usage never dips below what is really there.

use crate::{Db, DbError};

/// The bytes a project (`?1`) uses: stored copies + tus uploads in flight + holds. A final
/// tus upload counts once its parts (which count until then) are gone.
pub(crate) const USAGE_BYTES: &str = "(\
    (SELECT COALESCE(SUM(l.size), 0) FROM image_locations l JOIN images i ON i.id = l.image_id WHERE i.owner = ?1) \
  + (SELECT COALESCE(SUM(u.upload_length), 0) FROM uploads u WHERE u.project_id = ?1 AND u.completed_at IS NULL \
        AND (u.concat != 'final' OR NOT EXISTS (SELECT 1 FROM uploads p WHERE p.final_id = u.id))) \
  + (SELECT COALESCE(SUM(h.bytes), 0) FROM quota_holds h WHERE h.project_id = ?1))";

/// The uploads a project (`?1`) has in flight: tus uploads (not parts) + holds with a slot.
pub(crate) const USAGE_SLOTS: &str = "(\
    (SELECT COUNT(*) FROM uploads u WHERE u.project_id = ?1 AND u.completed_at IS NULL AND u.concat != 'partial') \
  + (SELECT COUNT(*) FROM quota_holds h WHERE h.project_id = ?1 AND h.slot = 1))";

/// The project's (`?1`) byte quota, NULL for none.
pub(crate) const MAX_BYTES: &str = "(SELECT max_bytes FROM quotas WHERE project_id = ?1)";
/// The project's (`?1`) upload-slot quota, NULL for none.
pub(crate) const MAX_SLOTS: &str = "(SELECT max_concurrent_uploads FROM quotas WHERE project_id = ?1)";

/// What a project uses now, part by part (for messages and the usage screens).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Images that are not killed.
    pub images: u64,
    /// Bytes of every stored copy.
    pub stored: u64,
    /// Declared bytes of tus uploads in flight.
    pub uploading: u64,
    /// Bytes held for other arrivals, imports and copies.
    pub held: u64,
    /// Uploads in flight (tus and others).
    pub slots: u64,
}

impl QuotaUsage {
    /// Everything the byte quota is checked against.
    pub fn bytes(&self) -> u64 {
        self.stored.saturating_add(self.uploading).saturating_add(self.held)
    }
}

/// Why a hold was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldRefused {
    /// It would take the project past `max_bytes` (the usage when refused and the quota).
    Bytes { used: u64, max: u64 },
    /// The project has `max` uploads in flight already.
    Slots { max: u64 },
}

impl std::fmt::Display for HoldRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldRefused::Bytes { used, max } => {
                write!(f, "this would take the project past its storage quota of {max} bytes ({used} are used or on their way in)")
            }
            HoldRefused::Slots { max } => {
                write!(f, "the project's quota allows {max} uploads at a time and that many are in progress")
            }
        }
    }
}

fn u(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Db {
    /// The project's usage, part by part.
    pub async fn quota_usage(&self, project_id: &str) -> Result<QuotaUsage, DbError> {
        let (images, stored, uploading, held, slots): (i64, i64, i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT COUNT(*) FROM images WHERE owner = ?1 AND status NOT IN ('deleted', 'killed')), \
                    (SELECT COALESCE(SUM(l.size), 0) FROM image_locations l JOIN images i ON i.id = l.image_id WHERE i.owner = ?1), \
                    (SELECT COALESCE(SUM(u.upload_length), 0) FROM uploads u WHERE u.project_id = ?1 AND u.completed_at IS NULL \
                        AND (u.concat != 'final' OR NOT EXISTS (SELECT 1 FROM uploads p WHERE p.final_id = u.id))), \
                    (SELECT COALESCE(SUM(bytes), 0) FROM quota_holds WHERE project_id = ?1), \
                    {USAGE_SLOTS}"
        ))
        .bind(project_id)
        .fetch_one(self.pool())
        .await?;
        Ok(QuotaUsage { images: u(images), stored: u(stored), uploading: u(uploading), held: u(held), slots: u(slots) })
    }

    /// Sets the hold of `image_id` for `purpose` to `bytes` (taking an upload slot if `slot`),
    /// if the project's quotas allow it: the project's usage without this hold, plus `bytes`,
    /// must stay within `max_bytes`, and a new slot within `max_concurrent_uploads`. Lowering a
    /// hold always succeeds. The check and the write are one statement.
    pub async fn hold_quota(
        &self,
        project_id: &str,
        image_id: &str,
        purpose: &str,
        bytes: u64,
        slot: bool,
    ) -> Result<Result<(), HoldRefused>, DbError> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let current = "(SELECT bytes FROM quota_holds WHERE image_id = ?2 AND purpose = ?3)";
        let current_slot = "COALESCE((SELECT slot FROM quota_holds WHERE image_id = ?2 AND purpose = ?3), 0)";
        let sql = format!(
            "INSERT INTO quota_holds (image_id, purpose, project_id, bytes, slot) SELECT ?2, ?3, ?1, ?4, ?5 \
             WHERE EXISTS (SELECT 1 FROM images WHERE id = ?2) \
               AND ({MAX_BYTES} IS NULL OR ?4 <= COALESCE({current}, -1) \
                    OR {USAGE_BYTES} - COALESCE({current}, 0) + ?4 <= {MAX_BYTES}) \
               AND (?5 = 0 OR {current_slot} = 1 OR {MAX_SLOTS} IS NULL OR {USAGE_SLOTS} < {MAX_SLOTS}) \
             ON CONFLICT (image_id, purpose) DO UPDATE SET bytes = excluded.bytes, slot = excluded.slot"
        );
        let done =
            sqlx::query(&sql).bind(project_id).bind(image_id).bind(purpose).bind(bytes).bind(i64::from(slot)).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        // Refused (or the image is gone): say which limit, from a fresh look.
        let q = self.quota(project_id).await?;
        let usage = self.quota_usage(project_id).await?;
        if slot {
            if let Some(max) = q.max_concurrent_uploads.map(u) {
                if usage.slots >= max {
                    return Ok(Err(HoldRefused::Slots { max }));
                }
            }
        }
        Ok(Err(HoldRefused::Bytes { used: usage.bytes(), max: q.max_bytes.map_or(u64::MAX, u) }))
    }

    /// Renames `image_id`'s hold `from` to `to` with `bytes` and no slot (an upload handed to its
    /// import; staged data done arriving): no check, the bytes were held already. False when
    /// there was no such hold.
    pub async fn move_quota_hold(&self, image_id: &str, from: &str, to: &str, bytes: u64) -> Result<bool, DbError> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM quota_holds WHERE image_id = ? AND purpose = ? AND ? != ?")
            .bind(image_id)
            .bind(to)
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("UPDATE quota_holds SET purpose = ?, bytes = MIN(bytes, ?), slot = 0 WHERE image_id = ? AND purpose = ?")
            .bind(to)
            .bind(bytes)
            .bind(image_id)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Drops `image_id`'s hold for `purpose`, if any.
    pub async fn release_quota(&self, image_id: &str, purpose: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM quota_holds WHERE image_id = ? AND purpose = ?").bind(image_id).bind(purpose).execute(self.pool()).await?;
        Ok(())
    }

    /// An image's holds (purpose, bytes, slot), for tests and diagnostics.
    pub async fn quota_holds(&self, image_id: &str) -> Result<Vec<(String, u64, bool)>, DbError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT purpose, bytes, slot FROM quota_holds WHERE image_id = ? ORDER BY purpose")
                .bind(image_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(p, b, s)| (p, u(b), s == 1)).collect())
    }

    /// Forgets the holds of requests that died with the server (bodies that were arriving when
    /// it stopped: `upload`, and the slot of a stage in progress); returns how many. Holds of
    /// imports and copies stay: their jobs run again. For start-up only.
    pub async fn release_interrupted_quota_holds(&self) -> Result<u64, DbError> {
        let mut n = sqlx::query("DELETE FROM quota_holds WHERE purpose = 'upload' OR (purpose = 'stage' AND slot = 1)")
            .execute(self.pool())
            .await?
            .rows_affected();
        n += sqlx::query(
            "DELETE FROM quota_holds WHERE purpose = 'stage' AND image_id IN (SELECT id FROM images WHERE status != 'uploading')",
        )
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n)
    }
}
