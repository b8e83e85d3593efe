//! The result of sniffing or inspecting: format, subformat, virtual size, verdict, findings.

use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

/// A disk image format (or container) that Hangar recognises.
///
/// Serialised as the lowercase names of the issue (`raw`, `qcow2`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// No recognised structure: the bytes are the disk (subformat `mbr`, `gpt` or `none`).
    Raw,
    /// QEMU copy-on-write version 1 (always refused).
    Qcow,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// QEMU enhanced disk (always refused).
    Qed,
    /// LUKS encrypted volume (refused: the contents cannot be inspected).
    Luks,
    /// VirtualBox disk image.
    Vdi,
    /// Virtual PC / Hyper-V VHD.
    Vhd,
    /// Hyper-V VHDX.
    Vhdx,
    /// VMware VMDK.
    Vmdk,
    /// ISO 9660 / UDF optical disc image.
    Iso,
    /// Open Virtualization Appliance (tar with an OVF descriptor first).
    Ova,
    /// Ubuntu UEC tarball (gzip'd tar holding AMI/AKI/ARI).
    Uec,
    /// Amazon kernel image (a Linux kernel).
    Aki,
    /// Amazon ramdisk image (an initrd).
    Ari,
    /// Recognised as a container we do not accept (a plain tar, an unknown gzip payload).
    Unknown,
}

/// Every format, in a stable order (for UIs and tests).
pub const ALL_FORMATS: [Format; 15] = [
    Format::Raw,
    Format::Qcow,
    Format::Qcow2,
    Format::Qed,
    Format::Luks,
    Format::Vdi,
    Format::Vhd,
    Format::Vhdx,
    Format::Vmdk,
    Format::Iso,
    Format::Ova,
    Format::Uec,
    Format::Aki,
    Format::Ari,
    Format::Unknown,
];

