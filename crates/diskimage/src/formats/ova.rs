//! OVA: a tar whose first member is the OVF descriptor. formats.md §2.5 #19–#20.
//!
//! Disks must be streamOptimized or monolithicSparse VMDK, or raw ([`RAW_URI`], what oVirt/RHV
//! export), named by their whole `ovf:format` URI ([`DiskFormat`]); each disk member is inspected
//! as its declared format, so a "raw" disk that is really a qcow2, VMDK, VHD … is refused, a VMDK
//! disk must be the subformat its URI names, and a raw member must hold exactly the OVF capacity.
//! Manifests are read by [`parse_manifest`] and every digest is verified. At most one `.cert` is
//! allowed, bounded by [`CERT_MAX_SIZE`] and not before the `.mf`; it is never verified.
//!
//! [`DiskFormat`] and [`parse_manifest`] are the rules the extractor (`convert::ova`) applies
//! too, so a package this inspector accepts is not refused at import on its URIs, a disk's
//! subformat, or its manifest's spelling.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::formats::gzip::GzError;
use crate::formats::tar::{self, Member, ReadAtSource};
use crate::formats::vmdk;
use crate::limits::{CERT_MAX_SIZE, MAX_READ_CHUNK, MF_MAX_SIZE, OVF_MAX_NODES, OVF_MAX_SIZE};
use crate::read::SubRange;
use crate::report::{Format, Severity};
use crate::{engine, InspectOptions};

/// `ovf:format` of a streamOptimized VMDK disk (VMware, VirtualBox and most exporters).
pub const STREAM_OPTIMIZED_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// `ovf:format` of a monolithicSparse (hosted sparse) VMDK disk.
pub const SPARSE_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse";
/// `ovf:format` of a raw disk (oVirt/RHV exports).
pub const RAW_URI: &str = "http://en.wikipedia.org/wiki/Byte";

/// The disk formats an OVA may hold, each named by its `ovf:format` URI (formats.md §2.5 #20).
///
/// This is the one rule the package inspector (here, also in the browser) and the extractor
/// (`convert::ova`) apply, so a package cannot pass one and fail the other on its URIs or on a
/// VMDK disk's subformat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// streamOptimized VMDK ([`STREAM_OPTIMIZED_URI`]).
    StreamOptimized,
    /// monolithicSparse VMDK ([`SPARSE_URI`]).
    Sparse,
    /// Raw bytes ([`RAW_URI`]).
    Raw,
}

impl DiskFormat {
    /// Every accepted disk format.
    pub const ALL: [DiskFormat; 3] = [
        DiskFormat::StreamOptimized,
        DiskFormat::Sparse,
        DiskFormat::Raw,
    ];

    /// The format an `ovf:format` URI names: the whole URI must equal a known one, ignoring
    /// ASCII case only (exporters agree on the spelling, but the inspector always allowed
    /// `#streamoptimized`, and case changes nothing about the bytes, which are inspected
    /// anyway). Anything longer, shorter or merely containing a known URI is refused, so
    /// `http://evil.example/vmdk.html#sparse-ish` names no format.
    pub fn from_uri(uri: &str) -> Option<DiskFormat> {
        Self::ALL
            .into_iter()
            .find(|f| f.uri().eq_ignore_ascii_case(uri))
    }

