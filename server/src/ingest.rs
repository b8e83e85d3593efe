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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use diskimage::convert::{self, ConvertOptions, SourceFormat, TargetFormat};
use diskimage::{Format, InspectOptions, ReadAt, SizedFile};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// A complete upload, handed over by the data plane (and kept in the import job's parameters).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UploadedFile {
    pub image_id: String,
    pub path: PathBuf,
    pub user_id: String,
    pub project_id: String,
    pub file_name: Option<String>,
    /// Hashes of the uploaded bytes, when the data plane computed them.
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub sha512: Option<String>,
}

/// Why an upload did not become an active image.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The image does not exist, is not the uploader's project's, or is not waiting for data.
    #[error("{0}")]
    NotAccepted(String),
    /// The inspector or converter refused the bytes; the image is `killed` with this reason.
    #[error("{0}")]
    Refused(String),
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
}

impl JobControl {
    fn check(&self) -> Result<(), IngestError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(IngestError::Cancelled)
        } else {
            Ok(())
        }
    }
    fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
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
        let cells = db
            .storage_policy()
            .await?
            .into_iter()
            .filter(|c| c.backend_kind == backend_kind)
            .map(|c| (c.format.clone(), c))
            .collect();
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
}

/// Read buffer for hashing: large enough for sequential throughput, small enough to keep memory
/// independent of image size.
const HASH_BUFFER: usize = 1 << 20;

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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Hashes of one file, in one read: (sha256 if wanted, md5, sha512).
fn hash_file(path: &Path, want_sha256: bool, ctl: &JobControl, base: u64) -> std::io::Result<(Option<String>, String, String)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; HASH_BUFFER];
    let (mut s256, mut m5, mut s512) = (Sha256::new(), Md5::new(), Sha512::new());
    let mut read = 0u64;
    loop {
        if ctl.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        ctl.set_done(base + read);
        let chunk = buf.get(..n).unwrap_or_default();
        if want_sha256 {
            s256.update(chunk);
        }
        m5.update(chunk);
        s512.update(chunk);
    }
    Ok((want_sha256.then(|| hex(&s256.finalize())), hex(&m5.finalize()), hex(&s512.finalize())))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut h = Sha256::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex(&h.finalize()))
}

/// The blocking part: inspect, convert or keep, hash, publish. Returns the record to store.
fn process(
    up: &UploadedFile,
    disk_format: Option<&str>,
    images_dir: &Path,
    rules: &Rules,
    ctl: &JobControl,
) -> Result<(records::ActiveImage, Imported), IngestError> {
    let io = |what: &str, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::Interrupted && ctl.cancel.load(Ordering::Relaxed) {
            IngestError::Cancelled
        } else {
            IngestError::Io(format!("{what}: {e}"))
        }
    };
    let declared = match disk_format {
        Some(d) => Some(declared_format(d).ok_or_else(|| IngestError::Refused(format!("Hangar does not accept disk_format '{d}'.")))?),
        None => None,
    };
    let opts = InspectOptions { declared, file_name: up.file_name.clone(), ..InspectOptions::default() };
    let src = SizedFile::open(&up.path).map_err(|e| io("open upload", e))?;
    let report = diskimage::inspect(&src, &opts);
    let findings = serde_json::to_string(&report.findings).unwrap_or_else(|_| "[]".into());
    if !report.is_accepted() {
        let reason = report
            .errors()
            .map(|f| f.message.clone())
            .next()
            .unwrap_or_else(|| "The image was refused by the inspector.".to_owned());
        return Err(IngestError::Refused(reason));
    }
    let uploaded_size = src.size();
    drop(src);
    let plan = rules.plan(&matrix_key(disk_format, report.format));
    if let Plan::Refuse(reason) = &plan {
        return Err(IngestError::Refused(reason.clone()));
    }
    let converting = matches!(plan, Plan::Convert(_));
    // Conversion reads the upload once and hashing reads the output once.
    ctl.total.store(if converting { uploaded_size.saturating_mul(2) } else { uploaded_size }, Ordering::Relaxed);
    ctl.check()?;
    std::fs::create_dir_all(images_dir).map_err(|e| io("create images dir", e))?;

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
            let mut progress = |bytes_in: u64, _out: u64| ctl.set_done(bytes_in);
            let summary = convert::convert_accepted(&file, &accepted, &out, &ConvertOptions { to, ..ConvertOptions::default() }, &mut progress)
                .map_err(|e| IngestError::Refused(format!("Conversion to {ext} failed: {e}")))?;
            drop(file);
            if let Err(e) = ctl.check() {
                let _ = std::fs::remove_file(&out);
                return Err(e);
            }
            let _ = std::fs::remove_file(&up.path);
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
    // Stored unchanged: the upload's hashes are the stored bytes' hashes.
    let (md5, sha512) = match (&up.md5, &up.sha512, converted) {
        (Some(m), Some(s), false) => (m.clone(), s.clone()),
        _ => {
            let hashed = hash_file(&final_path, false, ctl, uploaded_size).map_err(|e| io("hash stored image", e));
            match hashed {
                Ok((_, m, s)) => (m, s),
                Err(e) => {
                    let _ = std::fs::remove_file(&final_path);
                    return Err(e);
                }
            }
        }
    };
    let size = std::fs::metadata(&final_path).map_err(|e| io("stat stored image", e))?.len();
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let record = records::ActiveImage {
        disk_format: disk_format.clone(),
        uploaded_format: report.format.as_str().to_owned(),
        uploaded_size: to_i64(uploaded_size),
        size: to_i64(size),
        virtual_size: virtual_size.map(to_i64),
        sha256: sha256.clone(),
        md5,
        sha512,
        findings,
        // The file to publish; the caller puts it into the backend and records where it went.
        location: final_path.display().to_string(),
    };
    Ok((record, Imported { uploaded_format: report.format.as_str().to_owned(), uploaded_size, disk_format, converted, size, virtual_size, sha256 }))
}

