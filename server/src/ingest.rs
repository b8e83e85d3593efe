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

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use digests::Algorithm;
use diskimage::convert::{self, ConvertOptions, SourceFormat, TargetFormat};
use diskimage::{Format, InspectOptions, ReadAt, SizedFile};
use domain::{ImageStatus, LocationStatus};
use imageops::declared::Declared;

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
    /// filled up); the image is `killed` with this reason, and the data was not refused.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Db(#[from] records::DbError),
    #[error("ingest failed: {0}")]
    Io(String),
    /// The job was cancelled; the image is `killed` and nothing is kept.
    #[error("the import was cancelled")]
    Cancelled,
}

/// Progress and cancellation shared between a running import and its job.
#[derive(Debug, Default)]
pub struct JobControl {
    /// Bytes processed so far and the expected total (inspection, conversion, hashing).
    pub done: AtomicU64,
    pub total: AtomicU64,
    /// Set when the job is cancelled: the pipeline stops at its next step.
    pub cancel: AtomicBool,
    /// Set (with `cancel`) when the server is stopping: the pipeline stops the same way, but
    /// the image and its upload are left for the job to run again at the next start.
    pub stopping: AtomicBool,
    /// The current [`Stage`].
    stage: std::sync::Mutex<Stage>,
}

/// Fault injection for tests only (server/tests/it/faults.rs): with `HANGAR_TEST_HOLD_AT` naming a
/// stage, a job that reaches that stage stops there for good, so a test can kill the process
/// with SIGKILL at exactly that point and check that the next start loses nothing. Unset in
/// production, where this is one environment lookup per stage.
fn test_hold_at(stage: Stage) -> bool {
    std::env::var("HANGAR_TEST_HOLD_AT").is_ok_and(|s| s == stage.as_str())
}

/// What an import or copy is doing now; the job row carries it to the upload card and the
/// jobs page ("Converting… 40%" says more than "Verifying").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    #[default]
    Starting,
    Inspecting,
    Converting,
    Unpacking,
    Hashing,
    Downloading,
    Storing,
    /// The bytes are in the backend; recording where, and making the image active.
    Publishing,
}

impl Stage {
    /// The name stored in `jobs.stage` (see `app::api::upload::import_stage_line`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Inspecting => "inspecting",
            Stage::Converting => "converting",
            Stage::Unpacking => "unpacking",
            Stage::Hashing => "hashing",
            Stage::Downloading => "downloading",
            Stage::Storing => "storing",
            Stage::Publishing => "publishing",
        }
    }
}

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
    pub disk_format: String,
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
    fn outcome(&self) -> (records::ActiveImage, Imported) {
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let record = records::ActiveImage {
            disk_format: self.disk_format.clone(),
            container_format: None,
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
            disk_format: self.disk_format.clone(),
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
    fn stored(record: &records::ActiveImage, imported: &Imported, key: &str) -> Self {
        Checkpoint {
            step: Step::Stored,
            output: PathBuf::from(&record.location),
            output_size: imported.size,
            stamp: None,
            disk_format: imported.disk_format.clone(),
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
    fn output_verifies(&self) -> bool {
        let Ok(meta) = std::fs::metadata(&self.output) else { return false };
        if !meta.is_file() || meta.len() != self.output_size || self.stamp != Some(FileStamp::of(&meta)) {
            return false;
        }
        let Some(format) = declared_format(&self.disk_format) else { return false };
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
    resume: Option<Checkpoint>,
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
    fn save_blocking(&self, cp: &Checkpoint) {
        if self.job.is_none() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.block_on(self.save(cp));
        }
    }
}

impl JobControl {
    fn check(&self) -> Result<(), IngestError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(IngestError::Cancelled)
        } else {
            Ok(())
        }
    }
    /// Stops the job because the server is stopping: see [`JobControl::stopping`].
    pub fn stop_for_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.cancel.store(true, Ordering::Relaxed);
    }
    /// Whether the job was stopped by a shutdown (and is to run again), not cancelled.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
    fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }
    /// Enters `stage` (the job's progress writer picks it up). Called on blocking threads (the
    /// pipeline's steps); async code uses [`JobControl::enter`].
    pub fn set_stage(&self, stage: Stage) {
        // A poisoned lock still holds a valid Stage.
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stage;
        if test_hold_at(stage) {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    /// Enters `stage` from async code (storing, publishing).
    pub async fn enter(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stage;
        if test_hold_at(stage) {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    pub fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    /// Progress for a conversion or extraction: feeds `done`, and stops it mid-way (its
    /// output deleted) once the job is cancelled.
    fn progress(&self) -> convert::Cancellable<'_, impl FnMut(u64, u64) + '_> {
        convert::Cancellable::new(move |bytes_in: u64, _out: u64| self.set_done(bytes_in), &self.cancel)
    }
    /// A conversion error as the import's outcome: cancelled, failed (the operating system
    /// refused a read or write: a full disk, an I/O error; the data is not to blame) or refused
    /// (anything the data caused, a corrupt compressed member included), with `say(e)`.
    fn refusal(&self, e: convert::Error, say: impl FnOnce(convert::Error) -> String) -> IngestError {
        let os_error =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()).is_some_and(|io| io.raw_os_error().is_some());
        match e.kind() {
            convert::ErrorKind::Cancelled => IngestError::Cancelled,
            convert::ErrorKind::Io if os_error => IngestError::Failed(say(e)),
            _ => IngestError::Refused(say(e)),
        }
    }
}

/// What the matrix says to do with one format on the target backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    Convert(TargetFormat),
    Refuse(String),
}

/// The matrix row for one backend kind, by format.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub backend_kind: String,
    pub cells: HashMap<String, records::PolicyCell>,
}

