//! Glance's interoperable import of staged data (`glance-direct`): `PUT /stage` leaves the body
//! and its digests in the incoming directory and the image `uploading`; `POST /import` with the
//! method `glance-direct` hands them to an import job. The rules live here, not in the door.

use accounts::Authn;
use domain::ImageStatus;
use policy::Action;

use crate::{Error, Images, ReceivedData, Restore};

/// A request body written to disk, with its size and digests (a staged body's metadata file
/// holds it as JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Received {
    pub size: u64,
    pub md5: String,
    pub sha256: String,
    pub sha512: String,
}

impl Images {
    /// Imports the data staged for image `image_id` into `store` (the default backend when
    /// none is named): the caller sees the image (404) and may modify it (403); the image is
    /// `uploading` with its staged data and formats (409 otherwise); of concurrent requests one
    /// moves it to `importing` (409 for the others). The staged bytes' quota hold becomes the
    /// import's; until the job is queued, a failure puts the image and its staged data back
    /// for another import. Audited. Returns the import job.
    pub async fn import_staged(&self, authn: &Authn, image_id: &str, store: Option<&str>) -> Result<records::JobRow, Error> {
        let me = authn.principal.as_ref().ok_or_else(|| Error::NotSignedIn("Sign in first.".to_owned()))?;
        let (image, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        let backend = self.backend_named(store)?;
        if image.status != ImageStatus::Uploading {
            return Err(Error::Conflict(format!(
                "Image status is {}: glance-direct imports need staged data (status uploading); PUT /stage first.",
                image.status
            )));
        }
        if image.disk_format.is_none() || image.container_format.is_none() {
            return Err(Error::Conflict("Properties disk_format, container_format must be set prior to saving data.".to_owned()));
        }
        self.no_import_job(image_id).await?;
        let (path, meta_path) = self.staged_paths(image_id);
        let missing = || Error::Conflict("No staged data was found for this image; PUT /stage again.".to_owned());
        let meta = tokio::fs::read(&meta_path).await.map_err(|_| missing())?;
        let got: Received = serde_json::from_slice(&meta)
            .map_err(|e| Error::Db(records::DbError::Corrupt(format!("the staged data's metadata ({}): {e}", meta_path.display()))))?;
        if !path.exists() {
            return Err(missing());
        }
        // The one atomic step that lets a single import of the staged data start: of two
        // concurrent requests, only one moves the image out of `uploading`.
        if !self.db.transition_image(image_id, &[ImageStatus::Uploading], ImageStatus::Importing, "").await? {
            return Err(Error::Conflict("Image status transition to importing is not allowed: another import started first.".to_owned()));
        }
        // Until the job is queued, a failure (or the caller going away) gives the staged data
        // back, for another import.
        let restore = Restore::new(&self.db, image_id, &[ImageStatus::Importing], Vec::new())
            .back_to(ImageStatus::Uploading)
            .hold("import", Some("stage"));
        self.db.move_quota_hold(image_id, "stage", "import", got.size).await?;
        let data = ReceivedData::of_body(image_id, image.owner.as_deref().unwrap_or(""), &me.user_id, path, &got);
        let job = match self.queue_import(&data, got.size, &backend).await {
            Ok(job) => {
                restore.disarm();
                job
            }
            Err(e) => {
                restore.now().await;
                return Err(e);
            }
        };
        let _ = tokio::fs::remove_file(&meta_path).await;
        self.audit(authn, "image.import", "image", image_id, "glance-direct").await?;
        Ok(job)
    }
}
