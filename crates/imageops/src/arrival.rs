//! Guards for data arriving at an image, the same at every door that receives a body (Glance's
//! `PUT /file`, `stage`, `web-download`): the quota hold a body keeps while it arrives, and the
//! way back to `queued` (its partial files removed, its holds given back) when the request fails
//! or the client goes away before the data is handed to an import.

use std::path::PathBuf;

use domain::ImageStatus;

use crate::Error;

/// How far ahead of the bytes received a body's quota hold is raised (one database write per
/// this many bytes).
const HOLD_STEP: u64 = 64 * 1024 * 1024;

/// The bytes a request body holds of its project's quota while it arrives (`records` quota
/// holds: checked against everything else the project uses, in the same statement), and an
/// upload slot (`max_concurrent_uploads`), as a tus upload takes.
pub struct BodyHold {
    db: records::Db,
    project: String,
    image: String,
    purpose: &'static str,
    held: u64,
}

impl BodyHold {
    /// Holds `declared` bytes (0 when unknown) and a slot for `image` ([`Error::TooLarge`] when
    /// the project has no room).
    pub async fn start(
        db: &records::Db,
        image: &records::ImageDetail,
        purpose: &'static str,
        declared: Option<u64>,
    ) -> Result<Self, Error> {
        let mut hold =
            BodyHold { db: db.clone(), project: image.owner.clone().unwrap_or_default(), image: image.id.clone(), purpose, held: 0 };
        hold.set(declared.unwrap_or(0)).await?;
        Ok(hold)
    }

    async fn set(&mut self, bytes: u64) -> Result<(), Error> {
        match self.db.hold_quota(&self.project, &self.image, self.purpose, bytes, true).await? {
            Ok(()) => {
                self.held = bytes;
                Ok(())
            }
            Err(why) => Err(Error::TooLarge(format!("This image cannot be received: {why}."))),
        }
    }

    /// Raises the hold to cover `size` bytes received (a step ahead), or [`Error::TooLarge`].
    pub async fn cover(&mut self, size: u64) -> Result<(), Error> {
        if size <= self.held {
            return Ok(());
        }
        self.set(size.saturating_add(HOLD_STEP)).await
    }
}

/// Puts an image back to `queued` and removes its partial data unless disarmed: when a request
/// fails before its data is handed to a job, and also when the client disconnects and the
/// handler is dropped mid-body (an image must not stay `saving` with nobody sending).
pub struct Restore {
    db: records::Db,
    id: String,
    /// The statuses the image may have reached before the failure.
    from: &'static [ImageStatus],
    /// The status it goes back to (`queued` unless [`Restore::back_to`] says otherwise).
    to: ImageStatus,
    files: Vec<PathBuf>,
    /// Quota holds to give back: (purpose, the purpose it becomes again or None to release).
    holds: Vec<(&'static str, Option<&'static str>)>,
    armed: bool,
}

impl Restore {
    /// Guards image `id`, which may reach any of `from`, and the partial `files`.
    pub fn new(db: &records::Db, id: &str, from: &'static [ImageStatus], files: Vec<PathBuf>) -> Self {
        Restore { db: db.clone(), id: id.to_owned(), from, to: ImageStatus::Queued, files, holds: Vec::new(), armed: true }
    }
    /// Also releases the image's quota hold for `purpose` (or turns it back into `back`).
    pub fn hold(mut self, purpose: &'static str, back: Option<&'static str>) -> Self {
        self.holds.push((purpose, back));
        self
    }
    /// Restores `to` instead of `queued` (a glance-direct import goes back to its staged data).
    pub fn back_to(mut self, to: ImageStatus) -> Self {
        self.to = to;
        self
    }
    /// The data was handed over: nothing to put back.
    pub fn disarm(mut self) {
        self.armed = false;
    }
    /// Restores at once (so the error answer is sent after the image is `queued` again).
    pub async fn now(mut self) {
        self.armed = false;
        for f in &self.files {
            let _ = tokio::fs::remove_file(f).await;
        }
        release_holds(&self.db, &self.id, &self.holds).await;
        if let Err(e) = self.db.transition_image(&self.id, self.from, self.to, "").await {
            tracing::warn!(image = %self.id, to = %self.to, error = %e, "cannot put an image back after a failed upload or import");
        }
    }
}

