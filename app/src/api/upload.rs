//! Creating an image record before its bytes are uploaded, and following it through ingest.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;
use domain::ImageStatus;
#[cfg(feature = "ssr")]
use domain::{JobKind, JobStatus};

/// The fields of the Upload form (the ones users know from Horizon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageForm {
    pub name: String,
    pub description: String,
    pub disk_format: String,
    pub container_format: String,
    pub visibility: String,
    /// GiB.
    pub min_disk: u32,
    /// MiB.
    pub min_ram: u32,
    pub architecture: String,
    pub os_distro: String,
    pub os_version: String,
    pub protected: bool,
    /// Comma-separated.
    pub tags: String,
    /// The file's size in bytes (checked against quotas before the upload starts).
    pub size: u64,
}

/// Where an image is in its life, for the upload page's status line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageState {
    pub id: String,
    pub status: ImageStatus,
    pub reason: String,
    pub disk_format: Option<domain::DiskFormat>,
    pub uploaded_format: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// The import job's stage while it runs (`inspecting`, `converting`, …), '' otherwise.
    #[serde(default)]
    pub stage: String,
    /// The import job's progress over all its steps, in bytes.
    #[serde(default)]
    pub job_done: u64,
    #[serde(default)]
    pub job_total: u64,
    /// Once active: the images its package became, this one first (empty for a plain disk).
    #[serde(default)]
    pub package: Vec<crate::api::images::RelatedImage>,
    /// A package's disks that did not become images, and why (a quota).
    #[serde(default)]
    pub package_not_kept: Option<String>,
}

/// A job stage as people say it.
pub fn stage_name(stage: &str) -> &str {
    match stage {
        "starting" | "" => "starting",
        "inspecting" => "verifying",
        "converting" => "converting",
        "unpacking" => "unpacking the package",
        "hashing" => "computing checksums",
        "downloading" => "fetching the source copy",
        "storing" => "storing",
        other => other,
    }
}

/// The upload card's status line once all bytes are on the server: what the import is doing
/// (verifying → converting → … → active), with the import's progress over all its steps.
pub fn import_stage_line(s: &ImageState) -> String {
    let pct = s.job_done.saturating_mul(100).checked_div(s.job_total).map(|p| p.min(100));
    let with_pct = |what: &str| match pct {
        Some(p) => format!("{what}… {p}%"),
        None => format!("{what}…"),
    };
    match (s.status, s.stage.as_str()) {
        (ImageStatus::Importing, "inspecting") => "Verifying the image on the server…".to_owned(),
        (ImageStatus::Importing, "converting") => with_pct("Converting"),
        (ImageStatus::Importing, "unpacking") => with_pct("Unpacking the package"),
        (ImageStatus::Importing, "hashing") => with_pct("Computing checksums"),
        (ImageStatus::Importing, "storing") => with_pct("Storing"),
        (ImageStatus::Importing, "publishing") => "Recording the stored image…".to_owned(),
        (ImageStatus::Active, _) => "Active; making images of the package's other disks…".to_owned(),
        _ => "Verifying on the server…".to_owned(),
    }
}

