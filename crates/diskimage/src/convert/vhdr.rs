//! VHD (fixed, dynamic) and VHDX (fixed, dynamic) readers. Differencing disks and anything
//! with a parent locator are refused; the parent is never opened.

use super::error::{corrupt, limit, rejected, unsupported, Result};
use super::io::{be_u16, be_u32, be_u64, checked_len, le_u16, le_u32, le_u64, Input, IoBuf, Meter, IO_CHUNK};
use super::sink::Sink;

/// VHD BAT cap: VHD disks are at most 2040 GiB (qemu), i.e. ~1 Mi entries of 2 MiB blocks.
const MAX_VHD_BAT_BYTES: usize = 8 << 20;
/// VHD block sizes we accept (the spec's default is 2 MiB; qemu writes 2 MiB).
const MAX_VHD_BLOCK: u32 = 256 << 20;
/// CHS maximum (65535 cylinders × 16 heads × 255 sectors): qemu then trusts current_size.
const VHD_MAX_GEOMETRY: u64 = 65535 * 16 * 255;

pub(crate) enum VhdKind {
    Fixed { data_len: u64 },
    Dynamic { bat_off: u64, block: u32 },
}

pub(crate) struct VhdReader {
    vsize: u64,
    kind: VhdKind,
}

impl VhdReader {
    pub(crate) fn open(inp: &mut Input, m: &mut Meter) -> Result<Self> {
        let size = inp.size().ok_or_else(|| unsupported("VHD needs random access (footer)"))?;
        let fo = size.checked_sub(512).ok_or_else(|| corrupt("VHD shorter than its footer"))?;
        let mut f = [0u8; 512];
        inp.read_at(fo, &mut f, "the VHD footer", m)?;
        if &f[0..8] != b"conectix" {
            return Err(corrupt("no VHD footer (conectix) at the end of the file"));
        }
        let sum: u32 = f.iter().enumerate().filter(|(i, _)| !(0x40..0x44).contains(i)).map(|(_, &b)| u32::from(b)).sum();
        if !sum != be_u32(&f, 0x40) {
            return Err(corrupt("VHD footer checksum mismatch"));
        }
        let cur = be_u64(&f, 0x30);
        let chs = u64::from(be_u16(&f, 0x38)) * u64::from(f[0x3A]) * u64::from(f[0x3B]);
        let creator = &f[0x1C..0x20];
        // qemu block/vpc.c: Virtual PC and qemu (and unknown creators) size the disk by its CHS
        // geometry, Hyper-V and friends by current_size; the maximum geometry means current_size.
        let use_chs = !matches!(creator, b"win " | b"qem2" | b"d2v " | b"CTXS" | b"tap\0");
        let vsize = if !use_chs || chs == VHD_MAX_GEOMETRY { cur / 512 * 512 } else { chs * 512 };
        if vsize > super::qcow2w::MAX_VIRTUAL_SIZE {
            return Err(limit(format!("VHD size {vsize} is above the limit")));
        }
        let kind = match be_u32(&f, 0x3C) {
            2 => VhdKind::Fixed { data_len: fo },
            3 => {
                let doff = be_u64(&f, 0x10);
                let mut d = [0u8; 1024];
                inp.read_at(doff, &mut d, "the VHD dynamic header", m)?;
                if &d[0..8] != b"cxsparse" {
                    return Err(corrupt("bad VHD dynamic header cookie"));
                }
                if d[0x28..0x38].iter().any(|&b| b != 0)
                    || d[0x40..0x240].iter().any(|&b| b != 0)
                    || d[0x240..0x300].iter().any(|&b| b != 0)
                {
                    return Err(rejected("the VHD names a parent (UUID, name or locator)"));
                }
                let bat_off = be_u64(&d, 0x10);
                let entries = be_u32(&d, 0x1C);
                let block = be_u32(&d, 0x20);
                if !(512..=MAX_VHD_BLOCK).contains(&block) || !block.is_power_of_two() {
                    return Err(unsupported(format!("VHD block size {block}")));
                }
                if u64::from(entries) * u64::from(block) < vsize {
                    return Err(corrupt("the VHD block table does not cover the disk"));
                }
                VhdKind::Dynamic { bat_off, block }
            }
            4 => return Err(rejected("differencing VHDs are refused")),
            t => return Err(unsupported(format!("VHD disk type {t}"))),
        };
        Ok(VhdReader { vsize, kind })
    }

    pub(crate) fn virtual_size(&self) -> u64 {
        self.vsize
    }

