//! Packages: an OVA's disks and a UEC tarball's parts extracted into a staging directory
//! (removed by its guard unless kept), the first becoming the image, the others images of
//! their own under the same quota.

use super::*;

/// A package's unpacking directory in staging. Dropped, it is removed with everything in it
/// (any error, a cancellation, a panic); [`StagingDir::keep`] hands it on once the package's
/// first image is ready to publish (the job removes it when every disk is an image or gone).
pub(super) struct StagingDir {
    path: PathBuf,
    armed: bool,
}

impl StagingDir {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory: its disks are on their way to becoming images.
    pub(super) fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An accepted package upload the matrix says to unpack: what the import knows when it
/// decides to.
pub(super) struct PackageJob<'a> {
    pub up: &'a ReceivedData,
    pub declared: Declared,
    pub staging: &'a Path,
    pub rules: &'a Rules,
    pub ctl: &'a JobControl,
    /// The inspector's report on the whole package.
    pub report: &'a diskimage::Report,
    /// Its findings, as recorded on the image.
    pub findings: String,
    pub uploaded_size: u64,
}

/// The package an inspected upload is, when its matrix cell says `extract`.
pub(super) fn to_unpack(detected: Format, rules: &Rules) -> Option<Package> {
    let package = match detected {
        Format::Ova => Package::Ova,
        Format::Uec => Package::Uec,
        _ => return None,
    };
    rules.cell(package.as_str()).is_some_and(|c| c.action == domain::MatrixAction::Extract).then_some(package)
}

/// Unpacks a package into staging: its first disk (a UEC's machine image) becomes this image,
/// its other disks (a UEC's kernel and ramdisk) are returned to become images of their own.
pub(super) fn extract(job: PackageJob<'_>, package: Package) -> Result<(records::ActiveImage, Imported), IngestError> {
    match package {
        Package::Ova => extract_ova_package(job),
        Package::Uec => extract_uec_package(job),
    }
}

/// Prepares to unpack a package: a fresh output directory in staging (guarded), the upload's
/// SHA-256, and the upload opened for reading.
pub(super) fn open_package(
    up: &ReceivedData,
    staging: &Path,
    kind: &str,
    ctl: &JobControl,
    uploaded_size: u64,
) -> Result<(StagingDir, String, File), IngestError> {
    let outdir = staging.join(format!("{}.{kind}.d", up.image_id));
    let _ = std::fs::remove_dir_all(&outdir);
    let outdir = StagingDir { path: outdir, armed: true };
    std::fs::create_dir_all(staging).map_err(|e| IngestError::io("create staging dir", e))?;
    ctl.total.store(uploaded_size.saturating_mul(2), Ordering::Relaxed);
    let sha256 = match &up.sha256 {
        Some(h) => h.clone(),
        None => sha256_file(&up.path).map_err(|e| IngestError::io("hash upload", e))?,
    };
    let input = File::open(&up.path).map_err(|e| IngestError::io("open upload", e))?;
    ctl.set_stage(Stage::Unpacking);
    Ok((outdir, sha256, input))
}

