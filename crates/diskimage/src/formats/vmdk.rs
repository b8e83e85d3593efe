//! VMDK: hosted sparse extents (monolithicSparse, streamOptimized) and text descriptors:
//! docs/formats.md §2.5 #12–#13. Integers little-endian; sizes in 512-byte sectors.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::limits::{
    SNIFF_TAIL, VMDK_MAX_DESCRIPTOR, VMDK_MAX_DESCRIPTOR_LINES, VMDK_MAX_GD_ENTRIES, VMDK_MAX_GRAIN_SECTORS, VMDK_MAX_TEXT_DESCRIPTOR,
};
use crate::util::{byte, has_at, le16, le32, le64, slice};

/// gdOffset value meaning "the grain directory is described by the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// Flag: newline detection bytes are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Flag: redundant grain table present.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: stream markers present.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// The end of a file whose header says [`GD_AT_END`]: footer marker (EOF-1536), footer
/// (EOF-1024, a copy of the header with the real gdOffset) and end-of-stream marker (EOF-512).
pub const FOOTER_TRAILER: usize = 1536;
/// Marker type of the footer marker.
pub const MARKER_FOOTER: u32 = 3;
/// Marker type of the end-of-stream marker.
pub const MARKER_EOS: u32 = 0;

// The browser's tail holds the whole trailer, so the sniff checks the footer as inspect does.
const _: () = assert!(SNIFF_TAIL as usize >= FOOTER_TRAILER);

/// The hosted sparse extent header (`KDMV`, 512 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SparseHeader {
    /// 1, 2 or 3.
    pub version: u32,
    /// Flags (see the `FLAG_*` constants).
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_size: u64,
    /// Embedded descriptor offset in sectors (1 for monolithic files; 0 = none).
    pub descriptor_offset: u64,
    /// Embedded descriptor size in sectors.
    pub descriptor_size: u64,
    /// Grain table entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Redundant grain directory offset in sectors.
    pub rgd_offset: u64,
    /// Grain directory offset in sectors (`GD_AT_END` for streamOptimized).
    pub gd_offset: u64,
    /// Metadata overhead in sectors.
    pub overhead: u64,
    /// Unclean shutdown flag.
    pub unclean_shutdown: u8,
    /// The four newline-detection bytes (`\n`, ` `, `\r`, `\n`).
    pub check_bytes: [u8; 4],
    /// 0 none, 1 deflate.
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses a 512-byte header; `None` without `KDMV`.
    pub fn parse(b: &[u8]) -> Option<SparseHeader> {
        if b.len() < 79 || !has_at(b, 0, b"KDMV") {
            return None;
        }
        Some(SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_size: le64(b, 36),
            num_gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            unclean_shutdown: byte(b, 72),
            check_bytes: [byte(b, 73), byte(b, 74), byte(b, 75), byte(b, 76)],
            compress_algorithm: le16(b, 77),
        })
    }
}

/// One way a streamOptimized footer fails docs/formats.md §2.5 #13 (oslo.utils' `footer` safety
/// check). All are reported as [`codes::VMDK_FOOTER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FooterProblem {
    /// The file is shorter than the 1,536-byte trailer.
    TooShort,
    /// The footer at EOF-1024 lacks the header's `KDMV` signature.
    Signature,
    /// The footer's version differs from the header's.
    Version,
    /// The footer's descriptor offset or size differs from the header's.
    Descriptor,
    /// The footer's gdOffset is [`GD_AT_END`] too.
    AnotherFooter,
    /// The marker at EOF-1536 is not size 0, type 3 and 496 zero bytes.
    Marker,
    /// The marker at EOF-512 is not val 0, size 0, type 0 and 496 zero bytes.
    EndOfStream,
}

impl FooterProblem {
    /// The finding's message (a sentence).
    pub fn message(self) -> &'static str {
        match self {
            FooterProblem::TooShort => "The streamOptimized VMDK is too short to hold its footer.",
            FooterProblem::Signature => "The streamOptimized VMDK footer is missing (signature does not match).",
            FooterProblem::Version => "The VMDK footer and header versions do not match.",
            FooterProblem::Descriptor => "The VMDK footer specifies a different descriptor.",
            FooterProblem::AnotherFooter => "The VMDK footer indicates another footer.",
            FooterProblem::Marker => "The VMDK footer marker is invalid.",
            FooterProblem::EndOfStream => "The VMDK end-of-stream marker is invalid.",
        }
    }
}

