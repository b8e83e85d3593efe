//! VHDX (Hyper-V): docs/formats.md §2.5 #15. All integers little-endian; checksums CRC-32C.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::limits::{VHDX_MAX_ENTRIES, VHDX_MAX_ITEM, VHDX_MAX_SIZE};
use crate::util::{arr16, crc32c, has_at, le16, le32, le64, overlaps, slice};

const MIB: u64 = 1 << 20;
/// The two headers.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// The two region tables.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Bytes of the metadata region read at once: the 64 KiB table and the first 64 KiB of items.
const METADATA_READ: u64 = 128 << 10;
/// Region table size (covered by its checksum).
pub const REGION_TABLE_SIZE: u64 = 64 << 10;

/// Converts a GUID string into its on-disk (mixed-endian) bytes at compile time.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]]
}

/// BAT region `2DC27766-F623-4200-9D64-115E9BFD4A08`.
pub const REGION_BAT: [u8; 16] = guid(0x2DC2_7766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
/// Metadata region `8B7CA206-4790-4B9A-B8FE-575F050F886E`.
pub const REGION_METADATA: [u8; 16] = guid(0x8B7C_A206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);
/// File parameters item.
pub const ITEM_FILE_PARAMETERS: [u8; 16] = guid(0xCAA1_6737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]);
/// Virtual disk size item.
pub const ITEM_VIRTUAL_DISK_SIZE: [u8; 16] = guid(0x2FA5_4224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8]);
/// Page 83 data item.
pub const ITEM_PAGE83: [u8; 16] = guid(0xBECA_12AB, 0xB2E6, 0x4523, [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46]);
/// Logical sector size item.
pub const ITEM_LOGICAL_SECTOR: [u8; 16] = guid(0x8141_BF1D, 0xA96F, 0x4709, [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F]);
/// Physical sector size item.
pub const ITEM_PHYSICAL_SECTOR: [u8; 16] = guid(0xCDA3_48C7, 0x445D, 0x4471, [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56]);
/// Parent locator item.
pub const ITEM_PARENT_LOCATOR: [u8; 16] = guid(0xA8D3_5F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C]);

/// One of the two 4 KiB headers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FileHeader {
    /// Sequence number (the valid header with the higher one is current).
    pub sequence_number: u64,
    /// Log GUID; non-zero means the log must be replayed.
    pub log_guid: [u8; 16],
    /// Log format version.
    pub log_version: u16,
    /// VHDX version (1).
    pub version: u16,
    /// Log length in bytes.
    pub log_length: u32,
    /// Log offset in bytes.
    pub log_offset: u64,
    /// Signature `head` present and CRC-32C valid.
    pub valid: bool,
}

impl FileHeader {
    /// Parses a 4 KiB header block.
    pub fn parse(b: &[u8]) -> FileHeader {
        let valid = b.len() >= 4096 && has_at(b, 0, b"head") && {
            let mut c = slice(b, 0, 4096).to_vec();
            if let Some(x) = c.get_mut(4..8) {
                x.fill(0);
            }
            crc32c(&c) == le32(b, 4)
        };
        FileHeader {
            sequence_number: le64(b, 8),
            log_guid: arr16(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
            valid,
        }
    }
}

/// A region table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionEntry {
    /// Region GUID.
    pub guid: [u8; 16],
    /// File offset (1 MiB aligned).
    pub file_offset: u64,
    /// Length (1 MiB multiple).
    pub length: u32,
    /// Bit 0: required.
    pub required: bool,
}

/// The region table.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegionTable {
    /// Entries (at most 2047).
    pub entries: Vec<RegionEntry>,
    /// Signature and CRC-32C valid, entry count in range.
    pub valid: bool,
}

