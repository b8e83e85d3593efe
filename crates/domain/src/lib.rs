//! Hangar's domain vocabulary, shared by every layer: the states an image, a share, a job and a
//! stored copy go through, and an image's visibility.
//!
//! Each enum has exactly one string form, used on the wire (serde), in the database (sqlx, with
//! the `sqlx` feature) and in the pages. A stored value that is not one of them is a decode error,
//! never a silent default. The browser bundle builds this crate without the `sqlx` feature.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not one of an enum's forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    /// What was expected (`image status`, `visibility`, …).
    pub what: &'static str,
    pub value: String,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.value)
    }
}

impl std::error::Error for Unknown {}

/// Declares a fieldless enum with its one string form, `ALL`, `as_str`, `parse`, `Display` and
/// `FromStr`; serde and sqlx use the same strings.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(type_name = "TEXT"))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] #[cfg_attr(feature = "sqlx", sqlx(rename = $text))] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The one string form (wire, database and pages).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value whose string form is `s`, if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Unknown;
            fn from_str(s: &str) -> Result<Self, Unknown> {
                Self::parse(s).ok_or_else(|| Unknown { what: $what, value: s.to_owned() })
            }
        }
    };
}

vocabulary!(
    /// An image's status: Glance's image states (`docs/glance-api.md` §1.3).
    ImageStatus, "image status", {
        /// Created; no data yet.
        Queued = "queued",
        /// A request body (`PUT /file`) is arriving.
        Saving = "saving",
        /// A tus upload or a staging body is arriving, or the data is staged.
        Uploading = "uploading",
        /// The data arrived; the import job inspects, converts and stores it.
        Importing = "importing",
        /// Stored and downloadable.
        Active = "active",
        /// Stored; downloads refused to everyone but administrators.
        Deactivated = "deactivated",
        /// Its data was refused or lost; the reason is recorded.
        Killed = "killed",
        Deleted = "deleted",
        PendingDelete = "pending_delete",
    }
);

/// A new image starts `queued`.
impl Default for ImageStatus {
    fn default() -> Self {
        ImageStatus::Queued
    }
}

impl ImageStatus {
    /// Whether the image's data is stored (active or deactivated).
    pub const fn has_data(self) -> bool {
        matches!(self, ImageStatus::Active | ImageStatus::Deactivated)
    }

    /// Whether data is arriving or being imported: something is under way.
    pub const fn is_busy(self) -> bool {
        matches!(self, ImageStatus::Saving | ImageStatus::Uploading | ImageStatus::Importing)
    }
}

vocabulary!(
    /// Glance's image visibility values.
    Visibility, "visibility", {
        Private = "private",
        Shared = "shared",
        Community = "community",
        Public = "public",
    }
);

vocabulary!(
    /// A member project's answer to an image shared with it.
    MemberStatus, "member status", {
        Pending = "pending",
        Accepted = "accepted",
        Rejected = "rejected",
    }
);

vocabulary!(
    /// What a background job does.
    JobKind, "job kind", {
        /// Inspect, convert and store an image's arrived data.
        Import = "import",
        /// Copy an active image to another backend.
        Copy = "copy",
    }
);

