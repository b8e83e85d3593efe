//! The disk and container formats Hangar handles, as the Formats page presents them.

/// How Hangar treats a format when it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatInfo {
    /// Anchor on the Formats page, e.g. `qcow2`.
    pub id: &'static str,
    pub name: &'static str,
    /// The Glance `disk_format` / `container_format` values this corresponds to.
    pub glance: &'static str,
    /// File name extensions users typically see.
    pub extensions: &'static str,
    pub description: &'static str,
    /// What Hangar checks and does on import.
    pub handling: &'static str,
}

/// Every format family of the product, in the order the Formats page shows them.
pub const FORMATS: &[FormatInfo] = &[
    FormatInfo {
        id: "qcow2",
        name: "QCOW2",
        glance: "disk_format=qcow2",
        extensions: ".qcow2, .img",
        description: "QEMU copy-on-write v2/v3: sparse, supports snapshots and compression. The native format of KVM clouds.",
        handling:
            "Validated structurally: backing files, external data files, encryption, the corrupt bit and unknown features are refused.",
    },
    FormatInfo {
        id: "raw",
        name: "RAW",
        glance: "disk_format=raw",
        extensions: ".raw, .img",
        description:
            "A plain byte-for-byte disk, optionally with an MBR or GPT partition table. Ceph RBD needs raw for copy-on-write clones.",
        handling: "Checked that it is not another format in disguise; converted to qcow2 on file-based storage.",
    },
    FormatInfo {
        id: "vdi",
        name: "VDI",
        glance: "disk_format=vdi",
        extensions: ".vdi",
        description: "VirtualBox Disk Image, dynamic or fixed. Hypervisors in the cloud cannot boot it directly.",
        handling: "Differencing and undo images are refused; accepted images are converted to qcow2 or raw.",
    },
    FormatInfo {
        id: "vhd",
        name: "VHD / VHDX",
        glance: "disk_format=vhd, vhdx",
        extensions: ".vhd, .vhdx",
        description: "Microsoft Virtual Hard Disk (Hyper-V, Azure): fixed or dynamic. A fixed VHD is only recognisable by its footer.",
        handling: "Differencing disks, bad checksums and VHDX logs that need replaying are refused; accepted disks are converted.",
    },
    FormatInfo {
        id: "vmdk",
        name: "VMDK",
        glance: "disk_format=vmdk",
        extensions: ".vmdk",
        description: "VMware Virtual Machine Disk: monolithic sparse or stream-optimized (as inside OVA packages).",
        handling: "Descriptor files that point at other files are always refused; single-file sparse disks are converted.",
    },
    FormatInfo {
        id: "iso",
        name: "ISO 9660",
        glance: "disk_format=iso",
        extensions: ".iso",
        description:
            "Optical disc images for installers and live systems, including hybrid ISOs with an MBR/GPT and El Torito boot records.",
        handling: "Stored as is; a disk image hidden in the system area (a polyglot) is refused.",
    },
    FormatInfo {
        id: "ova",
        name: "OVF / OVA",
        glance: "container_format=ova, ovf",
        extensions: ".ova, .ovf",
        description: "Open Virtualization Format packages: a tar holding an OVF descriptor, a manifest and one or more disks.",
        handling:
            "Walked as a stream with a strict member policy; every disk is extracted and converted, the descriptor's facts become metadata.",
    },
    FormatInfo {
        id: "ami",
        name: "AMI / AKI / ARI",
        glance: "disk_format=ami, aki, ari",
        extensions: ".img, vmlinuz, initrd",
        description: "Amazon-style machine, kernel and ramdisk images: a raw filesystem booted with a separate kernel and initrd.",
        handling: "Kernels and initrds are checked by their signatures; the three parts are linked together.",
    },
    FormatInfo {
        id: "uec",
        name: "UEC tarball",
        glance: "container_format=bare (unpacked)",
        extensions: ".tar.gz",
        description: "Ubuntu Enterprise Cloud bundles: a gzip'd tar holding an AMI with its AKI kernel and ARI ramdisk.",
        handling: "Unpacked with size and ratio caps and split into three linked images.",
    },
];

/// An image's declared formats as the lists and image pages show them: the disk format, `in`
/// the container when that is a package or other non-`bare` container, a package alone when
/// its inner disk is not known, `unknown` when nothing is declared yet.
pub fn describe(disk: Option<domain::DiskFormat>, container: Option<domain::ContainerFormat>, unknown: &str) -> String {
    use domain::ContainerFormat::Bare;
    match (disk, container) {
        (Some(d), Some(c)) if c != Bare => format!("{d} in {c}"),
        (Some(d), _) => d.to_string(),
        (None, Some(c)) if c.package().is_some() => format!("{c} package"),
        (None, _) => unknown.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::FORMATS;
    use domain::{ContainerFormat, DiskFormat};

    #[test]
    fn ids_are_unique_anchor_names() {
        let mut ids: Vec<_> = FORMATS.iter().map(|f| f.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), FORMATS.len());
        assert!(FORMATS.iter().all(|f| f.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())));
    }

    #[test]
    fn formats_are_described_with_their_container() {
        let d = super::describe;
        assert_eq!(d(Some(DiskFormat::Vmdk), Some(ContainerFormat::Ova), "—"), "vmdk in ova");
        assert_eq!(d(Some(DiskFormat::Qcow2), Some(ContainerFormat::Bare), "—"), "qcow2");
        assert_eq!(d(None, Some(ContainerFormat::Ova), "—"), "ova package");
        assert_eq!(d(None, Some(ContainerFormat::Bare), "—"), "—");
        assert_eq!(d(None, None, "not known yet"), "not known yet");
    }
}
