//! Image records: the row, creation, status transitions and the ingest columns. Members are
//! `members.rs`, the detail row and edits `catalogue.rs`, the listing query `listing.rs`.

use domain::{ContainerFormat, DiskFormat, ImageStatus, Visibility};
use sqlx::FromRow;

use crate::{Db, DbError};

/// One image as stored.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct ImageRow {
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub disk_format: Option<DiskFormat>,
    pub container_format: Option<ContainerFormat>,
    pub visibility: Visibility,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub sha256: Option<String>,
    pub owner: Option<String>,
    pub protected: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// Which images a caller may list (Glance's default listing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visible<'a> {
    /// Administrators: everything.
    All,
    /// A project's view: its own images, public ones, and shared ones it accepted.
    Project(&'a str),
    /// Signed in without a project: public images only.
    PublicOnly,
}

impl Visible<'_> {
    /// A WHERE clause and its one optional bind.
    fn clause(&self) -> (&'static str, Option<&str>) {
        match self {
            Visible::All => ("1 = 1", None),
            Visible::PublicOnly => ("visibility = 'public'", None),
            Visible::Project(p) => (
                "(owner = ?1 OR visibility = 'public' OR (visibility = 'shared' AND EXISTS \
                 (SELECT 1 FROM image_members m WHERE m.image_id = images.id AND m.project_id = ?1 AND m.status = 'accepted')))",
                Some(p),
            ),
        }
    }
}

/// What a caller supplies to create an image record; the id and times are assigned here.
#[derive(Clone, Debug, Default)]
pub struct NewImage {
    pub name: String,
    pub disk_format: Option<DiskFormat>,
    pub container_format: Option<ContainerFormat>,
    pub visibility: Option<Visibility>,
    pub owner: Option<String>,
    pub protected: bool,
    pub min_disk: i64,
    pub min_ram: i64,
    /// Glance's custom properties.
    pub properties: std::collections::BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub created_by: Option<String>,
    /// Refuse ([`DbError::ImageQuota`]) when the owner already holds this many images that are
    /// not killed; counted by the insert itself, so the limit holds under parallel creates.
    pub max_images: Option<i64>,
}

/// The ingest pipeline's result for an image that became `active`.
#[derive(Clone, Debug, Default)]
pub struct ActiveImage {
    /// The stored image's disk format; None keeps the declared one (a package kept whole: its
    /// disk format names the disk inside, as declared).
    pub disk_format: Option<DiskFormat>,
    /// The container format the stored image has when it differs from the declared one: an
    /// unpacked package's disk is `bare` (an UEC's machine image `ami`), as after Glance's OVF
    /// processing. None keeps the declared value.
    pub container_format: Option<ContainerFormat>,
    pub uploaded_format: String,
    pub uploaded_size: i64,
    pub size: i64,
    pub virtual_size: Option<i64>,
    /// SHA-256 of the bytes the user uploaded (what they can check against their file).
    pub sha256: String,
    /// MD5 and SHA-512 of the stored bytes (Glance's `checksum` and `os_hash_value`).
    pub md5: String,
    pub sha512: String,
    pub findings: String,
    pub location: String,
}

/// Extra columns the upload pipeline and the detail views read.
#[derive(Clone, Debug, Default, PartialEq, Eq, FromRow)]
pub struct ImageIngestRow {
    pub id: String,
    pub status: ImageStatus,
    pub status_reason: String,
    pub checksum: Option<String>,
    pub os_hash_value: Option<String>,
    pub uploaded_format: Option<String>,
    pub findings: String,
    pub location: Option<String>,
    pub created_by: Option<String>,
}

/// The most rows one list call returns, whatever the caller asks for: bounds memory and
/// response size (Glance's default `limit_param_default` is 25 and its maximum 1000).
pub const MAX_LIST_LIMIT: u32 = 1000;

const COLUMNS: &str = "id, name, status, disk_format, container_format, visibility, size, \
                       virtual_size, sha256, owner, protected, created_at, updated_at";

impl Db {
    /// Images the caller may list, newest first, at most `limit` (capped at [`MAX_LIST_LIMIT`]).
    pub async fn list_images(&self, visible: Visible<'_>, limit: u32) -> Result<Vec<ImageRow>, DbError> {
        let limit = i64::from(limit.min(MAX_LIST_LIMIT));
        let (clause, bind) = visible.clause();
        let sql = format!("SELECT {COLUMNS} FROM images WHERE {clause} ORDER BY created_at DESC, id LIMIT ?2");
        Ok(sqlx::query_as::<_, ImageRow>(&sql).bind(bind.unwrap_or("")).bind(limit).fetch_all(self.pool()).await?)
    }

