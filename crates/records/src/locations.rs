//! Where an image's bytes are: one location per backend holding a copy, and the usage overview.

use domain::{ImageFormat, LocationStatus};
use sqlx::FromRow;

use crate::{Db, DbError};

/// One copy of an image on one backend.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct LocationRow {
    pub image_id: String,
    pub backend: String,
    pub key: String,
    /// The stored copy's format (a package kept whole is stored as the package).
    pub disk_format: ImageFormat,
    pub size: i64,
    pub checksum: Option<String>,
    pub os_hash_value: Option<String>,
    pub status: LocationStatus,
    pub created_at: String,
}

/// Bytes and image counts, grouped for the storage overview.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct UsageRow {
    pub backend: String,
    pub owner: Option<String>,
    pub owner_name: String,
    pub disk_format: ImageFormat,
    pub images: i64,
    pub bytes: i64,
}

impl Db {
    /// Records (or replaces) the copy of an image on a backend.
    pub async fn put_location(&self, loc: &LocationRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO image_locations (image_id, backend, key, disk_format, size, checksum, os_hash_value, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (image_id, backend) DO UPDATE SET key = excluded.key, disk_format = excluded.disk_format, \
             size = excluded.size, checksum = excluded.checksum, os_hash_value = excluded.os_hash_value, \
             status = excluded.status",
        )
        .bind(&loc.image_id)
        .bind(&loc.backend)
        .bind(&loc.key)
        .bind(loc.disk_format)
        .bind(loc.size)
        .bind(&loc.checksum)
        .bind(&loc.os_hash_value)
        .bind(loc.status)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// An image's copies, oldest first (the first active one is where downloads read from).
    pub async fn image_locations(&self, image_id: &str) -> Result<Vec<LocationRow>, DbError> {
        Ok(sqlx::query_as(
            "SELECT image_id, backend, key, disk_format, size, checksum, os_hash_value, status, created_at \
             FROM image_locations WHERE image_id = ? ORDER BY created_at, backend",
        )
        .bind(image_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn remove_location(&self, image_id: &str, backend: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM image_locations WHERE image_id = ? AND backend = ?")
            .bind(image_id)
            .bind(backend)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stored bytes and image counts per backend, owner project and format (active copies only).
    pub async fn storage_usage(&self) -> Result<Vec<UsageRow>, DbError> {
        Ok(sqlx::query_as(
            "SELECT l.backend, i.owner, COALESCE(p.name, '') AS owner_name, l.disk_format, \
             COUNT(*) AS images, COALESCE(SUM(l.size), 0) AS bytes \
             FROM image_locations l JOIN images i ON i.id = l.image_id LEFT JOIN projects p ON p.id = i.owner \
             WHERE l.status = 'active' GROUP BY l.backend, i.owner, l.disk_format \
             ORDER BY l.backend, owner_name, l.disk_format",
        )
        .fetch_all(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewImage;

    use crate::test_db::temp_db;

    #[tokio::test]
    async fn locations_and_usage() {
        let (_dir, db) = temp_db().await;
        let p = db.create_project("alpha", "").await.unwrap();
        let img = db.create_image(&NewImage { name: "a".into(), owner: Some(p.id.clone()), ..Default::default() }).await.unwrap();
        let loc = |backend: &str, size: i64, status: LocationStatus| LocationRow {
            image_id: img.id.clone(),
            backend: backend.into(),
            key: format!("{}.qcow2", img.id),
            disk_format: ImageFormat::Qcow2,
            size,
            checksum: None,
            os_hash_value: None,
            status,
            created_at: String::new(),
        };
        db.put_location(&loc("local", 10, LocationStatus::Active)).await.unwrap();
        db.put_location(&loc("ceph", 7, LocationStatus::Pending)).await.unwrap();
        db.put_location(&loc("local", 12, LocationStatus::Active)).await.unwrap();
        let locs = db.image_locations(&img.id).await.unwrap();
        assert_eq!(locs.len(), 2, "one copy per backend");
        let usage = db.storage_usage().await.unwrap();
        assert_eq!(usage.len(), 1, "pending copies are not counted: {usage:?}");
        assert_eq!((usage[0].backend.as_str(), usage[0].owner_name.as_str(), usage[0].bytes, usage[0].images), ("local", "alpha", 12, 1));
        assert!(db.remove_location(&img.id, "ceph").await.unwrap());
        assert!(!db.remove_location(&img.id, "ceph").await.unwrap());
    }
}
