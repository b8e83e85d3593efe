//! The ingest pipeline: what happens to an upload once all its bytes have arrived.
//!
//! 1. The image must be the caller's project's and waiting for data (`queued`/`uploading`); it
//!    moves to `importing`.
//! 2. `diskimage::inspect` judges the file — the server's verdict, whatever the browser said.
//!    A refusal makes the image `killed` with the reason users see, and deletes the bytes.
//! 3. The storage-compatibility matrix (the `storage_policy` table) decides, for the backend's
//!    kind and the detected format: keep it, convert it with Hangar's own converter (never
//!    qemu-img) to qcow2 or raw, or refuse it with the matrix's reason.
//! 4. Checksums: SHA-256 of what was uploaded (from the upload if it was computed in order), and
//!    Glance's MD5 `checksum` and SHA-512 `os_hash_value` of the stored bytes.
//! 5. The stored file is fsynced and renamed into `data/images/`, its location recorded, then the
//!    record becomes `active` (Architecture Invariant: never `active` before bytes and records
//!    are durable).
//!
//! The pipeline runs as an `import` job (see `jobs.rs`): it reports progress through
//! [`JobControl`] and stops at the next step when the job is cancelled.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use digests::Algorithm;
use diskimage::convert::{self, ConvertOptions, SourceFormat, TargetFormat};
use diskimage::{Format, InspectOptions, ReadAt, SizedFile};
use domain::{ContainerFormat, DiskFormat, ImageFormat, ImageStatus, LocationStatus, Package};
use imageops::declared::Declared;

mod checkpoint;
mod control;
mod package;
mod pipeline;
mod plan;

pub use checkpoint::*;
pub use control::*;
use package::*;
pub use pipeline::*;
pub use plan::*;

/// A complete upload, handed over by a door (`imageops::Images::queue_import`) and kept in the
/// import job's parameters.
pub use imageops::ReceivedData;

/// Why an upload did not become an active image.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The image does not exist, is not the uploader's project's, or is not waiting for data.
    #[error("{0}")]
    NotAccepted(String),
    /// The inspector or converter refused the bytes; the image is `killed` with this reason.
    #[error("{0}")]
    Refused(String),
    /// What the import would store exceeds the project's quota; the image is `killed` with
    /// this reason.
    #[error("{0}")]
    OverQuota(String),
    /// Hangar could not finish the import (a write failed during the conversion: the disk
    /// filled up; the backend did not take the image); the image is `killed` with `reason`,
    /// and the data was not refused. The error behind it, when there is one, is the source.
    #[error("{reason}")]
    Failed {
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error(transparent)]
    Db(#[from] records::DbError),
    /// Reading or writing a file failed (the upload, staging, the images directory); the
    /// I/O error is kept as the source.
    #[error("ingest failed: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The job was cancelled; the image is `killed` and nothing is kept.
    #[error("the import was cancelled")]
    Cancelled,
}

impl IngestError {
    /// A failure of Hangar's with nothing behind it but `reason`.
    pub fn failed(reason: impl Into<String>) -> Self {
        IngestError::Failed { reason: reason.into(), source: None }
    }

    /// A failure of Hangar's caused by `source`.
    pub fn failed_by(reason: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        IngestError::Failed { reason: reason.into(), source: Some(Box::new(source)) }
    }

    /// This error and its sources, `: `-separated (for the log).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            let s = e.to_string();
            if !out.ends_with(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            next = e.source();
        }
        out
    }

    /// A failed file operation, `context` saying which.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        IngestError::Io { context: context.into(), source }
    }
}

/// What the pipeline produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub uploaded_format: String,
    pub uploaded_size: u64,
    /// The stored copy's format (a package kept whole is stored as the package).
    pub disk_format: ImageFormat,
    pub converted: bool,
    pub size: u64,
    pub virtual_size: Option<u64>,
    pub sha256: String,
    /// An OVA's further disks (the first became this image): each becomes an image of its own.
    pub extra_disks: Vec<ExtraDisk>,
    /// An OVA's descriptor facts, recorded as the image's properties.
    pub ovf: Vec<(String, String)>,
    /// The OVF's memory hint in MiB (becomes min_ram).
    pub min_ram: Option<u64>,
}

