//! Image catalogue server functions: the filtered, sorted, paged list; the detail view; metadata
//! edits, deactivate/reactivate, delete; and the background jobs behind imports and copies.
// The list's filters and the edit form's fields are server function arguments, one per field,
// so plain GET/POST forms map onto them; the generated client functions take them all.
#![allow(clippy::too_many_arguments)]

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;
use domain::{ContainerFormat, DiskFormat, ImageStatus, JobKind, JobStatus, LocationStatus, Visibility};

/// One row of the Images page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub disk_format: Option<DiskFormat>,
    pub container_format: Option<ContainerFormat>,
    pub visibility: Visibility,
    pub protected: bool,
    pub size: Option<u64>,
    pub owner_name: String,
    pub tags: Vec<String>,
    pub created_at: String,
}

/// The Images page's data: one page of images, how many match, and where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageSummary>,
    pub total: u64,
    pub next_marker: Option<String>,
    /// Projects the owner filter offers: (id, name).
    pub owners: Vec<(String, String)>,
}

/// Rows per page unless the caller asks for another number (Glance's default).
pub const PAGE_SIZE: u32 = 25;

/// The sort keys the Images page offers, with their labels.
pub const SORT_KEYS: [(&str, &str); 7] = [
    ("created_at", "Created"),
    ("updated_at", "Updated"),
    ("name", "Name"),
    ("size", "Size"),
    ("status", "Status"),
    ("disk_format", "Format"),
    ("visibility", "Visibility"),
];

/// Glance's image statuses, for the status filter.
pub const STATUSES: [ImageStatus; 7] = [
    ImageStatus::Queued,
    ImageStatus::Uploading,
    ImageStatus::Importing,
    ImageStatus::Active,
    ImageStatus::Deactivated,
    ImageStatus::Killed,
    ImageStatus::PendingDelete,
];

#[cfg(feature = "ssr")]
pub(crate) mod imp {
    pub use crate::api::context::server_context;
    pub use crate::api::shares::imp::image_facts;
    pub use crate::auth::{answer, audit, require};
    use crate::AppError;

    /// The listing scope of a principal.
    pub fn visible(me: &policy::Principal) -> records::Visible<'_> {
        match (&me.is_admin, &me.scope) {
            (true, _) => records::Visible::All,
            (false, Some(scope)) => records::Visible::Project(&scope.project_id),
            (false, None) => records::Visible::PublicOnly,
        }
    }

    pub fn catalogue_error(e: records::CatalogueError) -> AppError {
        use records::CatalogueError as E;
        match e {
            E::MarkerNotFound => AppError::BadRequest {
                message: "This page link no longer matches the list (the image it started after is gone). Start from the first page."
                    .into(),
            },
            E::InvalidFilter(m) | E::InvalidValue(m) => AppError::BadRequest { message: capitalise(&m) },
            E::LimitExceeded(m) => AppError::QuotaExceeded { message: capitalise(&m) },
            e @ E::WrongStatus { .. } => AppError::Forbidden { message: e.to_string() },
            E::Db(e) => AppError::internal("catalogue", &e),
        }
    }

    fn capitalise(m: &str) -> String {
        let mut c = m.chars();
        match c.next() {
            Some(f) => format!("{}{}.", f.to_uppercase(), c.as_str().trim_end_matches('.')),
            None => String::new(),
        }
    }

    /// Loads an image the caller may see, or answers 404 (an image one may not see does not
    /// exist, as far as the caller can tell).
    pub async fn visible_image(
        db: &records::Db,
        me: &policy::Principal,
        image_id: &str,
    ) -> Result<(records::ImageRow, policy::ImageFacts), AppError> {
        let scope = me.scope.as_ref().map(|s| s.project_id.clone());
        let (row, facts) = image_facts(db, image_id, scope.as_deref()).await?;
        if policy::authorize(Some(me), &policy::Action::ViewImage(&facts)).is_err() {
            return Err(AppError::NotFound { message: "No such image.".into() });
        }
        Ok((row, facts))
    }

    pub fn to_u64(v: Option<i64>) -> Option<u64> {
        v.and_then(|s| u64::try_from(s).ok())
    }
}

