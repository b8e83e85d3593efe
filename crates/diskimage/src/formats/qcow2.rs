//! qcow2 (and qcow v1, refused): header parsing and docs/formats.md §2.5 #3, #6–#11.
//!
//! Spec: QEMU `docs/interop/qcow2.txt`. All integers are big-endian.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::limits::{
    MAX_READ_CHUNK, QCOW2_MAX_BACKING_NAME, QCOW2_MAX_CLUSTER_BITS, QCOW2_MAX_HEADER_EXTENSIONS, QCOW2_MAX_L1_BYTES,
    QCOW2_MAX_REFCOUNT_ORDER, QCOW2_MAX_REFTABLE_BYTES, QCOW2_MAX_SNAPSHOTS, QCOW2_MIN_CLUSTER_BITS,
};
use crate::util::{be32, be64, byte, overlaps, printable, slice};

/// Incompatible feature bit 0: the image was not closed cleanly (refcounts may be stale).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: QEMU found corruption and marked the image.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Autoclear bit 1: the external data file is raw.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// Header extension: feature name table.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_F857;
/// Header extension: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full-disk-encryption header pointer.
pub const EXT_FDE: u32 = 0x0537_BE77;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// L1/L2 entry bits holding a cluster offset (bits 9–55).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entry bits that must be zero (1–8 and 56–62).
pub const L1_RESERVED_MASK: u64 = 0x7f00_0000_0000_01fe;
/// L2 entry flag: compressed cluster.
pub const L2_COMPRESSED: u64 = 1 << 62;

/// The qcow2 header (first 72 bytes for v2, `header_length` bytes for v3).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// 2 or 3 (1 is qcow v1).
    pub version: u32,
    /// Offset of the backing file name (0 = none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Number of L1 entries.
    pub l1_size: u32,
    /// Offset of the L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Refcount table length in clusters.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// v3: incompatible feature bits (0 for v2).
    pub incompatible_features: u64,
    /// v3: compatible feature bits.
    pub compatible_features: u64,
    /// v3: autoclear feature bits.
    pub autoclear_features: u64,
    /// v3: refcount width is `1 << refcount_order` bits (4 for v2).
    pub refcount_order: u32,
    /// v3: header length (72 for v2).
    pub header_length: u32,
    /// v3 with header_length ≥ 105: 0 zlib, 1 zstd.
    pub compression_type: u8,
}

impl Header {
    /// Parses the fixed header; `None` if the magic is wrong or the bytes are too short for the
    /// version's header.
    pub fn parse(b: &[u8]) -> Option<Header> {
        if !b.starts_with(b"QFI\xfb") || b.len() < 72 {
            return None;
        }
        let version = be32(b, 4);
        let mut h = Header {
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits: be32(b, 20),
            size: be64(b, 24),
            crypt_method: be32(b, 32),
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            refcount_order: 4,
            header_length: 72,
            ..Header::default()
        };
        if version >= 3 {
            if b.len() < 104 {
                return None;
            }
            h.incompatible_features = be64(b, 72);
            h.compatible_features = be64(b, 80);
            h.autoclear_features = be64(b, 88);
            h.refcount_order = be32(b, 96);
            h.header_length = be32(b, 100);
            if h.header_length > 104 {
                h.compression_type = byte(b, 104);
            }
        }
        Some(h)
    }

    /// Cluster size in bytes (only meaningful once `cluster_bits` is validated).
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits.min(63)
    }

    /// Bytes per L2 entry (16 with extended L2).
    pub fn l2_entry_size(&self) -> u64 {
        if self.incompatible_features & INCOMPAT_EXTL2 != 0 {
            16
        } else {
            8
        }
    }
}

/// qcow v1: detected to refuse it by name.
pub(crate) fn inspect_v1(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    cx.error(
        codes::FORMAT_NOT_ALLOWED,
        "This is a qcow version 1 image, an obsolete format that is not accepted; convert it to qcow2 with qemu-img first.",
    );
    let vs = if det.head.len() >= 32 { Some(be64(&det.head, 24)) } else { None };
    Ok(Parsed::new("v1", vs))
}

