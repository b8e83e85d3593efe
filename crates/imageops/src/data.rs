//! An image's data arriving, for every door: who may send an image its bytes and in which
//! states ([`Images::admit_data`]: tus uploads, Glance's `PUT /file` and `PUT /stage`, its
//! `web-download` import), and the one way received bytes become an `import` job
//! ([`Images::queue_import`]: a finished tus upload, a Glance body, staged data, a download).

use domain::{ImageStatus, JobKind};
use std::path::PathBuf;

use accounts::Authn;
use policy::Action;

use crate::{Error, Images};

/// The largest image Hangar takes, whatever the quota says (Glance's `image_size_cap`, 1 TiB).
pub const IMAGE_SIZE_CAP: u64 = 1 << 40;

/// How an image's data arrives. Each way takes the image in its own states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A tus upload (the dashboard's uploader, any tus client). It may come in several pieces
    /// (parallel partial uploads), so an image already `uploading` takes more. Its bytes are
    /// held against the uploader's project, so only the image's own project may upload.
    /// The disk format may be left for the import to detect.
    Tus,
    /// One request's whole body, imported at once (Glance `PUT /file`): a `queued` image whose
    /// disk and container formats are set (400 otherwise, as Glance answers).
    Body,
    /// One request's whole body, kept for a later import (Glance `PUT /stage`): a `queued`
    /// image; its formats are checked when it is imported.
    Stage,
    /// Fetched by Hangar from a URL (Glance `web-download`): a `queued` image whose formats are
    /// set (409, as Glance answers an import).
    Download,
}

impl Arrival {
    fn states(self) -> &'static [ImageStatus] {
        match self {
            Arrival::Tus => &[ImageStatus::Queued, ImageStatus::Uploading],
            Arrival::Body | Arrival::Stage | Arrival::Download => &[ImageStatus::Queued],
        }
    }

    /// The status the image takes when its data starts arriving this way.
    pub fn next_status(self) -> ImageStatus {
        match self {
            Arrival::Tus | Arrival::Stage => ImageStatus::Uploading,
            Arrival::Body => ImageStatus::Saving,
            Arrival::Download => ImageStatus::Importing,
        }
    }
}

/// What [`Images::admit_data`] found: the image, the backend the data will be stored in, and
/// the most bytes it may bring.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub image: records::ImageRow,
    pub backend: String,
    /// What is left of the owner's byte quota, and at most [`IMAGE_SIZE_CAP`].
    pub byte_limit: u64,
}

/// Data that arrived whole and waits for its import: the import job's parameters (stored as
/// JSON in the job row, so a restart resumes it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReceivedData {
    pub image_id: String,
    pub path: PathBuf,
    /// Who sent it, and the project whose quota holds it.
    pub user_id: String,
    pub project_id: String,
    /// The name of the file, where the client said it.
    pub file_name: Option<String>,
    /// Digests of the received bytes, where the door computed them as they arrived.
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub sha512: Option<String>,
}

impl ReceivedData {
    /// A request body of image `image_id` (of project `project_id`), written to `path` with its
    /// digests (`got`), sent by `user_id`.
    pub fn of_body(image_id: &str, project_id: &str, user_id: &str, path: PathBuf, got: &crate::Received) -> Self {
        ReceivedData {
            image_id: image_id.to_owned(),
            path,
            user_id: user_id.to_owned(),
            project_id: project_id.to_owned(),
            file_name: None,
            sha256: Some(got.sha256.clone()),
            md5: Some(got.md5.clone()),
            sha512: Some(got.sha512.clone()),
        }
    }
}