/// A disk extracted from an OVA beyond the first, waiting to become an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraDisk {
    pub path: PathBuf,
    pub disk_format: DiskFormat,
    pub container_format: ContainerFormat,
    pub virtual_size: u64,
    /// OVA: the OVF disk id. UEC: the member's name.
    pub disk_id: String,
    /// UEC: the property of the first image that links to this one (`kernel_id`, `ramdisk_id`).
    pub link: Option<String>,
}

/// Runs the pipeline for one complete upload on the local backend with the matrix's current
/// rules (tests and callers without a job).
pub async fn ingest(db: &records::Db, data_dir: &Path, up: ReceivedData) -> Result<Imported, IngestError> {
    let rules = Rules::load(db, "local").await?;
    let local = storage::open(&storage::BackendConfig {
        name: "local".into(),
        kind: storage::BackendKind::Local,
        path: Some(data_dir.join("images")),
        ..Default::default()
    })
    .map_err(|e| IngestError::failed_by("the local store cannot be opened", e))?;
    ingest_with(db, data_dir, up, &rules, &local, std::sync::Arc::new(JobControl::default())).await
}

/// Runs the pipeline for one complete upload. On refusal, failure or cancellation the image is
/// `killed` (reason kept, bytes deleted); on success it is `active` with its location recorded.
/// An image already `importing` is accepted too: that is an import job resumed after a restart.
pub async fn ingest_with(
    db: &records::Db,
    data_dir: &Path,
    up: ReceivedData,
    rules: &Rules,
    store: &std::sync::Arc<dyn storage::Backend>,
    ctl: std::sync::Arc<JobControl>,
) -> Result<Imported, IngestError> {
    ingest_job(db, data_dir, up, rules, store, ctl, Journal::default()).await
}

/// The checkpoint an import resumes from, if its output is still what the checkpoint says:
/// `stored` if the backend holds the key at the recorded size, `prepared`/`hashed` if the staged
/// output verifies ([`Checkpoint::output_verifies`]). Otherwise the job starts over from the
/// upload, and an unusable staged output is removed.
async fn resume_point(journal: &Journal, up: &ReceivedData, store: &std::sync::Arc<dyn storage::Backend>) -> Option<Checkpoint> {
    let cp = journal.resume.clone()?;
    let usable = match cp.step {
        Step::Stored => match &cp.key {
            Some(key) => matches!(store.size(key).await, Ok(Some(n)) if n == cp.output_size),
            None => false,
        },
        Step::Prepared | Step::Hashed => {
            let cp2 = cp.clone();
            tokio::task::spawn_blocking(move || cp2.output_verifies()).await.unwrap_or(false)
        }
    };
    if usable {
        tracing::info!(image = %up.image_id, step = ?cp.step, output = %cp.output.display(), "ingest: resuming from its checkpoint");
        return Some(cp);
    }
    tracing::warn!(image = %up.image_id, step = ?cp.step, output = %cp.output.display(), "ingest: the checkpoint's output did not verify; starting over from the upload");
    if cp.output != up.path {
        let _ = std::fs::remove_file(&cp.output);
    }
    None
}