/// A metadata region for the overlap checks.
struct Region {
    name: &'static str,
    off: u64,
    len: u64,
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let b = det.head.as_slice();
    let Some(h) = Header::parse(b) else {
        cx.error(codes::TRUNCATED, "The file ends inside the qcow2 header.");
        return Ok(Parsed::new(format!("v{}", be32(b, 4)), None));
    };
    let sub = format!("v{}", h.version);
    let vs = Some(h.size);
    if h.version != 2 && h.version != 3 {
        cx.error(codes::QCOW2_VERSION, format!("qcow2 version {} is not supported (only versions 2 and 3 are).", h.version));
        return Ok(Parsed::new(sub, vs));
    }
    if !(QCOW2_MIN_CLUSTER_BITS..=QCOW2_MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
        cx.error(
            codes::QCOW2_CLUSTER_BITS,
            format!("The qcow2 cluster size 2^{} is outside the range QEMU accepts (512 bytes to 2 MiB).", h.cluster_bits),
        );
        return Ok(Parsed::new(sub, vs));
    }
    let cs = h.cluster_size();
    if h.version == 3 && (h.header_length < 104 || h.header_length % 8 != 0 || u64::from(h.header_length) >= cs) {
        cx.error(codes::QCOW2_HEADER_LENGTH, format!("The qcow2 header length {} is invalid.", h.header_length));
        return Ok(Parsed::new(sub, vs));
    }
    check_features(cx, &h);
    if h.crypt_method != 0 {
        let how = match h.crypt_method {
            1 => "AES-CBC (deprecated)",
            2 => "LUKS",
            _ => "an unknown method",
        };
        cx.error(
            codes::QCOW2_ENCRYPTED,
            format!("The qcow2 image is encrypted with {how}; encrypted images cannot be checked or converted, so upload it decrypted."),
        );
    }
    if h.refcount_order > QCOW2_MAX_REFCOUNT_ORDER {
        cx.error(codes::QCOW2_REFCOUNT_ORDER, format!("The qcow2 refcount order {} is invalid (at most 6).", h.refcount_order));
    }

    // Backing file: name inside cluster 0, bounded length. Refused either way; the name only
    // makes the message clearer.
    if h.backing_file_offset != 0 {
        let name = if h.backing_file_size <= QCOW2_MAX_BACKING_NAME
            && h.backing_file_offset.saturating_add(u64::from(h.backing_file_size)) <= cs
        {
            cx.read_opt(h.backing_file_offset, u64::from(h.backing_file_size))?.map(|n| printable(&n, 200))
        } else {
            None
        };
        let msg = match name {
            Some(n) if !n.is_empty() => format!(
                "The qcow2 image depends on a backing file (\"{n}\"); upload a standalone image (qemu-img convert -O qcow2 flattens it)."
            ),
            _ => "The qcow2 image depends on a backing file; upload a standalone image (qemu-img convert -O qcow2 flattens it).".into(),
        };
        cx.error(codes::QCOW2_BACKING_FILE, msg);
    }

    header_extensions(cx, &h, b)?;

    // Table sizes within QEMU's limits.
    let l2_entries = cs / h.l2_entry_size();
    let bytes_per_l1 = cs.saturating_mul(l2_entries);
    let needed_l1 = h.size.div_ceil(bytes_per_l1.max(1));
    let l1_bytes = u64::from(h.l1_size) * 8;
    if l1_bytes > QCOW2_MAX_L1_BYTES {
        cx.error(codes::QCOW2_L1_SIZE, format!("The qcow2 L1 table ({l1_bytes} bytes) is larger than QEMU's 32 MiB limit."));
    } else if u64::from(h.l1_size) < needed_l1 {
        cx.error(
            codes::QCOW2_L1_SIZE,
            format!("The qcow2 L1 table has {} entries but the virtual size needs {needed_l1}; the header is inconsistent.", h.l1_size),
        );
    }
    let rt_bytes = u64::from(h.refcount_table_clusters).saturating_mul(cs);
    if rt_bytes > QCOW2_MAX_REFTABLE_BYTES {
        cx.error(codes::QCOW2_REFCOUNT_TABLE, format!("The qcow2 refcount table ({rt_bytes} bytes) is larger than QEMU's 8 MiB limit."));
    } else if h.refcount_table_clusters == 0 {
        cx.error(codes::QCOW2_REFCOUNT_TABLE, "The qcow2 image has no refcount table.");
    }
    if h.nb_snapshots > QCOW2_MAX_SNAPSHOTS {
        cx.error(codes::QCOW2_SNAPSHOTS, format!("The qcow2 image claims {} snapshots, more than QEMU allows.", h.nb_snapshots));
    } else if h.nb_snapshots > 0 {
        cx.warn(
            codes::QCOW2_SNAPSHOTS,
            format!("The qcow2 image has {} internal snapshot(s); only the current state will be used.", h.nb_snapshots),
        );
    }