impl Rules {
    /// Loads the matrix column for `backend_kind`.
    pub async fn load(db: &records::Db, backend_kind: &str) -> Result<Self, records::DbError> {
        let cells =
            db.storage_policy().await?.into_iter().filter(|c| c.backend_kind == backend_kind).map(|c| (c.format.clone(), c)).collect();
        Ok(Rules { backend_kind: backend_kind.to_owned(), cells })
    }

    /// What to do with an image whose matrix row is `key` (`qcow2`, `ami`, `ova`, …).
    pub fn plan(&self, key: &str) -> Plan {
        let kind = match self.backend_kind.as_str() {
            "nfs" => "NFS-backed",
            "ceph" => "Ceph-backed",
            _ => "local",
        };
        match self.cells.get(key) {
            None => Plan::Refuse(format!("The {kind} storage has no rule for {key} images, so it does not accept them.")),
            Some(c) => match (c.action.as_str(), c.target_format.as_deref()) {
                ("native" | "extract", _) => Plan::Keep,
                ("convert", Some("raw")) => Plan::Convert(TargetFormat::Raw),
                ("convert", Some("qcow2")) => Plan::Convert(TargetFormat::Qcow2),
                _ => Plan::Refuse(format!("The {kind} storage does not accept {key} images: {}", c.reason)),
            },
        }
    }
}

/// The matrix row of an inspected image: the declared AMI/AKI/ARI name when the bytes agree,
/// otherwise the detected format's Glance name.
pub fn matrix_key(declared: Option<&str>, detected: Format) -> String {
    match (declared, detected) {
        (Some("ami"), Format::Raw) => "ami".to_owned(),
        (_, Format::Ova) => "ova".to_owned(),
        (_, Format::Uec) => "uec".to_owned(),
        _ => detected.glance_disk_format().unwrap_or(detected.as_str()).to_owned(),
    }
}

/// Which digests an upload of `image_id` needs while its bytes arrive, for a backend of
/// `backend_kind`. MD5 and SHA-512 of the uploaded bytes are kept only for an image stored as
/// uploaded; one declared in a format the backend converts, or a package that is unpacked, gets
/// them computed over what is stored, and one refused has no use for them: hashing them during
/// the upload would only slow it down. Anything unclear (no image, no declared format, the
/// database failing) keeps all three; a wrong guess costs time, never a digest (the pipeline
/// computes what it is not given).
pub async fn upload_hashes(db: &records::Db, image_id: &str, backend_kind: &str) -> uploads::UploadHashes {
    use uploads::UploadHashes::{All, Sha256};
    let Ok(Some(image)) = db.image(image_id).await else { return All };
    let Some(declared) = imageops::declared::declared(image.disk_format.as_deref(), image.container_format.as_deref()).inspect_as() else {
        return All;
    };
    let Some(format) = declared_format(declared) else { return All };
    let Ok(rules) = Rules::load(db, backend_kind).await else { return All };
    let key = matrix_key(Some(declared), format);
    let unpacked = matches!(format, Format::Ova | Format::Uec) && rules.cells.get(&key).is_some_and(|c| c.action == "extract");
    match rules.plan(&key) {
        Plan::Keep if !unpacked => All,
        _ => Sha256,
    }
}

/// Free bytes on the file system holding `dir` (None if it cannot be asked).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What a conversion may write beyond the data itself: qcow2 tables and headers are well under
/// 1% of the data (an L2 entry of 8 bytes per 64 KiB cluster, refcounts of 2 bytes), plus room
/// for the few fixed clusters.
const CONVERSION_SLACK: uploads::RoomAfter = uploads::RoomAfter { per_mille: 1010, fixed: 4 << 20 };

/// The room an import of an image declared as `declared` (`Declared::inspect_as`: the package,
/// or else the disk format) will need in staging next to its
/// upload, known before any byte arrives: the matrix's plan for the declared format converts
/// or unpacks it (the output is at most the upload's size plus [`CONVERSION_SLACK`]; a conversion
/// to raw grows a sparse image to its virtual size, which only inspection knows: the import
/// checks that before converting, [`output_room`]), or keeps it (no room). An undeclared or
/// unknown format reserves nothing here.
pub fn room_after_upload(rules: &Rules, declared: Option<&str>) -> uploads::RoomAfter {
    let Some(declared) = declared else { return uploads::RoomAfter::default() };
    let Some(format) = declared_format(declared) else { return uploads::RoomAfter::default() };
    let key = matrix_key(Some(declared), format);
    let unpacked = matches!(format, Format::Ova | Format::Uec) && rules.cells.get(&key).is_some_and(|c| c.action == "extract");
    match rules.plan(&key) {
        Plan::Convert(_) => CONVERSION_SLACK,
        Plan::Keep if unpacked => CONVERSION_SLACK,
        _ => uploads::RoomAfter::default(),
    }
}

