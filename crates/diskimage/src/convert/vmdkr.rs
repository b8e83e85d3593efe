//! VMDK hosted-sparse reader: monolithicSparse and streamOptimized (deflate grains, markers).
//! Only the embedded extent of this one file is read; a descriptor naming other files is
//! refused, never followed.

use super::error::{corrupt, limit, rejected, unsupported, Result};
use super::io::{checked_len, le_u32, le_u64, Input, IoBuf, Meter, IO_CHUNK};
use super::sink::Sink;
use crate::formats::vmdk::{
    check_footer, FooterProblem, SparseHeader, FLAG_COMPRESSED, FLAG_MARKERS, FOOTER_TRAILER, GD_AT_END, MARKER_EOS,
};

const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Largest grain we accept: 2 MiB (qemu writes 64 KiB; VMware uses 64 KiB too).
const MAX_GRAIN_BYTES: u64 = 2 << 20;
/// QEMU refuses more than 512 entries per grain table ("L2 table size too big").
const MAX_GTES_PER_GT: u32 = 512;
/// Embedded descriptor cap (the oslo inspector and qemu allow up to 1 MiB).
const MAX_DESCRIPTOR_BYTES: usize = 1 << 20;
/// Grain directory cap: 4 bytes per 32 MiB of disk; 32 Mi entries is QEMU's own limit.
const MAX_GD_BYTES: usize = 128 << 20;

pub(crate) struct VmdkReader {
    vsize: u64,
    flags: u32,
    grain: u64,
    gtes: u32,
    gd_off: u64,
    overhead: u64,
    compressed: bool,
}

impl VmdkReader {
    pub(crate) fn open(inp: &mut Input, m: &mut Meter) -> Result<Self> {
        let mut h = [0u8; 512];
        inp.read_at(0, &mut h, "the VMDK header", m)?;
        let Some(mut hdr) = SparseHeader::parse(&h) else {
            return Err(rejected("not a binary VMDK (descriptor-only VMDKs are refused)"));
        };
        let version = hdr.version;
        if !(1..=3).contains(&version) {
            return Err(unsupported(format!("VMDK version {version}")));
        }
        if hdr.gd_offset == GD_AT_END {
            // Only a file has a footer; a stream is walked marker by marker with the header's
            // values instead, and `check_stream_footer` holds the footer to them at its end.
            if let Some(size) = inp.size() {
                // The footer takes the header's place, as in the inspector and qemu, once it
                // passed the inspector's own checks (docs/formats.md §2.5 #13).
                let at = size.checked_sub(FOOTER_TRAILER as u64).ok_or_else(|| footer_error(&[FooterProblem::TooShort]))?;
                let mut t = [0u8; FOOTER_TRAILER];
                inp.read_at(at, &mut t, "the VMDK footer", m)?;
                hdr = check_footer(&hdr, &t).map_err(|p| footer_error(&p))?;
            }
        }
        let flags = hdr.flags;
        let capacity = hdr.capacity;
        let grain_sectors = hdr.grain_size;
        let desc_off = hdr.descriptor_offset;
        let desc_size = hdr.descriptor_size;
        let gtes = hdr.num_gtes_per_gt;
        let gd_off = hdr.gd_offset;
        let overhead = hdr.overhead;
        let compressed = flags & FLAG_COMPRESSED != 0;
        if compressed && hdr.compress_algorithm != 1 {
            return Err(unsupported("VMDK grain compression other than deflate"));
        }
        let grain = grain_sectors.saturating_mul(512);
        if grain == 0 || grain > MAX_GRAIN_BYTES || !grain.is_power_of_two() {
            return Err(unsupported(format!("VMDK grain of {grain_sectors} sectors")));
        }
        if gtes == 0 || gtes > MAX_GTES_PER_GT {
            return Err(unsupported(format!("VMDK with {gtes} entries per grain table")));
        }
        let vsize = capacity.saturating_mul(512);
        if vsize > super::qcow2w::MAX_VIRTUAL_SIZE {
            return Err(limit(format!("VMDK capacity {capacity} sectors is above the limit")));
        }
        // The embedded descriptor must describe exactly this file.
        if desc_off == 0 || desc_size == 0 {
            return Err(rejected("the VMDK has no embedded descriptor"));
        }
        let dlen = checked_len(desc_size.saturating_mul(512), MAX_DESCRIPTOR_BYTES, "the VMDK descriptor")?;
        let mut desc = vec![0u8; dlen];
        inp.read_at(desc_off.saturating_mul(512), &mut desc, "the VMDK descriptor", m)?;
        check_descriptor(&desc, compressed)?;
        Ok(VmdkReader { vsize, flags, grain, gtes, gd_off, overhead, compressed })
    }