#[cfg(feature = "ssr")]
fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Lists the images the caller may see (Glance's default listing for their project), filtered,
/// sorted and paged. Every argument is optional, so the page's GET form maps onto it directly.
#[server(prefix = "/api", endpoint = "list_images")]
pub async fn list_images(
    q: Option<String>,
    status: Option<String>,
    disk_format: Option<String>,
    visibility: Option<String>,
    owner: Option<String>,
    tag: Option<String>,
    size_min: Option<String>,
    size_max: Option<String>,
    protected: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    marker: Option<String>,
    limit: Option<u32>,
) -> Result<ImageList, AppError> {
    use imp::*;
    answer(async move {
        let (_, me) = require(&policy::Action::ListImages)?;
        let ctx = server_context()?;
        let bad = |m: String| AppError::BadRequest { message: m };
        let size = |label: &str, v: Option<String>| -> Result<Option<i64>, AppError> {
            match non_empty(v) {
                None => Ok(None),
                Some(s) => crate::components::size::parse_bytes(&s)
                    .and_then(|n| i64::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| bad(format!("{label} must be a size such as 500 MiB or 2 GiB, not '{s}'."))),
            }
        };
        let mut query = records::ImageQuery {
            name_contains: non_empty(q),
            size_min: size("The smallest size", size_min)?,
            size_max: size("The largest size", size_max)?,
            marker: non_empty(marker),
            limit: Some(limit.unwrap_or(PAGE_SIZE).clamp(1, 200)),
            ..Default::default()
        };
        if let Some(s) = non_empty(status) {
            let status = ImageStatus::parse(&s).ok_or_else(|| AppError::bad_request(format!("Unknown status '{s}'.")))?;
            query.statuses = Some(vec![status]);
        }
        if let Some(f) = non_empty(disk_format) {
            query.disk_formats = vec![f];
        }
        if let Some(v) = non_empty(visibility) {
            query.visibility = Some(records::VisibilityFilter::parse(&v).map_err(catalogue_error)?);
        }
        if let Some(o) = non_empty(owner) {
            query.owners = vec![o];
        }
        if let Some(t) = non_empty(tag) {
            query.tags = vec![t];
        }
        query.protected = match non_empty(protected).as_deref() {
            None | Some("any") => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(other) => return Err(bad(format!("Protected must be yes, no or any, not '{other}'."))),
        };
        if let Some(key) = non_empty(sort) {
            let key = records::SortKey::parse(&key).map_err(catalogue_error)?;
            let dir = match non_empty(dir) {
                Some(d) => records::SortDir::parse(&d).map_err(catalogue_error)?,
                None if key == records::SortKey::Name => records::SortDir::Asc,
                None => records::SortDir::Desc,
            };
            query.sort = vec![(key, dir)];
        }
        let page = ctx.db.query_images(&query, visible(&me)).await.map_err(catalogue_error)?;
        let owners = if me.is_admin {
            ctx.db.list_projects().await.map_err(|e| AppError::internal("list projects", &e))?.into_iter().map(|p| (p.id, p.name)).collect()
        } else {
            me.scope.iter().map(|s| (s.project_id.clone(), s.project_name.clone())).collect()
        };
        let images = page
            .images
            .into_iter()
            .map(|r| ImageSummary {
                tags: r.tag_list(),
                id: r.id,
                name: r.name,
                status: r.status,
                disk_format: r.disk_format,
                container_format: r.container_format,
                visibility: r.visibility,
                protected: r.protected,
                size: to_u64(r.size),
                owner_name: r.owner_name.unwrap_or_default(),
                created_at: r.created_at,
            })
            .collect();
        Ok(ImageList { images, total: page.total, next_marker: page.next_marker, owners })
    })
    .await
}

/// One copy of an image on a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationView {
    pub backend: String,
    pub kind: String,
    pub disk_format: String,
    pub size: u64,
    pub status: LocationStatus,
    pub checksum: Option<String>,
}

/// How the image is (or would be) stored on one configured backend, per the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub backend: String,
    pub kind: String,
    /// `stored`, `native`, `convert`, `extract` or `refuse`.
    pub state: String,
    pub text: String,
    pub reason: String,
}

