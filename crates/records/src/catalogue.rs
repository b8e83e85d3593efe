//! An image's detail row and its edits: metadata updates, tags, status transitions and
//! deletion. The listing query is `listing.rs`.

use std::collections::BTreeMap;

use domain::{ContainerFormat, DiskFormat, ImageStatus, Visibility};
use sqlx::types::Json;
use sqlx::FromRow;

use crate::{Db, DbError, NewImage};

pub use crate::images::MAX_LIST_LIMIT;

/// Longest image name, tag and property key (Glance's schema: `maxLength: 255`).
pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_TAG_CHARS: usize = 255;
pub use policy::metadata::{valid_property_key, MAX_PROPERTY_KEY_CHARS};

/// Tags and custom properties per image (Glance's `image_tag_quota` and `image_property_quota`;
/// Glance answers 413 above them).
pub const MAX_TAGS: usize = 128;
pub const MAX_PROPERTIES: usize = 128;

/// The format `created_at`/`updated_at` are stored in; it sorts lexically in time order.
const TIMESTAMP_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')";

/// Errors of the catalogue's queries. The API layer maps all but `Db` to 4xx answers.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The paging marker names no image the caller can see (Glance answers 400).
    #[error("the marker does not name an image you can see")]
    MarkerNotFound,
    /// A filter or sort value is malformed: a bad property key, date or operator (400).
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A value to store breaks Glance's rules: a tag or name too long, a bad visibility (400).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// More tags or properties than an image may have (Glance answers 413).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The change needs the image in another status than the one it has now (its disk or
    /// container format, once its data is arriving; Glance answers 403).
    #[error("Attribute {field} can be only replaced for a queued image (this one is {status}).")]
    WrongStatus { field: &'static str, status: ImageStatus },
    /// The database failed; logged in full, shown to users as an internal error.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for CatalogueError {
    fn from(e: sqlx::Error) -> Self {
        CatalogueError::Db(DbError::Sqlx(e))
    }
}

/// Everything the catalogue stores about one image, with its owner's project name.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct ImageDetail {
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub status_reason: String,
    pub disk_format: Option<DiskFormat>,
    pub container_format: Option<ContainerFormat>,
    pub visibility: Visibility,
    pub protected: bool,
    pub os_hidden: bool,
    pub min_disk: i64,
    pub min_ram: i64,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    /// MD5 of the stored bytes (Glance's legacy `checksum`).
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// SHA-256 of the bytes the user uploaded.
    pub sha256: Option<String>,
    pub uploaded_format: Option<String>,
    pub uploaded_size: Option<i64>,
    pub owner: Option<String>,
    pub owner_name: Option<String>,
    pub created_by: Option<String>,
    /// Glance's custom properties (string keys and values), stored as a JSON object.
    pub properties: Json<BTreeMap<String, String>>,
    /// The tags, in the order they were added, stored as a JSON array of strings.
    pub tags: Json<Vec<String>>,
    /// The inspector's report (JSON).
    pub findings: String,
    pub created_at: String,
    pub updated_at: String,
}

impl ImageDetail {
    /// The tags, in the order they were added.
    pub fn tag_list(&self) -> Vec<String> {
        self.tags.0.clone()
    }

    /// The custom properties, sorted by key.
    pub fn property_map(&self) -> BTreeMap<String, String> {
        self.properties.0.clone()
    }
}

/// Columns of [`ImageDetail`], over `images i LEFT JOIN projects p`.
pub(crate) const DETAIL_COLUMNS: &str = "i.id, i.name, i.status, i.status_reason, i.disk_format, i.container_format, \
     i.visibility, i.protected, i.os_hidden, i.min_disk, i.min_ram, i.size, i.virtual_size, i.checksum, \
     i.os_hash_algo, i.os_hash_value, i.sha256, i.uploaded_format, i.uploaded_size, i.owner, \
     p.name AS owner_name, i.created_by, i.properties, i.tags, i.findings, i.created_at, i.updated_at";