    // Layout: aligned, inside the file, not overlapping.
    let mut regions = vec![Region { name: "header", off: 0, len: cs }];
    if h.l1_size > 0 {
        regions.push(Region { name: "L1 table", off: h.l1_table_offset, len: l1_bytes });
    }
    regions.push(Region { name: "refcount table", off: h.refcount_table_offset, len: rt_bytes });
    if h.nb_snapshots > 0 {
        // Each snapshot header is at least 40 bytes; the exact length needs a walk.
        regions.push(Region { name: "snapshot table", off: h.snapshots_offset, len: u64::from(h.nb_snapshots) * 40 });
    }
    let mut layout_ok = true;
    for r in regions.iter().skip(1) {
        if r.off % cs != 0 {
            cx.error(codes::QCOW2_MISALIGNED, format!("The qcow2 {} is not aligned to a cluster boundary.", r.name));
            layout_ok = false;
        }
        if !cx.inside(r.off, r.len) {
            cx.error(
                codes::QCOW2_OUTSIDE_FILE,
                format!(
                    "The qcow2 {} lies outside the file (the file is probably truncated: {} bytes, table at {}).",
                    r.name, cx.size, r.off
                ),
            );
            layout_ok = false;
        }
    }
    for (i, a) in regions.iter().enumerate() {
        for c in regions.iter().skip(i + 1) {
            if overlaps(a.off, a.len, c.off, c.len) {
                cx.error(codes::QCOW2_OVERLAP, format!("The qcow2 {} overlaps the {}.", a.name, c.name));
                layout_ok = false;
            }
        }
    }
    if cx.deep && layout_ok && !cx.has_error() {
        walk_snapshots(cx, &h)?;
    }
    if cx.deep && layout_ok && !cx.has_error() {
        walk_tables(cx, &h, &regions)?;
    }
    Ok(Parsed::new(sub, vs))
}

/// QEMU's `QCOW_MAX_SNAPSHOT_EXTRA_DATA`: extra data per snapshot header is at most 1 KiB.
const MAX_SNAPSHOT_EXTRA: u64 = 1024;

/// Inspect only: each snapshot header lies in the file and its L1 table is inside the file and
/// within QEMU's L1 limit (QEMU refuses to open images whose snapshot table is inconsistent).
fn walk_snapshots(cx: &mut Ctx, h: &Header) -> PResult<()> {
    let mut off = h.snapshots_offset;
    // The last entry's padding is not necessarily in the file (qemu does not write it).
    let mut end = off;
    for i in 0..h.nb_snapshots {
        let hdr = cx.read(off, 40)?;
        if hdr.len() < 40 {
            cx.error(codes::QCOW2_OUTSIDE_FILE, format!("qcow2 snapshot {i} lies outside the file."));
            return Ok(());
        }
        let l1_off = be64(&hdr, 0);
        let l1_bytes = u64::from(be32(&hdr, 8)) * 8;
        let id_len = u64::from(crate::util::be16(&hdr, 12));
        let name_len = u64::from(crate::util::be16(&hdr, 14));
        let extra = u64::from(be32(&hdr, 36));
        if extra > MAX_SNAPSHOT_EXTRA {
            cx.error(codes::QCOW2_SNAPSHOTS, format!("qcow2 snapshot {i} has an oversized header."));
            return Ok(());
        }
        if l1_bytes > QCOW2_MAX_L1_BYTES || !l1_off.is_multiple_of(h.cluster_size()) || !cx.inside(l1_off, l1_bytes) {
            cx.error(codes::QCOW2_OUTSIDE_FILE, format!("The L1 table of qcow2 snapshot {i} lies outside the file or is misaligned."));
            return Ok(());
        }
        let used = 40 + extra + id_len + name_len;
        end = off.saturating_add(used);
        let len = used.div_ceil(8) * 8;
        off = off.saturating_add(len);
    }
    if !cx.inside(h.snapshots_offset, end.saturating_sub(h.snapshots_offset)) {
        cx.error(codes::QCOW2_OUTSIDE_FILE, "The qcow2 snapshot table runs past the end of the file.");
    }
    Ok(())
}