/// One background job, as the image page and the jobs view show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub kind: JobKind,
    pub image_id: String,
    pub image_name: String,
    pub backend: String,
    pub status: JobStatus,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub attempts: u64,
    /// What a running job is doing (`converting`, `hashing`, …; see
    /// [`crate::api::upload::stage_name`]).
    pub stage: String,
    pub error: String,
    pub summary: String,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl JobView {
    /// Whole percent done, for progress bars.
    pub fn percent(&self) -> u64 {
        if self.status == JobStatus::Succeeded {
            100
        } else {
            self.bytes_done.saturating_mul(100).checked_div(self.bytes_total).unwrap_or(0).min(100)
        }
    }
}

/// One finding of the inspector, as stored with the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingView {
    pub severity: String,
    pub message: String,
}

/// Another image of the package an image came from (an OVA's disks, a UEC's kernel and
/// ramdisk), linked from the image page and the upload card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedImage {
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub disk_format: Option<DiskFormat>,
    /// `first disk`, `disk <id>`, `machine image`, `kernel` or `ramdisk`.
    pub role: String,
    /// The image being shown.
    pub is_self: bool,
}

#[cfg(feature = "ssr")]
impl From<imageops::Related> for RelatedImage {
    fn from(r: imageops::Related) -> Self {
        RelatedImage { id: r.id, name: r.name, status: r.status, disk_format: r.disk_format, role: r.role, is_self: r.is_self }
    }
}

/// Everything the detail page shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageView {
    pub id: String,
    pub name: String,
    pub status: ImageStatus,
    pub status_reason: String,
    pub disk_format: Option<DiskFormat>,
    pub container_format: Option<ContainerFormat>,
    pub visibility: Visibility,
    pub protected: bool,
    pub os_hidden: bool,
    pub min_disk: u64,
    pub min_ram: u64,
    pub size: Option<u64>,
    pub virtual_size: Option<u64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub sha256: Option<String>,
    pub uploaded_format: Option<String>,
    pub uploaded_size: Option<u64>,
    pub owner_name: String,
    pub created_at: String,
    pub updated_at: String,
    pub tags: Vec<String>,
    pub properties: Vec<(String, String)>,
    pub findings: Vec<FindingView>,
    pub locations: Vec<LocationView>,
    pub placements: Vec<Placement>,
    pub jobs: Vec<JobView>,
    pub can_modify: bool,
    /// May delete it (after turning protection off, when it is protected).
    pub can_delete: bool,
    /// Where to download the data from, when there is data to download.
    pub download_url: Option<String>,
    /// The images of the package this one came from, itself included; empty otherwise.
    pub package: Vec<RelatedImage>,
}

#[cfg(feature = "ssr")]
fn job_view(j: records::JobRow) -> JobView {
    JobView {
        id: j.id,
        kind: j.kind,
        image_id: j.image_id,
        image_name: j.image_name,
        backend: j.backend,
        status: j.status,
        bytes_done: u64::try_from(j.bytes_done).unwrap_or(0),
        bytes_total: u64::try_from(j.bytes_total).unwrap_or(0),
        attempts: u64::try_from(j.attempts).unwrap_or(0),
        stage: j.stage,
        error: j.error,
        summary: j.summary,
        created_at: j.created_at,
        finished_at: j.finished_at,
    }
}

#[cfg(feature = "ssr")]
fn findings_of(json: &str) -> Vec<FindingView> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(json) else { return Vec::new() };
    items
        .iter()
        .filter_map(|f| {
            let message = f.get("message")?.as_str()?.to_owned();
            let severity = f.get("severity").and_then(|s| s.as_str()).unwrap_or("info").to_lowercase();
            Some(FindingView { severity, message })
        })
        .collect()
}