/// The most a conversion to `to` of an inspected image writes: raw is the whole virtual disk
/// (holes cost nothing on most file systems, but a file system without them, or a later copy,
/// needs it all); qcow2 holds at most the data, which is no more than the upload.
pub fn output_room(to: TargetFormat, virtual_size: Option<u64>, uploaded_size: u64) -> u64 {
    match to {
        TargetFormat::Raw => virtual_size.unwrap_or(uploaded_size),
        TargetFormat::Qcow2 => CONVERSION_SLACK.for_length(virtual_size.unwrap_or(uploaded_size).min(uploaded_size)),
    }
}

/// What the pipeline produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub uploaded_format: String,
    pub uploaded_size: u64,
    pub disk_format: String,
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
    pub disk_format: String,
    pub container_format: String,
    pub virtual_size: u64,
    /// OVA: the OVF disk id. UEC: the member's name.
    pub disk_id: String,
    /// UEC: the property of the first image that links to this one (`kernel_id`, `ramdisk_id`).
    pub link: Option<String>,
}

/// Glance's disk_format names → the inspector's formats (`ami` images are raw filesystems).
pub fn declared_format(disk_format: &str) -> Option<Format> {
    match disk_format {
        "ami" => Some(Format::Raw),
        other => other.parse().ok(),
    }
}

/// The converter's name for a detected format, if Hangar can convert it.
fn source_format(format: Format) -> Option<SourceFormat> {
    match format {
        Format::Raw => Some(SourceFormat::Raw),
        Format::Qcow2 => Some(SourceFormat::Qcow2),
        Format::Vdi => Some(SourceFormat::Vdi),
        Format::Vhd => Some(SourceFormat::Vhd),
        Format::Vhdx => Some(SourceFormat::Vhdx),
        Format::Vmdk => Some(SourceFormat::Vmdk),
        _ => None,
    }
}

/// Hashes of one file, in one read, one thread per digest: (sha256 if wanted, md5, sha512).
fn hash_file(path: &Path, want_sha256: bool, ctl: &JobControl, base: u64) -> std::io::Result<(Option<String>, String, String)> {
    ctl.set_stage(Stage::Hashing);
    let mut f = File::open(path)?;
    let algos: &[Algorithm] =
        if want_sha256 { &[Algorithm::Md5, Algorithm::Sha512, Algorithm::Sha256] } else { &[Algorithm::Md5, Algorithm::Sha512] };
    let mut d = digests::hash_parallel(&mut f, algos, |read| {
        if ctl.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"));
        }
        ctl.set_done(base + read);
        Ok(())
    })?
    .into_iter();
    let mut next = || d.next().ok_or_else(|| std::io::Error::other("a digest is missing"));
    let (md5, sha512) = (next()?, next()?);
    let sha256 = if want_sha256 { Some(next()?) } else { None };
    Ok((sha256, md5, sha512))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut d = digests::hash_parallel(&mut f, &[Algorithm::Sha256], |_| Ok(()))?;
    d.pop().ok_or_else(|| std::io::Error::other("the SHA-256 digest is missing"))
}