    /// The canonical `ovf:format` URI (what exporters write).
    pub fn uri(self) -> &'static str {
        match self {
            DiskFormat::StreamOptimized => STREAM_OPTIMIZED_URI,
            DiskFormat::Sparse => SPARSE_URI,
            DiskFormat::Raw => RAW_URI,
        }
    }

    /// The VMDK `createType` this format promises; `None` for raw.
    pub fn vmdk_subformat(self) -> Option<&'static str> {
        match self {
            DiskFormat::StreamOptimized => Some("streamOptimized"),
            DiskFormat::Sparse => Some("monolithicSparse"),
            DiskFormat::Raw => None,
        }
    }

    /// The accepted formats, for messages: "streamOptimized VMDK (…), monolithicSparse VMDK (…)
    /// or raw (…)".
    pub fn accepted_list() -> String {
        format!(
            "streamOptimized VMDK ({STREAM_OPTIMIZED_URI}), monolithicSparse VMDK ({SPARSE_URI}) or raw ({RAW_URI})"
        )
    }

    /// Why a VMDK disk of `subformat` (its descriptor's `createType`, ASCII case ignored as the
    /// VMDK readers do) cannot be a disk of this format: `Some` only when `subformat` is the
    /// *other* accepted VMDK subformat (streamOptimized where the OVF says monolithicSparse, or
    /// the reverse). Any other createType is refused by the VMDK checks themselves, with their
    /// own reason. The wording is the same in the inspector and the extractor.
    pub fn vmdk_mismatch(self, subformat: &str) -> Option<String> {
        let want = self.vmdk_subformat()?;
        let got = [DiskFormat::StreamOptimized, DiskFormat::Sparse]
            .into_iter()
            .find(|f| {
                f.vmdk_subformat()
                    .is_some_and(|s| s.eq_ignore_ascii_case(subformat))
            })?;
        (got != self).then(|| {
            format!(
                "the OVF says a {want} VMDK ({}) but the member is a {} VMDK",
                self.uri(),
                got.vmdk_subformat().unwrap_or("different")
            )
        })
    }

    /// [`DiskFormat::vmdk_mismatch`] from a disk member's first bytes, when they hold its VMDK
    /// header and the whole embedded descriptor ([`vmdk::embedded_create_type`]); `None` when
    /// they do not (then a later check decides).
    pub fn head_mismatch(self, head: &[u8]) -> Option<String> {
        self.vmdk_subformat()?;
        self.vmdk_mismatch(&vmdk::embedded_create_type(head)?)
    }
}

/// Digest algorithms an OVF manifest may use (formats.md §2.5 #20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgo {
    /// `SHA1`: 40 hex digits.
    Sha1,
    /// `SHA256`: 64 hex digits.
    Sha256,
    /// `SHA512`: 128 hex digits.
    Sha512,
}

impl DigestAlgo {
    /// Every accepted algorithm.
    pub const ALL: [DigestAlgo; 3] = [DigestAlgo::Sha1, DigestAlgo::Sha256, DigestAlgo::Sha512];

    /// The algorithm a manifest line names, ignoring ASCII case (ovftool and VirtualBox write
    /// upper case; the digest is verified whatever the spelling). MD5 and the rest: `None`.
    pub fn from_name(name: &str) -> Option<DigestAlgo> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The name as ovftool writes it.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha1 => "SHA1",
            DigestAlgo::Sha256 => "SHA256",
            DigestAlgo::Sha512 => "SHA512",
        }
    }

    /// Length of the digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgo::Sha1 => 40,
            DigestAlgo::Sha256 => 64,
            DigestAlgo::Sha512 => 128,
        }
    }
}

/// One manifest line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The member it covers, exactly as written.
    pub name: String,
    /// Its algorithm.
    pub algo: DigestAlgo,
    /// The digest, lower-case hex of the algorithm's length.
    pub digest: String,
}