/// The footer checks (docs/formats.md §2.5 #13, as oslo.utils' format_inspector does them) for a
/// file whose header `hdr` has gdOffset = [`GD_AT_END`]; `tail` is the end of the file (its
/// last [`FOOTER_TRAILER`] bytes are judged). Returns the footer, which then takes the
/// header's place (as in qemu), or every problem found. The inspector, the browser's sniff
/// and the converter all read the footer through this function.
pub fn check_footer(hdr: &SparseHeader, tail: &[u8]) -> Result<SparseHeader, Vec<FooterProblem>> {
    let Some(base) = tail.len().checked_sub(FOOTER_TRAILER) else {
        return Err(vec![FooterProblem::TooShort]);
    };
    let marker = slice(tail, base, 512);
    let footer = slice(tail, base + 512, 512);
    let eos = slice(tail, base + 1024, 512);
    let zero_pad = |m: &[u8]| {
        let pad = slice(m, 16, 496);
        pad.len() == 496 && pad.iter().all(|&c| c == 0)
    };
    let mut problems = Vec::new();
    // The header was parsed, so its signature is `KDMV`: the footer's must be too.
    let Some(f) = SparseHeader::parse(footer) else {
        return Err(vec![FooterProblem::Signature]);
    };
    if f.version != hdr.version {
        problems.push(FooterProblem::Version);
    }
    if f.descriptor_offset != hdr.descriptor_offset || f.descriptor_size != hdr.descriptor_size {
        problems.push(FooterProblem::Descriptor);
    }
    if f.gd_offset == GD_AT_END {
        problems.push(FooterProblem::AnotherFooter);
    }
    // Marker: val u64 (sectors of footer metadata; VMware writes 1, oslo and qemu ignore it),
    // size u32 (0), type u32 (3 = footer), 496 zero bytes.
    if le32(marker, 8) != 0 || le32(marker, 12) != MARKER_FOOTER || !zero_pad(marker) {
        problems.push(FooterProblem::Marker);
    }
    if le64(eos, 0) != 0 || le32(eos, 8) != 0 || le32(eos, 12) != MARKER_EOS || !zero_pad(eos) {
        problems.push(FooterProblem::EndOfStream);
    }
    if problems.is_empty() {
        Ok(f)
    } else {
        Err(problems)
    }
}

/// The `createType` of a hosted sparse VMDK whose header and whole embedded descriptor lie in
/// `head` (the file's first bytes); `None` when they do not, or there is none. Used to compare
/// an OVA disk with its `ovf:format` before the rest of it is read ([`crate::formats::ova`]).
pub fn embedded_create_type(head: &[u8]) -> Option<String> {
    let h = SparseHeader::parse(head)?;
    let len = h.descriptor_size.checked_mul(512)?;
    if h.descriptor_offset == 0 || len == 0 || len > VMDK_MAX_DESCRIPTOR {
        return None;
    }
    let start = usize::try_from(h.descriptor_offset.checked_mul(512)?).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    parse_descriptor(head.get(start..end)?).create_type
}

/// One extent line of a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// RW, RDONLY or NOACCESS.
    pub access: String,
    /// Size in sectors.
    pub sectors: u64,
    /// FLAT, SPARSE, ZERO, VMFS, …
    pub kind: String,
    /// File name (may be empty for ZERO).
    pub file: String,
}

/// A parsed descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// `createType`.
    pub create_type: Option<String>,
    /// `parentCID`.
    pub parent_cid: Option<String>,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// Extent lines.
    pub extents: Vec<Extent>,
    /// Lines that are neither comments, `key=value`, `ddb.*` nor extents.
    pub bad_lines: Vec<String>,
}

/// qemu's probe for a text descriptor: after `#` comments and blank lines, `version=N`.
/// NUL padding after the text (what qemu writes) is allowed.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    let text = head.split(|&c| c == 0).next().unwrap_or(&[]);
    if text.is_empty() || !text.iter().all(|&c| c.is_ascii_graphic() || c.is_ascii_whitespace()) {
        return false;
    }
    for line in text.split(|&c| c == b'\n') {
        let line = trim(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        return line.starts_with(b"version=");
    }
    false
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |p| p + 1);
    slice(b, s, e.saturating_sub(s))
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