/// The blocking part: inspect, convert or keep, hash, publish. Returns the record to store.
fn process(
    up: &ReceivedData,
    declared: Declared<'_>,
    images_dir: &Path,
    rules: &Rules,
    ctl: &JobControl,
    journal: &Journal,
) -> Result<(records::ActiveImage, Imported), IngestError> {
    let io = |what: &str, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::Interrupted && ctl.cancel.load(Ordering::Relaxed) {
            IngestError::Cancelled
        } else {
            IngestError::Io(format!("{what}: {e}"))
        }
    };
    // A package is inspected as the package (`imageops::declared`); the disk format then names
    // the disk inside, checked once the package is unpacked.
    let disk_format = declared.inspect_as();
    let inspect_as = match disk_format {
        Some(d) => Some(declared_format(d).ok_or_else(|| IngestError::Refused(format!("Hangar does not accept disk_format '{d}'.")))?),
        None => None,
    };
    ctl.set_stage(Stage::Inspecting);
    let opts = InspectOptions { declared: inspect_as, file_name: up.file_name.clone(), ..InspectOptions::default() };
    let src = SizedFile::open(&up.path).map_err(|e| io("open upload", e))?;
    let report = diskimage::inspect(&src, &opts);
    let findings = serde_json::to_string(&report.findings).unwrap_or_else(|_| "[]".into());
    if !report.is_accepted() {
        let reason =
            report.errors().map(|f| f.message.clone()).next().unwrap_or_else(|| "The image was refused by the inspector.".to_owned());
        return Err(IngestError::Refused(reason));
    }
    let uploaded_size = src.size();
    drop(src);
    let plan = rules.plan(&matrix_key(disk_format, report.format));
    if let Plan::Refuse(reason) = &plan {
        return Err(IngestError::Refused(reason.clone()));
    }
    // An OVA whose cell says `extract`: unpack it; its disks (VMDK) follow the VMDK row.
    let extract_ova = report.format == Format::Ova && rules.cells.get("ova").is_some_and(|c| c.action == "extract");
    if extract_ova {
        return extract_package(up, declared, images_dir, rules, ctl, &report, findings, uploaded_size);
    }
    if report.format == Format::Uec && rules.cells.get("uec").is_some_and(|c| c.action == "extract") {
        return extract_uec_package(up, declared, images_dir, rules, ctl, &report, findings, uploaded_size);
    }
    let converting = matches!(plan, Plan::Convert(_));
    // Conversion reads the upload once and hashing reads the output once.
    ctl.total.store(if converting { uploaded_size.saturating_mul(2) } else { uploaded_size }, Ordering::Relaxed);
    ctl.check()?;
    std::fs::create_dir_all(images_dir).map_err(|e| io("create images dir", e))?;

    // A conversion that cannot fit is refused now, with the numbers, not by a full disk mid-way.
    if let Plan::Convert(to) = &plan {
        let need = output_room(*to, report.virtual_size, uploaded_size);
        if let Some(free) = free_bytes(images_dir).filter(|free| *free < need) {
            return Err(IngestError::Refused(format!(
                "Converting this image needs up to {need} bytes of free space on the server and {free} are free; \
                 nothing was kept. Ask an administrator to make room, then upload it again."
            )));
        }
    }
    let sha256 = match &up.sha256 {
        Some(h) => h.clone(),
        None => sha256_file(&up.path).map_err(|e| io("hash upload", e))?,
    };
    let (final_path, disk_format, converted, virtual_size) = match plan {
        Plan::Convert(to) => {
            let from = source_format(report.format)
                .ok_or_else(|| IngestError::Refused(format!("Hangar cannot convert {} images.", report.format.as_str())))?;
            let ext = match to {
                TargetFormat::Qcow2 => "qcow2",
                TargetFormat::Raw => "raw",
            };
            let out = images_dir.join(format!("{}.{ext}", up.image_id));
            let file = File::open(&up.path).map_err(|e| io("open upload", e))?;
            let accepted = convert::inspect_for_conversion(&file, Some(from), up.file_name.as_deref())
                .map_err(|e| IngestError::Refused(e.to_string()))?;
            ctl.set_stage(Stage::Converting);
            let summary =
                convert::convert_accepted(&file, &accepted, &out, &ConvertOptions { to, ..ConvertOptions::default() }, &mut ctl.progress())
                    .map_err(|e| ctl.refusal(e, |e| format!("Conversion to {ext} failed: {e}")))?;
            drop(file);
            if let Err(e) = ctl.check() {
                let _ = std::fs::remove_file(&out);
                return Err(e);
            }
            // The upload stays until the image is published (ingest_with): a stop before that
            // redoes the job from it.
            (out, ext.to_owned(), true, Some(summary.virtual_size))
        }
        Plan::Refuse(reason) => return Err(IngestError::Refused(reason)),
        Plan::Keep => {
            let ext = report.format.as_str();
            // Published as it is: the backend's put moves it into place (fsync + rename +
            // directory fsync on file backends, a multipart upload on Ceph).
            let out = up.path.clone();
            let glance = match (disk_format, report.format) {
                (Some("ami"), Format::Raw) => "ami".to_owned(),
                _ => report.format.glance_disk_format().unwrap_or(ext).to_owned(),
            };
            (out, glance, false, report.virtual_size)
        }
    };
    let meta = std::fs::metadata(&final_path).map_err(|e| io("stat stored image", e))?;
    let cp = Checkpoint {
        step: Step::Prepared,
        output: final_path,
        output_size: meta.len(),
        stamp: Some(FileStamp::of(&meta)),
        disk_format,
        uploaded_format: report.format.as_str().to_owned(),
        uploaded_size,
        converted,
        virtual_size,
        sha256,
        findings,
        md5: None,
        sha512: None,
        key: None,
    };
    journal.save_blocking(&cp);
    finish_prepared(cp, up, ctl, journal)
}

/// From a `prepared` (or `hashed`) checkpoint to the records to publish: the stored bytes'
/// MD5 and SHA-512 (the upload's when it is stored unchanged), then the `hashed` checkpoint.
/// The output stays on error: the caller decides whether a job will resume from it.
fn finish_prepared(
    mut cp: Checkpoint,
    up: &ReceivedData,
    ctl: &JobControl,
    journal: &Journal,
) -> Result<(records::ActiveImage, Imported), IngestError> {
    if cp.step == Step::Prepared {
        let (md5, sha512) = match (&up.md5, &up.sha512, cp.converted) {
            (Some(m), Some(s), false) => (m.clone(), s.clone()),
            _ => match hash_file(&cp.output, false, ctl, cp.uploaded_size) {
                Ok((_, m, s)) => (m, s),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && ctl.cancel.load(Ordering::Relaxed) => {
                    return Err(IngestError::Cancelled)
                }
                Err(e) => return Err(IngestError::Io(format!("hash stored image: {e}"))),
            },
        };
        cp.md5 = Some(md5);
        cp.sha512 = Some(sha512);
        cp.step = Step::Hashed;
        journal.save_blocking(&cp);
    }
    Ok(cp.outcome())
}