/// Parses an OVF manifest (`.mf`): the one parser of the package inspector and the extractor.
///
/// One entry per non-blank line, `ALGORITHM(name)= digest` as ovftool writes it, with optional
/// blanks before `(` and around `=` as VirtualBox writes it (`SHA256 (name) = digest`). The name
/// ends at the first `)` followed by `=`. The algorithm is [`DigestAlgo`] (ASCII case ignored);
/// the digest must be hex of exactly the algorithm's length; a name may be listed once. Errors
/// are lower-case fragments for the callers' messages, quoting at most 100 characters of input.
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestEntry>, String> {
    let mut out: Vec<ManifestEntry> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let shown = || line.chars().take(100).collect::<String>();
        let bad = || {
            format!(
                "manifest line {n} is not \"ALGORITHM(name)= digest\": {:?}",
                shown()
            )
        };
        let (algo, rest) = line.split_once('(').ok_or_else(bad)?;
        let (name, digest) = split_manifest_name(rest).ok_or_else(bad)?;
        let algo = algo.trim();
        let algo = DigestAlgo::from_name(algo).ok_or_else(|| {
            format!(
                "manifest digest algorithm {:?} is not accepted (SHA1, SHA256, SHA512)",
                algo.chars().take(20).collect::<String>()
            )
        })?;
        let digest = digest.trim();
        if digest.len() != algo.hex_len() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "manifest line {n} does not hold a {} digest ({} hex digits): {:?}",
                algo.name(),
                algo.hex_len(),
                shown()
            ));
        }
        if name.is_empty() {
            return Err(bad());
        }
        if !seen.insert(name) {
            return Err(format!(
                "the manifest lists {:?} twice",
                name.chars().take(100).collect::<String>()
            ));
        }
        out.push(ManifestEntry {
            name: name.to_string(),
            algo,
            digest: digest.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// Splits `name) = digest` at the first `)` that blanks and `=` follow.
fn split_manifest_name(rest: &str) -> Option<(&str, &str)> {
    let mut from = 0;
    while let Some(p) = rest.get(from..)?.find(')') {
        let at = from + p;
        if let Some(digest) = rest.get(at + 1..)?.trim_start().strip_prefix('=') {
            return Some((rest.get(..at)?, digest));
        }
        from = at + 1;
    }
    None
}

/// A disk as the OVF describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfDisk {
    /// `ovf:diskId`.
    pub id: String,
    /// Member name the disk's file reference resolves to.
    pub href: Option<String>,
    /// Capacity in bytes (capacity × allocation units).
    pub capacity: Option<u64>,
    /// `ovf:format` URI.
    pub format: String,
}

/// What Hangar needs from an OVF descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Ovf {
    /// `References/File`: (id, href).
    pub files: Vec<(String, String)>,
    /// `DiskSection/Disk`.
    pub disks: Vec<OvfDisk>,
}

/// Capacity allocation units such as `byte * 2^30`.
fn units(s: Option<&str>) -> Option<u64> {
    let Some(s) = s else { return Some(1) };
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if s == "byte" {
        return Some(1);
    }
    let exp = s.strip_prefix("byte*2^")?;
    let e: u32 = exp.parse().ok()?;
    1u64.checked_shl(e).filter(|_| e < 64)
}