/// Parses descriptor text (up to the first NUL).
pub fn parse_descriptor(b: &[u8]) -> Descriptor {
    let text = b.split(|&c| c == 0).next().unwrap_or(&[]);
    let text = String::from_utf8_lossy(text);
    let mut d = Descriptor::default();
    for line in text.lines().take(VMDK_MAX_DESCRIPTOR_LINES) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("RW ") || upper.starts_with("RDONLY ") || upper.starts_with("NOACCESS ") {
            let mut parts = line.splitn(3, ' ');
            let access = parts.next().unwrap_or("").to_string();
            let sectors = parts.next().unwrap_or("").trim().parse::<u64>();
            let rest = parts.next().unwrap_or("").trim();
            let (kind, file) = match rest.split_once(' ') {
                Some((k, f)) => (k.to_string(), f.trim()),
                None => (rest.to_string(), ""),
            };
            // The file name is quoted; an optional offset may follow it.
            let file = if let Some(stripped) = file.strip_prefix('"') {
                stripped.split('"').next().unwrap_or("").to_string()
            } else {
                file.split(' ').next().unwrap_or("").to_string()
            };
            match sectors {
                Ok(sectors) => d.extents.push(Extent { access, sectors, kind: kind.to_ascii_uppercase(), file }),
                Err(_) => d.bad_lines.push(line.chars().take(80).collect()),
            }
        } else if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            if k.contains(' ') {
                d.bad_lines.push(line.chars().take(80).collect());
                continue;
            }
            match k.to_ascii_lowercase().as_str() {
                "createtype" => d.create_type = Some(unquote(v)),
                "parentcid" => d.parent_cid = Some(unquote(v)),
                "parentfilenamehint" => d.parent_hint = Some(unquote(v)),
                _ => {}
            }
        } else {
            d.bad_lines.push(line.chars().take(80).collect());
        }
    }
    d
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let h = det.head.as_slice();
    if has_at(h, 0, b"COWD") {
        cx.error(
            codes::FORMAT_NOT_ALLOWED,
            "This is an ESX COWD (vmfsSparse) VMDK, which is not accepted; convert it to a streamOptimized or monolithicSparse VMDK.",
        );
        return Ok(Parsed::new("vmfsSparse", None));
    }
    if !has_at(h, 0, b"KDMV") {
        return text_descriptor(cx, det);
    }
    let Some(mut hdr) = SparseHeader::parse(h) else {
        cx.error(codes::TRUNCATED, "The file ends inside the VMDK header.");
        return Ok(Parsed::default());
    };
    if !(1..=3).contains(&hdr.version) {
        cx.error(codes::VMDK_HEADER, format!("VMDK version {} is not supported.", hdr.version));
        return Ok(Parsed::default());
    }
    // streamOptimized: the footer (a copy of the header at EOF-1024) holds the real values and
    // takes the header's place, once it agrees with the header (#13).
    let footer_based = hdr.gd_offset == GD_AT_END;
    if footer_based {
        match check_footer(&hdr, &det.tail) {
            Ok(f) => hdr = f,
            Err(problems) => {
                for p in problems {
                    cx.error(codes::VMDK_FOOTER, p.message());
                }
                return Ok(Parsed::new("streamOptimized", None));
            }
        }
    }
    let vs = hdr.capacity.checked_mul(512);
    if vs.is_none() {
        cx.error(codes::VMDK_HEADER, "The VMDK capacity overflows.");
    }
    if hdr.flags & FLAG_NL_DETECT != 0 && hdr.check_bytes != *b"\n \r\n" {
        cx.error(codes::VMDK_HEADER, "The VMDK header's newline check bytes are damaged (the file was transferred in text mode).");
    }
    let g = hdr.grain_size;
    if g == 0 || !g.is_power_of_two() || !(8..=VMDK_MAX_GRAIN_SECTORS).contains(&g) {
        cx.error(codes::VMDK_HEADER, format!("The VMDK grain size {g} sectors is invalid."));
        return Ok(Parsed::new("unknown", vs));
    }
    if hdr.num_gtes_per_gt == 0 || hdr.num_gtes_per_gt > 512 {
        cx.error(codes::VMDK_HEADER, format!("The VMDK grain table size {} is invalid.", hdr.num_gtes_per_gt));
        return Ok(Parsed::new("unknown", vs));
    }
    if hdr.flags & FLAG_COMPRESSED != 0 && hdr.compress_algorithm != 1 {
        cx.error(codes::VMDK_HEADER, "The VMDK uses an unknown grain compression algorithm.");
    }
    // Embedded descriptor at sector 1, bounded.
    if hdr.descriptor_offset == 0 {
        cx.error(
            codes::VMDK_DESCRIPTOR_LOCATION,
            "The VMDK has no embedded descriptor: it is one extent of a split disk whose descriptor is a separate file; upload a monolithicSparse or streamOptimized VMDK.",
        );
        return Ok(Parsed::new("twoGbMaxExtentSparse", vs));
    }
    if hdr.descriptor_offset != 1 {
        cx.error(codes::VMDK_DESCRIPTOR_LOCATION, "The VMDK descriptor is not at sector 1 (wrong descriptor location).");
        return Ok(Parsed::new("unknown", vs));
    }
    let dlen = hdr.descriptor_size.saturating_mul(512);
    if dlen == 0 || dlen > VMDK_MAX_DESCRIPTOR {
        cx.error(codes::VMDK_DESCRIPTOR_LOCATION, "The VMDK descriptor size is zero or larger than 1 MiB.");
        return Ok(Parsed::new("unknown", vs));
    }
    if !cx.inside(512, dlen) {
        cx.error(codes::TRUNCATED, "The VMDK descriptor lies outside the file; the file is truncated.");
        return Ok(Parsed::new("unknown", vs));
    }
    let desc_bytes = read_bounded(cx, 512, dlen)?;
    let d = parse_descriptor(&desc_bytes);
    let sub = d.create_type.clone().unwrap_or_else(|| "unknown".into());
    check_descriptor(cx, &d, true);
    if let (Some(e), Some(vs)) = (d.extents.first(), vs) {
        if d.extents.len() == 1 && e.sectors.saturating_mul(512) != vs {
            cx.error(codes::VMDK_CAPACITY, "The VMDK descriptor's extent size differs from the header's capacity.");
        }
    }
    if sub != "streamOptimized" && footer_based {
        cx.error(codes::VMDK_CREATE_TYPE, "The VMDK has a stream footer but does not say it is streamOptimized.");
    }
    // Grain directory / tables.
    let cap = hdr.capacity;
    let gt_cover = g.saturating_mul(u64::from(hdr.num_gtes_per_gt));
    let gd_entries = cap.div_ceil(gt_cover.max(1));
    if gd_entries > VMDK_MAX_GD_ENTRIES {
        cx.error(codes::VMDK_TABLES, "The VMDK grain directory is larger than QEMU's limit.");
        return Ok(Parsed::new(sub, vs));
    }
    let gd = hdr.gd_offset.saturating_mul(512);
    let gd_len = gd_entries * 4;
    let desc_end = 512 + dlen;
    if gd < desc_end || !cx.inside(gd, gd_len) {
        cx.error(codes::VMDK_TABLES, "The VMDK grain directory lies outside the file or overlaps the header; the file may be truncated.");
        return Ok(Parsed::new(sub, vs));
    }
    if hdr.flags & FLAG_RGD != 0 && hdr.gd_offset != GD_AT_END {
        let rgd = hdr.rgd_offset.saturating_mul(512);
        if rgd < desc_end || !cx.inside(rgd, gd_len) {
            cx.error(codes::VMDK_TABLES, "The VMDK redundant grain directory lies outside the file.");
            return Ok(Parsed::new(sub, vs));
        }
    }
    if cx.deep {
        walk_gd(cx, gd, gd_len, desc_end, u64::from(hdr.num_gtes_per_gt))?;
    }
    Ok(Parsed::new(sub, vs))
}