    pub(crate) fn pump(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        let mut buf = IoBuf::new(IO_CHUNK);
        match self.kind {
            VhdKind::Fixed { data_len } => {
                let avail = data_len.min(self.vsize);
                let mut off = 0;
                while off < avail {
                    let n = (avail - off).min(IO_CHUNK as u64) as usize;
                    inp.pass(sink, off, n, &mut buf, "VHD data", m)?;
                    off += n as u64;
                }
                if self.vsize > avail {
                    sink.zeros(self.vsize - avail, m)?;
                }
            }
            VhdKind::Dynamic { bat_off, block } => {
                let bs = u64::from(block);
                let used = self.vsize.div_ceil(bs);
                let bat_len = checked_len(used * 4, MAX_VHD_BAT_BYTES, "the VHD block table")?;
                let mut bat = vec![0u8; bat_len];
                inp.read_at(bat_off, &mut bat, "the VHD block table", m)?;
                // Each block starts with its sector bitmap, padded to a sector (qemu ignores
                // the bitmap on read; so do we).
                let bitmap = (bs / 512).div_ceil(8).next_multiple_of(512);
                for i in 0..used {
                    let g = i * bs;
                    let glen = bs.min(self.vsize - g);
                    let e = be_u32(&bat, i as usize * 4);
                    if e == u32::MAX {
                        sink.zeros(glen, m)?;
                        continue;
                    }
                    let base = u64::from(e) * 512 + bitmap;
                    let mut done = 0;
                    while done < glen {
                        let n = (glen - done).min(IO_CHUNK as u64) as usize;
                        inp.pass(sink, base + done, n, &mut buf, "a VHD data block", m)?;
                        done += n as u64;
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// VHDX

/// VHDX block sizes allowed by the spec: 1 MiB to 256 MiB, powers of two.
const VHDX_MIN_BLOCK: u32 = 1 << 20;
const VHDX_MAX_BLOCK: u32 = 256 << 20;
/// Region and metadata tables hold fewer than 2048 entries (spec; oslo uses the same cap).
const VHDX_MAX_ENTRIES: usize = 2047;
/// BAT bytes we read per step (the BAT itself can be large; we never hold it whole).
const VHDX_BAT_STEP: usize = 64 << 10;

const GUID_BAT: [u8; 16] = guid(0x2DC2_7766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
const GUID_METADATA: [u8; 16] = guid(0x8B7C_A206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E]);
const GUID_FILE_PARAMS: [u8; 16] = guid(0xCAA1_6737, 0xFA36, 0x4D43, [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B]);
const GUID_VDISK_SIZE: [u8; 16] = guid(0x2FA5_4224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8]);
const GUID_LOGICAL_SECTOR: [u8; 16] = guid(0x8141_BF1D, 0xA96F, 0x4709, [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F]);
const GUID_PARENT_LOCATOR: [u8; 16] = guid(0xA8D3_5F2D, 0xB30B, 0x454D, [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C]);

/// A GUID in its on-disk (mixed-endian) byte order.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// CRC-32C (Castagnoli), bitwise: only headers and tables (a few KiB) are checked.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn crc_ok(block: &[u8]) -> bool {
    let mut copy = block.to_vec();
    let stored = le_u32(&copy, 4);
    copy[4..8].fill(0);
    crc32c(&copy) == stored
}

pub(crate) struct VhdxReader {
    vsize: u64,
    block: u32,
    chunk_ratio: u64,
    bat_off: u64,
    bat_len: u64,
}

impl VhdxReader {
    pub(crate) fn open(inp: &mut Input, m: &mut Meter) -> Result<Self> {
        let mut sig = [0u8; 8];
        inp.read_at(0, &mut sig, "the VHDX signature", m)?;
        if &sig != b"vhdxfile" {
            return Err(corrupt("not a VHDX file"));
        }
        // Active header: valid CRC, highest sequence number. A pending log is refused: replaying
        // it would mean writing to the input.
        let mut best: Option<(u64, [u8; 4096])> = None;
        for off in [64u64 << 10, 128 << 10] {
            let mut h = [0u8; 4096];
            inp.read_at(off, &mut h, "a VHDX header", m)?;
            if &h[0..4] == b"head" && crc_ok(&h) {
                let seq = le_u64(&h, 8);
                if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                    best = Some((seq, h));
                }
            }
        }
        let (_, h) = best.ok_or_else(|| corrupt("no valid VHDX header"))?;
        if h[48..64].iter().any(|&b| b != 0) {
            return Err(rejected("the VHDX has a pending log (it was not closed cleanly)"));
        }
        if le_u16(&h, 66) != 1 {
            return Err(unsupported("VHDX version other than 1"));
        }
        // Region table (first copy, else the second).
        let mut rt = [0u8; 64 << 10];
        let mut ok = false;
        for off in [192u64 << 10, 256 << 10] {
            inp.read_at(off, &mut rt, "the VHDX region table", m)?;
            if &rt[0..4] == b"regi" && crc_ok(&rt) {
                ok = true;
                break;
            }
        }
        if !ok {
            return Err(corrupt("no valid VHDX region table"));
        }
        let count = le_u32(&rt, 8) as usize;
        if count > VHDX_MAX_ENTRIES {
            return Err(corrupt("too many VHDX regions"));
        }
        let (mut bat, mut meta) = (None, None);
        for i in 0..count {
            let e = &rt[16 + i * 32..16 + (i + 1) * 32];
            let (off, len, required) = (le_u64(e, 16), u64::from(le_u32(e, 24)), le_u32(e, 28));
            if e[..16] == GUID_BAT {
                bat = Some((off, len));
            } else if e[..16] == GUID_METADATA {
                meta = Some((off, len));
            } else if required & 1 != 0 {
                return Err(unsupported("VHDX has an unknown required region"));
            }
        }
        let (bat_off, bat_len) = bat.ok_or_else(|| corrupt("VHDX has no BAT region"))?;
        let (meta_off, meta_len) = meta.ok_or_else(|| corrupt("VHDX has no metadata region"))?;
        let mut mt = [0u8; 64 << 10];
        inp.read_at(meta_off, &mut mt, "the VHDX metadata table", m)?;
        if &mt[0..8] != b"metadata" {
            return Err(corrupt("bad VHDX metadata table signature"));
        }
        let n = usize::from(le_u16(&mt, 10));
        if n > VHDX_MAX_ENTRIES {
            return Err(corrupt("too many VHDX metadata items"));
        }
        let item = |g: &[u8; 16], inp: &mut Input, m: &mut Meter| -> Result<Option<[u8; 8]>> {
            for i in 0..n {
                let e = &mt[32 + i * 32..32 + (i + 1) * 32];
                if &e[..16] == g {
                    let (o, l) = (u64::from(le_u32(e, 16)), u64::from(le_u32(e, 20)));
                    if o + l > meta_len || l < 4 {
                        return Err(corrupt("VHDX metadata item outside its region"));
                    }
                    let mut v = [0u8; 8];
                    let k = l.min(8) as usize;
                    inp.read_at(meta_off + o, &mut v[..k], "a VHDX metadata item", m)?;
                    return Ok(Some(v));
                }
            }
            Ok(None)
        };
        if item(&GUID_PARENT_LOCATOR, inp, m)?.is_some() {
            return Err(rejected("the VHDX has a parent locator (differencing disk)"));
        }
        let fp = item(&GUID_FILE_PARAMS, inp, m)?.ok_or_else(|| corrupt("VHDX file parameters missing"))?;
        let block = le_u32(&fp, 0);
        if le_u32(&fp, 4) & 2 != 0 {
            return Err(rejected("the VHDX has a parent (differencing disk)"));
        }
        let vs = item(&GUID_VDISK_SIZE, inp, m)?.ok_or_else(|| corrupt("VHDX virtual size missing"))?;
        let vsize = le_u64(&vs, 0);
        let ls = item(&GUID_LOGICAL_SECTOR, inp, m)?.ok_or_else(|| corrupt("VHDX sector size missing"))?;
        let lsec = le_u32(&ls, 0);
        if !(VHDX_MIN_BLOCK..=VHDX_MAX_BLOCK).contains(&block) || !block.is_power_of_two() {
            return Err(corrupt(format!("VHDX block size {block}")));
        }
        if lsec != 512 && lsec != 4096 {
            return Err(corrupt(format!("VHDX logical sector size {lsec}")));
        }
        if vsize > super::qcow2w::MAX_VIRTUAL_SIZE {
            return Err(limit(format!("VHDX virtual size {vsize} is above the limit")));
        }
        let chunk_ratio = ((1u64 << 23) * u64::from(lsec)) / u64::from(block);
        let blocks = vsize.div_ceil(u64::from(block));
        let needed = if blocks == 0 { 0 } else { blocks + (blocks - 1) / chunk_ratio };
        if needed * 8 > bat_len {
            return Err(corrupt("the VHDX BAT does not cover the disk"));
        }
        Ok(VhdxReader { vsize, block, chunk_ratio, bat_off, bat_len })
    }

    pub(crate) fn virtual_size(&self) -> u64 {
        self.vsize
    }

    pub(crate) fn pump(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        let bs = u64::from(self.block);
        let blocks = self.vsize.div_ceil(bs);
        let mut buf = IoBuf::new(IO_CHUNK);
        let mut bat = vec![0u8; VHDX_BAT_STEP];
        let mut bat_first = u64::MAX; // index of the first entry held in `bat`
        let per_step = (VHDX_BAT_STEP / 8) as u64;
        for i in 0..blocks {
            let idx = i + i / self.chunk_ratio;
            if bat_first == u64::MAX || idx < bat_first || idx >= bat_first + per_step {
                bat_first = idx;
                let len = ((self.bat_len / 8 - idx).min(per_step) * 8) as usize;
                inp.read_at(self.bat_off + idx * 8, &mut bat[..len], "the VHDX BAT", m)?;
            }
            let e = le_u64(&bat, ((idx - bat_first) * 8) as usize);
            let g = i * bs;
            let glen = bs.min(self.vsize - g);
            match e & 7 {
                // not present, undefined, zero, unmapped: reads as zero (no parent).
                0..=3 => sink.zeros(glen, m)?,
                6 => {
                    let base = (e >> 20) << 20;
                    let mut done = 0;
                    while done < glen {
                        let n = (glen - done).min(IO_CHUNK as u64) as usize;
                        inp.pass(sink, base + done, n, &mut buf, "a VHDX data block", m)?;
                        done += n as u64;
                    }
                }
                7 => return Err(rejected("partially present VHDX blocks need a parent")),
                s => return Err(corrupt(format!("invalid VHDX BAT state {s}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