impl RegionTable {
    /// Parses a 64 KiB region table.
    pub fn parse(b: &[u8]) -> RegionTable {
        let count = le32(b, 8);
        let mut valid = b.len() as u64 >= REGION_TABLE_SIZE && has_at(b, 0, b"regi") && count <= VHDX_MAX_ENTRIES;
        if valid {
            let mut c = slice(b, 0, REGION_TABLE_SIZE as usize).to_vec();
            if let Some(x) = c.get_mut(4..8) {
                x.fill(0);
            }
            valid = crc32c(&c) == le32(b, 4);
        }
        let entries = if valid {
            (0..count as usize)
                .map(|i| {
                    let o = 16 + 32 * i;
                    RegionEntry {
                        guid: arr16(b, o),
                        file_offset: le64(b, o + 16),
                        length: le32(b, o + 24),
                        required: le32(b, o + 28) & 1 != 0,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        RegionTable { entries, valid }
    }

    /// The entry with this GUID.
    pub fn find(&self, g: &[u8; 16]) -> Option<&RegionEntry> {
        self.entries.iter().find(|e| &e.guid == g)
    }
}

/// A metadata table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataEntry {
    /// Item GUID.
    pub item: [u8; 16],
    /// Offset relative to the metadata region.
    pub offset: u32,
    /// Length.
    pub length: u32,
    /// Bit 2 of the flags: required.
    pub required: bool,
}

/// The parsed metadata values Hangar needs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Block size in bytes.
    pub block_size: u32,
    /// LeaveBlocksAllocated (a fixed VHDX).
    pub leave_blocks_allocated: bool,
    /// HasParent (a differencing VHDX).
    pub has_parent: bool,
    /// Virtual disk size in bytes.
    pub virtual_disk_size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector_size: u32,
    /// Physical sector size.
    pub physical_sector_size: u32,
    /// A parent locator item is present.
    pub parent_locator: bool,
}

/// Parses the metadata table header: entries, or `None` if the signature/count is invalid.
pub fn parse_metadata_table(b: &[u8]) -> Option<Vec<MetadataEntry>> {
    let count = u32::from(le16(b, 10));
    if !has_at(b, 0, b"metadata") || count > VHDX_MAX_ENTRIES {
        return None;
    }
    Some(
        (0..count as usize)
            .map(|i| {
                let o = 32 + 32 * i;
                MetadataEntry { item: arr16(b, o), offset: le32(b, o + 16), length: le32(b, o + 20), required: le32(b, o + 24) & 4 != 0 }
            })
            .collect(),
    )
}

/// Parses the metadata values from the bytes of a metadata region (table at offset 0, items at
/// their offsets, as far as `region` holds them). `None` if the table is invalid.
pub fn parse_metadata(region: &[u8]) -> Option<Metadata> {
    let items = parse_metadata_table(region)?;
    let mut md = Metadata::default();
    for it in &items {
        let v = slice(region, it.offset as usize, 8);
        if it.item == ITEM_FILE_PARAMETERS {
            md.block_size = le32(v, 0);
            md.leave_blocks_allocated = le32(v, 4) & 1 != 0;
            md.has_parent = le32(v, 4) & 2 != 0;
        } else if it.item == ITEM_VIRTUAL_DISK_SIZE {
            md.virtual_disk_size = le64(v, 0);
        } else if it.item == ITEM_LOGICAL_SECTOR {
            md.logical_sector_size = le32(v, 0);
        } else if it.item == ITEM_PHYSICAL_SECTOR {
            md.physical_sector_size = le32(v, 0);
        } else if it.item == ITEM_PARENT_LOCATOR {
            md.parent_locator = true;
        }
    }
    Some(md)
}

pub(crate) fn inspect(cx: &mut Ctx, _det: &Detection) -> PResult<Parsed> {
    // Headers: a clean log, version 1, a valid checksum on at least one of the two.
    let mut log = None;
    // One read covers both headers and the first region table (64 KiB .. 256 KiB), so the
    // browser needs a single follow-up for all three.
    let block = cx.read(HEADER_OFFSETS[0], REGION_TABLE_OFFSETS[0] + REGION_TABLE_SIZE - HEADER_OFFSETS[0])?;
    {
        let h1 = FileHeader::parse(slice(&block, 0, 4096));
        let h2 = FileHeader::parse(slice(&block, (HEADER_OFFSETS[1] - HEADER_OFFSETS[0]) as usize, 4096));
        let cur = match (h1.valid, h2.valid) {
            (true, true) => Some(if h2.sequence_number > h1.sequence_number { h2 } else { h1 }),
            (true, false) => Some(h1),
            (false, true) => Some(h2),
            (false, false) => None,
        };
        let Some(h) = cur else {
            cx.error(codes::VHDX_HEADER, "Neither VHDX header is valid (bad signature or checksum); the file is damaged or truncated.");
            return Ok(Parsed::default());
        };
        if h.version != 1 {
            cx.error(codes::VHDX_HEADER, format!("VHDX version {} is not supported.", h.version));
        }
        if h.log_guid != [0; 16] {
            cx.error(
                codes::VHDX_LOG,
                "The VHDX has a log that must be replayed (it was not closed cleanly); open and close it in Hyper-V or qemu-img, then upload again.",
            );
        }
        if h.log_length > 0 {
            let (lo, ll) = (h.log_offset, u64::from(h.log_length));
            if lo % MIB != 0 || ll % MIB != 0 || lo < MIB || !cx.inside(lo, ll) {
                cx.error(codes::VHDX_HEADER, "The VHDX log lies outside the file or is misaligned.");
            }
            log = Some((lo, ll));
        }
    }
    // Region table (one follow-up read for the browser).
    let rt = RegionTable::parse(slice(&block, (REGION_TABLE_OFFSETS[0] - HEADER_OFFSETS[0]) as usize, REGION_TABLE_SIZE as usize));
    drop(block);
    let rt = if rt.valid || !cx.deep { rt } else { RegionTable::parse(&cx.read(REGION_TABLE_OFFSETS[1], REGION_TABLE_SIZE)?) };
    if !rt.valid {
        cx.error(codes::VHDX_REGIONS, "The VHDX region table is invalid (signature, checksum or entry count).");
        return Ok(Parsed::default());
    }
    for e in &rt.entries {
        let known = e.guid == REGION_BAT || e.guid == REGION_METADATA;
        if !known && e.required {
            cx.error(codes::VHDX_REGIONS, "The VHDX requires a region Hangar does not know.");
        }
        let len = u64::from(e.length);
        if e.file_offset % MIB != 0 || len % MIB != 0 || e.file_offset < MIB || !cx.inside(e.file_offset, len) {
            cx.error(codes::VHDX_REGIONS, "A VHDX region lies outside the file, inside the header area, or is misaligned.");
            return Ok(Parsed::default());
        }
        if let Some((lo, ll)) = log {
            if overlaps(lo, ll, e.file_offset, len) {
                cx.error(codes::VHDX_REGIONS, "A VHDX region overlaps the log.");
            }
        }
    }
    for (i, a) in rt.entries.iter().enumerate() {
        for b in rt.entries.iter().skip(i + 1) {
            if overlaps(a.file_offset, u64::from(a.length), b.file_offset, u64::from(b.length)) {
                cx.error(codes::VHDX_REGIONS, "Two VHDX regions overlap.");
                return Ok(Parsed::default());
            }
        }
    }
    let (Some(bat), Some(meta)) = (rt.find(&REGION_BAT).cloned(), rt.find(&REGION_METADATA).cloned()) else {
        cx.error(codes::VHDX_REGIONS, "The VHDX lacks its BAT or metadata region.");
        return Ok(Parsed::default());
    };
    // Metadata table (second follow-up read).
    // The table and (where qemu and Hyper-V put them) the items, in one read.
    let table = cx.read(meta.file_offset, u64::from(meta.length).min(METADATA_READ))?;
    let Some(items) = parse_metadata_table(&table) else {
        cx.error(codes::VHDX_METADATA, "The VHDX metadata table is invalid.");
        return Ok(Parsed::default());
    };
    let mut md = Metadata::default();
    let mut seen_fp = false;
    let mut seen_vds = false;
    for it in &items {
        let known =
            [ITEM_FILE_PARAMETERS, ITEM_VIRTUAL_DISK_SIZE, ITEM_PAGE83, ITEM_LOGICAL_SECTOR, ITEM_PHYSICAL_SECTOR, ITEM_PARENT_LOCATOR]
                .contains(&it.item);
        if it.item == ITEM_PARENT_LOCATOR {
            md.parent_locator = true;
        }
        if !known {
            if it.required {
                cx.error(codes::VHDX_METADATA, "The VHDX requires a metadata item Hangar does not know.");
            }
            continue;
        }
        let off = u64::from(it.offset);
        let len = u64::from(it.length.min(VHDX_MAX_ITEM));
        if it.length > VHDX_MAX_ITEM || (len > 0 && (off < 64 << 10 || off.saturating_add(len) > u64::from(meta.length))) {
            cx.error(codes::VHDX_METADATA, "A VHDX metadata item lies outside the metadata region.");
            return Ok(Parsed::default());
        }
        if it.item == ITEM_FILE_PARAMETERS
            || it.item == ITEM_VIRTUAL_DISK_SIZE
            || it.item == ITEM_LOGICAL_SECTOR
            || it.item == ITEM_PHYSICAL_SECTOR
        {
            // Items are small; read 8 bytes (one more follow-up at most, they sit together).
            let v = match table.get(off as usize..off as usize + 8) {
                Some(v) => v.to_vec(),
                None => cx.read(meta.file_offset + off, 8)?,
            };
            if it.item == ITEM_FILE_PARAMETERS {
                md.block_size = le32(&v, 0);
                md.leave_blocks_allocated = le32(&v, 4) & 1 != 0;
                md.has_parent = le32(&v, 4) & 2 != 0;
                seen_fp = true;
            } else if it.item == ITEM_VIRTUAL_DISK_SIZE {
                md.virtual_disk_size = le64(&v, 0);
                seen_vds = true;
            } else if it.item == ITEM_LOGICAL_SECTOR {
                md.logical_sector_size = le32(&v, 0);
            } else {
                md.physical_sector_size = le32(&v, 0);
            }
        }
    }
    let sub = if md.has_parent {
        "differencing"
    } else if md.leave_blocks_allocated {
        "fixed"
    } else {
        "dynamic"
    };
    if md.has_parent || md.parent_locator {
        cx.error(codes::VHDX_PARENT, "This is a differencing VHDX that depends on a parent disk; upload a standalone VHDX.");
    }
    if !seen_fp || !seen_vds {
        cx.error(codes::VHDX_METADATA, "The VHDX metadata lacks the file parameters or the virtual disk size.");
        return Ok(Parsed::new(sub, None));
    }
    let vs = md.virtual_disk_size;
    let bs = u64::from(md.block_size);
    let lss = u64::from(md.logical_sector_size);
    if !(MIB..=256 * MIB).contains(&bs) || !bs.is_power_of_two() || (lss != 512 && lss != 4096) {
        cx.error(codes::VHDX_METADATA, "The VHDX block size or sector size is invalid.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    if vs > VHDX_MAX_SIZE {
        cx.error(codes::VHDX_METADATA, "The VHDX claims a size beyond the format's 64 TiB limit.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    // BAT: payload blocks interleaved with one sector-bitmap entry per chunk.
    let chunk_ratio = ((1u64 << 23) * lss) / bs;
    let data_blocks = vs.div_ceil(bs);
    let total = if data_blocks == 0 { 0 } else { data_blocks + (data_blocks - 1) / chunk_ratio.max(1) };
    if total.saturating_mul(8) > u64::from(bat.length) {
        cx.error(codes::VHDX_BAT, "The VHDX BAT region is too small for the virtual size.");
        return Ok(Parsed::new(sub, Some(vs)));
    }
    if cx.deep {
        walk_bat(cx, &bat, &meta, log, total)?;
    }
    Ok(Parsed::new(sub, Some(vs)))
}

fn walk_bat(cx: &mut Ctx, bat: &RegionEntry, meta: &RegionEntry, log: Option<(u64, u64)>, total: u64) -> PResult<()> {
    let len = total * 8;
    let mut done = 0u64;
    while done < len {
        let chunk = cx.read(bat.file_offset + done, len - done)?;
        if chunk.is_empty() {
            break;
        }
        for (i, e) in chunk.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let state = e & 7;
            let off = (e >> 20).saturating_mul(MIB);
            let idx = done / 8 + i as u64;
            match state {
                0..=3 => continue,
                6 | 7 => {}
                _ => {
                    cx.error(codes::VHDX_BAT, format!("VHDX BAT entry {idx} has an invalid state {state}."));
                    return Ok(());
                }
            }
            // A block is at least 1 MiB; the last one of a fixed VHDX may be cut at the disk end.
            let span = MIB;
            if off < MIB || !cx.inside(off, span) {
                cx.error(codes::VHDX_BAT, format!("VHDX BAT entry {idx} points outside the file; the file is truncated or damaged."));
                return Ok(());
            }
            let clash = overlaps(off, span, bat.file_offset, u64::from(bat.length))
                || overlaps(off, span, meta.file_offset, u64::from(meta.length))
                || log.is_some_and(|(lo, ll)| overlaps(off, span, lo, ll));
            if clash {
                cx.error(codes::VHDX_BAT, format!("VHDX BAT entry {idx} points into the VHDX metadata."));
                return Ok(());
            }
        }
        done += chunk.len() as u64;
    }
    Ok(())
}