/// Prepares to unpack a package: a fresh output directory in staging, the upload's SHA-256, and
/// the upload opened for reading.
fn open_package(
    up: &ReceivedData,
    staging: &Path,
    kind: &str,
    ctl: &JobControl,
    uploaded_size: u64,
) -> Result<(PathBuf, String, File), IngestError> {
    let outdir = staging.join(format!("{}.{kind}.d", up.image_id));
    let _ = std::fs::remove_dir_all(&outdir);
    std::fs::create_dir_all(staging).map_err(|e| IngestError::Io(format!("create staging dir: {e}")))?;
    ctl.total.store(uploaded_size.saturating_mul(2), Ordering::Relaxed);
    let sha256 = match &up.sha256 {
        Some(h) => h.clone(),
        None => sha256_file(&up.path).map_err(|e| IngestError::Io(format!("hash upload: {e}")))?,
    };
    let input = File::open(&up.path).map_err(|e| IngestError::Io(format!("open upload: {e}")))?;
    ctl.set_stage(Stage::Unpacking);
    Ok((outdir, sha256, input))
}

/// Unpacks an OVA (docs/formats.md §2.5 #19–20 enforced by the extractor: members by stream, no
/// names from the package used as paths, manifest digests checked) into the staging directory.
/// The first disk becomes this image; the others are returned to become images of their own.
#[allow(clippy::too_many_arguments)]
fn extract_package(
    up: &ReceivedData,
    declared: Declared<'_>,
    staging: &Path,
    rules: &Rules,
    ctl: &JobControl,
    report: &diskimage::Report,
    findings: String,
    uploaded_size: u64,
) -> Result<(records::ActiveImage, Imported), IngestError> {
    // All disks are written in one target format, the VMDK row's (most packages hold only
    // VMDK disks); raw disks (oVirt exports) are checked against the raw row after unpacking.
    let to = match rules.plan("vmdk") {
        Plan::Convert(t) => t,
        // VMDK kept native: the package's disks are streamOptimized, which hypervisors cannot
        // use as is, so they become qcow2 anyway.
        Plan::Keep => TargetFormat::Qcow2,
        Plan::Refuse(reason) => return Err(IngestError::Refused(format!("This OVA's disks are VMDK. {reason}"))),
    };
    let ext = match to {
        TargetFormat::Qcow2 => "qcow2",
        TargetFormat::Raw => "raw",
    };
    let (outdir, sha256, mut input) = open_package(up, staging, "ova", ctl, uploaded_size)?;
    let ova = convert::ova::extract_ova(&mut input, &outdir, &ConvertOptions { to, ..ConvertOptions::default() }, &mut ctl.progress())
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&outdir);
            ctl.refusal(e, |e| format!("The OVA could not be unpacked: {e}"))
        })?;
    drop(input);
    let fail = |e: IngestError| {
        let _ = std::fs::remove_dir_all(&outdir);
        e
    };
    ctl.check().map_err(fail)?;
    for d in &ova.disks {
        let kind = d.source_format.as_str();
        if let Plan::Refuse(reason) = rules.plan(kind) {
            return Err(fail(IngestError::Refused(format!("Disk {} of this OVA is {kind}. {reason}", d.disk_id))));
        }
    }
    let certificate = ova.unverified_certificate.clone();
    let mut disks = ova.disks.into_iter();
    let Some(first) = disks.next() else {
        return Err(fail(IngestError::Refused("The OVA holds no disk.".into())));
    };
    // The disk format declares the disk that becomes this image (Glance's convention).
    declared.check_inner(first.source_format.as_str()).map_err(|why| fail(IngestError::Refused(why)))?;
    let extra_disks = disks
        .map(|d| ExtraDisk {
            path: d.path,
            disk_format: ext.to_owned(),
            container_format: "bare".into(),
            virtual_size: d.virtual_size,
            disk_id: d.disk_id,
            link: None,
        })
        .collect();
    let mut facts =
        vec![("ovf_disk_id".to_owned(), first.disk_id.clone()), ("ovf_disk_format".to_owned(), first.source_format.as_str().to_owned())];
    let o = &ova.ovf;
    if let Some(v) = &o.name {
        facts.push(("ovf_name".into(), v.clone()));
    }
    if let Some(v) = &o.os_type {
        facts.push(("ovf_os_type".into(), v.clone()));
    }
    if let Some(v) = o.cpus {
        facts.push(("ovf_cpus".into(), v.to_string()));
    }
    if let Some(v) = o.memory_mib {
        facts.push(("ovf_memory_mib".into(), v.to_string()));
    }
    facts.push(("ovf_manifest_verified".into(), ova.manifest_verified.to_string()));
    if let Some(name) = certificate {
        // Signatures are not checked (no trust store): say so rather than stay silent.
        facts.push(("ovf_certificate".into(), format!("{name}: present, signature not verified")));
    }
    let primary = Primary {
        what: "disk",
        path: &first.path,
        disk_format: ext.to_owned(),
        virtual_size: first.virtual_size,
        uploaded_format: "ova",
        extra_disks,
        facts,
        min_ram: o.memory_mib,
    };
    primary.publish(report, findings, uploaded_size, sha256, ctl).map_err(fail)
}

/// The disk a package import makes this image (the OVA's first disk, the UEC's AMI), already
/// unpacked in staging, with what the package said about it and its other disks.
struct Primary<'a> {
    /// Name in error messages ("disk", "AMI").
    what: &'static str,
    path: &'a Path,
    disk_format: String,
    virtual_size: u64,
    uploaded_format: &'static str,
    extra_disks: Vec<ExtraDisk>,
    facts: Vec<(String, String)>,
    min_ram: Option<u64>,
}

