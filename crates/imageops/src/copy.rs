//! Copying an active image to other storage backends (the dashboard's copy button, Glance's
//! `copy-image` import method): the rules for both doors. The copy itself is a job
//! (`server::jobs`), converted per the target's matrix column.

use accounts::Authn;
use domain::{ImageStatus, JobKind, LocationStatus};
use policy::Action;

use crate::{Error, Images};

impl Images {
    /// Queues one copy job per backend in `stores` for an active image the caller may modify,
    /// and wakes a worker. An unknown backend is 409 (as Glance answers), an image that is not
    /// active 409, a backend that holds it already 400 — or skipped with `skip_present` (Glance's
    /// `all_stores`) — and a copy already under way 409 (one per image and backend, decided by
    /// the insert). Each queued copy is audited. Returns the jobs.
    pub async fn copy_image(
        &self,
        authn: &Authn,
        image_id: &str,
        stores: &[String],
        skip_present: bool,
    ) -> Result<Vec<records::JobRow>, Error> {
        let (row, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        if let Some(unknown) = stores.iter().find(|s| self.stores.get(s).is_none()) {
            return Err(Error::Conflict(format!("Unknown store {unknown}; see /v2/info/stores.")));
        }
        if row.status != ImageStatus::Active {
            return Err(Error::Conflict(format!("Only active images can be copied; this one is {}.", row.status)));
        }
        if stores.is_empty() {
            return Err(Error::Invalid("Name the stores to copy the image to.".to_owned()));
        }
        let locations = self.db.image_locations(image_id).await?;
        // Every store is judged before any copy is queued, so a refusal queues nothing (the
        // unique index still decides a race between requests).
        let live = self.db.jobs_for_image(image_id).await?;
        let mut targets: Vec<String> = Vec::new();
        for backend in stores {
            if targets.contains(backend) {
                continue;
            }
            if live.iter().any(|j| j.kind == JobKind::Copy && &j.backend == backend && j.status.is_live()) {
                return Err(Error::Conflict(format!("A copy to {backend} is already under way.")));
            }
            if locations.iter().any(|l| &l.backend == backend) {
                if skip_present {
                    continue;
                }
                return Err(Error::Invalid(format!("Image is already present at store '{backend}'.")));
            }
            targets.push(backend.clone());
        }
        let size = locations.iter().find(|l| l.status == LocationStatus::Active).map_or(0, |l| l.size);
        let user = authn.principal.as_ref().map(|p| p.user_id.clone());
        let mut jobs = Vec::new();
        for backend in targets {
            let job = self
                .db
                .create_job(&records::NewJob {
                    kind: JobKind::Copy,
                    image_id: image_id.to_owned(),
                    backend: backend.clone(),
                    params: "{}".into(),
                    bytes_total: size.saturating_mul(2),
                    created_by: user.clone(),
                })
                .await
                .map_err(|e| {
                    if e.is_unique_violation() {
                        Error::Conflict(format!("A copy to {backend} is already under way."))
                    } else {
                        e.into()
                    }
                })?;
            self.stores.wake_jobs();
            self.audit(authn, "image.copy", "image", image_id, &backend).await?;
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// Adds a tag to an image the caller may modify (adding one it has changes nothing; at
    /// most 128 tags: 413). Audited.
    pub async fn add_tag(&self, authn: &Authn, image_id: &str, tag: &str) -> Result<(), Error> {
        let (_, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        match self.db.add_tag(image_id, tag).await? {
            records::TagChange::Changed => self.audit(authn, "image.tag.add", "image", image_id, tag).await,
            records::TagChange::Unchanged => Ok(()),
            records::TagChange::ImageNotFound => Err(Error::NotFound("No such image.".to_owned())),
            records::TagChange::LimitReached => Err(Error::TooLarge(format!("An image has at most {} tags.", records::MAX_TAGS))),
        }
    }

    /// Removes a tag from an image the caller may modify (404 if it has no such tag). Audited.
    pub async fn remove_tag(&self, authn: &Authn, image_id: &str, tag: &str) -> Result<(), Error> {
        let (_, facts) = self.visible_image(authn, image_id).await?;
        self.authorize(authn, &Action::ModifyImage(&facts))?;
        match self.db.remove_tag(image_id, tag).await? {
            records::TagChange::Changed => self.audit(authn, "image.tag.remove", "image", image_id, tag).await,
            records::TagChange::Unchanged => Err(Error::NotFound(format!("Tag {tag} not found on image {image_id}."))),
            records::TagChange::ImageNotFound => Err(Error::NotFound("No such image.".to_owned())),
            records::TagChange::LimitReached => Err(Error::TooLarge("Too many tags.".to_owned())),
        }
    }
}