pub(crate) const DETAIL_FROM: &str = "images i LEFT JOIN projects p ON p.id = i.owner";

/// A metadata change; `None` leaves a field as it is. Tags and properties are replaced whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePatch {
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub protected: Option<bool>,
    pub os_hidden: Option<bool>,
    pub min_disk: Option<i64>,
    pub min_ram: Option<i64>,
    pub disk_format: Option<DiskFormat>,
    pub container_format: Option<ContainerFormat>,
    pub properties: Option<BTreeMap<String, String>>,
    pub tags: Option<Vec<String>>,
}

/// What a tag change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagChange {
    ImageNotFound,
    Changed,
    /// Adding a tag the image has, or removing one it does not have (Glance: 204 and 404).
    Unchanged,
    /// The image has [`MAX_TAGS`] tags already (Glance answers 413).
    LimitReached,
}

/// What a status action (deactivate, reactivate) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusChange {
    ImageNotFound,
    Changed,
    /// The image was in the target status already (Glance: a no-op, 204).
    Unchanged,
    /// The image's status does not allow the action (Glance refuses); carries that status.
    WrongStatus(ImageStatus),
}

/// What deleting an image did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    NotFound,
    /// Protected images cannot be deleted until unprotected (Glance answers 403).
    Protected,
    /// The row is gone; the caller deletes these `(backend, key)` copies' bytes.
    Deleted {
        locations: Vec<(String, String)>,
    },
}

fn check_tag(tag: &str) -> Result<(), CatalogueError> {
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS {
        return Err(CatalogueError::InvalidValue(format!("a tag has 1 to {MAX_TAG_CHARS} characters")));
    }
    Ok(())
}

impl ImagePatch {
    /// Checks Glance's rules and returns the JSON to store for properties and tags.
    fn validate(&self) -> Result<(Option<String>, Option<String>), CatalogueError> {
        if let Some(name) = &self.name {
            if name.chars().count() > MAX_NAME_CHARS {
                return Err(CatalogueError::InvalidValue(format!("an image name has at most {MAX_NAME_CHARS} characters")));
            }
        }
        if self.min_disk.is_some_and(|n| n < 0) || self.min_ram.is_some_and(|n| n < 0) {
            return Err(CatalogueError::InvalidValue("min_disk and min_ram cannot be negative".to_owned()));
        }
        let properties = match &self.properties {
            None => None,
            Some(map) => {
                if map.len() > MAX_PROPERTIES {
                    return Err(CatalogueError::LimitExceeded(format!("an image has at most {MAX_PROPERTIES} properties")));
                }
                if let Some(bad) = map.keys().find(|k| !valid_property_key(k)) {
                    return Err(CatalogueError::InvalidValue(format!(
                        "property names are 1 to 255 letters, digits and _ : . - ; {bad:?} is not one"
                    )));
                }
                Some(serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect()).to_string())
            }
        };
        let tags = match &self.tags {
            None => None,
            Some(list) => {
                // Glance keeps tags as a set; the first occurrence keeps its place.
                let mut unique: Vec<&str> = Vec::with_capacity(list.len());
                for t in list {
                    check_tag(t)?;
                    if !unique.contains(&t.as_str()) {
                        unique.push(t);
                    }
                }
                if unique.len() > MAX_TAGS {
                    return Err(CatalogueError::LimitExceeded(format!("an image has at most {MAX_TAGS} tags")));
                }
                Some(serde_json::Value::from(unique).to_string())
            }
        };
        Ok((properties, tags))
    }
}