    /// How many images the caller may list.
    pub async fn count_images(&self, visible: Visible<'_>) -> Result<u64, DbError> {
        let (clause, bind) = visible.clause();
        let sql = format!("SELECT COUNT(*) FROM images WHERE {clause}");
        let n: i64 = sqlx::query_scalar(&sql).bind(bind.unwrap_or("")).fetch_one(self.pool()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Moves an image to `to` if it is in one of `from` (Glance's legal transitions are decided
    /// by the caller). Returns false when the image was not in an allowed state.
    pub async fn transition_image(&self, id: &str, from: &[ImageStatus], to: ImageStatus, reason: &str) -> Result<bool, DbError> {
        // `from` is a short fixed list from our own code.
        let placeholders = vec!["?"; from.len().max(1)].join(", ");
        let sql = format!(
            "UPDATE images SET status = ?, status_reason = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') \
             WHERE id = ? AND status IN ({placeholders})"
        );
        let mut q = sqlx::query(&sql).bind(to).bind(reason).bind(id);
        for f in from {
            q = q.bind(f.as_str());
        }
        Ok(q.execute(self.pool()).await?.rows_affected() == 1)
    }

    /// Records a finished import and makes the image `active` (only from `importing`).
    pub async fn activate_image(&self, id: &str, a: &ActiveImage) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE images SET status = 'active', status_reason = '', disk_format = COALESCE(?, disk_format), \
             container_format = COALESCE(?, container_format), uploaded_format = ?, \
             uploaded_size = ?, size = ?, virtual_size = ?, sha256 = ?, checksum = ?, os_hash_algo = 'sha512', \
             os_hash_value = ?, findings = ?, location = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') \
             WHERE id = ? AND status = 'importing'",
        )
        .bind(a.disk_format)
        .bind(a.container_format)
        .bind(&a.uploaded_format)
        .bind(a.uploaded_size)
        .bind(a.size)
        .bind(a.virtual_size)
        .bind(&a.sha256)
        .bind(&a.md5)
        .bind(&a.sha512)
        .bind(&a.findings)
        .bind(&a.location)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            // The stored copy (its location row, written before) now counts for the quota: the
            // import's hold goes in the same transaction as the image becomes active.
            sqlx::query("DELETE FROM quota_holds WHERE image_id = ? AND purpose = 'import'").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks an image `killed` with the reason users see and the inspector's findings.
    /// Nothing of a killed image is on its way in any more: its quota holds go with it.
    pub async fn kill_image(&self, id: &str, reason: &str, findings: &str) -> Result<(), DbError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE images SET status = 'killed', status_reason = ?, findings = ?, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?",
        )
        .bind(reason)
        .bind(findings)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM quota_holds WHERE image_id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn image_ingest(&self, id: &str) -> Result<Option<ImageIngestRow>, DbError> {
        Ok(sqlx::query_as(
            "SELECT id, status, status_reason, checksum, os_hash_value, uploaded_format, findings, location, created_by \
             FROM images WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// One image by id.
    pub async fn image(&self, id: &str) -> Result<Option<ImageRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM images WHERE id = ?");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Creates an image record in status `queued` (Glance's state before any data arrives).
    pub async fn create_image(&self, new: &NewImage) -> Result<ImageRow, DbError> {
        let id = uuid::Uuid::new_v4().to_string();
        // A fresh v4 id cannot be taken; if it somehow were, say so rather than overwrite.
        if self.create_image_with_id(&id, new).await?.is_none() {
            return Err(DbError::Sqlx(sqlx::Error::Protocol(format!("image id {id} is taken"))));
        }
        self.image(&id).await?.ok_or(DbError::Sqlx(sqlx::Error::RowNotFound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::MemberStatus;

    use crate::test_db::temp_db;

    #[tokio::test]
    async fn a_new_database_has_no_images() {
        let (_dir, db) = temp_db().await;
        assert_eq!(db.list_images(Visible::All, 25).await.unwrap(), vec![]);
        assert_eq!(db.count_images(Visible::All).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn created_images_are_listed_queued_with_defaults() {
        let (_dir, db) = temp_db().await;
        let row = db
            .create_image(&NewImage { name: "debian-12".into(), disk_format: Some(DiskFormat::Qcow2), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(row.status, ImageStatus::Queued);
        assert_eq!(row.visibility, Visibility::Shared);
        assert_eq!(row.name, "debian-12");
        let listed = db.list_images(Visible::All, 25).await.unwrap();
        assert_eq!(listed, vec![row]);
        assert_eq!(db.count_images(Visible::All).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn visibility_outside_glance_names_is_refused_by_the_schema() {
        let (_dir, db) = temp_db().await;
        // The type cannot say it; the schema refuses it anyway.
        let err =
            sqlx::query("INSERT INTO images (id, name, visibility) VALUES ('x', 'x', 'everyone')").execute(db.pool()).await.unwrap_err();
        assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    }

    /// A stored status or visibility outside the domain's enums (written past the schema's
    /// checks) is an error when read, never quietly taken for another value.
    #[tokio::test]
    async fn a_bad_stored_value_is_an_error_not_a_default() {
        let (_dir, db) = temp_db().await;
        let ok = db.create_image(&NewImage { name: "ok".into(), ..Default::default() }).await.unwrap();
        let mut conn = db.pool().acquire().await.unwrap();
        sqlx::query("PRAGMA ignore_check_constraints = ON").execute(&mut *conn).await.unwrap();
        for (id, column, value) in [
            ("bad-status", "status", "bogus"),
            ("bad-visibility", "visibility", "everyone"),
            ("bad-disk", "disk_format", "ploop"),
            ("bad-container", "container_format", "docker"),
        ] {
            sqlx::query(&format!("INSERT INTO images (id, name, {column}) VALUES (?, ?, ?)"))
                .bind(id)
                .bind(id)
                .bind(value)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        sqlx::query("PRAGMA ignore_check_constraints = OFF").execute(&mut *conn).await.unwrap();
        drop(conn);
        for id in ["bad-status", "bad-visibility", "bad-disk", "bad-container"] {
            let err = db.image(id).await.unwrap_err();
            assert!(err.to_string().contains("mismatched types") || err.to_string().contains("decod"), "{id}: {err}");
            assert!(db.image_detail(id).await.is_err(), "{id}");
        }
        assert_eq!(db.image(&ok.id).await.unwrap().unwrap().status, ImageStatus::Queued, "good rows still read");
    }

    #[tokio::test]
    async fn packages_once_recorded_as_disk_formats_become_container_formats() {
        // A database as it was before 20261208000012: an OVA and a UEC image carrying the
        // package in disk_format (how Hangar recorded them before), and a disk image.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url).unwrap().create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let all = sqlx::migrate!("../../migrations/sqlite");
        let before: Vec<_> = all.migrations.iter().filter(|m| m.version < 20261208000012).cloned().collect();
        assert!(before.len() < all.migrations.len(), "the migration under test exists");
        let old = sqlx::migrate::Migrator { migrations: std::borrow::Cow::Owned(before), ..sqlx::migrate::Migrator::DEFAULT };
        old.run(&pool).await.unwrap();
        for (id, disk, container) in [("o", "ova", "bare"), ("u", "uec", "bare"), ("q", "qcow2", "bare")] {
            sqlx::query("INSERT INTO images (id, name, disk_format, container_format) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(id)
                .bind(disk)
                .bind(container)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let db = Db::open_url(&url).await.unwrap();
        let formats = |id: &'static str| {
            let db = db.clone();
            async move {
                let i = db.image(id).await.unwrap().unwrap();
                (i.disk_format, i.container_format)
            }
        };
        assert_eq!(formats("o").await, (None, Some(ContainerFormat::Ova)));
        assert_eq!(formats("u").await, (None, Some(ContainerFormat::Uec)));
        assert_eq!(formats("q").await, (Some(DiskFormat::Qcow2), Some(ContainerFormat::Bare)));
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangar.db");
        let db = Db::open_sqlite(&path).await.unwrap();
        db.create_image(&NewImage { name: "kept".into(), ..Default::default() }).await.unwrap();
        db.close().await;
        let db = Db::open_sqlite(&path).await.unwrap();
        assert_eq!(db.list_images(Visible::All, 25).await.unwrap()[0].name, "kept");
    }

    #[tokio::test]
    async fn listing_follows_glance_visibility() {
        let (_dir, db) = temp_db().await;
        let a = db.create_project("a", "").await.unwrap();
        let b = db.create_project("b", "").await.unwrap();
        let mk = |name: &str, vis: &str, owner: &str| NewImage {
            name: name.into(),
            visibility: Some(vis.parse().unwrap()),
            owner: Some(owner.into()),
            ..Default::default()
        };
        db.create_image(&mk("a-private", "private", &a.id)).await.unwrap();
        let shared = db.create_image(&mk("a-shared", "shared", &a.id)).await.unwrap();
        db.create_image(&mk("a-public", "public", &a.id)).await.unwrap();
        db.create_image(&mk("a-community", "community", &a.id)).await.unwrap();
        let names = |rows: Vec<ImageRow>| {
            let mut n: Vec<String> = rows.into_iter().map(|r| r.name).collect();
            n.sort();
            n
        };
        assert_eq!(names(db.list_images(Visible::Project(&a.id), 100).await.unwrap()).len(), 4);
        assert_eq!(names(db.list_images(Visible::Project(&b.id), 100).await.unwrap()), ["a-public"]);
        assert_eq!(db.count_images(Visible::PublicOnly).await.unwrap(), 1);

        assert!(db.add_image_member(&shared.id, &b.id).await.unwrap());
        assert!(!db.add_image_member(&shared.id, &b.id).await.unwrap(), "already a member");
        assert_eq!(db.pending_shares(&b.id).await.unwrap()[0].owner_name, "a");
        assert_eq!(db.count_images(Visible::Project(&b.id)).await.unwrap(), 1, "pending shares are not listed");
        assert!(db.set_image_member_status(&shared.id, &b.id, MemberStatus::Accepted).await.unwrap());
        assert_eq!(names(db.list_images(Visible::Project(&b.id), 100).await.unwrap()), ["a-public", "a-shared"]);
        assert!(db.pending_shares(&b.id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_limit_is_capped() {
        let (_dir, db) = temp_db().await;
        for i in 0..3 {
            db.create_image(&NewImage { name: format!("i{i}"), ..Default::default() }).await.unwrap();
        }
        assert_eq!(db.list_images(Visible::All, 2).await.unwrap().len(), 2);
        assert_eq!(db.list_images(Visible::All, u32::MAX).await.unwrap().len(), 3);
    }
}