/// Unpacks an OVA (docs/formats.md §2.5 #19–20 enforced by the extractor: members by stream, no
/// names from the package used as paths, manifest digests checked) into the staging directory.
/// The first disk becomes this image; the others are returned to become images of their own.
fn extract_ova_package(job: PackageJob<'_>) -> Result<(records::ActiveImage, Imported), IngestError> {
    let PackageJob { up, declared, staging, rules, ctl, report, findings, uploaded_size } = job;
    // All disks are written in one target format, the VMDK row's (most packages hold only
    // VMDK disks); raw disks (oVirt exports) are checked against the raw row after unpacking.
    let to = match rules.plan("vmdk") {
        Plan::Convert(t) => t,
        // VMDK kept native: the package's disks are streamOptimized, which hypervisors cannot
        // use as is, so they become qcow2 anyway.
        Plan::Keep => TargetFormat::Qcow2,
        Plan::Refuse(reason) => return Err(IngestError::Refused(format!("This OVA's disks are VMDK. {reason}"))),
    };
    let disk_format = target_disk_format(to);
    let (dir, sha256, mut input) = open_package(up, staging, "ova", ctl, uploaded_size)?;
    let ova = convert::ova::extract_ova(&mut input, dir.path(), &ConvertOptions { to, ..ConvertOptions::default() }, &mut ctl.progress())
        .map_err(|e| ctl.refusal(e, |e| format!("The OVA could not be unpacked: {e}")))?;
    drop(input);
    ctl.check()?;
    for d in &ova.disks {
        let kind = d.source_format.as_str();
        if let Plan::Refuse(reason) = rules.plan(kind) {
            return Err(IngestError::Refused(format!("Disk {} of this OVA is {kind}. {reason}", d.disk_id)));
        }
    }
    let certificate = ova.unverified_certificate.clone();
    let mut disks = ova.disks.into_iter();
    let Some(first) = disks.next() else {
        return Err(IngestError::Refused("The OVA holds no disk.".into()));
    };
    // The disk format declares the disk that becomes this image (Glance's convention).
    declared.check_inner(first.source_format.as_str()).map_err(IngestError::Refused)?;
    let extra_disks = disks
        .map(|d| ExtraDisk {
            path: d.path,
            disk_format,
            container_format: ContainerFormat::Bare,
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
        disk_format,
        virtual_size: first.virtual_size,
        uploaded_format: "ova",
        extra_disks,
        facts,
        min_ram: o.memory_mib,
    };
    let published = primary.publish(report, findings, uploaded_size, sha256, ctl)?;
    dir.keep();
    Ok(published)
}

/// The disk a package import makes this image (the OVA's first disk, the UEC's AMI), already
/// unpacked in staging, with what the package said about it and its other disks.
pub(super) struct Primary<'a> {
    /// Name in error messages ("disk", "AMI").
    what: &'static str,
    path: &'a Path,
    disk_format: DiskFormat,
    virtual_size: u64,
    uploaded_format: &'static str,
    extra_disks: Vec<ExtraDisk>,
    facts: Vec<(String, String)>,
    min_ram: Option<u64>,
}

