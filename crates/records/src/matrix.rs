//! The storage-compatibility matrix: per backend kind and format, what an import does.

use domain::{DiskFormat, ImageFormat, MatrixAction, StorageKind};
use sqlx::FromRow;

use crate::{Db, DbError};

/// One cell of the storage-compatibility matrix.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct PolicyCell {
    pub backend_kind: StorageKind,
    pub format: ImageFormat,
    pub action: MatrixAction,
    /// Set exactly when `action` is `convert`.
    pub target_format: Option<DiskFormat>,
    pub reason: String,
    pub updated_at: String,
    pub updated_by: String,
}

impl Db {
    /// The whole matrix, ordered by backend kind then format.
    pub async fn storage_policy(&self) -> Result<Vec<PolicyCell>, DbError> {
        Ok(sqlx::query_as(
            "SELECT backend_kind, format, action, target_format, reason, updated_at, updated_by FROM storage_policy \
             ORDER BY CASE backend_kind WHEN 'local' THEN 0 WHEN 'nfs' THEN 1 WHEN 's3' THEN 2 ELSE 3 END, format",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// The cell for `format` on a `backend_kind`, if the matrix has one.
    pub async fn policy_cell(&self, backend_kind: StorageKind, format: ImageFormat) -> Result<Option<PolicyCell>, DbError> {
        Ok(sqlx::query_as(
            "SELECT backend_kind, format, action, target_format, reason, updated_at, updated_by FROM storage_policy \
             WHERE backend_kind = ? AND format = ?",
        )
        .bind(backend_kind)
        .bind(format)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Creates or replaces one cell. The schema refuses unknown kinds/actions and a target format
    /// on anything but `convert` (and its absence on `convert`).
    pub async fn set_policy_cell(
        &self,
        backend_kind: StorageKind,
        format: ImageFormat,
        action: MatrixAction,
        target_format: Option<DiskFormat>,
        reason: &str,
        updated_by: &str,
    ) -> Result<PolicyCell, DbError> {
        Ok(sqlx::query_as(
            "INSERT INTO storage_policy (backend_kind, format, action, target_format, reason, updated_by) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (backend_kind, format) DO UPDATE SET action = excluded.action, \
             target_format = excluded.target_format, reason = excluded.reason, updated_by = excluded.updated_by, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') \
             RETURNING backend_kind, format, action, target_format, reason, updated_at, updated_by",
        )
        .bind(backend_kind)
        .bind(format)
        .bind(action)
        .bind(target_format)
        .bind(reason)
        .bind(updated_by)
        .fetch_one(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use domain::{DiskFormat, ImageFormat, MatrixAction::*, StorageKind};

    use crate::test_db::temp_db;

    #[tokio::test]
    async fn the_default_matrix_follows_the_issue() {
        let (_dir, db) = temp_db().await;
        let cells = db.storage_policy().await.unwrap();
        assert_eq!(cells.len(), 48, "4 kinds × 12 formats");
        let cell = |k: &str, f: &str| cells.iter().find(|c| c.backend_kind.as_str() == k && c.format.as_str() == f).unwrap().clone();
        for kind in ["local", "nfs"] {
            assert_eq!(cell(kind, "qcow2").action, Native);
            assert_eq!(cell(kind, "raw").target_format.map(DiskFormat::as_str), Some("qcow2"));
            assert_eq!(cell(kind, "vdi").target_format.map(DiskFormat::as_str), Some("qcow2"));
        }
        // RBD clones raw copy-on-write; the S3 column (the `ceph` column before RBD came) keeps
        // what it had, its reasons no longer claiming RBD clones it.
        for kind in ["rbd", "s3"] {
            assert_eq!(cell(kind, "raw").action, Native);
            assert_eq!(cell(kind, "qcow2").target_format.map(DiskFormat::as_str), Some("raw"));
            assert_eq!(cell(kind, "vmdk").target_format.map(DiskFormat::as_str), Some("raw"));
            assert_eq!(cell(kind, "ova").action, Extract);
        }
        assert!(cell("rbd", "qcow2").reason.contains("RBD copy-on-write clones"));
        assert!(cell("s3", "qcow2").reason.contains("imported into an RBD pool"), "{}", cell("s3", "qcow2").reason);
        assert!(cell("s3", "vdi").reason.contains("imported into an RBD pool"), "{}", cell("s3", "vdi").reason);
        assert!(cells.iter().all(|c| !c.reason.is_empty()), "every default cell explains itself");
        assert_eq!(cells.first().unwrap().backend_kind, StorageKind::Local);
        assert_eq!(cells.last().unwrap().backend_kind, StorageKind::Rbd);
    }

    #[tokio::test]
    async fn cells_are_edited_and_the_schema_keeps_them_consistent() {
        let (_dir, db) = temp_db().await;
        let rbd = StorageKind::Rbd;
        let c = db.set_policy_cell(rbd, ImageFormat::Vdi, Refuse, None, "No VirtualBox here.", "alice").await.unwrap();
        assert_eq!((c.action, c.updated_by.as_str()), (Refuse, "alice"));
        assert_eq!(db.policy_cell(rbd, ImageFormat::Vdi).await.unwrap().unwrap().reason, "No VirtualBox here.");
        assert!(db.set_policy_cell(rbd, ImageFormat::Vdi, Convert, None, "", "a").await.is_err(), "convert needs a target");
        assert!(db.set_policy_cell(rbd, ImageFormat::Vdi, Native, Some(DiskFormat::Raw), "", "a").await.is_err(), "target only on convert");
        // Kinds and actions outside the vocabulary cannot be named in Rust; the schema refuses
        // them from SQL too (the old kind name `ceph` included).
        for (kind, action) in [("ceph", "native"), ("swift", "native"), ("local", "shrug")] {
            let raw = sqlx::query("INSERT INTO storage_policy (backend_kind, format, action) VALUES (?, 'vdi', ?)")
                .bind(kind)
                .bind(action)
                .execute(db.pool())
                .await;
            assert!(raw.is_err(), "{kind}/{action}");
        }
        assert_eq!(db.storage_policy().await.unwrap().len(), 48);
    }
}