impl Db {
    /// One image with every column and its owner's project name. Callers check who may see it.
    pub async fn image_detail(&self, id: &str) -> Result<Option<ImageDetail>, DbError> {
        let sql = format!("SELECT {DETAIL_COLUMNS} FROM {DETAIL_FROM} WHERE i.id = ?");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Applies `patch` and bumps `updated_at`; `None` when there is no such image. Rules that
    /// depend on who asks (owner changes) are the caller's; that formats change only while the
    /// image waits for its data (`queued`, or `importing` before its import job runs: the job
    /// reads them when it starts) is checked by the statement itself, so an import never runs
    /// with a format changed under it ([`CatalogueError::WrongStatus`]).
    pub async fn update_image(&self, id: &str, patch: &ImagePatch) -> Result<Option<ImageDetail>, CatalogueError> {
        let (properties, tags) = patch.validate()?;
        let sql = format!(
            "UPDATE images SET name = COALESCE(?, name), visibility = COALESCE(?, visibility), \
             protected = COALESCE(?, protected), os_hidden = COALESCE(?, os_hidden), \
             min_disk = COALESCE(?, min_disk), min_ram = COALESCE(?, min_ram), \
             disk_format = COALESCE(?, disk_format), container_format = COALESCE(?, container_format), \
             properties = COALESCE(?, properties), tags = COALESCE(?, tags), updated_at = {TIMESTAMP_NOW} \
             WHERE id = ? AND (? = 0 OR status = 'queued' OR (status = 'importing' AND NOT EXISTS \
             (SELECT 1 FROM jobs WHERE jobs.image_id = images.id AND jobs.kind = 'import' AND jobs.status = 'running')))"
        );
        let formats = patch.disk_format.is_some() || patch.container_format.is_some();
        let done = sqlx::query(&sql)
            .bind(&patch.name)
            .bind(patch.visibility)
            .bind(patch.protected)
            .bind(patch.os_hidden)
            .bind(patch.min_disk)
            .bind(patch.min_ram)
            .bind(patch.disk_format)
            .bind(patch.container_format)
            .bind(properties)
            .bind(tags)
            .bind(id)
            .bind(formats)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return match self.image(id).await? {
                Some(image) => {
                    let field = if patch.disk_format.is_some() { "disk_format" } else { "container_format" };
                    Err(CatalogueError::WrongStatus { field, status: image.status })
                }
                None => Ok(None),
            };
        }
        Ok(self.image_detail(id).await?)
    }