impl Primary<'_> {
    /// Hashes and measures the disk and returns the record to store. The upload stays until
    /// the image is published (ingest_with). The caller removes staging on error.
    fn publish(
        self,
        report: &diskimage::Report,
        findings: String,
        uploaded_size: u64,
        sha256: String,
        ctl: &JobControl,
    ) -> Result<(records::ActiveImage, Imported), IngestError> {
        let what = self.what;
        let (_, md5, sha512) = hash_file(self.path, false, ctl, uploaded_size).map_err(|e| IngestError::Io(format!("hash {what}: {e}")))?;
        let size = std::fs::metadata(self.path).map_err(|e| IngestError::Io(format!("stat {what}: {e}")))?.len();
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // Unpacked, the disk is no longer in its package: `bare` (a UEC's machine image `ami`).
        let container = if self.uploaded_format == "uec" && self.disk_format == "ami" { "ami" } else { "bare" };
        let record = records::ActiveImage {
            disk_format: self.disk_format.clone(),
            container_format: Some(container.to_owned()),
            uploaded_format: report.format.as_str().to_owned(),
            uploaded_size: to_i64(uploaded_size),
            size: to_i64(size),
            virtual_size: Some(to_i64(self.virtual_size)),
            sha256: sha256.clone(),
            md5,
            sha512,
            findings,
            location: self.path.display().to_string(),
        };
        let imported = Imported {
            uploaded_format: self.uploaded_format.into(),
            uploaded_size,
            disk_format: self.disk_format,
            converted: true,
            size,
            virtual_size: Some(self.virtual_size),
            sha256,
            extra_disks: self.extra_disks,
            ovf: self.facts,
            min_ram: self.min_ram,
        };
        Ok((record, imported))
    }
}

/// Unpacks a UEC tarball (bounded gunzip; each member validated by the extractor): the AMI
/// becomes this image, the kernel (AKI) and ramdisk (ARI) images of their own, linked from the
/// AMI by `kernel_id` / `ramdisk_id` as Glance does.
#[allow(clippy::too_many_arguments)]
fn extract_uec_package(
    up: &ReceivedData,
    declared: Declared<'_>,
    staging: &Path,
    rules: &Rules,
    ctl: &JobControl,
    report: &diskimage::Report,
    findings: String,
    uploaded_size: u64,
) -> Result<(records::ActiveImage, Imported), IngestError> {
    // The machine image in a UEC tarball is a raw file system: declared `ami` (or not at all).
    declared.check_inner("raw").map_err(IngestError::Refused)?;
    for part in ["ami", "aki", "ari"] {
        if let Plan::Refuse(reason) = rules.plan(part) {
            return Err(IngestError::Refused(format!("This UEC tarball holds {part} images. {reason}")));
        }
    }
    let (outdir, sha256, mut input) = open_package(up, staging, "uec", ctl, uploaded_size)?;
    let uec = convert::uec::extract_uec(&mut input, &outdir, convert::uec::UecLimits::default(), &mut ctl.progress()).map_err(|e| {
        let _ = std::fs::remove_dir_all(&outdir);
        ctl.refusal(e, |e| format!("The UEC tarball could not be unpacked: {e}"))
    })?;
    drop(input);
    let fail = |e: IngestError| {
        let _ = std::fs::remove_dir_all(&outdir);
        e
    };
    ctl.check().map_err(fail)?;
    let Some(ami) = uec.parts.iter().find(|p| p.role == convert::uec::UecRole::Ami) else {
        return Err(fail(IngestError::Refused("The UEC tarball holds no machine image (AMI).".into())));
    };
    // The AMI follows its row: kept as raw bytes, or converted.
    let (path, disk_format, virtual_size) = match rules.plan("ami") {
        Plan::Convert(to) => {
            let ext = if to == TargetFormat::Raw { "raw" } else { "qcow2" };
            let out = outdir.join(format!("ami.{ext}"));
            let vsize = convert_copy(&ami.path, "raw", to, &out, ctl).map_err(|e| fail(IngestError::Refused(e)))?;
            (out, ext.to_owned(), vsize)
        }
        _ => (ami.path.clone(), "ami".to_owned(), ami.size),
    };
    let extra_disks = uec
        .parts
        .iter()
        .filter_map(|p| {
            let (fmt, link) = match p.role {
                convert::uec::UecRole::Aki => ("aki", "kernel_id"),
                convert::uec::UecRole::Ari => ("ari", "ramdisk_id"),
                convert::uec::UecRole::Ami => return None,
            };
            Some(ExtraDisk {
                path: p.path.clone(),
                disk_format: fmt.into(),
                container_format: fmt.into(),
                virtual_size: p.size,
                disk_id: p.member.clone(),
                link: Some(link.into()),
            })
        })
        .collect();
    let primary = Primary {
        what: "AMI",
        path: &path,
        disk_format,
        virtual_size,
        uploaded_format: "uec",
        extra_disks,
        facts: vec![("uec_ami_member".to_owned(), ami.member.clone())],
        min_ram: None,
    };
    primary.publish(report, findings, uploaded_size, sha256, ctl).map_err(fail)
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
    .map_err(|e| IngestError::Io(e.to_string()))?;
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
        return Err(IngestError::Io(reason.to_owned()));
    }
    tracing::info!(image = %image.id, path = %up.path.display(), "ingest: inspecting");
    let images_dir = data_dir.join("staging");
    let (disk_format, container_format) = (image.disk_format.clone(), image.container_format.clone());
    let resume = resume_point(&journal, &up, store).await;
    let already_stored = resume.as_ref().is_some_and(|cp| cp.step == Step::Stored);
    let (up2, rules2, ctl2, journal2, staging2) = (up.clone(), rules.clone(), ctl.clone(), journal.clone(), images_dir.clone());
    let result = match resume {
        Some(cp) if cp.step == Step::Stored => Ok(cp.outcome()),
        Some(cp) => tokio::task::spawn_blocking(move || finish_prepared(cp, &up2, &ctl2, &journal2))
            .await
            .map_err(|e| IngestError::Io(format!("ingest task: {e}")))?,
        None => tokio::task::spawn_blocking(move || {
            let declared = imageops::declared::declared(disk_format.as_deref(), container_format.as_deref());
            process(&up2, declared, &staging2, &rules2, &ctl2, &journal2)
        })
        .await
        .map_err(|e| IngestError::Io(format!("ingest task: {e}")))?,
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
            let ext = if imported.disk_format == "ami" { "raw" } else { imported.disk_format.as_str() };
            let key = format!("{}.{ext}", image.id);
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
                return Err(IngestError::Io(reason));
            }
            ctl.enter(Stage::Publishing).await;
            record.location = store.local_path(&key).map_or_else(|| format!("{backend}:{key}"), |p| p.display().to_string());
            let location = records::LocationRow {
                image_id: image.id.clone(),
                backend: backend.to_owned(),
                key: key.clone(),
                disk_format: record.disk_format.clone(),
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
                IngestError::Refused(r) | IngestError::OverQuota(r) | IngestError::Failed(r) => r.clone(),
                IngestError::Cancelled => "The import was cancelled; nothing was kept.".to_owned(),
                _ => "Hangar could not store this image; the upload was discarded. Try again.".to_owned(),
            };
            tracing::warn!(image = %image.id, error = %err, "ingest: image refused or failed");
            db.kill_image(&image.id, &reason, "[]").await?;
            Err(err)
        }
    }
}