async fn release_holds(db: &records::Db, id: &str, holds: &[(&'static str, Option<&'static str>)]) {
    for (purpose, back) in holds {
        let done = match back {
            Some(to) => db.move_quota_hold(id, purpose, to, u64::MAX).await.map(|_| ()),
            None => db.release_quota(id, purpose).await,
        };
        if let Err(e) = done {
            tracing::warn!(image = %id, purpose, error = %e, "cannot give back a quota hold after a failed upload or import");
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let (db, id, from, to, holds) = (self.db.clone(), self.id.clone(), self.from, self.to, self.holds.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                release_holds(&db, &id, &holds).await;
                if let Err(e) = db.transition_image(&id, from, to, "").await {
                    tracing::warn!(image = %id, %to, error = %e, "cannot put an image back after a failed upload or import");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, records::Db, records::ImageDetail) {
        let dir = tempfile::tempdir().unwrap();
        let db = records::Db::open_sqlite(&dir.path().join("h.db")).await.unwrap();
        let p = db.create_project("p", "").await.unwrap().id;
        db.set_quota(&p, records::QuotaRow { max_bytes: Some(1000), ..Default::default() }).await.unwrap();
        let id = db.create_image(&records::NewImage { name: "i".into(), owner: Some(p), ..Default::default() }).await.unwrap().id;
        let image = db.image_detail(&id).await.unwrap().unwrap();
        (dir, db, image)
    }

    #[tokio::test]
    async fn a_body_holds_its_bytes_and_is_refused_past_the_quota() {
        let (_dir, db, image) = db().await;
        assert!(matches!(BodyHold::start(&db, &image, "upload", Some(1001)).await, Err(Error::TooLarge(_))), "over the quota at once");
        let mut hold = BodyHold::start(&db, &image, "upload", None).await.unwrap();
        // The hold runs a step ahead of what arrived, so the first bytes already pass the quota.
        let e = hold.cover(10).await.unwrap_err();
        assert!(matches!(&e, Error::TooLarge(m) if m.contains("cannot be received")), "{e}");
    }

    #[tokio::test]
    async fn a_failed_arrival_puts_the_image_back_and_removes_its_files() {
        let (dir, db, image) = db().await;
        let partial = dir.path().join("partial");
        std::fs::write(&partial, b"half").unwrap();
        assert!(db.transition_image(&image.id, &[ImageStatus::Queued], ImageStatus::Saving, "").await.unwrap());
        db.hold_quota(image.owner.as_deref().unwrap(), &image.id, "upload", 4, true).await.unwrap().unwrap();
        Restore::new(&db, &image.id, &[ImageStatus::Saving], vec![partial.clone()]).hold("upload", None).now().await;
        assert_eq!(db.image(&image.id).await.unwrap().unwrap().status, ImageStatus::Queued);
        assert!(!partial.exists());
        assert!(db.quota_holds(&image.id).await.unwrap().is_empty(), "the hold was given back");

        // Dropped while armed (a client that went away): the same, from a spawned task.
        std::fs::write(&partial, b"half").unwrap();
        assert!(db.transition_image(&image.id, &[ImageStatus::Queued], ImageStatus::Saving, "").await.unwrap());
        drop(Restore::new(&db, &image.id, &[ImageStatus::Saving], vec![partial.clone()]));
        assert!(!partial.exists(), "files go at once");
        for _ in 0..100 {
            if db.image(&image.id).await.unwrap().unwrap().status == ImageStatus::Queued {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(db.image(&image.id).await.unwrap().unwrap().status, ImageStatus::Queued);

        // Disarmed (the data went to an import): nothing changes.
        assert!(db.transition_image(&image.id, &[ImageStatus::Queued], ImageStatus::Importing, "").await.unwrap());
        Restore::new(&db, &image.id, &[ImageStatus::Importing], Vec::new()).disarm();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(db.image(&image.id).await.unwrap().unwrap().status, ImageStatus::Importing);
    }
}
