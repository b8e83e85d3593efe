//! VirtualBox VDI: docs/formats.md §2.5 #16. All integers little-endian.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::limits::{VDI_BLOCK_SIZE, VDI_MAX_BLOCKS};
use crate::util::{arr16, le32, le64, overlaps};

/// VDI signature at 0x40.
pub const SIGNATURE: u32 = 0xBEDA_107F;
/// Block map entry: block not allocated.
pub const BLOCK_FREE: u32 = 0xFFFF_FFFF;
/// Block map entry: block reads as zeros.
pub const BLOCK_ZERO: u32 = 0xFFFF_FFFE;
/// Bytes of header we parse (pre-header + header through the parent UUID).
pub const HEADER_LEN: usize = 0x1C8;
/// Largest bitset (in bytes) used to detect two map entries sharing a block (16 Mi blocks).
const DUP_BITSET_MAX_BYTES: u64 = 2 << 20;

/// The VDI header (version 1.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// 0x00010001 for version 1.1.
    pub version: u32,
    /// Header size after the 0x40-byte pre-header (0x190).
    pub header_size: u32,
    /// 1 dynamic, 2 static, 3 undo, 4 diff.
    pub image_type: u32,
    /// Image flags.
    pub flags: u32,
    /// Offset of the block map.
    pub offset_bmap: u32,
    /// Offset of the first data block.
    pub offset_data: u32,
    /// Sector size (512).
    pub sector_size: u32,
    /// Virtual disk size in bytes.
    pub disk_size: u64,
    /// Block size (1 MiB).
    pub block_size: u32,
    /// Extra bytes per block (0).
    pub block_extra: u32,
    /// Number of blocks in the image.
    pub blocks_in_image: u32,
    /// Number of allocated blocks.
    pub blocks_allocated: u32,
    /// This image's UUID.
    pub uuid_image: [u8; 16],
    /// UUID of the last snapshot.
    pub uuid_last_snap: [u8; 16],
    /// Link UUID (differencing images).
    pub uuid_link: [u8; 16],
    /// Parent UUID (differencing images).
    pub uuid_parent: [u8; 16],
}

