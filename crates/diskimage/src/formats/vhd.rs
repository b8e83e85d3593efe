//! VHD (Virtual PC, QEMU's `vpc` driver): docs/formats.md §2.5 #14. All integers big-endian.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::limits::{VHD_MAX_BAT_ENTRIES, VHD_MAX_SIZE};
use crate::util::{arr16, be16, be32, be64, byte, has_at, overlaps, slice, utf16_lossy};

/// Disk type: fixed.
pub const TYPE_FIXED: u32 = 2;
/// Disk type: dynamic.
pub const TYPE_DYNAMIC: u32 = 3;
/// Disk type: differencing.
pub const TYPE_DIFFERENCING: u32 = 4;
/// QEMU's `VHD_MAX_GEOMETRY`: with this CHS, the footer's current size is authoritative.
pub const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;

/// The 512-byte footer (also copied at offset 0 of dynamic disks).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Footer {
    /// Features field.
    pub features: u32,
    /// File format version (0x00010000).
    pub version: u32,
    /// Offset of the dynamic header (all ones for fixed disks).
    pub data_offset: u64,
    /// Creator application (`vpc `, `qemu`, `qem2`, `win `, …).
    pub creator_app: [u8; 4],
    /// Original size in bytes.
    pub original_size: u64,
    /// Current size in bytes.
    pub current_size: u64,
    /// Geometry: cylinders.
    pub cylinders: u16,
    /// Geometry: heads.
    pub heads: u8,
    /// Geometry: sectors per track.
    pub sectors_per_track: u8,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// Stored checksum.
    pub checksum: u32,
    /// Disk UUID.
    pub uuid: [u8; 16],
    /// True if the stored checksum matches the bytes.
    pub checksum_ok: bool,
}

/// One's complement of the byte sum, with the checksum field (4 bytes at `at`) taken as zero.
pub fn checksum(b: &[u8], at: usize) -> u32 {
    let sum: u32 = b.iter().enumerate().filter(|(i, _)| !(at..at + 4).contains(i)).fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    !sum
}

impl Footer {
    /// Parses a 512-byte footer; `None` without the `conectix` cookie.
    pub fn parse(b: &[u8]) -> Option<Footer> {
        if b.len() < 512 || !has_at(b, 0, b"conectix") {
            return None;
        }
        let b = slice(b, 0, 512);
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(slice(b, 0x1C, 4));
        Some(Footer {
            features: be32(b, 0x08),
            version: be32(b, 0x0C),
            data_offset: be64(b, 0x10),
            creator_app,
            original_size: be64(b, 0x28),
            current_size: be64(b, 0x30),
            cylinders: be16(b, 0x38),
            heads: byte(b, 0x3A),
            sectors_per_track: byte(b, 0x3B),
            disk_type: be32(b, 0x3C),
            checksum: be32(b, 0x40),
            uuid: arr16(b, 0x44),
            checksum_ok: checksum(b, 0x40) == be32(b, 0x40),
        })
    }

    /// The virtual size QEMU reports (block/vpc.c): the CHS product unless the creator is one
    /// that uses the current size, or the geometry is the maximum.
    pub fn virtual_size(&self) -> u64 {
        let chs = u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track);
        let uses_current = matches!(&self.creator_app, b"win " | b"qem2" | b"d2v " | b"CTXS" | b"tap\0" | b"wa\0\0");
        if uses_current || chs == MAX_GEOMETRY_SECTORS {
            self.current_size / 512 * 512
        } else {
            chs * 512
        }
    }
}

/// The dynamic disk header (1,024 bytes at the footer's data offset).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DynamicHeader {
    /// Offset of the block allocation table.
    pub table_offset: u64,
    /// Header version.
    pub header_version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Block size in bytes (2 MiB usually).
    pub block_size: u32,
    /// Stored checksum.
    pub checksum: u32,
    /// Parent disk UUID (differencing).
    pub parent_uuid: [u8; 16],
    /// Parent file name (UTF-16BE).
    pub parent_name: String,
    /// Platform codes of the 8 parent locators (0 = unused).
    pub parent_locator_codes: [u32; 8],
    /// True if the stored checksum matches.
    pub checksum_ok: bool,
}