    pub(crate) fn virtual_size(&self) -> u64 {
        self.vsize
    }

    pub(crate) fn pump(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        if inp.size().is_none() {
            if !(self.compressed && self.flags & FLAG_MARKERS != 0) {
                return Err(unsupported(
                    "only streamOptimized VMDKs can be converted while streaming; store the \
                     file first",
                ));
            }
            return self.pump_markers(inp, sink, m);
        }
        self.pump_gd(inp, sink, m)
    }

    /// Random access through the grain directory (monolithicSparse, streamOptimized files).
    fn pump_gd(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        let per_gt = self.grain * u64::from(self.gtes);
        let gd_n = self.vsize.div_ceil(per_gt);
        let gd_len = checked_len(gd_n * 4, MAX_GD_BYTES, "the VMDK grain directory")?;
        let mut gd = vec![0u8; gd_len];
        inp.read_at(self.gd_off.saturating_mul(512), &mut gd, "the VMDK grain directory", m)?;
        let mut gt = vec![0u8; self.gtes as usize * 4];
        let gr = self.grain as usize;
        let mut buf = IoBuf::new(IO_CHUNK.max(gr));
        let mut cbuf = Vec::new();
        for i in 0..gd_n {
            let gbase = i * per_gt;
            let gend = (gbase + per_gt).min(self.vsize);
            let gt_sec = u64::from(le_u32(&gd, i as usize * 4));
            if gt_sec == 0 {
                sink.zeros(gend - gbase, m)?;
                continue;
            }
            inp.read_at(gt_sec * 512, &mut gt, "a VMDK grain table", m)?;
            let n = (gend - gbase).div_ceil(self.grain) as usize;
            let mut j = 0;
            while j < n {
                let g = gbase + j as u64 * self.grain;
                let glen = self.grain.min(gend - g);
                let e = u64::from(le_u32(&gt, j * 4));
                if e == 0 || (e == 1 && self.flags & FLAG_ZERO_GRAIN != 0) {
                    sink.zeros(glen, m)?;
                    j += 1;
                    continue;
                }
                if self.compressed {
                    let out = &mut buf[..gr];
                    self.read_compressed_grain(inp, e * 512, out, &mut cbuf, m)?;
                    sink.data(&out[..glen as usize], m)?;
                    j += 1;
                    continue;
                }
                let mut k = j + 1;
                let max = buf.len() / gr;
                while k < n && k - j < max && u64::from(le_u32(&gt, k * 4)) == e + (k - j) as u64 * (self.grain / 512) {
                    k += 1;
                }
                let end = (gbase + k as u64 * self.grain).min(gend);
                let len = (end - g) as usize;
                inp.pass(sink, e * 512, len, &mut buf, "VMDK grains", m)?;
                j = k;
            }
        }
        Ok(())
    }

    fn read_compressed_grain(&self, inp: &mut Input, off: u64, out: &mut [u8], cbuf: &mut Vec<u8>, m: &mut Meter) -> Result<()> {
        let mut mk = [0u8; 12];
        inp.read_at(off, &mut mk, "a VMDK grain marker", m)?;
        let size = u64::from(le_u32(&mk, 8));
        let clen = checked_len(size, 2 * MAX_GRAIN_BYTES as usize, "a VMDK compressed grain")?;
        cbuf.resize(clen, 0);
        inp.read_at(off + 12, cbuf, "a VMDK compressed grain", m)?;
        inflate_zlib(cbuf, out, off)
    }