impl Format {
    /// The lowercase name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow => "qcow",
            Format::Qcow2 => "qcow2",
            Format::Qed => "qed",
            Format::Luks => "luks",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Iso => "iso",
            Format::Ova => "ova",
            Format::Uec => "uec",
            Format::Aki => "aki",
            Format::Ari => "ari",
            Format::Unknown => "unknown",
        }
    }

    /// A label for people, e.g. in the upload form.
    pub fn label(self) -> &'static str {
        match self {
            Format::Raw => "Raw disk image",
            Format::Qcow => "QCOW (QEMU copy-on-write v1, obsolete)",
            Format::Qcow2 => "QCOW2 (QEMU copy-on-write v2/v3)",
            Format::Qed => "QED (QEMU enhanced disk)",
            Format::Luks => "LUKS encrypted volume",
            Format::Vdi => "VDI (VirtualBox disk image)",
            Format::Vhd => "VHD (Virtual PC / Hyper-V)",
            Format::Vhdx => "VHDX (Hyper-V)",
            Format::Vmdk => "VMDK (VMware)",
            Format::Iso => "ISO 9660 / UDF optical disc image",
            Format::Ova => "OVA (Open Virtualization Appliance)",
            Format::Uec => "UEC tarball (kernel, ramdisk and machine image)",
            Format::Aki => "AKI (Linux kernel)",
            Format::Ari => "ARI (initial ramdisk)",
            Format::Unknown => "Unrecognised archive",
        }
    }

    /// Glance `disk_format` for this format, if Glance has one.
    ///
    /// OVA is a Glance `container_format` (see [`Format::glance_container_format`]); a UEC tarball
    /// has no single Glance disk format (it holds an AMI, an AKI and an ARI).
    pub fn glance_disk_format(self) -> Option<&'static str> {
        match self {
            Format::Raw => Some("raw"),
            Format::Qcow2 => Some("qcow2"),
            Format::Vdi => Some("vdi"),
            Format::Vhd => Some("vhd"),
            Format::Vhdx => Some("vhdx"),
            Format::Vmdk => Some("vmdk"),
            Format::Iso => Some("iso"),
            Format::Aki => Some("aki"),
            Format::Ari => Some("ari"),
            _ => None,
        }
    }

    /// Glance `container_format`: `ova` for OVA, `uec` for a UEC tarball (Hangar's value: Glance
    /// has none), `bare` for single-file disk formats.
    pub fn glance_container_format(self) -> Option<&'static str> {
        match self {
            Format::Ova => Some("ova"),
            Format::Uec => Some("uec"),
            Format::Unknown | Format::Qcow | Format::Qed | Format::Luks => None,
            Format::Aki => Some("aki"),
            Format::Ari => Some("ari"),
            _ => Some("bare"),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Format::from_str`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFormatName(pub String);

impl fmt::Display for UnknownFormatName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown disk format name {:?}", self.0)
    }
}

impl std::error::Error for UnknownFormatName {}

impl FromStr for Format {
    type Err = UnknownFormatName;
    /// Accepts the lowercase names plus the usual aliases (`vpc` for VHD, `ami` for raw).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let f = match lower.as_str() {
            "raw" | "img" | "ami" => Format::Raw,
            "qcow" => Format::Qcow,
            "qcow2" => Format::Qcow2,
            "qed" => Format::Qed,
            "luks" => Format::Luks,
            "vdi" => Format::Vdi,
            "vhd" | "vpc" => Format::Vhd,
            "vhdx" => Format::Vhdx,
            "vmdk" => Format::Vmdk,
            "iso" => Format::Iso,
            "ova" => Format::Ova,
            "uec" => Format::Uec,
            "aki" => Format::Aki,
            "ari" => Format::Ari,
            "unknown" => Format::Unknown,
            _ => return Err(UnknownFormatName(s.to_string())),
        };
        Ok(f)
    }
}

/// Accepted or rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No finding of severity `error`.
    Accepted,
    /// At least one finding of severity `error`.
    Rejected,
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (e.g. "has a hybrid MBR").
    Info,
    /// Accepted, but the user may want to act.
    Warning,
    /// The image is refused.
    Error,
}

/// One observation, with a stable kebab-case code (see [`crate::codes`]) and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable machine-readable code, e.g. `qcow2-backing-file`.
    pub code: String,
    /// Info, warning or error; any error rejects the image.
    pub severity: Severity,
    /// A sentence a user understands.
    pub message: String,
}

/// What sniffing or inspecting found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Detected format.
    pub format: Format,
    /// Subformat, e.g. `v3`, `dynamic`, `streamOptimized`, `mbr`, `iso9660+eltorito`.
    pub subformat: Option<String>,
    /// Guest-visible size in bytes, as `qemu-img info -f FORMAT` reports it; `None` if unknown.
    pub virtual_size: Option<u64>,
    /// Accepted unless a finding is an error.
    pub verdict: Verdict,
    /// Everything noticed, errors first.
    pub findings: Vec<Finding>,
    /// For a package (OVA, UEC tarball): what it holds, as far as the bytes read show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Box<PackageFacts>>,
}

/// What a package holds: the browser shows it before anything is sent, so a user sees which
/// images an appliance will become. An OVA's descriptor lists every disk wherever it lies in
/// the archive; members are listed as far as the walk got ([`PackageFacts::complete`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFacts {
    /// The disks, in the descriptor's order (OVA), or the machine image, kernel and ramdisk
    /// (UEC); each becomes an image.
    pub disks: Vec<PackageDisk>,
    /// Every member seen, in archive order.
    pub members: Vec<PackageMember>,
    /// True when the walk reached the end of the archive, so `members` is the whole list.
    pub complete: bool,
    /// The virtual machine's name (OVF `<Name>`).
    pub name: Option<String>,
    /// The guest operating system (OVF `osType` or the OperatingSystemSection's description).
    pub os: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u64>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// The manifest, when one was read: its member name, digest algorithm and entry count.
    pub manifest: Option<ManifestFacts>,
}

/// One disk of a package.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDisk {
    /// The OVF `diskId`, or the UEC role (`image`, `kernel`, `ramdisk`).
    pub id: String,
    /// The member holding it.
    pub member: String,
    /// The disk format inside the package (`vmdk (streamOptimized)`, `raw`, `aki`, …).
    pub format: String,
    /// Guest-visible size in bytes (the OVF capacity), when known.
    pub capacity: Option<u64>,
    /// The member's length in the archive, when its header was read.
    pub size: Option<u64>,
}

/// One member of a package's archive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageMember {
    pub name: String,
    pub size: u64,
    /// `descriptor`, `manifest`, `certificate`, `disk`, `image`, `kernel`, `ramdisk` or `other`.
    pub role: String,
}

/// An OVA's manifest, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFacts {
    pub member: String,
    /// `SHA1`, `SHA256` or `SHA512` (the first entry's).
    pub algorithm: String,
    pub entries: usize,
}

impl Report {
    /// True if the verdict is accepted.
    pub fn is_accepted(&self) -> bool {
        self.verdict == Verdict::Accepted
    }

    /// The error findings (the reasons for a rejection).
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    /// True if a finding has this code.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}