fn check_features(cx: &mut Ctx, h: &Header) {
    let inc = h.incompatible_features;
    if inc & INCOMPAT_DIRTY != 0 {
        cx.error(
            codes::QCOW2_DIRTY,
            "The qcow2 image was not closed cleanly (dirty bit); run qemu-img check -r all on it and upload again.",
        );
    }
    if inc & INCOMPAT_CORRUPT != 0 {
        cx.error(
            codes::QCOW2_CORRUPT,
            "QEMU has marked this qcow2 image as corrupt; repair it with qemu-img check -r all or upload another copy.",
        );
    }
    if inc & INCOMPAT_DATA_FILE != 0 || h.autoclear_features & AUTOCLEAR_DATA_FILE_RAW != 0 {
        cx.error(codes::QCOW2_DATA_FILE, "The qcow2 image keeps its data in an external data file; upload a self-contained image.");
    }
    if inc & INCOMPAT_COMPRESSION != 0 {
        if h.header_length <= 104 || h.compression_type != 1 {
            cx.error(codes::QCOW2_COMPRESSION_TYPE, "The qcow2 compression type field is inconsistent with its feature bit.");
        }
    } else if h.compression_type != 0 {
        cx.error(codes::QCOW2_COMPRESSION_TYPE, "The qcow2 compression type is set without its feature bit.");
    }
    if inc & INCOMPAT_EXTL2 != 0 && h.cluster_bits < 14 {
        cx.error(
            codes::QCOW2_EXTENDED_L2,
            "The qcow2 image uses extended L2 entries with clusters smaller than 16 KiB, which QEMU refuses.",
        );
    }
    let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
    if inc & !known != 0 {
        cx.error(
            codes::QCOW2_UNKNOWN_FEATURES,
            format!("The qcow2 image uses incompatible features Hangar does not know (bits 0x{:x}).", inc & !known),
        );
    }
}

/// Walks the header extensions (bounded to cluster 0).
fn header_extensions(cx: &mut Ctx, h: &Header, head: &[u8]) -> PResult<()> {
    let cs = h.cluster_size();
    let mut off = u64::from(h.header_length);
    // Extensions end at the backing file name if it is in cluster 0, else at the cluster's end.
    let end = if h.backing_file_offset != 0 && h.backing_file_offset < cs { h.backing_file_offset } else { cs };
    let end = end.min(cx.size);
    // Read the extension area once (cluster 0 is at most 2 MiB; the head usually covers it).
    let area: Vec<u8> = if end <= head.len() as u64 {
        slice(head, 0, end as usize).to_vec()
    } else {
        match cx.read_opt(0, end.min(MAX_READ_CHUNK))? {
            Some(a) => a,
            None => return Ok(()),
        }
    };
    for _ in 0..QCOW2_MAX_HEADER_EXTENSIONS {
        if off.saturating_add(8) > area.len() as u64 {
            if off < end {
                cx.error(codes::QCOW2_HEADER_EXTENSIONS, "The qcow2 header extensions run past the first cluster.");
            }
            return Ok(());
        }
        let o = off as usize;
        let typ = be32(&area, o);
        let len = u64::from(be32(&area, o + 4));
        if typ == 0 {
            return Ok(());
        }
        let data_end = off + 8 + len;
        if data_end > end {
            cx.error(codes::QCOW2_HEADER_EXTENSIONS, "A qcow2 header extension runs past the first cluster.");
            return Ok(());
        }
        let data = slice(&area, o + 8, len as usize);
        match typ {
            EXT_BACKING_FORMAT => cx.error(
                codes::QCOW2_BACKING_FORMAT,
                format!("The qcow2 image names a backing file format (\"{}\"); upload a standalone image.", printable(data, 32)),
            ),
            EXT_DATA_FILE => cx.error(
                codes::QCOW2_DATA_FILE,
                format!("The qcow2 image names an external data file (\"{}\"); upload a self-contained image.", printable(data, 200)),
            ),
            EXT_FDE => cx.error(codes::QCOW2_ENCRYPTED, "The qcow2 image carries a full-disk-encryption header; upload it decrypted."),
            EXT_FEATURE_NAMES | EXT_BITMAPS => {}
            _ => cx.info(codes::QCOW2_HEADER_EXTENSIONS, format!("The qcow2 image has an unknown header extension 0x{typ:08x} (ignored).")),
        }
        off = data_end.div_ceil(8) * 8;
    }
    cx.error(codes::QCOW2_HEADER_EXTENSIONS, "The qcow2 image has too many header extensions.");
    Ok(())
}

