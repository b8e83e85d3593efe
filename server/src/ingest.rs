//! The ingest pipeline: what happens to an upload once all its bytes have arrived.
//!
//! 1. The image must be the caller's project's and waiting for data (`queued`/`uploading`); it
//!    moves to `importing`.
//! 2. `diskimage::inspect` judges the file — the server's verdict, whatever the browser said.
//!    A refusal makes the image `killed` with the reason users see, and deletes the bytes.
//! 3. Formats the local store does not keep natively (raw, VDI, VHD/VHDX, VMDK) are converted to
//!    qcow2 with Hangar's own converter (never qemu-img); qcow2, ISO and kernels/ramdisks are kept.
//! 4. Checksums: SHA-256 of what was uploaded (from the upload if it was computed in order), and
//!    Glance's MD5 `checksum` and SHA-512 `os_hash_value` of the stored bytes.
//! 5. The stored file is fsynced and renamed into `data/images/`, then the record becomes
//!    `active` (Architecture Invariant: never `active` before bytes and records are durable).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use diskimage::convert::{self, ConvertOptions, SourceFormat, TargetFormat};
use diskimage::{Format, InspectOptions, ReadAt, SizedFile};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// A complete upload, handed over by the data plane.
#[derive(Clone, Debug)]
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
}

/// What the pipeline produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
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

/// Formats the local store converts to qcow2 on import (the storage matrix will make this a
/// per-backend policy).
fn convert_on_import(format: Format) -> Option<SourceFormat> {
    match format {
        Format::Raw => Some(SourceFormat::Raw),
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
fn hash_file(path: &Path, want_sha256: bool) -> std::io::Result<(Option<String>, String, String)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; HASH_BUFFER];
    let (mut s256, mut m5, mut s512) = (Sha256::new(), Md5::new(), Sha512::new());
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
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

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The blocking part: inspect, convert or keep, hash, publish. Returns the record to store.
fn process(up: &UploadedFile, disk_format: Option<&str>, images_dir: &Path) -> Result<(records::ActiveImage, Imported), IngestError> {
    let io = |what: &str, e: std::io::Error| IngestError::Io(format!("{what}: {e}"));
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
    std::fs::create_dir_all(images_dir).map_err(|e| io("create images dir", e))?;

    let sha256 = match &up.sha256 {
        Some(h) => h.clone(),
        None => sha256_file(&up.path).map_err(|e| io("hash upload", e))?,
    };
    let (final_path, disk_format, converted, virtual_size) = match convert_on_import(report.format) {
        Some(from) => {
            let out = images_dir.join(format!("{}.qcow2", up.image_id));
            let file = File::open(&up.path).map_err(|e| io("open upload", e))?;
            let accepted = convert::inspect_for_conversion(&file, Some(from), up.file_name.as_deref())
                .map_err(|e| IngestError::Refused(e.to_string()))?;
            let summary = convert::convert_accepted(
                &file,
                &accepted,
                &out,
                &ConvertOptions { to: TargetFormat::Qcow2, ..ConvertOptions::default() },
                &mut convert::NoProgress,
            )
            .map_err(|e| IngestError::Refused(format!("Conversion to qcow2 failed: {e}")))?;
            drop(file);
            let _ = std::fs::remove_file(&up.path);
            (out, "qcow2".to_owned(), true, Some(summary.virtual_size))
        }
        None => {
            let ext = report.format.as_str();
            let out = images_dir.join(format!("{}.{ext}", up.image_id));
            File::open(&up.path).and_then(|f| f.sync_all()).map_err(|e| io("sync upload", e))?;
            std::fs::rename(&up.path, &out).map_err(|e| io("store image", e))?;
            let glance = report.format.glance_disk_format().unwrap_or(ext).to_owned();
            (out, glance, false, report.virtual_size)
        }
    };
    fsync_dir(images_dir).map_err(|e| io("sync images dir", e))?;
    // Stored unchanged: the upload's hashes are the stored bytes' hashes.
    let (md5, sha512) = match (&up.md5, &up.sha512, converted) {
        (Some(m), Some(s), false) => (m.clone(), s.clone()),
        _ => {
            let (_, m, s) = hash_file(&final_path, false).map_err(|e| io("hash stored image", e))?;
            (m, s)
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
        location: final_path.display().to_string(),
    };
    Ok((record, Imported { disk_format, converted, size, virtual_size, sha256 }))
}

/// Runs the pipeline for one complete upload. On refusal the image is `killed` (reason kept,
/// bytes deleted); on success it is `active`.
pub async fn ingest(db: &records::Db, data_dir: &Path, up: UploadedFile) -> Result<Imported, IngestError> {
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
    if !db.transition_image(&image.id, &["queued", "uploading"], "importing", "").await? {
        discard(&up.path);
        return Err(IngestError::NotAccepted(format!("image {} is {}, not waiting for data", image.id, image.status)));
    }
    tracing::info!(image = %image.id, path = %up.path.display(), "ingest: inspecting");
    let images_dir = data_dir.join("images");
    let disk_format = image.disk_format.clone();
    let up2 = up.clone();
    let result = tokio::task::spawn_blocking(move || process(&up2, disk_format.as_deref(), &images_dir))
        .await
        .map_err(|e| IngestError::Io(format!("ingest task: {e}")))?;
    match result {
        Ok((record, imported)) => {
            if !db.activate_image(&image.id, &record).await? {
                discard(Path::new(&record.location));
                return Err(IngestError::NotAccepted("the image changed state during import".into()));
            }
            tracing::info!(image = %image.id, format = %imported.disk_format, converted = imported.converted, "ingest: active");
            Ok(imported)
        }
        Err(err) => {
            discard(&up.path);
            let reason = match &err {
                IngestError::Refused(r) => r.clone(),
                _ => "Hangar could not store this image; the upload was discarded. Try again.".to_owned(),
            };
            tracing::warn!(image = %image.id, error = %err, "ingest: image refused or failed");
            db.kill_image(&image.id, &reason, "[]").await?;
            Err(err)
        }
    }
}
