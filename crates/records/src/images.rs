//! Image records.

use sqlx::FromRow;

use crate::{Db, DbError};

/// One image as stored.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct ImageRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub visibility: String,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub sha256: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a caller supplies to create an image record; the id and times are assigned here.
#[derive(Clone, Debug, Default)]
pub struct NewImage {
    pub name: String,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub visibility: Option<String>,
}

/// The most rows one list call returns, whatever the caller asks for: bounds memory and
/// response size (Glance's default `limit_param_default` is 25 and its maximum 1000).
pub const MAX_LIST_LIMIT: u32 = 1000;

const COLUMNS: &str = "id, name, status, disk_format, container_format, visibility, size, \
                       virtual_size, sha256, created_at, updated_at";

impl Db {
    /// Images, newest first, at most `limit` (capped at [`MAX_LIST_LIMIT`]).
    pub async fn list_images(&self, limit: u32) -> Result<Vec<ImageRow>, DbError> {
        let limit = i64::from(limit.min(MAX_LIST_LIMIT));
        let sql = format!("SELECT {COLUMNS} FROM images ORDER BY created_at DESC, id LIMIT ?");
        Ok(sqlx::query_as::<_, ImageRow>(&sql).bind(limit).fetch_all(self.pool()).await?)
    }

    /// How many images exist (for counts shown in the UI).
    pub async fn count_images(&self) -> Result<u64, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM images").fetch_one(self.pool()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Creates an image record in status `queued` (Glance's state before any data arrives).
    pub async fn create_image(&self, new: &NewImage) -> Result<ImageRow, DbError> {
        let id = uuid::Uuid::new_v4().to_string();
        let sql = format!(
            "INSERT INTO images (id, name, disk_format, container_format, visibility) \
             VALUES (?, ?, ?, ?, COALESCE(?, 'shared')) RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as::<_, ImageRow>(&sql)
            .bind(&id)
            .bind(&new.name)
            .bind(&new.disk_format)
            .bind(&new.container_format)
            .bind(&new.visibility)
            .fetch_one(self.pool())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_sqlite(&dir.path().join("hangar.db")).await.expect("open");
        (dir, db)
    }

    #[tokio::test]
    async fn a_new_database_has_no_images() {
        let (_dir, db) = temp_db().await;
        assert_eq!(db.list_images(25).await.unwrap(), vec![]);
        assert_eq!(db.count_images().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn created_images_are_listed_queued_with_defaults() {
        let (_dir, db) = temp_db().await;
        let row = db
            .create_image(&NewImage { name: "debian-12".into(), disk_format: Some("qcow2".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(row.status, "queued");
        assert_eq!(row.visibility, "shared");
        assert_eq!(row.name, "debian-12");
        let listed = db.list_images(25).await.unwrap();
        assert_eq!(listed, vec![row]);
        assert_eq!(db.count_images().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn visibility_outside_glance_names_is_refused_by_the_schema() {
        let (_dir, db) = temp_db().await;
        let err = db
            .create_image(&NewImage { name: "x".into(), visibility: Some("everyone".into()), ..Default::default() })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangar.db");
        let db = Db::open_sqlite(&path).await.unwrap();
        db.create_image(&NewImage { name: "kept".into(), ..Default::default() }).await.unwrap();
        db.close().await;
        let db = Db::open_sqlite(&path).await.unwrap();
        assert_eq!(db.list_images(25).await.unwrap()[0].name, "kept");
    }

    #[tokio::test]
    async fn list_limit_is_capped() {
        let (_dir, db) = temp_db().await;
        for i in 0..3 {
            db.create_image(&NewImage { name: format!("i{i}"), ..Default::default() }).await.unwrap();
        }
        assert_eq!(db.list_images(2).await.unwrap().len(), 2);
        assert_eq!(db.list_images(u32::MAX).await.unwrap().len(), 3);
    }
}
