//! The storage-compatibility matrix: per backend kind and format, what an import does.

use sqlx::FromRow;

use crate::{Db, DbError};

/// The backend kinds the matrix has columns for.
pub const BACKEND_KINDS: [&str; 4] = [
    domain::StorageKind::Local.as_str(),
    domain::StorageKind::Nfs.as_str(),
    domain::StorageKind::S3.as_str(),
    domain::StorageKind::Rbd.as_str(),
];

/// What an import does with a format on a kind of backend.
pub const POLICY_ACTIONS: [&str; 4] = ["native", "convert", "extract", "refuse"];

/// One cell of the storage-compatibility matrix.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct PolicyCell {
    pub backend_kind: String,
    pub format: String,
    /// `native`, `convert`, `extract` or `refuse`.
    pub action: String,
    /// Set exactly when `action` is `convert`.
    pub target_format: Option<String>,
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
    pub async fn policy_cell(&self, backend_kind: &str, format: &str) -> Result<Option<PolicyCell>, DbError> {
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
        backend_kind: &str,
        format: &str,
        action: &str,
        target_format: Option<&str>,
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
    use crate::test_db::temp_db;

    #[tokio::test]
    async fn the_default_matrix_follows_the_issue() {
        let (_dir, db) = temp_db().await;
        let cells = db.storage_policy().await.unwrap();
        assert_eq!(cells.len(), 48, "4 kinds × 12 formats");
        let cell = |k: &str, f: &str| cells.iter().find(|c| c.backend_kind == k && c.format == f).unwrap().clone();
        for kind in ["local", "nfs"] {
            assert_eq!(cell(kind, "qcow2").action, "native");
            assert_eq!(cell(kind, "raw").target_format.as_deref(), Some("qcow2"));
            assert_eq!(cell(kind, "vdi").target_format.as_deref(), Some("qcow2"));
        }
        // RBD clones raw copy-on-write; the S3 column (the `ceph` column before RBD came) keeps
        // what it had, its reasons no longer claiming RBD clones it.
        for kind in ["rbd", "s3"] {
            assert_eq!(cell(kind, "raw").action, "native");
            assert_eq!(cell(kind, "qcow2").target_format.as_deref(), Some("raw"));
            assert_eq!(cell(kind, "vmdk").target_format.as_deref(), Some("raw"));
            assert_eq!(cell(kind, "ova").action, "extract");
        }
        assert!(cell("rbd", "qcow2").reason.contains("RBD copy-on-write clones"));
        assert!(cell("s3", "qcow2").reason.contains("imported into an RBD pool"), "{}", cell("s3", "qcow2").reason);
        assert!(cell("s3", "vdi").reason.contains("imported into an RBD pool"), "{}", cell("s3", "vdi").reason);
        assert!(cells.iter().all(|c| !c.reason.is_empty()), "every default cell explains itself");
        assert_eq!(cells.first().unwrap().backend_kind, "local");
        assert_eq!(cells.last().unwrap().backend_kind, "rbd");
    }

    #[tokio::test]
    async fn cells_are_edited_and_the_schema_keeps_them_consistent() {
        let (_dir, db) = temp_db().await;
        let c = db.set_policy_cell("rbd", "vdi", "refuse", None, "No VirtualBox here.", "alice").await.unwrap();
        assert_eq!((c.action.as_str(), c.updated_by.as_str()), ("refuse", "alice"));
        assert_eq!(db.policy_cell("rbd", "vdi").await.unwrap().unwrap().reason, "No VirtualBox here.");
        assert!(db.set_policy_cell("rbd", "vdi", "convert", None, "", "a").await.is_err(), "convert needs a target");
        assert!(db.set_policy_cell("rbd", "vdi", "native", Some("raw"), "", "a").await.is_err(), "target only on convert");
        assert!(db.set_policy_cell("ceph", "vdi", "native", None, "", "a").await.is_err(), "the old kind name is gone from the matrix");
        assert!(db.set_policy_cell("swift", "vdi", "native", None, "", "a").await.is_err(), "unknown kind");
        assert!(db.set_policy_cell("local", "vdi", "shrug", None, "", "a").await.is_err(), "unknown action");
        assert_eq!(db.storage_policy().await.unwrap().len(), 48);
    }
}