/// [`ingest_with`] for a job: checkpoints after each durable step go to `journal`, and a job
/// resumed after a stop or a crash starts after its last verified checkpoint.
pub async fn ingest_job(
    db: &records::Db,
    data_dir: &Path,
    up: ReceivedData,
    rules: &Rules,
    store: &std::sync::Arc<dyn storage::Backend>,
    ctl: std::sync::Arc<JobControl>,
    journal: Journal,
) -> Result<Imported, IngestError> {
    let backend = store.name();
    let discard = |path: &Path| {
        let _ = std::fs::remove_file(path);
    };
    let Some(image) = db.image(&up.image_id).await? else {
        discard(&up.path);
        // Deleted while the job waited: bytes a `stored` checkpoint put into the backend have
        // no location row, so the delete could not know them. (Only here: an image in any
        // other state may own those bytes.)
        if let Some(key) = journal.resume.as_ref().filter(|cp| cp.step == Step::Stored).and_then(|cp| cp.key.as_deref()) {
            let _ = store.delete(key).await;
        }
        return Err(IngestError::NotAccepted(format!("image {} does not exist", up.image_id)));
    };
    if image.owner.as_deref() != Some(up.project_id.as_str()) {
        discard(&up.path);
        return Err(IngestError::NotAccepted("the upload's project does not own this image".into()));
    }
    if !db
        .transition_image(&image.id, &[ImageStatus::Queued, ImageStatus::Uploading, ImageStatus::Importing], ImageStatus::Importing, "")
        .await?
    {
        discard(&up.path);
        return Err(IngestError::NotAccepted(format!("image {} is {}, not waiting for data", image.id, image.status)));
    }
    if !up.path.exists() {
        let reason = "The uploaded file was lost before it could be imported (was the server's data directory cleaned?). Upload it again.";
        db.kill_image(&image.id, reason, "[]").await?;
        return Err(IngestError::failed(reason));
    }
    tracing::info!(image = %image.id, path = %up.path.display(), "ingest: inspecting");
    let images_dir = data_dir.join("staging");
    let declared = imageops::declared::declared(image.disk_format, image.container_format);
    let resume = resume_point(&journal, &up, store).await;
    let already_stored = resume.as_ref().is_some_and(|cp| cp.step == Step::Stored);
    let (up2, rules2, ctl2, journal2, staging2) = (up.clone(), rules.clone(), ctl.clone(), journal.clone(), images_dir.clone());
    let result = match resume {
        Some(cp) if cp.step == Step::Stored => Ok(cp.outcome()),
        Some(cp) => tokio::task::spawn_blocking(move || finish_prepared(cp, &up2, &ctl2, &journal2))
            .await
            .map_err(|e| IngestError::failed_by("the import task failed", e))?,
        None => tokio::task::spawn_blocking(move || process(&up2, declared, &staging2, &rules2, &ctl2, &journal2))
            .await
            .map_err(|e| IngestError::failed_by("the import task failed", e))?,
    };
    // A converted output is named `<image id>.<format>` in staging; on every way out but a
    // stop (the job resumes from it) and publishing (it moved into the backend), it goes.
    let discard_outputs = || {
        for ext in ["qcow2", "raw"] {
            let _ = std::fs::remove_file(images_dir.join(format!("{}.{ext}", up.image_id)));
        }
    };
    match result {
        Ok((mut record, imported)) => {
            let staged = PathBuf::from(&record.location);
            // A package was unpacked into a directory of its own in staging: it goes on every
            // way out, not only on success.
            let package_dir =
                matches!(imported.uploaded_format.as_str(), "ova" | "uec").then(|| staged.parent().map(Path::to_path_buf)).flatten();
            let drop_package = || {
                if let Some(d) = &package_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
            };
            // What is stored counts against the project's quota, not what was uploaded: a
            // conversion that grows the image (qcow2 → raw for Ceph) must fit too. The import's
            // hold becomes the output's size (checked against everything else the project uses);
            // the image's activation releases it, once the stored copy counts instead.
            let out_size = u64::try_from(record.size).unwrap_or(0);
            let ext = if imported.disk_format == ImageFormat::Ami { "raw" } else { imported.disk_format.as_str() };
            let key = store.key_for(&image.id, ext);
            if let Err(why) = db.hold_quota(image.owner.as_deref().unwrap_or(""), &image.id, "import", out_size, false).await? {
                discard(&staged);
                discard(&up.path);
                drop_package();
                if already_stored {
                    let _ = store.delete(&key).await;
                }
                let reason = format!(
                    "The image is {out_size} bytes once converted for the {backend} storage, and {why}; nothing was kept. \
                     Delete images or ask an administrator for a larger quota."
                );
                tracing::warn!(image = %image.id, %reason, "ingest: over quota");
                db.kill_image(&image.id, &reason, "[]").await?;
                return Err(IngestError::OverQuota(reason));
            }
            // Storing counts on top of the earlier steps (a Ceph upload of 40 GiB takes minutes).
            if !already_stored {
                ctl.enter(Stage::Storing).await;
            }
            let base = ctl.total.load(Ordering::Relaxed);
            ctl.total.fetch_add(u64::try_from(record.size).unwrap_or(0), Ordering::Relaxed);
            // A converted output in staging may move into place (the `stored` checkpoint then
            // says where it went). An image kept as uploaded is linked into place (no second copy
            // on a file backend): its upload must outlive the publishing below, so a stop before
            // the image is active resumes or redoes the job from it.
            let kept_as_uploaded = staged == up.path;
            let mode = if kept_as_uploaded { storage::PutMode::Link } else { storage::PutMode::Move };
            let put = if already_stored {
                Ok(record.size.unsigned_abs())
            } else {
                store.put_file(&key, &staged, mode, &|n| ctl.set_done(base + n)).await
            };
            if !kept_as_uploaded {
                discard(&staged);
            }
            if put.is_ok() && !already_stored && package_dir.is_none() {
                journal.save(&Checkpoint::stored(&record, &imported, &key)).await;
            }
            if let Err(err) = put {
                tracing::warn!(image = %image.id, %backend, error = %err, "ingest: the backend did not take the image");
                let reason = format!("The {backend} storage could not store this image ({err}); nothing was kept. Try again later.");
                drop_package();
                discard(&up.path);
                db.kill_image(&image.id, &reason, "[]").await?;
                let _ = store.delete(&key).await;
                return Err(IngestError::failed_by(reason, err));
            }
            ctl.enter(Stage::Publishing).await;
            record.location = store.local_path(&key).map_or_else(|| format!("{backend}:{key}"), |p| p.display().to_string());
            let location = records::LocationRow {
                image_id: image.id.clone(),
                backend: backend.to_owned(),
                key: key.clone(),
                disk_format: imported.disk_format,
                size: record.size,
                checksum: Some(record.md5.clone()),
                os_hash_value: Some(record.sha512.clone()),
                status: LocationStatus::Active,
                created_at: String::new(),
            };
            db.put_location(&location).await?;
            if !db.activate_image(&image.id, &record).await? {
                drop_package();
                discard(&up.path);
                let _ = db.remove_location(&image.id, backend).await;
                let _ = store.delete(&key).await;
                return Err(IngestError::NotAccepted("the image changed state during import".into()));
            }
            // Published: the upload (unless it was itself moved into place) is no longer needed.
            discard(&up.path);
            tracing::info!(image = %image.id, format = %imported.disk_format, converted = imported.converted, "ingest: active");
            if matches!(imported.uploaded_format.as_str(), "ova" | "uec") {
                finish_package(db, &image, &up, store, &imported).await;
            }
            drop_package();
            Ok(imported)
        }
        Err(IngestError::Cancelled) if ctl.is_stopping() => {
            // The server is stopping: the image stays `importing` with its upload (and any
            // checkpointed output), and the job resumes at the next start.
            tracing::info!(image = %image.id, "ingest: stopped by the shutdown; the job will run again");
            Err(IngestError::Cancelled)
        }
        Err(err) => {
            discard(&up.path);
            discard_outputs();
            let reason = match &err {
                IngestError::Refused(r) | IngestError::OverQuota(r) | IngestError::Failed { reason: r, .. } => r.clone(),
                IngestError::Cancelled => "The import was cancelled; nothing was kept.".to_owned(),
                _ => "Hangar could not store this image; the upload was discarded. Try again.".to_owned(),
            };
            tracing::warn!(image = %image.id, error = %err.chain(), "ingest: image refused or failed");
            db.kill_image(&image.id, &reason, "[]").await?;
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_failure_keeps_its_io_error_as_the_source() {
        let e = IngestError::io("open upload", std::io::Error::from_raw_os_error(2));
        assert!(e.to_string().starts_with("ingest failed: open upload: "), "{e}");
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.and_then(std::io::Error::raw_os_error), Some(2));
    }

    #[test]
    fn a_failure_keeps_its_cause_for_the_log_and_gives_the_user_the_reason() {
        let cause = std::io::Error::other("No space left on device");
        let e = IngestError::failed_by("The local storage could not store this image.", cause);
        assert_eq!(e.to_string(), "The local storage could not store this image.", "the reason the image is killed with");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.chain(), "The local storage could not store this image.: No space left on device");
        assert_eq!(IngestError::failed("lost").chain(), "lost");
    }
}
