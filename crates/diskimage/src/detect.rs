//! Format detection from the head (first 64 KiB) and the tail (last 1.5 KiB) of the file.
//!
//! Detection uses only these two ranges, so the browser and the server always agree on the
//! format; the deeper parsers never change it. Like the OpenStack inspector, every detector runs
//! and all matches are collected: more than one "rich" match is a polyglot.

use crate::ctx::{Ctx, PResult};
use crate::formats::{gzip, kernel, tar, vmdk};
use crate::limits::{SNIFF_HEAD, SNIFF_TAIL};
use crate::report::Format;
use crate::util::{byte, has_at, le16, le32};

/// A partition table found at the start of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PartTable {
    Mbr,
    /// GPT with the given logical sector size (512 or 4096).
    Gpt(u64),
}

/// What the head and tail matched.
#[derive(Clone, Debug, Default)]
pub(crate) struct Detection {
    /// Rich formats matched, in [`crate::ALL_FORMATS`] order, each with a short reason.
    pub rich: Vec<(Format, &'static str)>,
    pub part: Option<PartTable>,
    /// A filesystem signature (ext4, XFS, FAT, NTFS …) for the informational finding.
    pub fs_hint: Option<&'static str>,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Detection {
    pub fn has(&self, f: Format) -> bool {
        self.rich.iter().any(|(g, _)| *g == f)
    }
}

pub(crate) fn detect(cx: &Ctx, declared: Option<Format>) -> PResult<Detection> {
    let head = cx.read(0, SNIFF_HEAD)?;
    let tail_len = cx.size.min(SNIFF_TAIL);
    let tail = cx.read(cx.size - tail_len, tail_len)?;
    Ok(classify(head, tail, declared))
}

/// Detection proper, on the head (first 64 KiB) and tail (last 1.5 KiB) already read. An empty
/// `tail` gives what the head alone says (see `engine::sniff_head`).
pub(crate) fn classify(head: Vec<u8>, tail: Vec<u8>, declared: Option<Format>) -> Detection {
    let h = head.as_slice();
    let mut rich: Vec<(Format, &'static str)> = Vec::new();

    if has_at(h, 0, b"QFI\xfb") {
        if crate::util::be32(h, 4) == 1 {
            rich.push((Format::Qcow, "QFI\\xfb magic, version 1"));
        } else {
            rich.push((Format::Qcow2, "QFI\\xfb magic"));
        }
    }
    if has_at(h, 0, b"QED\0") {
        rich.push((Format::Qed, "QED magic"));
    }
    if has_at(h, 0, b"LUKS\xba\xbe") {
        rich.push((Format::Luks, "LUKS magic"));
    }
    if h.len() >= 0x44 && le32(h, 0x40) == 0xBEDA_107F {
        rich.push((Format::Vdi, "VDI signature at 0x40"));
    }
    let tail_footer = tail.len() >= 512 && has_at(&tail, tail.len() - 512, b"conectix");
    if has_at(h, 0, b"conectix") || tail_footer {
        rich.push((Format::Vhd, "conectix footer"));
    }
    if has_at(h, 0, b"vhdxfile") {
        rich.push((Format::Vhdx, "vhdxfile signature"));
    }
    if has_at(h, 0, b"KDMV") || has_at(h, 0, b"COWD") || vmdk::looks_like_descriptor(h) {
        rich.push((Format::Vmdk, "VMDK signature or descriptor"));
    }
    if iso_signature(h) {
        rich.push((Format::Iso, "ISO 9660/UDF volume descriptor"));
    }
    if tar::is_tar_header(h) {
        if tar::first_member_is_ovf(h) {
            rich.push((Format::Ova, "tar whose first member is an .ovf"));
        } else {
            rich.push((Format::Unknown, "tar archive"));
        }
    }
    if gzip::is_gzip(h) {
        match gzip::sniff_inner(h) {
            gzip::Inner::Tar => rich.push((Format::Uec, "gzip'd tar")),
            gzip::Inner::Cpio => rich.push((Format::Ari, "gzip'd cpio")),
            gzip::Inner::Other => rich.push((Format::Unknown, "gzip stream")),
        }
    }
    if kernel::kernel_kind(h).is_some() {
        rich.push((Format::Aki, "Linux kernel header"));
    }
    if kernel::initrd_kind(h, declared == Some(Format::Ari)).is_some() {
        rich.push((Format::Ari, "initrd (cpio or compressed stream)"));
    }

    // Partition tables: `55 AA` at 510, but not a kernel (bzImage carries it), not a FAT/NTFS
    // boot sector (docs/formats.md §1.1 MBR row).
    let mut fs_hint = filesystem_hint(h);
    let mut part = None;
    if h.len() >= 512 && has_at(h, 510, b"\x55\xAA") && !has_at(h, 0x202, b"HdrS") {
        if is_vbr(h) {
            fs_hint = fs_hint.or(Some("FAT/NTFS boot sector"));
        } else if byte(h, 446 + 4) == 0xEE && has_at(h, 512, b"EFI PART") {
            part = Some(PartTable::Gpt(512));
        } else if byte(h, 446 + 4) == 0xEE && has_at(h, 4096, b"EFI PART") {
            part = Some(PartTable::Gpt(4096));
        } else {
            part = Some(PartTable::Mbr);
        }
    }

    rich.sort_by_key(|(f, _)| crate::report::ALL_FORMATS.iter().position(|g| g == f));
    rich.dedup_by_key(|(f, _)| *f);
    Detection { rich, part, fs_hint, head, tail }
}

/// ISO 9660 (`CD001`) or UDF (`BEA01`/`NSR0x`) in a volume descriptor slot from sector 16 on.
pub(crate) fn iso_signature(h: &[u8]) -> bool {
    if has_at(h, 0x8001, b"CD001") {
        return true;
    }
    (16u64..16 + crate::limits::ISO_MAX_DESCRIPTORS).any(|s| {
        let off = (s * 2048) as usize + 1;
        has_at(h, off, b"NSR02") || has_at(h, off, b"NSR03")
    })
}

/// A FAT or NTFS volume boot record (not a partition table).
fn is_vbr(h: &[u8]) -> bool {
    (byte(h, 0x10) == 2 && byte(h, 0x15) == 0xF8)
        || has_at(h, 0x36, b"FAT12")
        || has_at(h, 0x36, b"FAT16")
        || has_at(h, 0x52, b"FAT32")
        || has_at(h, 3, b"NTFS    ")
        || has_at(h, 3, b"EXFAT   ")
}

fn filesystem_hint(h: &[u8]) -> Option<&'static str> {
    if le16(h, 1080) == 0xEF53 && h.len() > 1082 {
        Some("ext2/3/4 filesystem")
    } else if has_at(h, 0, b"XFSB") {
        Some("XFS filesystem")
    } else if has_at(h, 4086, b"SWAPSPACE2") {
        Some("Linux swap")
    } else {
        None
    }
}