/// Creates a `queued` image in the caller's current project; the browser then uploads its bytes
/// to `/uploads` with `image_id` in the tus metadata.
#[server(prefix = "/api", endpoint = "create_image")]
pub async fn create_image(form: ImageForm) -> Result<String, AppError> {
    crate::auth::answer(async move {
        // A thin adapter: the form's fields become a request for the create use-case
        // (`imageops`), which authorizes, checks the values and the quotas, and audits.
        let (authn, _) = crate::auth::signed_in()?;
        let name = form.name.trim();
        if name.is_empty() {
            return Err(AppError::bad_request("Give the image a name."));
        }
        let visibility = if form.visibility.is_empty() { "private" } else { form.visibility.as_str() };
        let visibility = policy::Visibility::parse(visibility).ok_or_else(|| AppError::bad_request("Unknown visibility."))?;
        // The form's fields become the image's properties; empty ones are left out.
        let properties = [
            ("description", &form.description),
            ("architecture", &form.architecture),
            ("os_distro", &form.os_distro),
            ("os_version", &form.os_version),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect();
        let tags = form.tags.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        let container = if form.container_format.is_empty() { "bare".to_owned() } else { form.container_format.clone() };
        let req = imageops::NewImageRequest {
            name: Some(name.to_owned()),
            disk_format: Some(form.disk_format.clone()),
            container_format: Some(container),
            visibility: Some(visibility),
            protected: form.protected,
            min_disk: i64::from(form.min_disk),
            min_ram: i64::from(form.min_ram),
            tags,
            properties,
            expected_size: Some(form.size),
            ..Default::default()
        };
        let ctx = crate::api::context::server_context()?;
        Ok(ctx.images.create_image(&authn, req).await?)
    })
    .await
}

/// The image's status, for the upload page to follow ingest.
#[server(prefix = "/api", endpoint = "image_progress")]
pub async fn image_progress(image_id: String) -> Result<ImageState, AppError> {
    crate::auth::answer(async move {
        let (authn, me) = crate::auth::signed_in()?;
        let ctx = crate::api::context::server_context()?;
        let not_found = || AppError::NotFound { message: "No such image.".into() };
        let scope = me.scope.as_ref().map(|s| s.project_id.as_str());
        let (row, facts) = crate::api::shares::imp::image_facts(&ctx.db, &image_id, scope).await?;
        if !policy::can_view(Some(&me), &facts) {
            return Err(not_found());
        }
        let extra = ctx.db.image_ingest(&image_id).await.map_err(|e| AppError::internal("load image", &e))?.unwrap_or_default();
        let jobs = ctx.db.jobs_for_image(&image_id).await.map_err(|e| AppError::internal("load jobs", &e))?;
        let running = jobs.iter().find(|j| j.kind == JobKind::Import && j.status == JobStatus::Running);
        // A package's other images are made after its first one is active, by the same job.
        let (package, package_not_kept) = if row.status == ImageStatus::Active && running.is_none() {
            let family = ctx.images.package_family(&authn, &image_id).await?.into_iter().map(Into::into).collect();
            let detail = ctx.db.image_detail(&image_id).await.map_err(|e| AppError::internal("load image", &e))?;
            (family, detail.and_then(|d| d.property_map().remove(imageops::NOT_KEPT)))
        } else {
            (Vec::new(), None)
        };
        Ok(ImageState {
            stage: running.map(|j| j.stage.clone()).unwrap_or_default(),
            job_done: running.map_or(0, |j| u64::try_from(j.bytes_done).unwrap_or(0)),
            job_total: running.map_or(0, |j| u64::try_from(j.bytes_total).unwrap_or(0)),
            id: row.id,
            status: row.status,
            reason: extra.status_reason,
            disk_format: row.disk_format,
            uploaded_format: extra.uploaded_format,
            size: row.size.and_then(|s| u64::try_from(s).ok()),
            sha256: row.sha256,
            package,
            package_not_kept,
        })
    })
    .await
}

/// Abandons an image whose upload was cancelled: it becomes `killed` (its partial bytes are
/// removed by the upload's termination).
#[server(prefix = "/api", endpoint = "cancel_image")]
pub async fn cancel_image(image_id: String) -> Result<(), AppError> {
    crate::auth::answer(async move {
        let (authn, me) = crate::auth::signed_in()?;
        let ctx = crate::api::context::server_context()?;
        let not_found = || AppError::NotFound { message: "No such image.".into() };
        let scope = me.scope.as_ref().map(|s| s.project_id.as_str());
        let (row, facts) = crate::api::shares::imp::image_facts(&ctx.db, &image_id, scope).await?;
        if !policy::can_view(Some(&me), &facts) {
            return Err(not_found());
        }
        crate::auth::require(&policy::Action::ModifyImage(&facts))?;
        if !ctx
            .db
            .transition_image(&image_id, &[ImageStatus::Queued, ImageStatus::Uploading], ImageStatus::Killed, "The upload was cancelled.")
            .await
            .map_err(|e| AppError::internal("cancel image", &e))?
        {
            return Err(AppError::Conflict { message: format!("The image is {} and can no longer be cancelled.", row.status) });
        }
        crate::auth::audit(&ctx.db, &authn, "image.cancel_upload", "image", &image_id, "").await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{import_stage_line, ImageState};

    fn state(status: &str, stage: &str, done: u64, total: u64) -> ImageState {
        ImageState {
            id: "i".into(),
            status: status.parse().unwrap(),
            reason: String::new(),
            disk_format: Some(domain::DiskFormat::Vdi),
            uploaded_format: None,
            size: None,
            sha256: None,
            stage: stage.into(),
            job_done: done,
            job_total: total,
            package: Vec::new(),
            package_not_kept: None,
        }
    }

    #[test]
    fn the_card_follows_the_import_through_its_stages() {
        let line = |status, stage, done, total| import_stage_line(&state(status, stage, done, total));
        // Bytes complete, import not started yet (or the job still starting).
        assert_eq!(line("uploading", "", 0, 0), "Verifying on the server…");
        assert_eq!(line("importing", "starting", 0, 0), "Verifying on the server…");
        assert_eq!(line("importing", "inspecting", 0, 100), "Verifying the image on the server…");
        assert_eq!(line("importing", "converting", 21, 100), "Converting… 21%");
        assert_eq!(line("importing", "unpacking", 5, 10), "Unpacking the package… 50%");
        assert_eq!(line("importing", "hashing", 80, 100), "Computing checksums… 80%");
        assert_eq!(line("importing", "storing", 99, 100), "Storing… 99%");
        // No total known yet: no made-up percentage; never above 100.
        assert_eq!(line("importing", "converting", 0, 0), "Converting…");
        assert_eq!(line("importing", "storing", 130, 100), "Storing… 100%");
        // A package's first image is active while the same job makes its other images.
        assert_eq!(line("active", "publishing", 0, 0), "Active; making images of the package's other disks…");
    }
}