/// One image with its checksums, locations, storage placements and jobs.
#[server(prefix = "/api", endpoint = "image_detail")]
pub async fn image_detail(image_id: String) -> Result<ImageView, AppError> {
    use imp::*;
    answer(async move {
        let (authn, me) = require(&policy::Action::ListImages)?;
        let ctx = server_context()?;
        let scope = me.scope.as_ref().map(|s| s.project_id.clone());
        let (_, facts) = image_facts(&ctx.db, &image_id, scope.as_deref()).await?;
        if policy::authorize(Some(&me), &policy::Action::ViewImage(&facts)).is_err() {
            return Err(AppError::NotFound { message: "No such image.".into() });
        }
        let d = ctx
            .db
            .image_detail(&image_id)
            .await
            .map_err(|e| AppError::internal("load image", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such image.".into() })?;
        let locs = ctx.db.image_locations(&image_id).await.map_err(|e| AppError::internal("load locations", &e))?;
        let jobs = ctx.db.jobs_for_image(&image_id).await.map_err(|e| AppError::internal("load jobs", &e))?;
        let matrix = ctx.db.storage_policy().await.map_err(|e| AppError::internal("load matrix", &e))?;
        let kind_of =
            |backend: &str| ctx.backends.iter().find(|b| b.name == backend).map_or_else(|| "local".to_owned(), |b| b.kind.clone());
        let locations: Vec<LocationView> = locs
            .iter()
            .map(|l| LocationView {
                backend: l.backend.clone(),
                kind: kind_of(&l.backend),
                disk_format: l.disk_format.as_str().to_owned(),
                size: u64::try_from(l.size).unwrap_or(0),
                status: l.status,
                checksum: l.checksum.clone(),
            })
            .collect();
        // The matrix row: a copy is made from the first stored copy, so its format decides; with
        // no copy yet, what was uploaded (AMI/AKI/ARI keep their own rows).
        let package = d.container_format.and_then(ContainerFormat::package);
        let row = match (locs.iter().find(|l| l.status == LocationStatus::Active), d.disk_format, d.uploaded_format.as_deref()) {
            (Some(l), _, _) => Some(l.disk_format.as_str().to_owned()),
            (None, Some(f @ (DiskFormat::Ami | DiskFormat::Aki | DiskFormat::Ari)), _) => Some(f.as_str().to_owned()),
            (None, _, Some(u)) => Some(u.to_owned()),
            (None, _, None) if package.is_some() => package.map(|p| p.as_str().to_owned()),
            (None, f, None) => f.map(|f| f.as_str().to_owned()),
        };
        let placements = ctx
            .backends
            .iter()
            .map(|b| {
                if let Some(l) = locations.iter().find(|l| l.backend == b.name) {
                    return Placement {
                        backend: b.name.clone(),
                        kind: b.kind.clone(),
                        state: "stored".into(),
                        text: format!("Stored here as {} ({})", l.disk_format, crate::components::size::human_bytes(l.size)),
                        reason: String::new(),
                    };
                }
                let cell = row.as_deref().and_then(|f| matrix.iter().find(|c| c.backend_kind.as_str() == b.kind && c.format.as_str() == f));
                match (cell, row.as_deref()) {
                    (Some(c), Some(f)) => Placement {
                        backend: b.name.clone(),
                        kind: b.kind.clone(),
                        state: c.action.as_str().to_owned(),
                        text: match (c.action, c.target_format) {
                            (domain::MatrixAction::Convert, Some(t)) => {
                                format!("Not stored here; a copy would be converted from {f} to {t}")
                            }
                            (domain::MatrixAction::Refuse, _) => format!("Not stored here; this backend refuses {f} images"),
                            _ => format!("Not stored here; a copy would be kept as {f}"),
                        },
                        reason: c.reason.clone(),
                    },
                    _ => Placement {
                        backend: b.name.clone(),
                        kind: b.kind.clone(),
                        state: "none".into(),
                        text: "Not stored here".into(),
                        reason: String::new(),
                    },
                }
            })
            .collect();
        let can_modify = policy::authorize(Some(&me), &policy::Action::ModifyImage(&facts)).is_ok();
        // Whether the caller may delete it once it is unprotected: the delete form is shown (a
        // protected image's deletion is then refused with the reason).
        let unprotected = policy::ImageFacts { protected: false, ..facts.clone() };
        let can_delete = policy::authorize(Some(&me), &policy::Action::DeleteImage(&unprotected)).is_ok();
        let download_url = (d.status == ImageStatus::Active && locations.iter().any(|l| l.status == LocationStatus::Active))
            .then(|| format!("/images/{}/file", d.id));
        let package = ctx.images.package_family(&authn, &image_id).await?.into_iter().map(RelatedImage::from).collect();
        Ok(ImageView {
            package,
            tags: d.tag_list(),
            properties: d.property_map().into_iter().collect(),
            findings: findings_of(&d.findings),
            id: d.id,
            name: d.name,
            status: d.status,
            status_reason: d.status_reason,
            disk_format: d.disk_format,
            container_format: d.container_format,
            visibility: d.visibility,
            protected: d.protected,
            os_hidden: d.os_hidden,
            min_disk: u64::try_from(d.min_disk).unwrap_or(0),
            min_ram: u64::try_from(d.min_ram).unwrap_or(0),
            size: to_u64(d.size),
            virtual_size: to_u64(d.virtual_size),
            checksum: d.checksum,
            os_hash_algo: d.os_hash_algo,
            os_hash_value: d.os_hash_value,
            sha256: d.sha256,
            uploaded_format: d.uploaded_format,
            uploaded_size: to_u64(d.uploaded_size),
            owner_name: d.owner_name.unwrap_or_default(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            locations,
            placements,
            jobs: jobs.into_iter().map(job_view).collect(),
            can_modify,
            can_delete,
            download_url,
        })
    })
    .await
}

/// Parses the edit form's properties box: one `key=value` per line; blank lines are ignored.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("Line {} of the properties is not key=value: '{line}'.", n + 1));
        };
        let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
        if let Some(slot) = out.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Parses the edit form's tags box: comma-separated, trimmed, duplicates dropped.
pub fn parse_tags(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

/// Saves the detail page's edit form: name, visibility, protection, hiding, minimums, tags and
/// properties (the whole set; properties left out of the box are removed).
#[server(prefix = "/api", endpoint = "update_image")]
pub async fn update_image(
    image_id: String,
    name: String,
    visibility: String,
    min_disk: Option<String>,
    min_ram: Option<String>,
    protected: Option<String>,
    os_hidden: Option<String>,
    tags: Option<String>,
    properties: Option<String>,
) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        // A thin adapter: the form's fields replace the image's (properties left out of the
        // box are removed); the update use-case (`imageops`) judges and applies the change.
        let ctx = server_context()?;
        let (authn, _) = require(&policy::Action::ListImages)?;
        let bad = |m: String| AppError::BadRequest { message: m };
        let number = |label: &str, v: Option<String>| -> Result<i64, AppError> {
            match non_empty(v) {
                None => Ok(0),
                Some(s) => s.parse::<i64>().map_err(|_| bad(format!("{label} must be a whole number of GB/MB, not '{s}'."))),
            }
        };
        let on = |v: Option<String>| matches!(v.as_deref(), Some("on" | "true" | "yes" | "1"));
        let props = parse_properties(properties.as_deref().unwrap_or("")).map_err(bad)?;
        let (min_disk, min_ram) = (number("Minimum disk", min_disk)?, number("Minimum RAM", min_ram)?);
        let name = name.trim().to_owned();
        ctx.images
            .update_image(&authn, &image_id, |f| {
                f.name = (!name.is_empty()).then_some(name);
                f.visibility = imageops::parse_visibility(&visibility)?;
                f.protected = on(protected);
                f.os_hidden = on(os_hidden);
                f.min_disk = min_disk;
                f.min_ram = min_ram;
                f.tags = parse_tags(tags.as_deref().unwrap_or(""));
                f.properties = props.into_iter().collect();
                Ok(())
            })
            .await?;
        Ok(())
    })
    .await
}