impl DynamicHeader {
    /// Parses the 1,024-byte header; `None` without the `cxsparse` cookie.
    pub fn parse(b: &[u8]) -> Option<DynamicHeader> {
        if b.len() < 1024 || !has_at(b, 0, b"cxsparse") {
            return None;
        }
        let b = slice(b, 0, 1024);
        Some(DynamicHeader {
            table_offset: be64(b, 0x10),
            header_version: be32(b, 0x18),
            max_table_entries: be32(b, 0x1C),
            block_size: be32(b, 0x20),
            checksum: be32(b, 0x24),
            parent_uuid: arr16(b, 0x28),
            parent_name: utf16_lossy(slice(b, 0x40, 512), true),
            parent_locator_codes: core::array::from_fn(|i| be32(b, 0x240 + 24 * i)),
            checksum_ok: checksum(b, 0x24) == be32(b, 0x24),
        })
    }
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let tail_footer = if det.tail.len() >= 512 { Footer::parse(slice(&det.tail, det.tail.len() - 512, 512)) } else { None };
    let head_footer = Footer::parse(&det.head);
    let Some(f) = tail_footer.clone().or(head_footer.clone()) else {
        cx.error(codes::TRUNCATED, "The VHD footer is incomplete.");
        return Ok(Parsed::default());
    };
    let sub = match f.disk_type {
        TYPE_FIXED => "fixed",
        TYPE_DYNAMIC => "dynamic",
        TYPE_DIFFERENCING => "differencing",
        _ => "unknown",
    };
    let vs = f.virtual_size();
    if !f.checksum_ok {
        cx.error(codes::VHD_CHECKSUM, "The VHD footer checksum is wrong; the file is damaged (QEMU refuses it too).");
    }
    match f.disk_type {
        TYPE_FIXED | TYPE_DYNAMIC => {}
        TYPE_DIFFERENCING => cx.error(
            codes::VHD_PARENT,
            "This is a differencing VHD that depends on a parent disk; upload a standalone (fixed or dynamic) VHD.",
        ),
        t => cx.error(codes::VHD_DISK_TYPE, format!("The VHD disk type {t} is not valid.")),
    }
    if vs > VHD_MAX_SIZE {
        cx.error(codes::VHD_TOO_LARGE, "The VHD claims a size beyond the format's 2040 GiB limit.");
    }
    if tail_footer.is_none() {
        cx.error(codes::TRUNCATED, "The VHD has no footer at its end; the file is truncated.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    if f.disk_type == TYPE_FIXED {
        // The data is everything before the footer.
        let data = cx.size - 512;
        if data < f.current_size.min(vs) {
            cx.error(codes::TRUNCATED, "The fixed VHD is shorter than the disk size its footer declares.");
        }
        if f.data_offset != u64::MAX {
            cx.warn(codes::VHD_TABLES, "The fixed VHD footer has an unexpected data offset.");
        }
        // The data area is a raw disk; check its partition table like a raw image's.
        crate::formats::raw::check_partitions(cx, det, true)?;
        return Ok(Parsed::new(sub, Some(vs)));
    }
    // Dynamic / differencing.
    match &head_footer {
        Some(h) if h == &f => {}
        _ => {
            cx.error(codes::VHD_FOOTER_MISMATCH, "The copy of the VHD footer at the start of the file differs from the footer at the end.")
        }
    }
    let dh_off = f.data_offset;
    if !cx.inside(dh_off, 1024) || overlaps(dh_off, 1024, 0, 512) || overlaps(dh_off, 1024, cx.size - 512, 512) {
        cx.error(codes::VHD_TABLES, "The VHD dynamic header lies outside the file or overlaps a footer.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    let dhb = cx.read(dh_off, 1024)?;
    let Some(dh) = DynamicHeader::parse(&dhb) else {
        cx.error(codes::VHD_TABLES, "The VHD dynamic header is missing its cxsparse signature.");
        return Ok(Parsed::new(sub, Some(vs)));
    };
    if !dh.checksum_ok {
        cx.error(codes::VHD_CHECKSUM, "The VHD dynamic header checksum is wrong; the file is damaged.");
    }
    if dh.parent_uuid != [0; 16] || !dh.parent_name.is_empty() || dh.parent_locator_codes.iter().any(|&c| c != 0) {
        let name = if dh.parent_name.is_empty() {
            String::new()
        } else {
            format!(" (\"{}\")", dh.parent_name.chars().take(100).collect::<String>())
        };
        cx.error(codes::VHD_PARENT, format!("The VHD names a parent disk{name}; upload a standalone VHD."));
    }
    let bs = u64::from(dh.block_size);
    if bs < 512 || !bs.is_power_of_two() {
        cx.error(codes::VHD_TABLES, format!("The VHD block size {bs} is invalid."));
        return Ok(Parsed::new(sub, Some(vs)));
    }
    let entries = u64::from(dh.max_table_entries);
    if entries > VHD_MAX_BAT_ENTRIES || entries.saturating_mul(bs) < vs {
        cx.error(codes::VHD_TABLES, "The VHD block table does not match the disk size.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    let bat_len = entries * 4;
    let bat = dh.table_offset;
    if !cx.inside(bat, bat_len)
        || overlaps(bat, bat_len, 0, 512)
        || overlaps(bat, bat_len, dh_off, 1024)
        || overlaps(bat, bat_len, cx.size - 512, 512)
    {
        cx.error(codes::VHD_TABLES, "The VHD block table lies outside the file or overlaps a header.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    if cx.deep {
        // Each allocated block: a sector bitmap then the data, all before the footer.
        let bitmap = (bs / 512).div_ceil(8).div_ceil(512) * 512;
        let limit = cx.size - 512;
        let mut done = 0u64;
        'outer: while done < bat_len {
            let chunk = cx.read(bat + done, bat_len - done)?;
            if chunk.is_empty() {
                break;
            }
            for (i, e) in chunk.chunks_exact(4).enumerate() {
                let e = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                if e == u32::MAX {
                    continue;
                }
                let off = u64::from(e) * 512;
                let idx = done / 4 + i as u64;
                if off.saturating_add(bitmap).saturating_add(bs) > limit {
                    cx.error(codes::VHD_TABLES, format!("VHD block {idx} lies outside the file; the file is truncated or damaged."));
                    break 'outer;
                }
                if overlaps(off, bitmap + bs, bat, bat_len) || overlaps(off, bitmap + bs, dh_off, 1024) || off < 512 {
                    cx.error(codes::VHD_TABLES, format!("VHD block {idx} overlaps the VHD metadata."));
                    break 'outer;
                }
            }
            done += chunk.len() as u64;
        }
    }
    Ok(Parsed::new(sub, Some(vs)))
}