    /// How many allocated grains the grain tables list, when they lie wholly before the grains
    /// (`overhead`), as in qemu-img's streamOptimized files, so that a stream can read them on
    /// its way to the first grain; None otherwise (a footer's tables come after the grains).
    /// Reads only forward, and at most the overhead's bytes.
    fn grains_listed_ahead(&self, inp: &mut Input, m: &mut Meter) -> Result<Option<u64>> {
        if self.gd_off == GD_AT_END || self.gd_off == 0 || self.gd_off >= self.overhead {
            return Ok(None);
        }
        let per_gt = self.grain * u64::from(self.gtes);
        let gd_n = self.vsize.div_ceil(per_gt);
        let gd_len = checked_len(gd_n * 4, MAX_GD_BYTES, "the VMDK grain directory")?;
        let Some(gd_end) = self.gd_off.checked_mul(512).and_then(|at| at.checked_add(gd_len as u64)) else { return Ok(None) };
        let gt_len = self.gtes as usize * 4;
        if gd_end > self.overhead.saturating_mul(512) {
            return Ok(None);
        }
        let mut gd = vec![0u8; gd_len];
        let Some(gd_at) = self.gd_off.checked_mul(512) else { return Ok(None) };
        inp.read_at(gd_at, &mut gd, "the VMDK grain directory", m)?;
        let overhead_end = self.overhead.saturating_mul(512);
        let mut gt = vec![0u8; gt_len];
        let mut next = gd_end;
        let mut listed = 0u64;
        // The tables in directory order, each after the one before (as qemu-img lays them out);
        // any other layout is not counted (the stream then needs its end-of-stream marker).
        for i in 0..gd_n as usize {
            let sec = u64::from(le_u32(&gd, i * 4));
            if sec == 0 {
                continue;
            }
            let Some(at) = sec.checked_mul(512) else { return Ok(None) };
            if at < next || at.saturating_add(gt_len as u64) > overhead_end {
                return Ok(None);
            }
            inp.read_at(at, &mut gt, "a VMDK grain table", m)?;
            next = at + gt_len as u64;
            listed += (0..self.gtes as usize)
                .map(|j| le_u32(&gt, j * 4))
                .filter(|&e| e != 0 && !(e == 1 && self.flags & FLAG_ZERO_GRAIN != 0))
                .count() as u64;
        }
        Ok(Some(listed))
    }

    /// Sequential walk over a streamOptimized file: grain markers in increasing LBA order,
    /// metadata markers skipped, until the end-of-stream marker (or, where the tables precede
    /// the grains, the end of the input once every grain they list was read).
    fn pump_markers(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        let gr = self.grain as usize;
        let mut out = vec![0u8; gr];
        let mut cbuf = Vec::new();
        // Read before the grains (they follow the overhead): how many grains the tables list.
        let listed = self.grains_listed_ahead(inp, m)?;
        let mut seen = 0u64;
        let mut pos = self.overhead.saturating_mul(512);
        let mut sector = [0u8; 512];
        loop {
            let n = inp.read_clamped(pos, &mut sector, "a VMDK marker", m)?;
            if n == 0 && listed == Some(seen) {
                // qemu-img ends a streamOptimized file whose tables precede the grains with its
                // last grain, without an end-of-stream marker; the tables' count tells that end
                // from a truncated file, which still fails below.
                break;
            }
            if n < sector.len() {
                return Err(corrupt(format!("the input ends inside a VMDK marker (at offset {pos})")));
            }
            let val = le_u64(&sector, 0);
            let size = le_u32(&sector, 8);
            if size == 0 {
                let typ = le_u32(&sector, 12);
                if typ == MARKER_EOS {
                    break;
                }
                // GT, GD or footer: `val` sectors of metadata follow the marker sector.
                pos = val
                    .checked_add(1)
                    .and_then(|s| s.checked_mul(512))
                    .and_then(|s| s.checked_add(pos))
                    .ok_or_else(|| corrupt("VMDK metadata marker size overflows"))?;
                continue;
            }
            let g = val.checked_mul(512).ok_or_else(|| corrupt("VMDK grain LBA overflows"))?;
            if g < sink.position() || g >= self.vsize {
                return Err(corrupt(format!("VMDK grain for sector {val} is out of order or beyond the capacity")));
            }
            let clen = checked_len(u64::from(size), 2 * MAX_GRAIN_BYTES as usize, "a VMDK grain")?;
            let total = (12 + clen).next_multiple_of(512);
            cbuf.resize(total, 0);
            cbuf[..512.min(total)].copy_from_slice(&sector[..512.min(total)]);
            if total > 512 {
                inp.read_at(pos + 512, &mut cbuf[512..], "a VMDK compressed grain", m)?;
            }
            inflate_zlib(&cbuf[12..12 + clen], &mut out, pos)?;
            if g > sink.position() {
                sink.zeros(g - sink.position(), m)?;
            }
            let glen = self.grain.min(self.vsize - g) as usize;
            sink.data(&out[..glen], m)?;
            seen += 1;
            pos += total as u64;
        }
        let end = sink.position();
        if end < self.vsize {
            sink.zeros(self.vsize - end, m)?;
        }
        Ok(())
    }
}

