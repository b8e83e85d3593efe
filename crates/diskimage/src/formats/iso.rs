//! ISO 9660 / UDF / El Torito / hybrid ISOs: docs/formats.md §2.5 #17.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::{Detection, PartTable};
use crate::limits::ISO_MAX_DESCRIPTORS;
use crate::util::{be16, be32, byte, has_at, le16, le32, slice};

/// Sector size of the volume descriptor area.
pub const SECTOR: u64 = 2048;
/// First volume descriptor sector (after the 32 KiB system area).
pub const FIRST_DESCRIPTOR: u64 = 16;

/// What the volume descriptors say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    /// A primary volume descriptor was found.
    pub iso9660: bool,
    /// Joliet / supplementary descriptor present.
    pub joliet: bool,
    /// UDF NSR descriptor present.
    pub udf: bool,
    /// El Torito boot catalog sector, if a boot record names one.
    pub el_torito_catalog: Option<u32>,
    /// PVD volume space size (blocks).
    pub volume_blocks: u32,
    /// PVD logical block size.
    pub block_size: u16,
    /// Both-endian fields disagree.
    pub inconsistent: bool,
}

/// Walks the descriptors present in `head` (the first 64 KiB).
pub fn parse_volume(head: &[u8]) -> Volume {
    let mut v = Volume::default();
    for s in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + ISO_MAX_DESCRIPTORS {
        let o = (s * SECTOR) as usize;
        if head.len() < o + SECTOR as usize {
            break;
        }
        let d = slice(head, o, SECTOR as usize);
        if has_at(d, 1, b"CD001") {
            match byte(d, 0) {
                0 if has_at(d, 7, b"EL TORITO SPECIFICATION") => v.el_torito_catalog = Some(le32(d, 0x47)),
                1 => {
                    v.iso9660 = true;
                    v.volume_blocks = le32(d, 80);
                    v.block_size = le16(d, 128);
                    v.inconsistent |= be32(d, 84) != v.volume_blocks || be16(d, 130) != v.block_size;
                }
                2 => v.joliet = true,
                _ => {}
            }
        } else if has_at(d, 1, b"NSR02") || has_at(d, 1, b"NSR03") {
            v.udf = true;
        } else if !(has_at(d, 1, b"BEA01") || has_at(d, 1, b"TEA01") || has_at(d, 1, b"BOOT2") || has_at(d, 1, b"CDW02")) {
            // End of the volume recognition area.
            if s > FIRST_DESCRIPTOR {
                break;
            }
        }
    }
    v
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let v = parse_volume(&det.head);
    let mut parts: Vec<&str> = Vec::new();
    if v.iso9660 {
        parts.push("iso9660");
    }
    if v.udf {
        parts.push("udf");
    }
    if v.el_torito_catalog.is_some() {
        parts.push("eltorito");
    }
    match det.part {
        Some(PartTable::Mbr) => parts.push("hybrid-mbr"),
        Some(PartTable::Gpt(_)) => parts.push("hybrid-gpt"),
        None => {}
    }
    let sub = if parts.is_empty() { "iso9660".to_string() } else { parts.join("+") };
    if v.iso9660 {
        if v.inconsistent {
            cx.error(codes::ISO_DESCRIPTORS, "The ISO primary volume descriptor is inconsistent (its both-endian fields disagree).");
        }
        if !matches!(v.block_size, 512 | 1024 | 2048) {
            cx.error(codes::ISO_DESCRIPTORS, format!("The ISO logical block size {} is invalid.", v.block_size));
        } else {
            let declared = u64::from(v.volume_blocks) * u64::from(v.block_size);
            if declared > cx.size {
                cx.error(
                    codes::TRUNCATED,
                    format!("The ISO declares {declared} bytes but the file has {}; the file is truncated.", cx.size),
                );
            }
        }
    }
    // System area polyglots at other offsets than those the detectors look at.
    let sa = slice(&det.head, 0, 32 << 10);
    for (magic, name) in [
        (&b"QFI\xfb"[..], "qcow2"),
        (b"KDMV", "VMDK"),
        (b"conectix", "VHD"),
        (b"vhdxfile", "VHDX"),
        (b"QED\0", "QED"),
        (b"LUKS\xba\xbe", "LUKS"),
    ] {
        if (512..sa.len()).step_by(512).any(|o| has_at(sa, o, magic)) {
            cx.error(codes::ISO_POLYGLOT, format!("The ISO's system area contains a {name} header; such polyglot files are refused."));
        }
    }
    // Hybrid partition tables are informational (xorriso writes unusual ones).
    crate::formats::raw::check_partitions(cx, det, false)?;
    if let Some(cat) = v.el_torito_catalog {
        let off = u64::from(cat) * SECTOR;
        if !cx.inside(off, 32) {
            cx.warn(codes::ISO_BOOT_CATALOG, "The El Torito boot catalog lies outside the file; the disc will not boot.");
        } else if let Some(c) = cx.read_opt(off, 32)? {
            // Validation entry: header id 1, key bytes 55 AA, 16-bit words sum to 0.
            let sum = (0..16).fold(0u16, |s, i| s.wrapping_add(le16(&c, 2 * i)));
            if byte(&c, 0) != 1 || !has_at(&c, 30, b"\x55\xAA") || sum != 0 {
                cx.warn(codes::ISO_BOOT_CATALOG, "The El Torito boot catalog is invalid; the disc may not boot.");
            }
        }
    }
    // qemu has no ISO driver: the guest sees the file as a raw CD-ROM.
    let vs = cx.size.div_ceil(512).saturating_mul(512);
    Ok(Parsed::new(sub, Some(vs)))
}