/// Runs the pipeline for one complete upload on the local backend with the matrix's current
/// rules (tests and callers without a job).
pub async fn ingest(db: &records::Db, data_dir: &Path, up: UploadedFile) -> Result<Imported, IngestError> {
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
    up: UploadedFile,
    rules: &Rules,
    store: &std::sync::Arc<dyn storage::Backend>,
    ctl: std::sync::Arc<JobControl>,
) -> Result<Imported, IngestError> {
    let backend = store.name();
    let discard = |path: &Path| {
        let _ = std::fs::remove_file(path);
    };
    let Some(image) = db.image(&up.image_id).await? else {
        discard(&up.path);
        return Err(IngestError::NotAccepted(format!("image {} does not exist", up.image_id)));
    };
    if image.owner.as_deref() != Some(up.project_id.as_str()) {
        discard(&up.path);
        return Err(IngestError::NotAccepted("the upload's project does not own this image".into()));
    }
    if !db.transition_image(&image.id, &["queued", "uploading", "importing"], "importing", "").await? {
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
    let disk_format = image.disk_format.clone();
    let (up2, rules2, ctl2) = (up.clone(), rules.clone(), ctl.clone());
    let result = tokio::task::spawn_blocking(move || process(&up2, disk_format.as_deref(), &images_dir, &rules2, &ctl2))
        .await
        .map_err(|e| IngestError::Io(format!("ingest task: {e}")))?;
    match result {
        Ok((mut record, imported)) => {
            let staged = PathBuf::from(&record.location);
            let ext = if imported.disk_format == "ami" { "raw" } else { imported.disk_format.as_str() };
            let key = format!("{}.{ext}", image.id);
            let put = store.put_file(&key, &staged, storage::PutMode::Move, &|_| {}).await;
            discard(&staged);
            if let Err(err) = put {
                tracing::warn!(image = %image.id, %backend, error = %err, "ingest: the backend did not take the image");
                let reason = format!("The {backend} storage could not store this image ({err}); nothing was kept. Try again later.");
                db.kill_image(&image.id, &reason, "[]").await?;
                let _ = store.delete(&key).await;
                return Err(IngestError::Io(reason));
            }
            record.location = store.local_path(&key).map_or_else(|| format!("{backend}:{key}"), |p| p.display().to_string());
            let stored = PathBuf::from(&record.location);
            let location = records::LocationRow {
                image_id: image.id.clone(),
                backend: backend.to_owned(),
                key: key.clone(),
                disk_format: record.disk_format.clone(),
                size: record.size,
                checksum: Some(record.md5.clone()),
                os_hash_value: Some(record.sha512.clone()),
                status: "active".into(),
                created_at: String::new(),
            };
            db.put_location(&location).await?;
            if !db.activate_image(&image.id, &record).await? {
                let _ = db.remove_location(&image.id, backend).await;
                let _ = store.delete(&key).await;
                let _ = &stored;
                return Err(IngestError::NotAccepted("the image changed state during import".into()));
            }
            tracing::info!(image = %image.id, format = %imported.disk_format, converted = imported.converted, "ingest: active");
            Ok(imported)
        }
        Err(err) => {
            discard(&up.path);
            let reason = match &err {
                IngestError::Refused(r) => r.clone(),
                IngestError::Cancelled => "The import was cancelled; nothing was kept.".to_owned(),
                _ => "Hangar could not store this image; the upload was discarded. Try again.".to_owned(),
            };
            tracing::warn!(image = %image.id, error = %err, "ingest: image refused or failed");
            db.kill_image(&image.id, &reason, "[]").await?;
            Err(err)
        }
    }
}

/// Converts one of Hangar's own stored copies (already accepted at import) for another backend:
/// the converter's gate inspects it again all the same. Returns the virtual size.
pub fn convert_copy(src: &Path, from_disk_format: &str, to: TargetFormat, out: &Path, ctl: &JobControl) -> Result<u64, String> {
    let from = declared_format(from_disk_format)
        .and_then(source_format)
        .ok_or_else(|| format!("Hangar cannot convert {from_disk_format} images."))?;
    let file = File::open(src).map_err(|e| format!("cannot open the source copy: {e}"))?;
    let accepted = convert::inspect_for_conversion(&file, Some(from), None).map_err(|e| e.to_string())?;
    let mut progress = |bytes_in: u64, _out: u64| ctl.set_done(bytes_in);
    let summary = convert::convert_accepted(&file, &accepted, out, &ConvertOptions { to, ..ConvertOptions::default() }, &mut progress)
        .map_err(|e| format!("conversion failed: {e}"))?;
    Ok(summary.virtual_size)
}

/// Glance's MD5 `checksum` and SHA-512 `os_hash_value` of a file.
pub fn checksums(path: &Path, ctl: &JobControl) -> Result<(String, String), String> {
    let (_, md5, sha512) = hash_file(path, false, ctl, 0).map_err(|e| format!("cannot hash {}: {e}", path.display()))?;
    Ok((md5, sha512))
}