/// After an OVA's first disk became the image: record the OVF's facts as properties, and turn
/// every further disk into an active image of its own (same project and visibility, linked by
/// the `ova_parent` property). Failures here are logged; the first image stays active.
async fn finish_package(
    db: &records::Db,
    image: &records::ImageRow,
    up: &ReceivedData,
    store: &std::sync::Arc<dyn storage::Backend>,
    imported: &Imported,
) {
    let mut links: Vec<(String, String)> = Vec::new();
    // Why a disk did not become an image (a quota, the store), told on the first image: a
    // refused disk the quota kept from being recorded would otherwise go unnoticed.
    let mut not_kept: Vec<String> = Vec::new();
    for (n, disk) in imported.extra_disks.iter().enumerate() {
        match extra_disk_image(db, image, up, store, imported, n + 2, disk).await {
            Ok(id) => {
                if let Some(link) = &disk.link {
                    links.push((link.clone(), id));
                }
            }
            Err(err) => {
                tracing::warn!(image = %image.id, disk = %disk.disk_id, error = %err, "a package's disk did not become an image");
                not_kept.push(format!("{}: {err}", disk.disk_id));
            }
        }
        let _ = std::fs::remove_file(&disk.path);
    }
    if let Ok(Some(d)) = db.image_detail(&image.id).await {
        let mut props = d.property_map();
        props.extend(imported.ovf.iter().cloned());
        props.extend(links);
        if !not_kept.is_empty() {
            let mut note = not_kept.join("; ");
            if note.len() > 4000 {
                let cut = (0..=3996).rev().find(|i| note.is_char_boundary(*i)).unwrap_or(0);
                note.truncate(cut);
                note.push('…');
            }
            props.insert(imageops::NOT_KEPT.to_owned(), note);
        }
        let patch = records::ImagePatch {
            properties: Some(props),
            min_ram: imported.min_ram.and_then(|m| i64::try_from(m).ok()).filter(|m| *m > d.min_ram),
            ..Default::default()
        };
        if let Err(err) = db.update_image(&image.id, &patch).await {
            tracing::warn!(image = %image.id, error = %err, "cannot record the package's facts");
        }
    }
}