vocabulary!(
    /// Where a background job is.
    JobStatus, "job status", {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl JobStatus {
    /// Queued or running: the job still holds its image.
    pub const fn is_live(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

vocabulary!(
    /// One stored copy of an image on one backend.
    LocationStatus, "location status", {
        /// Complete and readable.
        Active = "active",
        /// Being written (a copy in progress).
        Pending = "pending",
        /// Being removed.
        Deleting = "deleting",
    }
);

vocabulary!(
    /// A kind of storage backend: a column of the storage-compatibility matrix.
    StorageKind, "storage kind", {
        /// A directory on the server.
        Local = "local",
        /// A mounted NFS export.
        Nfs = "nfs",
        /// Objects through the S3 API (Ceph's RADOS Gateway or any S3 service).
        S3 = "s3",
        /// RBD images in a Ceph pool, cloned copy-on-write by compute services.
        Rbd = "rbd",
    }
);

impl StorageKind {
    /// What the pages and messages call it.
    pub const fn label(self) -> &'static str {
        match self {
            StorageKind::Local => "Local",
            StorageKind::Nfs => "NFS-backed",
            StorageKind::S3 => "S3 object storage",
            StorageKind::Rbd => "Ceph RBD",
        }
    }
}

vocabulary!(
    /// What an import does with a format on a kind of backend: a cell of the
    /// storage-compatibility matrix.
    MatrixAction, "matrix action", {
        /// Stored as uploaded.
        Native = "native",
        /// Converted on import to the cell's target format.
        Convert = "convert",
        /// A package (OVA, UEC): unpacked, each disk following its own format's row.
        Extract = "extract",
        /// Not accepted on this backend.
        Refuse = "refuse",
    }
);

vocabulary!(
    /// An image's disk format, as Glance names it: the disk formats Hangar inspects, converts
    /// and stores (`docs/formats.md`). In a package's declaration it names the disk inside.
    DiskFormat, "disk format", {
        Qcow2 = "qcow2",
        Raw = "raw",
        Iso = "iso",
        /// An Amazon machine image: a raw disk.
        Ami = "ami",
        /// An Amazon kernel image.
        Aki = "aki",
        /// An Amazon ramdisk image.
        Ari = "ari",
        Vdi = "vdi",
        Vhd = "vhd",
        Vhdx = "vhdx",
        Vmdk = "vmdk",
    }
);

vocabulary!(
    /// An image's container format, as Glance names it (`docs/glance-api.md`, "Packages"): `bare`
    /// for a disk image; a package is declared by its container format (`uec` is Hangar's own
    /// value: Glance has none).
    ContainerFormat, "container format", {
        Bare = "bare",
        Ovf = "ovf",
        Ova = "ova",
        Ami = "ami",
        Aki = "aki",
        Ari = "ari",
        Uec = "uec",
    }
);

vocabulary!(
    /// A package Hangar unpacks into images.
    Package, "package", {
        /// An OVF package in a tar archive: its disks become images.
        Ova = "ova",
        /// A UEC tarball: machine image, kernel and ramdisk, linked.
        Uec = "uec",
    }
);

impl ContainerFormat {
    /// The package an image declared with this container format is.
    pub const fn package(self) -> Option<Package> {
        match self {
            ContainerFormat::Ova => Some(Package::Ova),
            ContainerFormat::Uec => Some(Package::Uec),
            _ => None,
        }
    }
}

impl Package {
    /// The container format that declares it.
    pub const fn container(self) -> ContainerFormat {
        match self {
            Package::Ova => ContainerFormat::Ova,
            Package::Uec => ContainerFormat::Uec,
        }
    }

    /// The disk formats the disk inside may be declared with.
    pub const fn inner_formats(self) -> &'static [DiskFormat] {
        use DiskFormat::*;
        match self {
            Package::Ova => &[Vmdk, Raw, Qcow2, Vhd, Vhdx, Vdi],
            Package::Uec => &[Ami],
        }
    }
}

vocabulary!(
    /// The format of an image's stored bytes, and a row of the storage-compatibility matrix: a
    /// disk format, or a package (kept whole when its row says `native`).
    ImageFormat, "image format", {
        Qcow2 = "qcow2",
        Raw = "raw",
        Iso = "iso",
        Ami = "ami",
        Aki = "aki",
        Ari = "ari",
        Vdi = "vdi",
        Vhd = "vhd",
        Vhdx = "vhdx",
        Vmdk = "vmdk",
        Ova = "ova",
        Uec = "uec",
    }
);

impl ImageFormat {
    /// The disk format it is, unless it is a package.
    pub fn disk(self) -> Option<DiskFormat> {
        DiskFormat::parse(self.as_str())
    }

    /// The package it is, if it is one.
    pub fn package(self) -> Option<Package> {
        Package::parse(self.as_str())
    }
}

impl From<DiskFormat> for ImageFormat {
    fn from(d: DiskFormat) -> Self {
        match d {
            DiskFormat::Qcow2 => ImageFormat::Qcow2,
            DiskFormat::Raw => ImageFormat::Raw,
            DiskFormat::Iso => ImageFormat::Iso,
            DiskFormat::Ami => ImageFormat::Ami,
            DiskFormat::Aki => ImageFormat::Aki,
            DiskFormat::Ari => ImageFormat::Ari,
            DiskFormat::Vdi => ImageFormat::Vdi,
            DiskFormat::Vhd => ImageFormat::Vhd,
            DiskFormat::Vhdx => ImageFormat::Vhdx,
            DiskFormat::Vmdk => ImageFormat::Vmdk,
        }
    }
}

impl From<Package> for ImageFormat {
    fn from(p: Package) -> Self {
        match p {
            Package::Ova => ImageFormat::Ova,
            Package::Uec => ImageFormat::Uec,
        }
    }
}

/// The storage matrix's rows, in the order the pages show them: the disk formats, then the
/// packages Hangar unpacks ([`ImageFormat::ALL`]).
pub const MATRIX_FORMATS: [&str; 12] = {
    let mut rows = [""; 12];
    let mut i = 0;
    while i < ImageFormat::ALL.len() {
        rows[i] = ImageFormat::ALL[i].as_str();
        i += 1;
    }
    rows
};

/// The formats Hangar's converter writes.
pub const CONVERT_TARGETS: [&str; 2] = [DiskFormat::Qcow2.as_str(), DiskFormat::Raw.as_str()];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_one_string_form() {
        for s in ImageStatus::ALL {
            assert_eq!(ImageStatus::parse(s.as_str()), Some(*s));
            assert_eq!(s.to_string().parse::<ImageStatus>(), Ok(*s));
            assert_eq!(serde_json_like(s.as_str()), format!("\"{s}\""));
        }
        for v in Visibility::ALL {
            assert_eq!(Visibility::parse(v.as_str()), Some(*v));
        }
        assert_eq!(ImageStatus::PendingDelete.as_str(), "pending_delete");
        assert_eq!(ImageStatus::parse("Active"), None, "no case folding: one form only");
        assert_eq!("bogus".parse::<JobStatus>(), Err(Unknown { what: "job status", value: "bogus".into() }));
        assert_eq!(Unknown { what: "visibility", value: "x".into() }.to_string(), "unknown visibility \"x\"");
    }

    #[test]
    fn derived_facts() {
        let with_data: Vec<_> = ImageStatus::ALL.iter().filter(|s| s.has_data()).collect();
        assert_eq!(with_data, [&ImageStatus::Active, &ImageStatus::Deactivated]);
        assert!(ImageStatus::Importing.is_busy() && !ImageStatus::Queued.is_busy());
        assert!(JobStatus::Running.is_live() && !JobStatus::Failed.is_live());
    }

    #[test]
    fn the_matrix_rows_are_the_disk_formats_then_the_packages() {
        assert_eq!(MATRIX_FORMATS, ["qcow2", "raw", "iso", "ami", "aki", "ari", "vdi", "vhd", "vhdx", "vmdk", "ova", "uec"]);
        assert_eq!(ContainerFormat::Ova.package(), Some(Package::Ova));
        assert_eq!(ContainerFormat::Bare.package(), None);
        assert!(Package::Uec.inner_formats() == [DiskFormat::Ami]);
        assert_eq!(DiskFormat::parse("ova"), None, "a package is a container format, not a disk format");
        // The image formats are the disk formats, then the packages, in that order.
        let both: Vec<&str> = DiskFormat::ALL.iter().map(|d| d.as_str()).chain(Package::ALL.iter().map(|p| p.as_str())).collect();
        assert_eq!(ImageFormat::ALL.iter().map(|f| f.as_str()).collect::<Vec<_>>(), both);
        for d in DiskFormat::ALL {
            assert_eq!(ImageFormat::from(*d).disk(), Some(*d));
        }
        assert_eq!(ImageFormat::from(Package::Ova).package(), Some(Package::Ova));
        assert_eq!(ImageFormat::Uec.disk(), None);
    }

    fn serde_json_like(s: &str) -> String {
        format!("\"{s}\"")
    }
}