/// Deactivates (`deactivate`) or reactivates (`reactivate`) an image.
#[server(prefix = "/api", endpoint = "set_image_status")]
pub async fn set_image_status(image_id: String, action: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let ctx = server_context()?;
        let (authn, _) = require(&policy::Action::ListImages)?;
        let action = imageops::StatusAction::parse(&action)
            .ok_or_else(|| AppError::BadRequest { message: format!("Unknown action '{action}': deactivate or reactivate.") })?;
        Ok(ctx.images.set_status(&authn, &image_id, action).await?)
    })
    .await
}

/// Deletes an image and its stored copies. `confirm` must repeat the image's name (or id when
/// it has none): the confirmation step, enforced by the server so it holds without JavaScript.
#[server(prefix = "/api", endpoint = "delete_image")]
pub async fn delete_image(image_id: String, confirm: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let ctx = server_context()?;
        let (authn, me) = require(&policy::Action::ListImages)?;
        let (row, facts) = visible_image(&ctx.db, &me, &image_id).await?;
        require(&policy::Action::DeleteImage(&facts))?;
        let expected = if row.name.is_empty() { row.id.clone() } else { row.name.clone() };
        if confirm.trim() != expected {
            return Err(AppError::BadRequest { message: format!("Type the image's name, {expected}, to confirm the deletion.") });
        }
        ctx.images.delete_image(&authn, &image_id).await?;
        leptos_axum::redirect(&format!("/images?deleted={}", crate::components::size::encode_query(&expected)));
        Ok(())
    })
    .await
}

