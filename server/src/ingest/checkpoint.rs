//! Durable step boundaries: what an interrupted import has completed ([`Checkpoint`]), how it
//! is verified before use, and where it is recorded ([`Journal`], the job row).

use super::*;

/// The last step an import completed durably, kept in its job row (`jobs.checkpoint`), so a job
/// interrupted by a stop or a crash resumes after it instead of redoing its work (the reliability
/// issue: docs/house-style.md's "nothing lost on failure"). The upload stays until the image is
/// published whatever the step, so a checkpoint whose output does not verify costs a redo, never
/// the image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub step: Step,
    /// The file to store: the converted output in `data/staging/`, or the upload itself when the
    /// image is kept as uploaded.
    pub output: PathBuf,
    pub output_size: u64,
    /// The output's inode and modification time when the step completed: a file replaced or
    /// written since (by anything going through the file system) is not trusted.
    pub stamp: Option<FileStamp>,
    pub disk_format: ImageFormat,
    pub uploaded_format: String,
    pub uploaded_size: u64,
    pub converted: bool,
    pub virtual_size: Option<u64>,
    pub sha256: String,
    pub findings: String,
    /// Known from `hashed` on.
    pub md5: Option<String>,
    pub sha512: Option<String>,
    /// The backend key, from `stored` on.
    pub key: Option<String>,
}

/// Identifies one version of a file: its inode and modification time (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub inode: u64,
    pub mtime_s: i64,
    pub mtime_ns: i64,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp { inode: meta.ino(), mtime_s: meta.mtime(), mtime_ns: meta.mtime_nsec() }
    }
}

/// The steps a [`Checkpoint`] records, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// The output is complete and durable (the converter fsyncs it; a kept upload already is).
    Prepared,
    /// Its MD5 and SHA-512 are known.
    Hashed,
    /// The backend holds it under `key`; what is left is recording the location and `active`.
    Stored,
}

impl Checkpoint {
    /// The records to publish, once the digests are known.
    pub(super) fn outcome(&self) -> (records::ActiveImage, Imported) {
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // A package kept whole is stored as the package: its image keeps the declared disk
        // format (the disk inside) and is declared by the package's container format.
        let record = records::ActiveImage {
            disk_format: self.disk_format.disk(),
            container_format: self.disk_format.package().map(Package::container),
            uploaded_format: self.uploaded_format.clone(),
            uploaded_size: to_i64(self.uploaded_size),
            size: to_i64(self.output_size),
            virtual_size: self.virtual_size.map(to_i64),
            sha256: self.sha256.clone(),
            md5: self.md5.clone().unwrap_or_default(),
            sha512: self.sha512.clone().unwrap_or_default(),
            findings: self.findings.clone(),
            location: self.output.display().to_string(),
        };
        let imported = Imported {
            uploaded_format: self.uploaded_format.clone(),
            uploaded_size: self.uploaded_size,
            disk_format: self.disk_format,
            converted: self.converted,
            size: self.output_size,
            virtual_size: self.virtual_size,
            sha256: self.sha256.clone(),
            extra_disks: Vec::new(),
            ovf: Vec::new(),
            min_ram: None,
        };
        (record, imported)
    }

    /// The `stored` checkpoint of an image whose bytes the backend now holds under `key`.
    pub(super) fn stored(record: &records::ActiveImage, imported: &Imported, key: &str) -> Self {
        Checkpoint {
            step: Step::Stored,
            output: PathBuf::from(&record.location),
            output_size: imported.size,
            stamp: None,
            disk_format: imported.disk_format,
            uploaded_format: imported.uploaded_format.clone(),
            uploaded_size: imported.uploaded_size,
            converted: imported.converted,
            virtual_size: imported.virtual_size,
            sha256: imported.sha256.clone(),
            findings: record.findings.clone(),
            md5: Some(record.md5.clone()),
            sha512: Some(record.sha512.clone()),
            key: Some(key.to_owned()),
        }
    }

    /// Whether the staged output is still the one this checkpoint describes: the same file
    /// (inode and modification time), of the recorded size, and accepted by the inspector as the
    /// recorded format and virtual size. Blocking.
    pub(super) fn output_verifies(&self) -> bool {
        let Ok(meta) = std::fs::metadata(&self.output) else { return false };
        if !meta.is_file() || meta.len() != self.output_size || self.stamp != Some(FileStamp::of(&meta)) {
            return false;
        }
        let Some(format) = declared_format(self.disk_format.as_str()) else { return false };
        let Ok(file) = SizedFile::open(&self.output) else { return false };
        let report = diskimage::inspect(&file, &InspectOptions { declared: Some(format), ..InspectOptions::default() });
        report.is_accepted() && report.virtual_size == self.virtual_size
    }
}

/// Where an import job keeps its [`Checkpoint`]s, and the one it resumes from. The default
/// keeps nothing (an import without a job: tests, callers that redo on failure).
#[derive(Clone, Debug, Default)]
pub struct Journal {
    job: Option<(records::Db, String)>,
    pub(super) resume: Option<Checkpoint>,
}

impl Journal {
    /// The journal of `job`: its checkpoint (if it completed a step before a stop) is where
    /// it resumes.
    pub fn for_job(db: &records::Db, job: &records::JobRow) -> Self {
        let resume = match job.checkpoint.as_str() {
            "" => None,
            text => serde_json::from_str(text)
                .inspect_err(|e| tracing::warn!(job = %job.id, error = %e, "a job's checkpoint is unreadable; it starts over"))
                .ok(),
        };
        Journal { job: Some((db.clone(), job.id.clone())), resume }
    }

    /// Records that the job completed `cp.step`. A failure to record is logged, not fatal: it
    /// costs a redo after a crash, nothing else.
    pub async fn save(&self, cp: &Checkpoint) {
        let Some((db, id)) = &self.job else { return };
        let text = match serde_json::to_string(cp) {
            Ok(t) => t,
            Err(e) => return tracing::warn!(job = %id, error = %e, "cannot encode a checkpoint"),
        };
        if let Err(e) = db.set_job_checkpoint(id, &text).await {
            tracing::warn!(job = %id, error = %e, "cannot record a checkpoint; a crash now would redo the step");
        }
    }

    /// [`Journal::save`] from the pipeline's blocking thread.
    pub(super) fn save_blocking(&self, cp: &Checkpoint) {
        if self.job.is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.block_on(self.save(cp));
        }
    }
}