fn read_bounded(cx: &Ctx, off: u64, len: u64) -> PResult<Vec<u8>> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let chunk = cx.read(off + out.len() as u64, len - out.len() as u64)?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Descriptor rules (#12). `embedded` = inside a KDMV file (SPARSE extents expected).
fn check_descriptor(cx: &mut Ctx, d: &Descriptor, embedded: bool) {
    match d.create_type.as_deref() {
        Some("monolithicSparse") | Some("streamOptimized") => {}
        Some(t) => cx.error(
            codes::VMDK_CREATE_TYPE,
            format!(
                "VMDK createType \"{}\" is not accepted; only monolithicSparse and streamOptimized are.",
                t.chars().take(64).collect::<String>()
            ),
        ),
        None => cx.error(codes::VMDK_CREATE_TYPE, "The VMDK descriptor has no createType."),
    }
    if let Some(p) = &d.parent_hint {
        cx.error(
            codes::VMDK_PARENT,
            format!("The VMDK names a parent disk (\"{}\"); upload a standalone VMDK.", p.chars().take(100).collect::<String>()),
        );
    }
    if let Some(c) = &d.parent_cid {
        if !c.eq_ignore_ascii_case("ffffffff") {
            cx.error(codes::VMDK_PARENT, "The VMDK has a parent (parentCID is set); upload a standalone VMDK.");
        }
    }
    if let Some(l) = d.bad_lines.first() {
        cx.error(codes::VMDK_DESCRIPTOR_SYNTAX, format!("The VMDK descriptor has an invalid line: \"{l}\"."));
    }
    if d.extents.len() != 1 {
        cx.error(codes::VMDK_EXTENTS, format!("The VMDK descriptor lists {} extents; exactly one is accepted.", d.extents.len()));
    }
    for e in &d.extents {
        if e.file.contains('/') || e.file.contains('\\') || e.file.contains(':') {
            cx.error(
                codes::VMDK_EXTENT_PATH,
                format!(
                    "The VMDK extent names a path (\"{}\"), which could read files on the server.",
                    e.file.chars().take(100).collect::<String>()
                ),
            );
        }
        if embedded && e.kind != "SPARSE" {
            cx.error(codes::VMDK_EXTENTS, format!("The VMDK has a {} extent; only its own SPARSE extent is accepted.", e.kind));
        }
        if !e.access.eq_ignore_ascii_case("RW") && !e.access.eq_ignore_ascii_case("RDONLY") {
            cx.error(codes::VMDK_EXTENTS, format!("The VMDK extent access mode {} is not accepted.", e.access));
        }
        if let (true, Some(own)) = (embedded, &cx.file_name) {
            if &e.file != own && !e.file.is_empty() {
                cx.info(
                    codes::VMDK_EXTENT_NAME,
                    format!(
                        "The VMDK's extent is named \"{}\", not \"{own}\" (the file was renamed; harmless).",
                        e.file.chars().take(100).collect::<String>()
                    ),
                );
            }
        }
    }
}

fn walk_gd(cx: &mut Ctx, gd: u64, gd_len: u64, meta_end: u64, gtes: u64) -> PResult<()> {
    let mut done = 0u64;
    while done < gd_len {
        let chunk = cx.read(gd + done, gd_len - done)?;
        if chunk.is_empty() {
            break;
        }
        for (i, e) in chunk.chunks_exact(4).enumerate() {
            let e = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
            if e == 0 {
                continue;
            }
            let idx = done / 4 + i as u64;
            let gt = e * 512;
            if gt < meta_end || !cx.inside(gt, gtes * 4) {
                cx.error(
                    codes::VMDK_TABLES,
                    format!("VMDK grain table {idx} lies outside the file or overlaps the header; the file may be truncated."),
                );
                return Ok(());
            }
            let table = cx.read(gt, gtes * 4)?;
            for (j, g) in table.chunks_exact(4).enumerate() {
                let g = u64::from(u32::from_le_bytes([g[0], g[1], g[2], g[3]]));
                // 0 = unallocated, 1 = zeroed grain (version 2+).
                if g > 1 && (g * 512 < meta_end || g * 512 >= cx.size) {
                    cx.error(
                        codes::VMDK_TABLES,
                        format!("VMDK grain {j} of table {idx} lies outside the file or inside the header; the file may be truncated."),
                    );
                    return Ok(());
                }
            }
        }
        done += chunk.len() as u64;
    }
    Ok(())
}

/// A text descriptor file: recognised (even NUL-padded) and always refused.
fn text_descriptor(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    // The browser judges from the head; the server reads the whole descriptor (≤ 1 MiB).
    let text = if cx.deep && cx.size <= VMDK_MAX_TEXT_DESCRIPTOR && cx.size > det.head.len() as u64 {
        read_bounded(cx, 0, cx.size)?
    } else {
        det.head.clone()
    };
    let d = parse_descriptor(&text);
    let sub = d.create_type.clone().unwrap_or_else(|| "descriptor".into());
    let size: u64 = d.extents.iter().fold(0u64, |a, e| a.saturating_add(e.sectors.saturating_mul(512)));
    let names: Vec<String> = d.extents.iter().take(4).map(|e| e.file.chars().take(100).collect()).collect();
    cx.error(
        codes::VMDK_DESCRIPTOR_FILE,
        format!(
            "This is a VMDK descriptor file (createType \"{}\") that only points at other files ({}); upload a single-file monolithicSparse or streamOptimized VMDK instead.",
            sub.chars().take(64).collect::<String>(),
            if names.is_empty() { "none listed".to_string() } else { names.join(", ") }
        ),
    );
    check_descriptor(cx, &d, false);
    Ok(Parsed::new(sub, if size > 0 { Some(size) } else { None }))
}
