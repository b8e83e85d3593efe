//! Raw disks and their partition tables (MBR, GPT): docs/formats.md §2.5 #18.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::{Detection, PartTable};
use crate::util::{byte, crc32, crc32_update, has_at, le32, le64, slice};

/// GPT partition entries we read at most (the spec's usual 128; 4 × that bounds hostile counts).
const GPT_MAX_ENTRIES: u64 = 512;

/// One MBR partition entry (16 bytes at 446 + 16·i).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbrEntry {
    /// 0x00 or 0x80 (bootable).
    pub boot_flag: u8,
    /// Start CHS (3 bytes).
    pub start_chs: [u8; 3],
    /// Partition type (0xEE = GPT protective).
    pub ptype: u8,
    /// Start LBA.
    pub start_lba: u32,
    /// Number of sectors.
    pub sectors: u32,
}

/// Parses the four MBR entries of a 512-byte sector.
pub fn mbr_entries(sector: &[u8]) -> [MbrEntry; 4] {
    core::array::from_fn(|i| {
        let o = 446 + 16 * i;
        MbrEntry {
            boot_flag: byte(sector, o),
            start_chs: [byte(sector, o + 1), byte(sector, o + 2), byte(sector, o + 3)],
            ptype: byte(sector, o + 4),
            start_lba: le32(sector, o + 8),
            sectors: le32(sector, o + 12),
        }
    })
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let sub = match det.part {
        None => "none",
        Some(PartTable::Mbr) => "mbr",
        Some(PartTable::Gpt(_)) => "gpt",
    };
    if let Some(fs) = det.fs_hint {
        cx.info(codes::FILESYSTEM_HINT, format!("The disk starts with a {fs}."));
    }
    check_partitions(cx, det, true)?;
    // qemu reports a raw file's size rounded up to whole 512-byte sectors.
    let vs = cx.size.div_ceil(512).saturating_mul(512);
    Ok(Parsed::new(sub, Some(vs)))
}

/// MBR/GPT checks. `fatal` is false for hybrid ISOs, whose partition tables are informational.
pub(crate) fn check_partitions(cx: &mut Ctx, det: &Detection, fatal: bool) -> PResult<()> {
    let Some(part) = det.part else { return Ok(()) };
    let h = det.head.as_slice();
    let mut problems: Vec<String> = Vec::new();
    let entries = mbr_entries(h);
    let disk_sectors = cx.size / 512;
    for (i, e) in entries.iter().enumerate() {
        if e.boot_flag != 0 && e.boot_flag != 0x80 {
            problems.push(format!("partition entry {} has an invalid boot flag 0x{:02x}", i + 1, e.boot_flag));
        }
        if e.ptype == 0xEE {
            if e.start_chs != [0, 2, 0] {
                problems.push("the GPT protective entry has an invalid start CHS".into());
            }
            if e.start_lba != 1 {
                problems.push("the GPT protective entry has an invalid start LBA".into());
            }
        }
        if e.ptype != 0 && u64::from(e.start_lba).saturating_add(u64::from(e.sectors)) > disk_sectors && e.ptype != 0xEE {
            cx.warn(codes::MBR_INVALID, format!("Partition {} extends past the end of the disk; the file may be truncated.", i + 1));
        }
    }
    let has_ee = entries.iter().any(|e| e.ptype == 0xEE);
    if has_ee && (entries[0].ptype != 0xEE || entries.iter().skip(1).any(|e| e.ptype != 0)) {
        problems.push("the GPT protective MBR defines extra partitions".into());
    }
    if entries.iter().all(|e| e.ptype == 0) {
        problems.push("the partition table defines no partitions".into());
    }
    for p in problems {
        let msg = format!("The MBR is invalid: {p}.");
        if fatal {
            cx.error(codes::MBR_INVALID, msg);
        } else {
            cx.info(codes::MBR_INVALID, msg);
        }
    }
    if let PartTable::Gpt(sector) = part {
        check_gpt(cx, sector, fatal)?;
    }
    Ok(())
}

fn check_gpt(cx: &mut Ctx, sector: u64, fatal: bool) -> PResult<()> {
    let hdr = cx.read(sector, sector)?;
    let hsize = le32(&hdr, 12) as usize;
    let mut problems: Vec<String> = Vec::new();
    if !(92..=sector as usize).contains(&hsize) || hdr.len() < hsize {
        problems.push(format!("the header size {hsize} is invalid"));
    } else {
        let mut copy = slice(&hdr, 0, hsize).to_vec();
        if let Some(c) = copy.get_mut(16..20) {
            c.fill(0);
        }
        if crc32(&copy) != le32(&hdr, 16) {
            problems.push("the header checksum is wrong".into());
        }
    }
    if le64(&hdr, 24) != 1 {
        problems.push("the header does not describe its own location".into());
    }
    let alt = le64(&hdr, 32);
    let sectors = cx.size / sector;
    if alt.checked_add(1) != Some(sectors) {
        cx.warn(codes::GPT_BACKUP, "The backup GPT header is not in the last sector; the disk may have been resized or truncated.");
    }
    let n = u64::from(le32(&hdr, 80));
    let esize = u64::from(le32(&hdr, 84));
    let array_lba = le64(&hdr, 72);
    if n > GPT_MAX_ENTRIES || !(128..=4096).contains(&esize) || esize % 8 != 0 {
        problems.push(format!("the partition array ({n} entries of {esize} bytes) is invalid"));
    } else if let Some(off) = array_lba.checked_mul(sector) {
        let len = n * esize;
        if !cx.inside(off, len) {
            problems.push("the partition array lies outside the disk".into());
        } else if cx.deep || cx.inside(off, len) {
            // Stream the CRC over the array in chunks (at most 2 MiB).
            let mut crc = 0u32;
            let mut done = 0u64;
            while done < len {
                let Some(chunk) = cx.read_opt(off + done, len - done)? else {
                    break;
                };
                if chunk.is_empty() {
                    break;
                }
                crc = crc32_update(crc, &chunk);
                done += chunk.len() as u64;
            }
            if done == len && crc != le32(&hdr, 88) {
                problems.push("the partition array checksum is wrong".into());
            }
        }
    }
    if !has_at(&hdr, 0, b"EFI PART") {
        problems.push("the header signature is missing".into());
    }
    for p in problems {
        let msg = format!("The GPT is invalid: {p}.");
        if fatal {
            cx.error(codes::GPT_INVALID, msg);
        } else {
            cx.info(codes::GPT_INVALID, msg);
        }
    }
    Ok(())
}