/// The reader's error for a footer the inspector refuses: the same reasons, one message.
fn footer_error(problems: &[FooterProblem]) -> super::error::Error {
    let why: Vec<&str> = problems.iter().map(|p| p.message().trim_end_matches('.')).collect();
    corrupt(format!("invalid VMDK footer: {}", why.join("; ")))
}

/// A streamed VMDK whose header says [`GD_AT_END`] was walked marker by marker with the
/// header's values, but the inspector (and qemu) describe the disk by its footer. Once the
/// stream has ended, with its first bytes in `head` and its last in `tail`, the footer must
/// pass the inspector's checks and agree with the header on every value the walk used, so
/// the output is the disk the sniff judged (its virtual size in particular).
pub(crate) fn check_stream_footer(head: &[u8], tail: &[u8]) -> Result<()> {
    let Some(hdr) = SparseHeader::parse(head) else {
        return Err(rejected("not a binary VMDK (descriptor-only VMDKs are refused)"));
    };
    if hdr.gd_offset != GD_AT_END {
        return Ok(());
    }
    let f = check_footer(&hdr, tail).map_err(|p| footer_error(&p))?;
    let differs = [
        ("capacity", f.capacity != hdr.capacity),
        ("grain size", f.grain_size != hdr.grain_size),
        ("flags", f.flags != hdr.flags),
        ("metadata overhead", f.overhead != hdr.overhead),
        ("compression algorithm", f.compress_algorithm != hdr.compress_algorithm),
    ];
    if let Some((what, _)) = differs.iter().find(|(_, d)| *d) {
        return Err(unsupported(format!(
            "the streamOptimized VMDK's footer gives a different {what} than its header, so it \
             cannot be converted while streaming; store the file first"
        )));
    }
    Ok(())
}

/// Inflates a zlib-wrapped (RFC 1950) grain. A grain may decompress to less than the grain
/// size only at the end of the disk; the rest reads as zero.
fn inflate_zlib(src: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    let mut d = flate2::Decompress::new(true);
    match d.decompress(src, out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd) | Ok(flate2::Status::BufError) | Ok(flate2::Status::Ok) => {
            let n = d.total_out() as usize;
            if n == 0 && !out.is_empty() {
                return Err(corrupt(format!("VMDK grain at {at} decompresses to nothing")));
            }
            out[n..].fill(0);
            Ok(())
        }
        Err(e) => Err(corrupt(format!("VMDK grain at {at} does not decompress: {e}"))),
    }
}

/// The embedded descriptor must be a single-file sparse VMDK: createType monolithicSparse or
/// streamOptimized, exactly one SPARSE extent without a path, no parent.
fn check_descriptor(desc: &[u8], compressed: bool) -> Result<()> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    let text = std::str::from_utf8(&desc[..end]).map_err(|_| rejected("the VMDK descriptor is not text"))?;
    let mut create_type = None;
    let mut extents = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("createtype=") {
            create_type = Some(v.trim_matches('"').to_string());
        } else if lower.starts_with("parentfilenamehint") {
            return Err(rejected("the VMDK names a parent file"));
        } else if let Some(v) = lower.strip_prefix("parentcid=") {
            if v.trim() != "ffffffff" {
                return Err(rejected("the VMDK has a parent (parentCID)"));
            }
        } else if lower.starts_with("rw ") || lower.starts_with("rdonly ") || lower.starts_with("noaccess ") {
            extents += 1;
            let mut parts = lower.split_whitespace();
            let kind = parts.nth(2).unwrap_or("");
            if kind != "sparse" || lower.contains('/') || lower.contains('\\') {
                return Err(rejected(format!("VMDK extent line refused: {line}")));
            }
        }
    }
    match create_type.as_deref() {
        Some("monolithicsparse") if !compressed => {}
        Some("streamoptimized") if compressed => {}
        Some(t) => return Err(rejected(format!("VMDK createType {t:?} is refused"))),
        None => return Err(rejected("the VMDK descriptor has no createType")),
    }
    if extents != 1 {
        return Err(rejected(format!("the VMDK descriptor has {extents} extents, expected 1")));
    }
    Ok(())
}