/// Parses OVF XML (no DTD, bounded nodes). Errors are user-facing reasons.
pub fn parse_ovf(text: &str) -> Result<Ovf, String> {
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err("it contains a DOCTYPE or entity declaration".into());
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: OVF_MAX_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| format!("it is not well-formed XML ({e})"))?;
    let attr = |n: &roxmltree::Node, name: &str| {
        n.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.value().to_string())
    };
    let mut ovf = Ovf::default();
    for n in doc.descendants().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "File" => {
                if let (Some(id), Some(href)) = (attr(&n, "id"), attr(&n, "href")) {
                    ovf.files.push((id, href));
                }
            }
            "Disk" => {
                let cap = attr(&n, "capacity").and_then(|c| c.trim().parse::<u64>().ok());
                let u = units(attr(&n, "capacityAllocationUnits").as_deref());
                let capacity = match (cap, u) {
                    (Some(c), Some(u)) => c.checked_mul(u),
                    _ => None,
                };
                ovf.disks.push(OvfDisk {
                    id: attr(&n, "diskId").unwrap_or_default(),
                    href: attr(&n, "fileRef"),
                    capacity,
                    format: attr(&n, "format").unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    // Resolve fileRef → href.
    for d in &mut ovf.disks {
        let href = d
            .href
            .as_ref()
            .and_then(|r| ovf.files.iter().find(|(id, _)| id == r))
            .map(|(_, h)| h.clone());
        d.href = href;
    }
    Ok(ovf)
}

fn gz_err(cx: &mut Ctx, e: GzError) -> PResult<()> {
    crate::formats::gzip::report(cx, e)
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let mut issues = Vec::new();
    // The browser walks only what the head holds; the server walks the whole archive.
    let walk = if cx.deep {
        let mut src = ReadAtSource {
            src: cx.src,
            pos: 0,
        };
        match tar::walk_to_end(&mut src, usize::MAX, 0, &mut issues) {
            Ok(w) => w,
            Err(e) => {
                gz_err(cx, e)?;
                return Ok(Parsed::new("ovf", None));
            }
        }
    } else {
        let mut src = ReadAtSource {
            src: &det.head,
            pos: 0,
        };
        tar::walk_to_end(&mut src, usize::MAX, 0, &mut issues).unwrap_or(tar::Walk {
            members: Vec::new(),
            end: None,
        })
    };
    for i in issues {
        if cx.deep || i.code != codes::TRUNCATED {
            cx.error(i.code, i.message);
        }
    }
    // Only zeros may follow the end-of-archive block (the extractor's walk refuses the rest).
    if let (true, Some(end)) = (cx.deep, walk.end) {
        if !zeros_from(cx, end)? {
            cx.error(
                codes::TAR_TRAILING_DATA,
                format!("The archive is refused: {}.", tar::TRAILING_DATA),
            );
        }
    }
    let members = walk.members;
    let Some(ovf_member) = members.first().cloned() else {
        cx.error(codes::OVA_OVF_FIRST, "The OVA has no members.");
        return Ok(Parsed::new("ovf", None));
    };
    if members
        .iter()
        .skip(1)
        .any(|m| m.name.to_ascii_lowercase().ends_with(".ovf"))
    {
        cx.error(
            codes::OVA_OVF_FIRST,
            "The OVA contains more than one .ovf descriptor.",
        );
    }
    if ovf_member.size > OVF_MAX_SIZE {
        cx.error(
            codes::OVF_INVALID,
            format!("The OVF descriptor is larger than {OVF_MAX_SIZE} bytes."),
        );
        return Ok(Parsed::new("ovf", None));
    }
    let Some(text) = read_member(cx, &ovf_member)? else {
        return Ok(Parsed::new("ovf", None));
    };
    let text = match String::from_utf8(text) {
        Ok(t) => t,
        Err(_) => {
            cx.error(codes::OVF_INVALID, "The OVF descriptor is not valid UTF-8.");
            return Ok(Parsed::new("ovf", None));
        }
    };
    let ovf = match parse_ovf(&text) {
        Ok(o) => o,
        Err(why) => {
            cx.error(
                codes::OVF_INVALID,
                format!("The OVF descriptor is refused: {why}."),
            );
            return Ok(Parsed::new("ovf", None));
        }
    };
    drop(text);
    let complete = cx.deep;
    for (_, href) in &ovf.files {
        let bad = href.contains("://")
            || href.starts_with('/')
            || href.contains("..")
            || href.contains('\\');
        if bad || (complete && !members.iter().any(|m| &m.name == href)) {
            cx.error(
                codes::OVF_HREF,
                format!(
                    "The OVF refers to \"{}\", which is not a file inside this OVA.",
                    href.chars().take(100).collect::<String>()
                ),
            );
        }
    }
    if ovf.disks.is_empty() {
        cx.error(codes::OVF_DISK_FORMAT, "The OVF describes no disks.");
    }
    certificates(cx, &members);
    let mut first_capacity = None;
    for d in &ovf.disks {
        let format = DiskFormat::from_uri(&d.format);
        if format.is_none() {
            cx.error(
                codes::OVF_DISK_FORMAT,
                format!(
                    "OVF disk \"{}\" has format \"{}\"; only {} disks are accepted.",
                    d.id.chars().take(100).collect::<String>(),
                    d.format.chars().take(100).collect::<String>(),
                    DiskFormat::accepted_list()
                ),
            );
        }
        let raw = format == Some(DiskFormat::Raw);
        if first_capacity.is_none() {
            first_capacity = d.capacity;
        }
        let Some(href) = &d.href else {
            cx.error(
                codes::OVF_HREF,
                format!("OVF disk \"{}\" does not refer to a file.", d.id),
            );
            continue;
        };
        let Some(m) = members.iter().find(|m| &m.name == href) else {
            continue;
        };
        if !complete {
            // The browser walks only the head and does not inspect disk members; the one disk
            // check it can make is the VMDK subformat against the OVF's URI, when the head also
            // holds the disk's header and embedded descriptor (small OVFs: usually). The server
            // makes it below from the disk's full inspection, with the same wording.
            let start = usize::try_from(m.offset).unwrap_or(usize::MAX);
            let end = usize::try_from(m.offset.saturating_add(m.size)).unwrap_or(usize::MAX);
            let disk_head = det.head.get(start..end.min(det.head.len())).unwrap_or(&[]);
            if let Some(why) = format.and_then(|f| f.head_mismatch(disk_head)) {
                disk_format_mismatch(cx, m, &why);
            }
            continue;
        }
        if cx.depth > 0 {
            cx.error(
                codes::NESTING_TOO_DEEP,
                "Archives nested inside archives are not accepted.",
            );
            continue;
        }
        let sub = SubRange::new(cx.src, m.offset, m.size);
        // A raw disk is inspected as raw: any other format's structure in it is a mismatch.
        let opts = InspectOptions {
            declared: Some(if raw { Format::Raw } else { Format::Vmdk }),
            file_name: Some(m.name.clone()),
            ..Default::default()
        };
        let r = engine::inspect_dyn(&sub, &opts, cx.depth + 1);
        for f in r.findings.iter().filter(|f| f.severity == Severity::Error) {
            cx.error(
                codes::OVA_DISK,
                format!(
                    "Disk \"{}\" in the OVA is refused: {}",
                    m.name.chars().take(100).collect::<String>(),
                    f.message
                ),
            );
        }
        // A VMDK disk must be the subformat its URI names (the extractor reads the two
        // differently: streamOptimized as a stream, monolithicSparse from a spooled file).
        if r.format == Format::Vmdk {
            let mismatch = format
                .zip(r.subformat.as_deref())
                .and_then(|(f, s)| f.vmdk_mismatch(s));
            if let Some(why) = mismatch {
                disk_format_mismatch(cx, m, &why);
            }
        }
        // A raw disk's size is its member's length (exactly: no sector rounding).
        let disk_size = if raw { Some(m.size) } else { r.virtual_size };
        if let (Some(c), Some(v)) = (d.capacity, disk_size) {
            if c != v {
                cx.error(
                    codes::OVF_CAPACITY,
                    format!(
                        "The OVF says disk \"{}\" holds {c} bytes but the disk itself says {v}.",
                        d.id
                    ),
                );
            }
        }
    }
    if complete {
        manifest(cx, &members, &ovf)?;
    }
    Ok(Parsed {
        subformat: Some("ovf".into()),
        virtual_size: first_capacity,
    })
}

/// A VMDK disk that is not the subformat its `ovf:format` names ([`DiskFormat::vmdk_mismatch`]).
fn disk_format_mismatch(cx: &mut Ctx, m: &Member, why: &str) {
    cx.error(
        codes::OVF_DISK_FORMAT,
        format!(
            "Disk \"{}\" in the OVA is refused: {why}.",
            m.name.chars().take(100).collect::<String>()
        ),
    );
}

/// `.cert` members: at most one (OVF: zero or one certificate), at most [`CERT_MAX_SIZE`]
/// bytes, and never before the `.mf` (OVF places the manifest, then the certificate, either
/// right after the descriptor or at the end). The certificate is not read or verified. Works on
/// the members seen so far, so the browser's partial walk reports a subset of the server's.
fn certificates(cx: &mut Ctx, members: &[Member]) {
    let is = |m: &&Member, ext: &str| m.name.to_ascii_lowercase().ends_with(ext);
    let certs: Vec<&Member> = members.iter().skip(1).filter(|m| is(m, ".cert")).collect();
    if certs.len() > 1 {
        cx.error(
            codes::OVA_CERTIFICATE,
            format!(
                "The OVA has {} certificate (.cert) files; at most one is allowed.",
                certs.len()
            ),
        );
    }
    for c in &certs {
        if c.size > CERT_MAX_SIZE {
            cx.error(
                codes::OVA_CERTIFICATE,
                format!(
                    "The OVA certificate \"{}\" is {} bytes, more than the {CERT_MAX_SIZE} allowed.",
                    c.name.chars().take(100).collect::<String>(),
                    c.size
                ),
            );
        }
    }
    let first = |ext: &str| members.iter().position(|m| is(&m, ext));
    if let (Some(c), Some(mf)) = (first(".cert"), first(".mf")) {
        if c < mf {
            cx.error(
                codes::OVA_CERTIFICATE,
                "The OVA certificate comes before the manifest; an OVA puts the manifest first.",
            );
        }
    }
}

/// Reads a whole member (bounded by the caller); `None` when sniffing and not in the head.
fn read_member(cx: &mut Ctx, m: &Member) -> PResult<Option<Vec<u8>>> {
    let mut out = Vec::new();
    while (out.len() as u64) < m.size {
        let Some(chunk) = cx.read_opt(m.offset + out.len() as u64, m.size - out.len() as u64)?
        else {
            return Ok(None);
        };
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// True if everything from `from` to the end of the file is zero bytes.
fn zeros_from(cx: &Ctx, from: u64) -> PResult<bool> {
    let mut at = from;
    while at < cx.size {
        let chunk = cx.read(at, (cx.size - at).min(MAX_READ_CHUNK))?;
        if chunk.is_empty() {
            break;
        }
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += chunk.len() as u64;
    }
    Ok(true)
}

fn manifest(cx: &mut Ctx, members: &[Member], ovf: &Ovf) -> PResult<()> {
    for m in members.iter().skip(1) {
        let lower = m.name.to_ascii_lowercase();
        if lower.ends_with(".mf") {
            if m.size > MF_MAX_SIZE {
                cx.error(codes::OVA_MANIFEST, "The OVA manifest is too large.");
                continue;
            }
            let Some(text) = read_member(cx, m)? else {
                continue;
            };
            let text = String::from_utf8_lossy(&text);
            let entries = match parse_manifest(&text) {
                Ok(e) => e,
                Err(why) => {
                    cx.error(
                        codes::OVA_MANIFEST,
                        format!("The OVA manifest is refused: {why}."),
                    );
                    continue;
                }
            };
            for e in &entries {
                let Some(target) = members.iter().find(|x| x.name == e.name) else {
                    cx.error(
                        codes::OVA_MANIFEST,
                        format!(
                            "The OVA manifest lists \"{}\", which is not in the archive.",
                            e.name.chars().take(100).collect::<String>()
                        ),
                    );
                    continue;
                };
                let got = match e.algo {
                    DigestAlgo::Sha1 => digest::<sha1::Sha1>(cx, target)?,
                    DigestAlgo::Sha256 => digest::<sha2::Sha256>(cx, target)?,
                    DigestAlgo::Sha512 => digest::<sha2::Sha512>(cx, target)?,
                };
                if got != e.digest {
                    cx.error(
                        codes::OVA_DIGEST,
                        format!(
                            "The digest of \"{}\" does not match the manifest; the OVA is damaged or was modified.",
                            e.name.chars().take(100).collect::<String>()
                        ),
                    );
                }
            }
        } else if lower.ends_with(".cert") {
            // Certificates are not verified (no trust store); `certificates` bounds them.
        } else if !ovf.files.iter().any(|(_, h)| h == &m.name) {
            cx.warn(
                codes::OVA_UNREFERENCED,
                format!(
                    "The OVA member \"{}\" is not used by the OVF and will be ignored.",
                    m.name.chars().take(100).collect::<String>()
                ),
            );
        }
    }
    Ok(())
}

fn digest<D: sha2::Digest>(cx: &Ctx, m: &Member) -> PResult<String> {
    let mut h = D::new();
    let mut done = 0u64;
    while done < m.size {
        let chunk = cx.read(m.offset + done, (m.size - done).min(MAX_READ_CHUNK))?;
        if chunk.is_empty() {
            break;
        }
        h.update(&chunk);
        done += chunk.len() as u64;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_format_uris_are_compared_whole_ignoring_ascii_case() {
        for f in DiskFormat::ALL {
            assert_eq!(DiskFormat::from_uri(f.uri()), Some(f));
            assert_eq!(DiskFormat::from_uri(&f.uri().to_ascii_lowercase()), Some(f));
            assert_eq!(DiskFormat::from_uri(&f.uri().to_ascii_uppercase()), Some(f));
            // Anything around a known URI makes it another URI.
            for other in [
                format!(" {}", f.uri()),
                format!("{} ", f.uri()),
                format!("{}-ish", f.uri()),
                format!("{}/", f.uri()),
                f.uri().replacen("http://", "https://", 1),
                f.uri()[..f.uri().len() - 1].to_string(),
            ] {
                assert_eq!(DiskFormat::from_uri(&other), None, "{other:?}");
            }
        }
        for bad in [
            "",
            "http://evil/vmdk.html#sparse-ish",
            "http://evil.example/vmdk.html#streamOptimized",
            "vmdk.html#streamOptimized",
            "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicFlat",
            // OVF 0.9 spellings are not accepted by either side.
            "http://www.vmware.com/specifications/vmdk.html#sparse",
            "http://www.vmware.com/specifications/vmdk.html#compressed",
            "http://en.wikipedia.org/wiki/Byte_order",
            // Unicode case folding is not ASCII case: the Kelvin sign is not a K.
            "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\u{212A}",
        ] {
            assert_eq!(DiskFormat::from_uri(bad), None, "{bad:?}");
        }
    }

    /// A monolithicSparse-shaped header with an embedded descriptor of `desc_sectors` at
    /// `desc_sector`, whose text names `create_type`.
    fn vmdk_head(create_type: &str, desc_sector: u64, desc_sectors: u64, len: usize) -> Vec<u8> {
        let mut h = vec![0u8; len];
        h[..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[28..36].copy_from_slice(&desc_sector.to_le_bytes());
        h[36..44].copy_from_slice(&desc_sectors.to_le_bytes());
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"{create_type}\"\nRW 2048 SPARSE \"d.vmdk\"\n"
        );
        if let Some(at) = usize::try_from(desc_sector.saturating_mul(512))
            .ok()
            .filter(|&at| at.checked_add(text.len()).is_some_and(|end| end <= len))
        {
            h[at..at + text.len()].copy_from_slice(text.as_bytes());
        }
        h
    }

    #[test]
    fn vmdk_subformat_must_match_the_uri() {
        use DiskFormat::{Raw, Sparse, StreamOptimized};
        let so = StreamOptimized.vmdk_mismatch("monolithicSparse").unwrap();
        assert_eq!(
            so,
            format!("the OVF says a streamOptimized VMDK ({STREAM_OPTIMIZED_URI}) but the member is a monolithicSparse VMDK")
        );
        let sp = Sparse.vmdk_mismatch("streamoptimized").unwrap();
        assert_eq!(
            sp,
            format!("the OVF says a monolithicSparse VMDK ({SPARSE_URI}) but the member is a streamOptimized VMDK")
        );
        assert_eq!(StreamOptimized.vmdk_mismatch("streamOptimized"), None);
        assert_eq!(Sparse.vmdk_mismatch("MONOLITHICSPARSE"), None);
        // Other createTypes are the VMDK checks' business; raw disks have no subformat.
        assert_eq!(StreamOptimized.vmdk_mismatch("monolithicFlat"), None);
        assert_eq!(StreamOptimized.vmdk_mismatch("unknown"), None);
        assert_eq!(Raw.vmdk_mismatch("monolithicSparse"), None);

        // From the member's first bytes: the descriptor must lie wholly inside them.
        let head = vmdk_head("monolithicSparse", 1, 20, 64 << 10);
        assert_eq!(StreamOptimized.head_mismatch(&head), Some(so));
        assert_eq!(Sparse.head_mismatch(&head), None);
        assert_eq!(Raw.head_mismatch(&head), None);
        let head = vmdk_head("streamOptimized", 1, 20, 64 << 10);
        assert_eq!(Sparse.head_mismatch(&head), Some(sp));
        assert_eq!(StreamOptimized.head_mismatch(&head), None);
        let cut = vmdk_head("monolithicSparse", 1, 20, 21 * 512 - 1);
        assert_eq!(StreamOptimized.head_mismatch(&cut), None);
        // Hostile headers: no panic, no allocation from their numbers, no verdict.
        for (off, n) in [
            (0, 20),
            (1, 0),
            (u64::MAX, 20),
            (1, u64::MAX),
            (u64::MAX / 512, 2),
            (1, (1 << 20) / 512 + 1),
            (200, 20),
        ] {
            let h = vmdk_head("monolithicSparse", off, n, 64 << 10);
            assert_eq!(StreamOptimized.head_mismatch(&h), None, "{off} {n}");
        }
        for len in [0, 3, 4, 78, 79, 512] {
            let h = vmdk_head("monolithicSparse", 1, 20, 64 << 10);
            assert_eq!(StreamOptimized.head_mismatch(&h[..len]), None, "{len}");
        }
    }

    #[test]
    fn manifests_as_ovftool_and_virtualbox_write_them() {
        let d1 = "0123456789abcdef0123456789abcdef01234567";
        let d256 = "ab".repeat(32);
        let d512 = "Ab".repeat(64);
        let text = format!(
            "SHA1(a.ovf)= {d1}\r\nSHA256 (disk1.vmdk) = {d256}\n\n  sha512(disk (2).vmdk)={d512}  \nSha256(x=y.iso)= {d256}\n"
        );
        let m = parse_manifest(&text).unwrap();
        let got: Vec<(&str, DigestAlgo, &str)> = m
            .iter()
            .map(|e| (e.name.as_str(), e.algo, e.digest.as_str()))
            .collect();
        let want_512 = d512.to_ascii_lowercase();
        assert_eq!(
            got,
            vec![
                ("a.ovf", DigestAlgo::Sha1, d1),
                ("disk1.vmdk", DigestAlgo::Sha256, d256.as_str()),
                ("disk (2).vmdk", DigestAlgo::Sha512, want_512.as_str()),
                ("x=y.iso", DigestAlgo::Sha256, d256.as_str()),
            ]
        );
        assert_eq!(parse_manifest("\n \r\n").unwrap(), vec![]);
        for name in ["sha1", "SHA1", "Sha1", "sHa1"] {
            let m = parse_manifest(&format!("{name}(a)= {d1}")).unwrap();
            assert_eq!(m[0].algo, DigestAlgo::Sha1, "{name}");
        }
    }

    #[test]
    fn manifest_refusals() {
        let d256 = "0".repeat(64);
        let refused = |text: &str, why: &str| {
            let e = parse_manifest(text).expect_err(text);
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.len() < 300, "{e}");
        };
        refused(
            "MD5(a.ovf)= 00112233445566778899aabbccddeeff",
            "\"MD5\" is not accepted",
        );
        refused(&format!("SHA-256(a.ovf)= {d256}"), "not accepted");
        refused(&format!("SHA2560(a.ovf)= {d256}"), "not accepted");
        // The digest must be hex of exactly the algorithm's length.
        refused(
            &format!("SHA1(a.ovf)= {d256}"),
            "SHA1 digest (40 hex digits)",
        );
        refused(
            &format!("SHA512(a.ovf)= {d256}"),
            "SHA512 digest (128 hex digits)",
        );
        refused(
            &format!("SHA256(a.ovf)= {}", "0".repeat(63)),
            "SHA256 digest",
        );
        refused(
            &format!("SHA256(a.ovf)= {}g", "0".repeat(63)),
            "SHA256 digest",
        );
        refused("SHA256(a.ovf)= ", "SHA256 digest");
        // Syntax.
        for bad in [
            format!("SHA256 a.ovf = {d256}"),
            format!("SHA256(a.ovf {d256}"),
            format!("SHA256(a.ovf) {d256}"),
            format!("SHA256() = {d256}"),
            "garbage".to_string(),
        ] {
            refused(&bad, "is not \"ALGORITHM(name)= digest\"");
        }
        refused(
            &format!("SHA256(a.ovf)= {d256}\nsha256(a.ovf)= {d256}"),
            "lists \"a.ovf\" twice",
        );
        // A huge line is quoted in part only.
        refused(
            &format!("SHA256({})= 0", "x".repeat(1 << 20)),
            "SHA256 digest",
        );
        refused(&"(".repeat(1 << 20), "is not");
    }
}