    /// Adds a tag (idempotent; Glance's `PUT /v2/images/{id}/tags/{tag}`).
    pub async fn add_tag(&self, id: &str, tag: &str) -> Result<TagChange, CatalogueError> {
        check_tag(tag)?;
        // One statement, so two concurrent adds cannot lose each other's tag.
        let sql = format!(
            "UPDATE images SET tags = json_insert(tags, '$[#]', ?), updated_at = {TIMESTAMP_NOW} \
             WHERE id = ? AND NOT EXISTS (SELECT 1 FROM json_each(images.tags) t WHERE t.value = ?) \
             AND json_array_length(tags) < ?"
        );
        let limit = i64::try_from(MAX_TAGS).unwrap_or(i64::MAX);
        let done = sqlx::query(&sql).bind(tag).bind(id).bind(tag).bind(limit).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(TagChange::Changed);
        }
        let state: Option<(bool, i64)> = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM json_each(images.tags) t WHERE t.value = ?), json_array_length(tags) \
             FROM images WHERE id = ?",
        )
        .bind(tag)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(match state {
            None => TagChange::ImageNotFound,
            Some((true, _)) => TagChange::Unchanged,
            Some((false, _)) => TagChange::LimitReached,
        })
    }

    /// Removes a tag; `Unchanged` when the image did not have it (Glance answers 404 then).
    pub async fn remove_tag(&self, id: &str, tag: &str) -> Result<TagChange, CatalogueError> {
        let sql = format!(
            "UPDATE images SET tags = (SELECT json_group_array(t.value) FROM json_each(images.tags) t WHERE t.value <> ?), \
             updated_at = {TIMESTAMP_NOW} \
             WHERE id = ? AND EXISTS (SELECT 1 FROM json_each(images.tags) t WHERE t.value = ?)"
        );
        let done = sqlx::query(&sql).bind(tag).bind(id).bind(tag).execute(self.pool()).await?;
        if done.rows_affected() == 1 {
            return Ok(TagChange::Changed);
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM images WHERE id = ?").bind(id).fetch_optional(self.pool()).await?;
        Ok(if exists.is_some() { TagChange::Unchanged } else { TagChange::ImageNotFound })
    }

    /// `active` → `deactivated` (Glance's `POST …/actions/deactivate`).
    pub async fn deactivate_image(&self, id: &str) -> Result<StatusChange, DbError> {
        self.status_action(id, ImageStatus::Active, ImageStatus::Deactivated).await
    }

    /// `deactivated` → `active` (Glance's `POST …/actions/reactivate`).
    pub async fn reactivate_image(&self, id: &str) -> Result<StatusChange, DbError> {
        self.status_action(id, ImageStatus::Deactivated, ImageStatus::Active).await
    }

    async fn status_action(&self, id: &str, from: ImageStatus, to: ImageStatus) -> Result<StatusChange, DbError> {
        if self.transition_image(id, &[from], to, "").await? {
            return Ok(StatusChange::Changed);
        }
        let status: Option<ImageStatus> =
            sqlx::query_scalar("SELECT status FROM images WHERE id = ?").bind(id).fetch_optional(self.pool()).await?;
        Ok(match status {
            None => StatusChange::ImageNotFound,
            Some(s) if s == to => StatusChange::Unchanged,
            Some(s) => StatusChange::WrongStatus(s),
        })
    }

    /// Creates a `queued` image with the caller's `id` (Glance's `POST /v2/images` with an `id`;
    /// the caller checks it is a UUID). `None` when an image has that id already, or had it and
    /// was deleted (Glance: 409); [`DbError::ImageQuota`] past `new.max_images`.
    pub async fn create_image_with_id(&self, id: &str, new: &NewImage) -> Result<Option<ImageDetail>, DbError> {
        // One statement: SQLite takes the write lock before it reads, so the tombstone check
        // and the image count see every create that committed before, and none can slip in
        // between (the security issue's parallel creates past `max_images`).
        let done = sqlx::query(
            "INSERT INTO images (id, name, disk_format, container_format, visibility, owner, protected, \
             min_disk, min_ram, properties, tags, created_by) \
             SELECT ?1, ?2, ?3, ?4, COALESCE(?5, 'shared'), ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
             WHERE NOT EXISTS (SELECT 1 FROM deleted_images WHERE id = ?1) \
               AND (?13 IS NULL OR (SELECT COUNT(*) FROM images WHERE owner IS ?6 AND status NOT IN ('deleted', 'killed')) < ?13) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&new.name)
        .bind(new.disk_format)
        .bind(new.container_format)
        .bind(new.visibility)
        .bind(&new.owner)
        .bind(new.protected)
        .bind(new.min_disk)
        .bind(new.min_ram)
        .bind(Json(&new.properties))
        .bind(Json(&new.tags))
        .bind(&new.created_by)
        .bind(new.max_images)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            if let Some(max) = new.max_images {
                let taken: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1) OR EXISTS (SELECT 1 FROM deleted_images WHERE id = ?1)",
                )
                .bind(id)
                .fetch_one(self.pool())
                .await?;
                if !taken {
                    return Err(DbError::ImageQuota { max });
                }
            }
            return Ok(None);
        }
        self.image_detail(id).await
    }

    /// Whether `id` belonged to an image that was deleted (its tombstone).
    pub async fn image_id_deleted(&self, id: &str) -> Result<bool, DbError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM deleted_images WHERE id = ?)").bind(id).fetch_one(self.pool()).await?)
    }

    /// Deletes an image's row (its locations, members and jobs go with it) unless it is
    /// protected, and returns where its bytes were, so the caller deletes them after the row is
    /// gone: a crash in between leaves orphan bytes, never a row pointing at missing bytes.
    pub async fn delete_image(&self, id: &str) -> Result<DeleteOutcome, DbError> {
        let mut tx = self.pool().begin().await?;
        // The first statement writes, so the transaction holds the write lock from the start and
        // cannot fail to upgrade a read lock later.
        let mut locations: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM image_locations WHERE image_id = ? \
             AND EXISTS (SELECT 1 FROM images WHERE id = ? AND protected = 0) RETURNING backend, key",
        )
        .bind(id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let gone: Option<(Option<String>,)> =
            sqlx::query_as("DELETE FROM images WHERE id = ? AND protected = 0 RETURNING owner").bind(id).fetch_optional(&mut *tx).await?;
        if let Some((owner,)) = gone {
            // The tombstone: this id is never taken again (see migration 7).
            sqlx::query("INSERT OR IGNORE INTO deleted_images (id, owner) VALUES (?, ?)").bind(id).bind(&owner).execute(&mut *tx).await?;
            tx.commit().await?;
            locations.sort();
            return Ok(DeleteOutcome::Deleted { locations });
        }
        let protected: Option<bool> =
            sqlx::query_scalar("SELECT protected FROM images WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?;
        tx.rollback().await?;
        Ok(if protected.is_some() { DeleteOutcome::Protected } else { DeleteOutcome::NotFound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::ImageQuery;
    use crate::Visible;
    use crate::{NewImage, NewJob};

    use crate::test_db::{image, list, q, set, temp_db};

    #[tokio::test]
    async fn deleted_ids_are_never_taken_again() {
        let (_d, db) = temp_db().await;
        let a = db.create_project("alpha", "").await.unwrap().id;
        let b = db.create_project("beta", "").await.unwrap().id;
        let id = "6a1e4c4e-64b6-4c5b-9d0b-8f0b0f4a7e11";
        let new = |owner: &str| NewImage { name: "x".into(), owner: Some(owner.into()), ..Default::default() };
        assert!(db.create_image_with_id(id, &new(&a)).await.unwrap().is_some());
        assert!(matches!(db.delete_image(id).await.unwrap(), DeleteOutcome::Deleted { .. }));
        assert!(db.image_id_deleted(id).await.unwrap());
        assert!(db.create_image_with_id(id, &new(&b)).await.unwrap().is_none(), "another project cannot take the id");
        assert!(db.create_image_with_id(id, &new(&a)).await.unwrap().is_none(), "nor the same one");
        assert!(db.image_detail(id).await.unwrap().is_none());
        assert!(list(&db, &q(), Visible::All).await.is_empty(), "tombstones are not listed");
        assert_eq!(db.project_usage(&a).await.unwrap(), (0, 0), "nor counted");
    }

    #[tokio::test]
    async fn parallel_creates_cannot_pass_the_image_quota() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("alpha", "").await.unwrap().id;
        let new = NewImage { name: "x".into(), owner: Some(p.clone()), max_images: Some(3), ..Default::default() };
        let results = futures::future::join_all((0..12).map(|_| db.create_image(&new))).await;
        let created = results.iter().filter(|r| r.is_ok()).count();
        let refused = results.iter().filter(|r| matches!(r, Err(DbError::ImageQuota { max: 3 }))).count();
        assert_eq!((created, refused), (3, 9));
        assert_eq!(db.project_usage(&p).await.unwrap().0, 3);
    }

    #[tokio::test]
    async fn detail_has_every_column_tags_properties_and_the_owner_name() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("alpha", "").await.unwrap();
        let new = NewImage {
            name: "debian".into(),
            owner: Some(p.id.clone()),
            properties: [("os_distro", "debian"), ("hw_disk_bus", "virtio"), ("n", "5")].map(|(k, v)| (k.to_owned(), v.to_owned())).into(),
            tags: vec!["b".into(), "a".into()],
            min_disk: 2,
            ..Default::default()
        };
        let id = db.create_image(&new).await.unwrap().id;
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert_eq!(d.owner_name.as_deref(), Some("alpha"));
        assert_eq!((d.status.as_str(), d.visibility.as_str(), d.min_disk, d.protected, d.os_hidden), ("queued", "shared", 2, false, false));
        assert_eq!(d.tag_list(), ["b", "a"]);
        let props = d.property_map();
        assert_eq!(props.get("os_distro").map(String::as_str), Some("debian"));
        assert_eq!(props.get("n").map(String::as_str), Some("5"));
        assert_eq!(props.len(), 3);
        assert_eq!(db.image_detail("nope").await.unwrap(), None);

        // A stored value that is not what Hangar writes is an error, not an empty list.
        for bad in ["tags = 'not json'", "tags = '[1]'", "properties = '[]'", "properties = '{\"n\":5}'"] {
            set(&db, &id, bad).await;
            assert!(db.image_detail(&id).await.is_err(), "{bad} read as a value");
            set(&db, &id, "tags = '[]', properties = '{}'").await;
        }
        assert!(db.image_detail(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn patches_replace_fields_tags_and_properties_and_bump_updated_at() {
        let (_d, db) = temp_db().await;
        let id = image(&db, "before", None, "private").await;
        set(&db, &id, "updated_at = '2000-01-01T00:00:00Z', tags = '[\"old\"]', properties = '{\"k\":\"v\"}'").await;
        let patch = ImagePatch {
            name: Some("after".into()),
            visibility: Some(Visibility::Community),
            protected: Some(true),
            os_hidden: Some(true),
            min_disk: Some(10),
            min_ram: Some(512),
            disk_format: Some(DiskFormat::Qcow2),
            container_format: Some(ContainerFormat::Bare),
            properties: Some(BTreeMap::from([("os_distro".into(), "debian".into()), ("x.y".into(), "\"quoted\"".into())])),
            tags: Some(vec!["t1".into(), "t2".into(), "t1".into()]),
        };
        let d = db.update_image(&id, &patch).await.unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.visibility.as_str(), d.protected, d.os_hidden), ("after", "community", true, true));
        assert_eq!(
            (d.min_disk, d.min_ram, d.disk_format.map(DiskFormat::as_str), d.container_format.map(ContainerFormat::as_str)),
            (10, 512, Some("qcow2"), Some("bare"))
        );
        assert_eq!(d.tag_list(), ["t1", "t2"], "tags are a set");
        assert_eq!(d.property_map(), patch.properties.clone().unwrap());
        assert!(d.updated_at.as_str() > "2000-01-01T00:00:00Z");

        let d = db.update_image(&id, &ImagePatch { min_ram: Some(0), ..Default::default() }).await.unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.min_ram, d.tag_list().len()), ("after", 0, 2), "None leaves a field alone");
        assert_eq!(db.update_image("nope", &ImagePatch::default()).await.unwrap(), None);

        for bad in [
            ImagePatch { name: Some("n".repeat(256)), ..Default::default() },
            ImagePatch { min_disk: Some(-1), ..Default::default() },
            ImagePatch { tags: Some(vec!["t".repeat(256)]), ..Default::default() },
            ImagePatch { tags: Some(vec![String::new()]), ..Default::default() },
            ImagePatch { properties: Some(BTreeMap::from([("bad key".into(), "v".into())])), ..Default::default() },
        ] {
            assert!(matches!(db.update_image(&id, &bad).await, Err(CatalogueError::InvalidValue(_))), "{bad:?}");
        }
        let many_tags = ImagePatch { tags: Some((0..=MAX_TAGS).map(|i| format!("t{i}")).collect()), ..Default::default() };
        assert!(matches!(db.update_image(&id, &many_tags).await, Err(CatalogueError::LimitExceeded(_))));
        let many_props =
            ImagePatch { properties: Some((0..=MAX_PROPERTIES).map(|i| (format!("k{i}"), String::new())).collect()), ..Default::default() };
        assert!(matches!(db.update_image(&id, &many_props).await, Err(CatalogueError::LimitExceeded(_))));
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().tag_list(), ["t1", "t2"], "refused patches change nothing");

        // Once the image's data has arrived, the statement itself refuses a format change (an
        // import that started after the caller read `queued` is not changed under it), and
        // leaves the rest of the patch unapplied too; other fields still change.
        set(&db, &id, "status = 'active'").await;
        let late = ImagePatch { name: Some("late".into()), disk_format: Some(DiskFormat::Raw), ..Default::default() };
        match db.update_image(&id, &late).await {
            Err(CatalogueError::WrongStatus { field: "disk_format", status }) => assert_eq!(status, ImageStatus::Active),
            other => panic!("{other:?}"),
        }
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert_eq!((d.name.as_str(), d.disk_format.map(DiskFormat::as_str)), ("after", Some("qcow2")));
        let d = db.update_image(&id, &ImagePatch { name: Some("renamed".into()), ..Default::default() }).await.unwrap().unwrap();
        assert_eq!(d.name, "renamed");
        // `importing` before the import job runs (a web-download still arriving): formats may
        // change; once the job runs (it read them at its start), they may not.
        set(&db, &id, "status = 'importing'").await;
        let raw = ImagePatch { disk_format: Some(DiskFormat::Raw), ..Default::default() };
        assert_eq!(db.update_image(&id, &raw).await.unwrap().unwrap().disk_format.map(DiskFormat::as_str), Some("raw"));
        let job = NewJob::import(id.clone(), "local");
        let job = db.create_job(&job).await.unwrap();
        assert_eq!(db.claim_job().await.unwrap().map(|j| j.id), Some(job.id), "the job runs");
        let qcow2 = ImagePatch { disk_format: Some(DiskFormat::Qcow2), ..Default::default() };
        assert!(matches!(db.update_image(&id, &qcow2).await, Err(CatalogueError::WrongStatus { .. })));
    }

    #[tokio::test]
    async fn tags_are_added_and_removed_idempotently() {
        let (_d, db) = temp_db().await;
        let id = image(&db, "x", None, "private").await;
        set(&db, &id, "updated_at = '2000-01-01T00:00:00Z'").await;
        assert_eq!(db.add_tag(&id, "blue").await.unwrap(), TagChange::Changed);
        assert_eq!(db.add_tag(&id, "blue").await.unwrap(), TagChange::Unchanged);
        assert_eq!(db.add_tag(&id, "ünïcode, with \"quotes\"").await.unwrap(), TagChange::Changed);
        let d = db.image_detail(&id).await.unwrap().unwrap();
        assert_eq!(d.tag_list(), ["blue", "ünïcode, with \"quotes\""]);
        assert!(d.updated_at.as_str() > "2000-01-01T00:00:00Z");
        assert_eq!(list(&db, &ImageQuery { tags: vec!["ünïcode, with \"quotes\"".into()], ..q() }, Visible::All).await, ["x"]);
        assert_eq!(db.remove_tag(&id, "blue").await.unwrap(), TagChange::Changed);
        assert_eq!(db.remove_tag(&id, "blue").await.unwrap(), TagChange::Unchanged);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().tag_list(), ["ünïcode, with \"quotes\""]);
        assert_eq!(db.remove_tag(&id, "ünïcode, with \"quotes\"").await.unwrap(), TagChange::Changed);
        assert!(db.image_detail(&id).await.unwrap().unwrap().tag_list().is_empty());
        assert_eq!(db.add_tag("nope", "blue").await.unwrap(), TagChange::ImageNotFound);
        assert_eq!(db.remove_tag("nope", "blue").await.unwrap(), TagChange::ImageNotFound);
        assert!(matches!(db.add_tag(&id, &"é".repeat(256)).await, Err(CatalogueError::InvalidValue(_))));
        assert_eq!(db.add_tag(&id, &"é".repeat(255)).await.unwrap(), TagChange::Changed, "the limit counts characters");

        let full = ImagePatch { tags: Some((0..MAX_TAGS).map(|i| format!("t{i}")).collect()), ..Default::default() };
        db.update_image(&id, &full).await.unwrap();
        assert_eq!(db.add_tag(&id, "one-more").await.unwrap(), TagChange::LimitReached);
        assert_eq!(db.add_tag(&id, "t5").await.unwrap(), TagChange::Unchanged, "an existing tag is fine at the limit");
    }

    #[tokio::test]
    async fn deactivate_and_reactivate_move_only_between_active_and_deactivated() {
        let (_d, db) = temp_db().await;
        let id = image(&db, "x", None, "private").await;
        assert_eq!(db.deactivate_image(&id).await.unwrap(), StatusChange::WrongStatus(ImageStatus::Queued));
        assert_eq!(db.reactivate_image(&id).await.unwrap(), StatusChange::WrongStatus(ImageStatus::Queued));
        set(&db, &id, "status = 'active'").await;
        assert_eq!(db.reactivate_image(&id).await.unwrap(), StatusChange::Unchanged);
        assert_eq!(db.deactivate_image(&id).await.unwrap(), StatusChange::Changed);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().status, ImageStatus::Deactivated);
        assert_eq!(db.deactivate_image(&id).await.unwrap(), StatusChange::Unchanged);
        assert_eq!(db.reactivate_image(&id).await.unwrap(), StatusChange::Changed);
        assert_eq!(db.image_detail(&id).await.unwrap().unwrap().status, ImageStatus::Active);
        assert_eq!(db.deactivate_image("nope").await.unwrap(), StatusChange::ImageNotFound);
        assert_eq!(db.reactivate_image("nope").await.unwrap(), StatusChange::ImageNotFound);
    }

    #[tokio::test]
    async fn delete_refuses_protected_images_and_returns_the_locations() {
        let (_d, db) = temp_db().await;
        let p = db.create_project("p", "").await.unwrap().id;
        let id = image(&db, "x", Some(&p), "shared").await;
        let other = image(&db, "y", Some(&p), "shared").await;
        db.add_image_member(&id, &p).await.unwrap();
        for (img, backend, key) in [(&id, "local", "images/x"), (&id, "ceph", "rbd/x"), (&other, "local", "images/y")] {
            sqlx::query("INSERT INTO image_locations (image_id, backend, key, disk_format, size) VALUES (?, ?, ?, 'raw', 1)")
                .bind(img)
                .bind(backend)
                .bind(key)
                .execute(db.pool())
                .await
                .unwrap();
        }
        db.update_image(&id, &ImagePatch { protected: Some(true), ..Default::default() }).await.unwrap();
        assert_eq!(db.delete_image(&id).await.unwrap(), DeleteOutcome::Protected);
        let kept: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM image_locations WHERE image_id = ?").bind(&id).fetch_one(db.pool()).await.unwrap();
        assert_eq!(kept, 2, "a refused delete keeps the locations");

        db.update_image(&id, &ImagePatch { protected: Some(false), ..Default::default() }).await.unwrap();
        let locations = vec![("ceph".to_owned(), "rbd/x".to_owned()), ("local".to_owned(), "images/x".to_owned())];
        assert_eq!(db.delete_image(&id).await.unwrap(), DeleteOutcome::Deleted { locations });
        assert_eq!(db.image_detail(&id).await.unwrap(), None);
        assert!(db.image_members(&id).await.unwrap().is_empty());
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM image_locations").fetch_one(db.pool()).await.unwrap();
        assert_eq!(left, 1, "other images' locations stay");
        assert_eq!(db.delete_image(&id).await.unwrap(), DeleteOutcome::NotFound);
        assert_eq!(db.delete_image(&other).await.unwrap(), DeleteOutcome::Deleted { locations: vec![("local".into(), "images/y".into())] });
    }
}