/// Metadata tables (L2 tables + refcount blocks) whose offsets are kept for the pairwise overlap
/// checks: 65,536 offsets = 512 KiB. That covers 32 TiB of guest space with 64 KiB clusters, more
/// than the default size limit; beyond it only the fixed structures are checked.
const MAX_TRACKED_TABLES: usize = 65_536;

/// Streams a table of big-endian u64 entries; `f(index, entry)` returns false to stop.
fn for_each_u64(cx: &mut Ctx, off: u64, len: u64, mut f: impl FnMut(&mut Ctx, u64, u64) -> bool) -> PResult<bool> {
    let mut done = 0u64;
    while done < len {
        let chunk = cx.read(off + done, len - done)?;
        if chunk.is_empty() {
            break;
        }
        for (i, e) in chunk.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            if e != 0 && !f(cx, done / 8 + i as u64, e) {
                return Ok(false);
            }
        }
        done += chunk.len() as u64;
    }
    Ok(true)
}

/// Inspect only: every L1 entry → L2 table inside the file, aligned, clear of the fixed
/// metadata and of every other table; every refcount table entry → block likewise; every L2
/// entry → data inside the file and clear of all metadata. Cost is proportional to the
/// allocated metadata, not to the virtual size.
fn walk_tables(cx: &mut Ctx, h: &Header, regions: &[Region]) -> PResult<()> {
    let cs = h.cluster_size();
    let fixed_overlap = |off: u64, len: u64| regions.iter().find(|r| overlaps(off, len, r.off, r.len)).map(|r| r.name);
    let l1_bytes = u64::from(h.l1_size) * 8;
    let rt_bytes = u64::from(h.refcount_table_clusters) * cs;
    // Pass 1: L1 entries.
    let mut l2s: Vec<u64> = Vec::new();
    let mut tracked = true;
    let ok = for_each_u64(cx, h.l1_table_offset, l1_bytes, |cx, idx, e| {
        let l2 = e & OFFSET_MASK;
        if e & L1_RESERVED_MASK != 0 || !l2.is_multiple_of(cs) {
            cx.error(codes::QCOW2_MISALIGNED, format!("qcow2 L1 entry {idx} is malformed (reserved bits or misaligned offset)."));
            return false;
        }
        if l2 == 0 {
            return true;
        }
        if !cx.inside(l2, cs) {
            cx.error(
                codes::QCOW2_OUTSIDE_FILE,
                format!("qcow2 L1 entry {idx} points to an L2 table outside the file (the file is probably truncated)."),
            );
            return false;
        }
        if let Some(name) = fixed_overlap(l2, cs) {
            cx.error(codes::QCOW2_OVERLAP, format!("qcow2 L2 table {idx} overlaps the {name}."));
            return false;
        }
        if l2s.len() < MAX_TRACKED_TABLES {
            l2s.push(l2);
        } else {
            tracked = false;
        }
        true
    })?;
    if !ok {
        return Ok(());
    }
    l2s.sort_unstable();
    if l2s.windows(2).any(|w| w[0] == w[1]) {
        cx.error(codes::QCOW2_OVERLAP, "Two qcow2 L1 entries share one L2 table.");
        return Ok(());
    }
    // Pass 2: refcount blocks, clear of the fixed metadata and of the L2 tables.
    let mut rbs: Vec<u64> = Vec::new();
    let ok = for_each_u64(cx, h.refcount_table_offset, rt_bytes, |cx, idx, e| {
        let blk = e & !0x1ff;
        if e & 0x1ff != 0 || !blk.is_multiple_of(cs) {
            cx.error(codes::QCOW2_MISALIGNED, format!("qcow2 refcount table entry {idx} is misaligned."));
            return false;
        }
        if !cx.inside(blk, cs) {
            cx.error(
                codes::QCOW2_OUTSIDE_FILE,
                format!("qcow2 refcount table entry {idx} points outside the file (the file is probably truncated)."),
            );
            return false;
        }
        if let Some(name) = fixed_overlap(blk, cs) {
            cx.error(codes::QCOW2_OVERLAP, format!("qcow2 refcount block {idx} overlaps the {name}."));
            return false;
        }
        if l2s.binary_search(&blk).is_ok() {
            cx.error(codes::QCOW2_OVERLAP, format!("qcow2 refcount block {idx} is also an L2 table."));
            return false;
        }
        if rbs.len() < MAX_TRACKED_TABLES {
            rbs.push(blk);
        } else {
            tracked = false;
        }
        true
    })?;
    if !ok {
        return Ok(());
    }
    rbs.sort_unstable();
    if rbs.windows(2).any(|w| w[0] == w[1]) {
        cx.error(codes::QCOW2_OVERLAP, "Two qcow2 refcount table entries share one block.");
        return Ok(());
    }
    // Pass 3: L2 tables (from the tracked list, or by streaming L1 again when it was too long).
    let tables = Tables { l2s: &l2s, rbs: &rbs, regions };
    if tracked {
        for &l2 in &l2s {
            if !walk_l2(cx, h, l2, &tables)? {
                return Ok(());
            }
        }
    } else {
        let mut pending: Vec<u64> = Vec::new();
        let mut walked_ok = true;
        // Walk in bounded batches of L1 entries.
        let mut start = 0u64;
        while walked_ok && start < l1_bytes {
            pending.clear();
            let batch = (4096 * 8).min(l1_bytes - start);
            let _ = for_each_u64(cx, h.l1_table_offset + start, batch, |_, _, e| {
                pending.push(e & OFFSET_MASK);
                true
            })?;
            for &l2 in &pending {
                if l2 != 0 && !walk_l2(cx, h, l2, &tables)? {
                    walked_ok = false;
                    break;
                }
            }
            start += batch;
        }
    }
    Ok(())
}

