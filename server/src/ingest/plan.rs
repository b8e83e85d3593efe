//! The plan of an import: the storage matrix's decision for a format on a backend kind
//! ([`Rules`], [`Plan`]), the digests an upload computes, and the room its import needs.

use super::*;
use domain::MatrixAction;

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
    pub cells: HashMap<ImageFormat, records::PolicyCell>,
}

impl Rules {
    /// Loads the matrix column for `backend_kind`.
    pub async fn load(db: &records::Db, backend_kind: &str) -> Result<Self, records::DbError> {
        let cells =
            db.storage_policy().await?.into_iter().filter(|c| c.backend_kind.as_str() == backend_kind).map(|c| (c.format, c)).collect();
        Ok(Rules { backend_kind: backend_kind.to_owned(), cells })
    }

    /// The cell of the row named `key`, if the column has one (a name that is no image format
    /// has none).
    pub fn cell(&self, key: &str) -> Option<&records::PolicyCell> {
        ImageFormat::parse(key).and_then(|f| self.cells.get(&f))
    }

    /// What to do with an image whose matrix row is `key` (`qcow2`, `ami`, `ova`, …).
    pub fn plan(&self, key: &str) -> Plan {
        let kind = domain::StorageKind::parse(&self.backend_kind).map_or("configured", domain::StorageKind::label);
        match self.cell(key) {
            None => Plan::Refuse(format!("The {kind} storage has no rule for {key} images, so it does not accept them.")),
            Some(c) => match (c.action, c.target_format) {
                (MatrixAction::Native | MatrixAction::Extract, _) => Plan::Keep,
                (MatrixAction::Convert, Some(DiskFormat::Raw)) => Plan::Convert(TargetFormat::Raw),
                (MatrixAction::Convert, Some(DiskFormat::Qcow2)) => Plan::Convert(TargetFormat::Qcow2),
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
    let Some(declared) = imageops::declared::declared(image.disk_format, image.container_format).inspect_as() else {
        return All;
    };
    let Some(format) = declared_format(declared) else { return All };
    let Ok(rules) = Rules::load(db, backend_kind).await else { return All };
    let key = matrix_key(Some(declared), format);
    let unpacked = matches!(format, Format::Ova | Format::Uec) && rules.cell(&key).is_some_and(|c| c.action == MatrixAction::Extract);
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
pub(super) const CONVERSION_SLACK: uploads::RoomAfter = uploads::RoomAfter { per_mille: 1010, fixed: 4 << 20 };

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
    let unpacked = matches!(format, Format::Ova | Format::Uec) && rules.cell(&key).is_some_and(|c| c.action == MatrixAction::Extract);
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

/// Glance's disk_format names → the inspector's formats (`ami` images are raw filesystems).
pub fn declared_format(disk_format: &str) -> Option<Format> {
    match disk_format {
        "ami" => Some(Format::Raw),
        other => other.parse().ok(),
    }
}

/// The converter's name for a detected format, if Hangar can convert it.
pub(super) fn source_format(format: Format) -> Option<SourceFormat> {
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

/// The disk format of what the converter writes.
pub const fn target_disk_format(to: TargetFormat) -> DiskFormat {
    match to {
        TargetFormat::Qcow2 => DiskFormat::Qcow2,
        TargetFormat::Raw => DiskFormat::Raw,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::ingest) fn rules(kind: &str, cells: &[(&str, &str, Option<&str>)]) -> Rules {
        let cells = cells
            .iter()
            .map(|(format, action, target)| {
                let cell = records::PolicyCell {
                    backend_kind: kind.parse().unwrap(),
                    format: format.parse().unwrap(),
                    action: action.parse().unwrap(),
                    target_format: target.map(|t| t.parse().unwrap()),
                    reason: "because".into(),
                    updated_at: String::new(),
                    updated_by: String::new(),
                };
                (cell.format, cell)
            })
            .collect();
        Rules { backend_kind: kind.into(), cells }
    }

    #[test]
    fn the_matrix_decides_per_row_and_names_the_backend_when_it_refuses() {
        let r =
            rules("rbd", &[("raw", "native", None), ("qcow2", "convert", Some("raw")), ("ova", "extract", None), ("vhd", "refuse", None)]);
        assert_eq!(r.plan("raw"), Plan::Keep);
        assert_eq!(r.plan("ova"), Plan::Keep, "extract keeps the package's disks");
        assert_eq!(r.plan("qcow2"), Plan::Convert(TargetFormat::Raw));
        assert_eq!(r.plan("vhd"), Plan::Refuse("The Ceph RBD storage does not accept vhd images: because".into()));
        assert_eq!(r.plan("iso"), Plan::Refuse("The Ceph RBD storage has no rule for iso images, so it does not accept them.".into()));
    }

    #[test]
    fn matrix_rows_follow_the_declaration_only_where_the_bytes_agree() {
        assert_eq!(matrix_key(Some("ami"), Format::Raw), "ami");
        assert_eq!(matrix_key(Some("ami"), Format::Qcow2), "qcow2", "bytes that are not raw are judged as what they are");
        assert_eq!(matrix_key(Some("vmdk"), Format::Ova), "ova");
        assert_eq!(matrix_key(None, Format::Uec), "uec");
        assert_eq!(matrix_key(Some("raw"), Format::Raw), "raw");
        assert_eq!(declared_format("ami"), Some(Format::Raw));
        assert_eq!(declared_format("qcow2"), Some(Format::Qcow2));
        assert_eq!(declared_format("no-such-format"), None);
    }

    #[test]
    fn the_room_an_import_needs() {
        let r = rules("local", &[("raw", "convert", Some("qcow2")), ("qcow2", "native", None), ("ova", "extract", None)]);
        assert_eq!(room_after_upload(&r, Some("raw")), CONVERSION_SLACK, "converted");
        assert_eq!(room_after_upload(&r, Some("ova")), CONVERSION_SLACK, "unpacked");
        assert_eq!(room_after_upload(&r, Some("qcow2")), uploads::RoomAfter::default(), "kept as uploaded");
        assert_eq!(room_after_upload(&r, None), uploads::RoomAfter::default());
        assert_eq!(room_after_upload(&r, Some("vdi")), uploads::RoomAfter::default(), "refused: nothing to write");
        // Raw output is the whole virtual disk; qcow2 at most the data plus its tables.
        assert_eq!(output_room(TargetFormat::Raw, Some(10 << 30), 1 << 30), 10 << 30);
        assert_eq!(output_room(TargetFormat::Raw, None, 1 << 30), 1 << 30);
        let q = output_room(TargetFormat::Qcow2, Some(10 << 30), 1 << 30);
        assert!(q > 1 << 30 && q < (1 << 30) + (16 << 20), "{q}");
    }
}
