//! The single-disk pipeline: inspect, convert (or keep), hash, stage; and the copy job's
//! conversion and checksums.

use super::*;

/// Hashes of one file, in one read, one thread per digest: (sha256 if wanted, md5, sha512).
pub(super) fn hash_file(path: &Path, want_sha256: bool, ctl: &JobControl, base: u64) -> std::io::Result<(Option<String>, String, String)> {
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

pub(super) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut d = digests::hash_parallel(&mut f, &[Algorithm::Sha256], |_| Ok(()))?;
    d.pop().ok_or_else(|| std::io::Error::other("the SHA-256 digest is missing"))
}

/// The blocking part: inspect, convert or keep, hash, publish. Returns the record to store.
pub(super) fn process(
    up: &ReceivedData,
    declared: Declared,
    images_dir: &Path,
    rules: &Rules,
    ctl: &JobControl,
    journal: &Journal,
) -> Result<(records::ActiveImage, Imported), IngestError> {
    let io = |what: &str, e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::Interrupted && ctl.cancel.load(Ordering::Relaxed) {
            IngestError::Cancelled
        } else {
            IngestError::io(what, e)
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
    // A package whose cell says `extract` is unpacked; its disks follow their own rows.
    if let Some(package) = to_unpack(report.format, rules) {
        let job = PackageJob { up, declared, staging: images_dir, rules, ctl, report: &report, findings, uploaded_size };
        return extract(job, package);
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
            (out, ImageFormat::from(target_disk_format(to)), true, Some(summary.virtual_size))
        }
        Plan::Refuse(reason) => return Err(IngestError::Refused(reason)),
        Plan::Keep => {
            let ext = report.format.as_str();
            // Published as it is: the backend's put moves it into place (fsync + rename +
            // directory fsync on file backends, a multipart upload on Ceph).
            let out = up.path.clone();
            // What the matrix row named (`matrix_key`): the declared AMI, or what the bytes are.
            let stored = match (disk_format, report.format) {
                (Some("ami"), Format::Raw) => Some(ImageFormat::Ami),
                _ => ImageFormat::parse(report.format.glance_disk_format().unwrap_or(ext)),
            };
            let stored = stored.ok_or_else(|| IngestError::Refused(format!("Hangar does not store {ext} images.")))?;
            (out, stored, false, report.virtual_size)
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
pub(super) fn finish_prepared(
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
                Err(e) => return Err(IngestError::io("hash stored image", e)),
            },
        };
        cp.md5 = Some(md5);
        cp.sha512 = Some(sha512);
        cp.step = Step::Hashed;
        journal.save_blocking(&cp);
    }
    Ok(cp.outcome())
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