impl Primary<'_> {
    /// Hashes and measures the disk and returns the record to store. The upload stays until
    /// the image is published (ingest_with). Staging goes with the caller's guard on error.
    pub(super) fn publish(
        self,
        report: &diskimage::Report,
        findings: String,
        uploaded_size: u64,
        sha256: String,
        ctl: &JobControl,
    ) -> Result<(records::ActiveImage, Imported), IngestError> {
        let what = self.what;
        let (_, md5, sha512) = hash_file(self.path, false, ctl, uploaded_size).map_err(|e| IngestError::io(format!("hash {what}"), e))?;
        let size = std::fs::metadata(self.path).map_err(|e| IngestError::io(format!("stat {what}"), e))?.len();
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // Unpacked, the disk is no longer in its package: `bare` (a UEC's machine image `ami`).
        let container =
            if self.uploaded_format == "uec" && self.disk_format == DiskFormat::Ami { ContainerFormat::Ami } else { ContainerFormat::Bare };
        let record = records::ActiveImage {
            disk_format: Some(self.disk_format),
            container_format: Some(container),
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
            disk_format: self.disk_format.into(),
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
fn extract_uec_package(job: PackageJob<'_>) -> Result<(records::ActiveImage, Imported), IngestError> {
    let PackageJob { up, declared, staging, rules, ctl, report, findings, uploaded_size } = job;
    // The machine image in a UEC tarball is a raw file system: declared `ami` (or not at all).
    declared.check_inner("raw").map_err(IngestError::Refused)?;
    for part in ["ami", "aki", "ari"] {
        if let Plan::Refuse(reason) = rules.plan(part) {
            return Err(IngestError::Refused(format!("This UEC tarball holds {part} images. {reason}")));
        }
    }
    let (dir, sha256, input) = open_package(up, staging, "uec", ctl, uploaded_size)?;
    drop(input);
    // Read by position (the gzip reader's), with the size asked once.
    let input = SizedFile::open(&up.path).map_err(|e| IngestError::io("open upload", e))?;
    let uec = convert::uec::extract_uec(&input, dir.path(), convert::uec::UecLimits::default(), &mut ctl.progress())
        .map_err(|e| ctl.refusal(e, |e| format!("The UEC tarball could not be unpacked: {e}")))?;
    drop(input);
    ctl.check()?;
    let Some(ami) = uec.parts.iter().find(|p| p.role == convert::uec::UecRole::Ami) else {
        return Err(IngestError::Refused("The UEC tarball holds no machine image (AMI).".into()));
    };
    // The AMI follows its row: kept as raw bytes, or converted.
    let (path, disk_format, virtual_size) = match rules.plan("ami") {
        Plan::Convert(to) => {
            let ext = if to == TargetFormat::Raw { "raw" } else { "qcow2" };
            let out = dir.path().join(format!("ami.{ext}"));
            let vsize = convert_copy(&ami.path, "raw", to, &out, ctl).map_err(IngestError::Refused)?;
            (out, target_disk_format(to), vsize)
        }
        _ => (ami.path.clone(), DiskFormat::Ami, ami.size),
    };
    let extra_disks = uec
        .parts
        .iter()
        .filter_map(|p| {
            let (fmt, link) = match p.role {
                convert::uec::UecRole::Aki => ((DiskFormat::Aki, ContainerFormat::Aki), "kernel_id"),
                convert::uec::UecRole::Ari => ((DiskFormat::Ari, ContainerFormat::Ari), "ramdisk_id"),
                convert::uec::UecRole::Ami => return None,
            };
            Some(ExtraDisk {
                path: p.path.clone(),
                disk_format: fmt.0,
                container_format: fmt.1,
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
    let published = primary.publish(report, findings, uploaded_size, sha256, ctl)?;
    dir.keep();
    Ok(published)
}

/// After an OVA's first disk became the image: record the OVF's facts as properties, and turn
/// every further disk into an active image of its own (same project and visibility, linked by
/// the `ova_parent` property). Failures here are logged; the first image stays active.
pub(super) async fn finish_package(
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

pub(super) async fn extra_disk_image(
    db: &records::Db,
    parent: &records::ImageRow,
    up: &ReceivedData,
    store: &std::sync::Arc<dyn storage::Backend>,
    imported: &Imported,
    number: usize,
    disk: &ExtraDisk,
) -> Result<String, String> {
    let what = match disk.disk_format {
        DiskFormat::Aki => "kernel".to_owned(),
        DiskFormat::Ari => "ramdisk".to_owned(),
        _ => format!("disk {number}"),
    };
    let name = if parent.name.is_empty() { what } else { format!("{} ({what})", parent.name) };
    let parent_key = if imported.uploaded_format == "uec" { "uec_parent" } else { "ova_parent" };
    let member_key = if imported.uploaded_format == "uec" { "uec_member" } else { "ovf_disk_id" };
    let props = BTreeMap::from([(parent_key.to_owned(), parent.id.clone()), (member_key.to_owned(), disk.disk_id.clone())]);
    let new = records::NewImage {
        name,
        disk_format: Some(disk.disk_format),
        container_format: Some(disk.container_format),
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
    let key = store.key_for(&row.id, disk.disk_format.as_str());
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
pub(super) async fn keep_extra_disk(
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
        disk_format: disk.disk_format.into(),
        size: to_i64(size),
        checksum: Some(md5.clone()),
        os_hash_value: Some(sha512.clone()),
        status: LocationStatus::Active,
        created_at: String::new(),
    })
    .await
    .map_err(|e| failed("record where the disk is stored", &e))?;
    let record = records::ActiveImage {
        disk_format: Some(disk.disk_format),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_is_unpacked_only_where_its_cell_says_extract() {
        let rules =
            super::super::plan::tests::rules("local", &[("ova", "extract", None), ("uec", "native", None), ("raw", "native", None)]);
        assert_eq!(to_unpack(Format::Ova, &rules), Some(Package::Ova));
        assert_eq!(to_unpack(Format::Uec, &rules), None, "kept whole");
        assert_eq!(to_unpack(Format::Raw, &rules), None, "not a package");
        let none = super::super::plan::tests::rules("local", &[]);
        assert_eq!(to_unpack(Format::Ova, &none), None, "no cell: the plan refuses it");
    }

    #[test]
    fn a_staging_dir_goes_unless_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dropped = tmp.path().join("a.ova.d");
        std::fs::create_dir_all(dropped.join("sub")).unwrap();
        std::fs::write(dropped.join("sub").join("disk1.qcow2"), b"x").unwrap();
        {
            let guard = StagingDir { path: dropped.clone(), armed: true };
            assert_eq!(guard.path(), dropped);
            // An error, a cancellation or a panic between here and `keep` drops it.
        }
        assert!(!dropped.exists(), "dropped: removed with its content");
        let kept = tmp.path().join("b.uec.d");
        std::fs::create_dir_all(&kept).unwrap();
        let guard = StagingDir { path: kept.clone(), armed: true };
        assert_eq!(guard.keep(), kept);
        assert!(kept.exists(), "kept: handed on");
    }
}