impl Images {
    /// Decides whether the caller may send image `image_id` its data now, the one check of every
    /// door, made before a byte is read: the caller sees the image (404 otherwise) and may
    /// modify it (403); a backend it names exists (400; none: the default); the image waits for
    /// data the way `arrival` brings it (409 otherwise; see [`Arrival`]); and no import of it is
    /// queued or running (409). The conditional status change each door then makes is what
    /// holds under concurrent requests; this answers the plain case clearly.
    pub async fn admit_data(&self, authn: &Authn, image_id: &str, arrival: Arrival, store: Option<&str>) -> Result<Admitted, Error> {
        let backend = self.backend_named(store)?;
        let (image, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        if arrival == Arrival::Tus {
            let project = authn.principal.as_ref().and_then(|p| p.scope.as_ref()).map(|s| s.project_id.as_str());
            if project.is_none() || image.owner.as_deref() != project {
                return Err(Error::Forbidden(
                    "Upload an image's data from its own project (switch project, or use a token of that project).".to_owned(),
                ));
            }
        }
        if !arrival.states().contains(&image.status) {
            return Err(Error::Conflict(format!(
                "Image status transition from {} to {} is not allowed: an image is imported once{}.",
                image.status,
                arrival.next_status(),
                match image.status {
                    ImageStatus::Queued | ImageStatus::Uploading => " (it is already arriving or staged)",
                    _ => "",
                }
            )));
        }
        // Data staged for a glance-direct import leaves the image `uploading`, which a tus
        // upload in pieces also does: the staged data is imported or deleted, never joined by
        // an upload.
        if arrival == Arrival::Tus && image.status == ImageStatus::Uploading && self.staged_paths(image_id).0.exists() {
            return Err(Error::Conflict(
                "This image's data is staged for an import (PUT /stage): import it, or delete the image and start again.".to_owned(),
            ));
        }
        let formats_set = image.disk_format.is_some() && image.container_format.is_some();
        let unset = || "Properties disk_format, container_format must be set prior to saving data.".to_owned();
        match arrival {
            Arrival::Body if !formats_set => return Err(Error::Invalid(unset())),
            Arrival::Download if !formats_set => return Err(Error::Conflict(unset())),
            _ => {}
        }
        self.no_import_job(image_id).await?;
        let byte_limit = self.byte_limit(image.owner.as_deref()).await?;
        tracing::debug!(image = %image_id, ?arrival, %backend, byte_limit, "data admitted");
        Ok(Admitted { image, backend, byte_limit })
    }

    /// The backend a request names (400 when there is none of that name), or the default one.
    pub(crate) fn backend_named(&self, store: Option<&str>) -> Result<String, Error> {
        match store.filter(|s| !s.is_empty()) {
            Some(name) if self.stores.get(name).is_some() => Ok(name.to_owned()),
            Some(name) => Err(Error::Invalid(format!("Unknown store {name:?}; {}.", self.stores.choose_one()))),
            None => Ok(self.stores.default_backend().name().to_owned()),
        }
    }

    /// 409 when an import job for image `image_id` is queued or running: its data is already
    /// on its way in.
    pub async fn no_import_job(&self, image_id: &str) -> Result<(), Error> {
        let jobs = self.db.jobs_for_image(image_id).await?;
        if jobs.iter().any(|j| j.kind == JobKind::Import && j.status.is_live()) {
            return Err(Error::Conflict(
                "An import of this image's data is already queued or running; an image is imported once.".to_owned(),
            ));
        }
        Ok(())
    }

    /// The most bytes an image of project `owner` may receive: what is left of the project's
    /// byte quota, and at most [`IMAGE_SIZE_CAP`].
    pub async fn byte_limit(&self, owner: Option<&str>) -> Result<u64, Error> {
        let mut limit = IMAGE_SIZE_CAP;
        if let Some(owner) = owner {
            let quota = self.db.quota(owner).await?;
            if let Some(max) = quota.max_bytes.and_then(|m| u64::try_from(m).ok()) {
                let (_, used) = self.db.project_usage(owner).await?;
                limit = limit.min(max.saturating_sub(used));
            }
        }
        Ok(limit)
    }

    /// Queues the import of data that arrived whole, into `backend`, and wakes a worker: the one
    /// way every door hands over its bytes. A backend that is not configured (any more) is
    /// refused (400) rather than swapped for another.
    pub async fn queue_import(&self, data: &ReceivedData, size: u64, backend: &str) -> Result<records::JobRow, Error> {
        if self.stores.get(backend).is_none() {
            return Err(Error::Invalid(format!(
                "The storage backend {backend:?} chosen for this image no longer exists; send the data again and {}.",
                self.stores.choose_one()
            )));
        }
        let params = serde_json::to_string(data).map_err(|e| Error::Db(records::DbError::Corrupt(format!("import parameters: {e}"))))?;
        let job = self
            .db
            .create_job(&records::NewJob {
                kind: JobKind::Import,
                image_id: data.image_id.clone(),
                backend: backend.to_owned(),
                params,
                bytes_total: i64::try_from(size).unwrap_or(i64::MAX),
                created_by: Some(data.user_id.clone()),
            })
            .await
            .map_err(|e| {
                // One live import per image, held by a unique index: data that arrived by another
                // door meanwhile (a tus upload admitted before a Glance PUT queued its import).
                if e.is_unique_violation() {
                    Error::Conflict("An import of this image's data is already queued or running; an image is imported once.".to_owned())
                } else {
                    e.into()
                }
            })?;
        self.stores.wake_jobs();
        Ok(job)
    }
}