impl Header {
    /// Parses the header; `None` if the signature is missing or the bytes are short.
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN || le32(b, 0x40) != SIGNATURE {
            return None;
        }
        Some(Header {
            version: le32(b, 0x44),
            header_size: le32(b, 0x48),
            image_type: le32(b, 0x4C),
            flags: le32(b, 0x50),
            offset_bmap: le32(b, 0x154),
            offset_data: le32(b, 0x158),
            sector_size: le32(b, 0x168),
            disk_size: le64(b, 0x170),
            block_size: le32(b, 0x178),
            block_extra: le32(b, 0x17C),
            blocks_in_image: le32(b, 0x180),
            blocks_allocated: le32(b, 0x184),
            uuid_image: arr16(b, 0x188),
            uuid_last_snap: arr16(b, 0x198),
            uuid_link: arr16(b, 0x1A8),
            uuid_parent: arr16(b, 0x1B8),
        })
    }
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let Some(h) = Header::parse(&det.head) else {
        cx.error(codes::TRUNCATED, "The file ends inside the VDI header.");
        return Ok(Parsed::default());
    };
    let sub = match h.image_type {
        1 => "dynamic",
        2 => "static",
        3 => "undo",
        4 => "diff",
        _ => "unknown",
    };
    let vs = Some(h.disk_size);
    if h.image_type != 1 && h.image_type != 2 {
        cx.error(
            codes::VDI_TYPE,
            format!("The VDI image type {} ({sub}) is not accepted; only dynamic and static (fixed) VDI images are.", h.image_type),
        );
    }
    if h.uuid_link != [0; 16] || h.uuid_parent != [0; 16] {
        cx.error(
            codes::VDI_PARENT,
            "The VDI image refers to a parent image (it is a differencing or snapshot image); upload a standalone image.",
        );
    }
    let bad = |cx: &mut Ctx, what: String| cx.error(codes::VDI_HEADER, format!("The VDI header is invalid: {what}."));
    if h.version >> 16 != 1 {
        bad(cx, format!("version 0x{:08x} is not 1.x", h.version));
    }
    if h.block_size != VDI_BLOCK_SIZE {
        bad(cx, format!("block size {} is not 1 MiB", h.block_size));
    }
    if h.sector_size != 512 {
        bad(cx, format!("sector size {} is not 512", h.sector_size));
    }
    if h.block_extra != 0 {
        bad(cx, "extra block data is not supported".into());
    }
    if h.blocks_in_image > VDI_MAX_BLOCKS {
        bad(cx, format!("{} blocks is more than QEMU supports", h.blocks_in_image));
    }
    if h.disk_size > u64::from(h.blocks_in_image) * u64::from(VDI_BLOCK_SIZE) {
        bad(cx, "the disk size is larger than its blocks".into());
    }
    if h.blocks_allocated > h.blocks_in_image {
        bad(cx, "more blocks are allocated than exist".into());
    }
    if h.offset_bmap % 512 != 0 || h.offset_data % 512 != 0 {
        bad(cx, "the block map or data offset is not sector aligned".into());
    }
    if cx.has_error() {
        return Ok(Parsed::new(sub, vs));
    }
    let bmap_off = u64::from(h.offset_bmap);
    let bmap_len = u64::from(h.blocks_in_image) * 4;
    if overlaps(bmap_off, bmap_len, 0, HEADER_LEN as u64) || bmap_off.saturating_add(bmap_len) > u64::from(h.offset_data) {
        cx.error(codes::VDI_BLOCK_MAP, "The VDI block map overlaps the header or the data area.");
        return Ok(Parsed::new(sub, vs));
    }
    if !cx.inside(bmap_off, bmap_len) {
        cx.error(codes::TRUNCATED, "The VDI block map lies outside the file; the file is truncated.");
        return Ok(Parsed::new(sub, vs));
    }
    if cx.deep {
        walk_map(cx, &h)?;
    }
    Ok(Parsed::new(sub, vs))
}

fn walk_map(cx: &mut Ctx, h: &Header) -> PResult<()> {
    let bmap_off = u64::from(h.offset_bmap);
    let bmap_len = u64::from(h.blocks_in_image) * 4;
    let bits = u64::from(h.blocks_in_image);
    let mut seen = if bits.div_ceil(8) <= DUP_BITSET_MAX_BYTES { Some(vec![0u8; bits.div_ceil(8) as usize]) } else { None };
    let mut done = 0u64;
    while done < bmap_len {
        let chunk = cx.read(bmap_off + done, bmap_len - done)?;
        if chunk.is_empty() {
            break;
        }
        for (i, e) in chunk.chunks_exact(4).enumerate() {
            let e = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            if e == BLOCK_FREE || e == BLOCK_ZERO {
                continue;
            }
            let idx = done / 4 + i as u64;
            if e >= h.blocks_in_image {
                cx.error(codes::VDI_BLOCK_MAP, format!("VDI block map entry {idx} points past the last block."));
                return Ok(());
            }
            let data = u64::from(h.offset_data) + u64::from(e) * u64::from(VDI_BLOCK_SIZE);
            if !cx.inside(data, u64::from(VDI_BLOCK_SIZE)) {
                cx.error(codes::TRUNCATED, format!("VDI block {idx} lies outside the file; the file is truncated."));
                return Ok(());
            }
            if let Some(seen) = seen.as_mut() {
                let (byte, bit) = ((e / 8) as usize, e % 8);
                if let Some(b) = seen.get_mut(byte) {
                    if *b & (1 << bit) != 0 {
                        cx.error(codes::VDI_BLOCK_MAP, format!("Two VDI block map entries share data block {e}."));
                        return Ok(());
                    }
                    *b |= 1 << bit;
                }
            }
        }
        done += chunk.len() as u64;
    }
    Ok(())
}