async fn extra_disk_image(
    db: &records::Db,
    parent: &records::ImageRow,
    up: &ReceivedData,
    store: &std::sync::Arc<dyn storage::Backend>,
    imported: &Imported,
    number: usize,
    disk: &ExtraDisk,
) -> Result<String, String> {
    let what = match disk.disk_format.as_str() {
        "aki" => "kernel".to_owned(),
        "ari" => "ramdisk".to_owned(),
        _ => format!("disk {number}"),
    };
    let name = if parent.name.is_empty() { what } else { format!("{} ({what})", parent.name) };
    let parent_key = if imported.uploaded_format == "uec" { "uec_parent" } else { "ova_parent" };
    let props = if imported.uploaded_format == "uec" {
        serde_json::json!({ parent_key: parent.id, "uec_member": disk.disk_id })
    } else {
        serde_json::json!({ parent_key: parent.id, "ovf_disk_id": disk.disk_id })
    }
    .to_string();
    let new = records::NewImage {
        name,
        disk_format: Some(disk.disk_format.clone()),
        container_format: Some(disk.container_format.clone()),
        visibility: Some(parent.visibility),
        owner: parent.owner.clone(),
        properties: props,
        created_by: Some(up.user_id.clone()),
        // Each disk a package adds is an image of its project like any other: the image-count
        // quota applies (checked by the insert), and its bytes are held before they are stored.
        max_images: match &parent.owner {
            Some(owner) => db.quota(owner).await.map_err(|e| e.to_string())?.max_images,
            None => None,
        },
        ..Default::default()
    };
    let row = db.create_image(&new).await.map_err(|e| match e {
        records::DbError::ImageQuota { max } => format!("the project's quota of {max} images is reached; this disk was not kept"),
        e => e.to_string(),
    })?;
    // Once recorded, the image ends active or killed with the reason, and nothing it stored
    // stays behind when it is killed.
    let key = format!("{}.{}", row.id, disk.disk_format);
    match keep_extra_disk(db, parent, store, imported, disk, &row.id, &key).await {
        Ok(()) => Ok(row.id),
        Err(reason) => {
            let _ = store.delete(&key).await;
            let _ = db.remove_location(&row.id, store.name()).await;
            let _ = db.kill_image(&row.id, &reason, "[]").await;
            Err(reason)
        }
    }
}

/// Stores a package's extra disk as image `id` (already recorded, `queued`): its bytes held
/// against the quota, hashed, stored under `key`, located and activated. The error is the
/// reason the image is killed with.
async fn keep_extra_disk(
    db: &records::Db,
    parent: &records::ImageRow,
    store: &std::sync::Arc<dyn storage::Backend>,
    imported: &Imported,
    disk: &ExtraDisk,
    id: &str,
    key: &str,
) -> Result<(), String> {
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("Hangar could not {what} for this disk of the package ({e}).");
    if !db.transition_image(id, &[ImageStatus::Queued], ImageStatus::Importing, "").await.map_err(|e| failed("record the import", &e))? {
        return Err("The image changed state before its disk was stored.".to_owned());
    }
    let disk_size = std::fs::metadata(&disk.path).map(|m| m.len()).unwrap_or(0);
    match db.hold_quota(parent.owner.as_deref().unwrap_or(""), id, "import", disk_size, false).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(format!("This disk of the package ({disk_size} bytes) was not kept: {why}.")),
        Err(e) => return Err(failed("check the quota", &e)),
    }
    let path = disk.path.clone();
    let (md5, sha512) = tokio::task::spawn_blocking(move || checksums(&path, &JobControl::default()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| failed("read the unpacked disk", &e))?;
    let size = store
        .put_file(key, &disk.path, storage::PutMode::Move, &|_| {})
        .await
        .map_err(|e| format!("The {} storage could not store this disk: {e}", store.name()))?;
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    db.put_location(&records::LocationRow {
        image_id: id.to_owned(),
        backend: store.name().to_owned(),
        key: key.to_owned(),
        disk_format: disk.disk_format.clone(),
        size: to_i64(size),
        checksum: Some(md5.clone()),
        os_hash_value: Some(sha512.clone()),
        status: LocationStatus::Active,
        created_at: String::new(),
    })
    .await
    .map_err(|e| failed("record where the disk is stored", &e))?;
    let record = records::ActiveImage {
        disk_format: disk.disk_format.clone(),
        container_format: None,
        uploaded_format: imported.uploaded_format.clone(),
        uploaded_size: to_i64(imported.uploaded_size),
        size: to_i64(size),
        virtual_size: Some(to_i64(disk.virtual_size)),
        sha256: imported.sha256.clone(),
        md5,
        sha512,
        findings: "[]".into(),
        location: store.local_path(key).map_or_else(|| format!("{}:{key}", store.name()), |p| p.display().to_string()),
    };
    if !db.activate_image(id, &record).await.map_err(|e| failed("activate the image", &e))? {
        return Err("The image changed state before it became active.".to_owned());
    }
    Ok(())
}

/// Converts one of Hangar's own stored copies (already accepted at import) for another backend:
/// the converter's gate inspects it again all the same. Returns the virtual size.
pub fn convert_copy(src: &Path, from_disk_format: &str, to: TargetFormat, out: &Path, ctl: &JobControl) -> Result<u64, String> {
    let from = declared_format(from_disk_format)
        .and_then(source_format)
        .ok_or_else(|| format!("Hangar cannot convert {from_disk_format} images."))?;
    let file = File::open(src).map_err(|e| format!("cannot open the source copy: {e}"))?;
    let accepted = convert::inspect_for_conversion(&file, Some(from), None).map_err(|e| e.to_string())?;
    ctl.set_stage(Stage::Converting);
    let summary =
        convert::convert_accepted(&file, &accepted, out, &ConvertOptions { to, ..ConvertOptions::default() }, &mut ctl.progress())
            .map_err(|e| {
                if e.kind() == convert::ErrorKind::Cancelled {
                    "Cancelled; nothing was kept.".to_owned()
                } else {
                    format!("conversion failed: {e}")
                }
            })?;
    Ok(summary.virtual_size)
}

/// Glance's MD5 `checksum` and SHA-512 `os_hash_value` of a file.
pub fn checksums(path: &Path, ctl: &JobControl) -> Result<(String, String), String> {
    let (_, md5, sha512) = hash_file(path, false, ctl, 0).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    Ok((md5, sha512))
}