/// The metadata a data cluster must not overlap.
struct Tables<'a> {
    l2s: &'a [u64],
    rbs: &'a [u64],
    regions: &'a [Region],
}

impl Tables<'_> {
    fn clash(&self, off: u64, cs: u64) -> Option<String> {
        if let Some(r) = self.regions.iter().find(|r| overlaps(off, cs, r.off, r.len)) {
            return Some(format!("the {}", r.name));
        }
        if self.l2s.binary_search(&off).is_ok() {
            return Some("an L2 table".into());
        }
        if self.rbs.binary_search(&off).is_ok() {
            return Some("a refcount block".into());
        }
        None
    }
}

/// Checks one L2 table; false once an error was recorded.
fn walk_l2(cx: &mut Ctx, h: &Header, l2: u64, tables: &Tables) -> PResult<bool> {
    let cs = h.cluster_size();
    let es = h.l2_entry_size() as usize;
    // Compressed entries: offset in bits 0..x, x = 62 - (cluster_bits - 8).
    let x = 62 - (h.cluster_bits - 8);
    let comp_off_mask = (1u64 << x) - 1;
    // An L2 table is one cluster (up to 2 MiB): read it in bounded chunks.
    let mut done = 0u64;
    while done < cs {
        let table = cx.read(l2 + done, cs - done)?;
        if table.is_empty() {
            break;
        }
        let base = (done / es as u64) as usize;
        done += table.len() as u64;
        for (i, e) in table.chunks_exact(es).enumerate() {
            let i = base + i;
            let e = u64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            if e & L2_COMPRESSED != 0 {
                let off = e & comp_off_mask;
                if off >= cx.size {
                    cx.error(
                    codes::QCOW2_OUTSIDE_FILE,
                    format!("A compressed qcow2 cluster (L2 table at {l2}, entry {i}) lies outside the file (the file is probably truncated)."),
                );
                    return Ok(false);
                }
                continue;
            }
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if !off.is_multiple_of(cs) {
                cx.error(codes::QCOW2_MISALIGNED, format!("qcow2 L2 table at {l2}, entry {i} points to a misaligned cluster."));
                return Ok(false);
            }
            if !cx.inside(off, 1) {
                cx.error(
                    codes::QCOW2_OUTSIDE_FILE,
                    format!("A qcow2 data cluster (L2 table at {l2}, entry {i}) lies outside the file (the file is probably truncated)."),
                );
                return Ok(false);
            }
            if let Some(name) = tables.clash(off, cs) {
                cx.error(codes::QCOW2_OVERLAP, format!("A qcow2 data cluster overlaps {name}."));
                return Ok(false);
            }
        }
    }
    Ok(true)
}