/// Background jobs: an administrator sees all, others their project's.
#[server(prefix = "/api", endpoint = "list_jobs")]
pub async fn list_jobs() -> Result<Vec<JobView>, AppError> {
    use imp::*;
    answer(async move {
        let (_, me) = require(&policy::Action::ListImages)?;
        let ctx = server_context()?;
        let owner = if me.is_admin {
            None
        } else {
            match &me.scope {
                Some(s) => Some(s.project_id.clone()),
                None => return Ok(Vec::new()),
            }
        };
        let jobs = ctx.db.list_jobs(owner.as_deref(), 200).await.map_err(|e| AppError::internal("list jobs", &e))?;
        Ok(jobs.into_iter().map(job_view).collect())
    })
    .await
}

/// Cancels (`cancel`) or retries (`retry`) a job; needs the right to modify its image.
#[server(prefix = "/api", endpoint = "control_job")]
pub async fn control_job(job_id: String, action: String) -> Result<(), AppError> {
    use imp::*;
    answer(async move {
        let (authn, me) = require(&policy::Action::ListImages)?;
        let ctx = server_context()?;
        let job = ctx
            .db
            .job(&job_id)
            .await
            .map_err(|e| AppError::internal("load job", &e))?
            .ok_or_else(|| AppError::NotFound { message: "No such job.".into() })?;
        let scope = me.scope.as_ref().map(|s| s.project_id.clone());
        let (_, facts) = image_facts(&ctx.db, &job.image_id, scope.as_deref())
            .await
            .map_err(|_| AppError::NotFound { message: "No such job.".into() })?;
        if policy::authorize(Some(&me), &policy::Action::ViewImage(&facts)).is_err() {
            return Err(AppError::NotFound { message: "No such job.".into() });
        }
        require(&policy::Action::ModifyImage(&facts))?;
        let done = match action.as_str() {
            "cancel" => ctx.db.cancel_job(&job_id).await,
            "retry" if job.kind == JobKind::Import => {
                return Err(AppError::Conflict {
                    message: "An import cannot be retried: its upload is gone. Upload the file again.".into(),
                })
            }
            "retry" => ctx.db.retry_job(&job_id).await,
            other => return Err(AppError::BadRequest { message: format!("Unknown action '{other}'.") }),
        }
        .map_err(|e| {
            // One live copy per image and backend (a unique index): another one runs already.
            if e.is_unique_violation() {
                AppError::Conflict { message: format!("Another copy to {} is already under way.", job.backend) }
            } else {
                AppError::internal("control job", &e)
            }
        })?;
        if !done {
            let verb = if action == "cancel" { "cancelled" } else { "retried" };
            return Err(AppError::Conflict { message: format!("This job is {}; it cannot be {verb} now.", job.status) });
        }
        ctx.images.stores.wake_jobs();
        audit(&ctx.db, &authn, &format!("job.{action}"), "job", &job_id, job.kind.as_str()).await
    })
    .await
}

/// Copies an active image to another configured backend as a background job (converted there
/// if the target's matrix column says so).
#[server(prefix = "/api", endpoint = "copy_image")]
pub async fn copy_image(image_id: String, backend: String) -> Result<String, AppError> {
    use imp::*;
    answer(async move {
        let ctx = server_context()?;
        let (authn, _) = require(&policy::Action::ListImages)?;
        let jobs = ctx.images.copy_image(&authn, &image_id, std::slice::from_ref(&backend), false).await?;
        jobs.into_iter()
            .next()
            .map(|j| j.id)
            .ok_or_else(|| AppError::Conflict { message: format!("This image is stored on {backend} already.") })
    })
    .await
}
