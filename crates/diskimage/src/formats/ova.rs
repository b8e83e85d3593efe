//! OVA: a tar whose first member is the OVF descriptor. docs/formats.md §2.5 #19–#20.
//!
//! Disks must be streamOptimized or monolithicSparse VMDK, or raw ([`RAW_URI`], what oVirt/RHV
//! export), named by their whole `ovf:format` URI ([`DiskFormat`]); each disk member is inspected
//! as its declared format, so a "raw" disk that is really a qcow2, VMDK, VHD … is refused, a VMDK
//! disk must be the subformat its URI names, and a raw member must hold exactly the OVF capacity.
//! Manifests are read by [`parse_manifest`] and every digest is verified. At most one `.cert` is
//! allowed, bounded by [`CERT_MAX_SIZE`] and not before the `.mf`; it is never verified.
//!
//! This module holds the package rules, and the extractor (`convert::ova`) applies the same
//! functions, so a package this inspector accepts is not refused at import, and what the
//! extractor refuses is refused here first, in the same words ([`Refusal`]): the disk formats
//! ([`DiskFormat`]), the descriptor ([`descriptor`], [`ovf_text`], [`ovf_document`],
//! [`ovf_structure`]: which `File`s and `Disk`s count, hrefs, capacities, each declared once),
//! which members an OVA may hold ([`MemberRules`]: nothing the OVF does not reference but one
//! manifest and one certificate), the manifest ([`read_manifest`], [`parse_manifest`],
//! [`manifest_coverage`], [`digest_mismatch`]), a disk's capacity
//! ([`OvfDisk::capacity_mismatch`]); the tar rules are [`crate::formats::tar`]'s. The browser's
//! sniff runs the same checks on what its head holds (the descriptor, the member headers in it,
//! usually the manifest) and stays silent on the rest.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::formats::gzip::GzError;
use crate::formats::tar::{self, Member, ReadAtSource};
use crate::formats::vmdk;
use crate::limits::{CERT_MAX_SIZE, MAX_READ_CHUNK, MF_MAX_SIZE, OVF_MAX_NODES, OVF_MAX_SIZE};
use crate::read::SubRange;
use crate::report::{Format, ManifestFacts, PackageDisk, PackageFacts, PackageMember, Severity};
use crate::{engine, InspectOptions};

/// `ovf:format` of a streamOptimized VMDK disk (VMware, VirtualBox and most exporters).
pub const STREAM_OPTIMIZED_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// `ovf:format` of a monolithicSparse (hosted sparse) VMDK disk.
pub const SPARSE_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse";
/// `ovf:format` of a raw disk (oVirt/RHV exports).
pub const RAW_URI: &str = "http://en.wikipedia.org/wiki/Byte";

/// The disk formats an OVA may hold, each named by its `ovf:format` URI (docs/formats.md §2.5 #20).
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
    pub const ALL: [DiskFormat; 3] = [DiskFormat::StreamOptimized, DiskFormat::Sparse, DiskFormat::Raw];

    /// The format an `ovf:format` URI names: the whole URI must equal a known one, ignoring
    /// ASCII case only (exporters agree on the spelling, but the inspector always allowed
    /// `#streamoptimized`, and case changes nothing about the bytes, which are inspected
    /// anyway). Anything longer, shorter or merely containing a known URI is refused, so
    /// `http://evil.example/vmdk.html#sparse-ish` names no format.
    pub fn from_uri(uri: &str) -> Option<DiskFormat> {
        Self::ALL.into_iter().find(|f| f.uri().eq_ignore_ascii_case(uri))
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
        format!("streamOptimized VMDK ({STREAM_OPTIMIZED_URI}), monolithicSparse VMDK ({SPARSE_URI}) or raw ({RAW_URI})")
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
            .find(|f| f.vmdk_subformat().is_some_and(|s| s.eq_ignore_ascii_case(subformat)))?;
        (got != self).then(|| {
            format!("the OVF says a {want} VMDK ({}) but the member is a {} VMDK", self.uri(), got.vmdk_subformat().unwrap_or("different"))
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

/// Digest algorithms an OVF manifest may use (docs/formats.md §2.5 #20).
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
        Self::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(name))
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
        let bad = || format!("manifest line {n} is not \"ALGORITHM(name)= digest\": {:?}", shown());
        let (algo, rest) = line.split_once('(').ok_or_else(bad)?;
        let (name, digest) = split_manifest_name(rest).ok_or_else(bad)?;
        let algo = algo.trim();
        let algo = DigestAlgo::from_name(algo).ok_or_else(|| {
            format!("manifest digest algorithm {:?} is not accepted (SHA1, SHA256, SHA512)", algo.chars().take(20).collect::<String>())
        })?;
        let digest = digest.trim();
        if digest.len() != algo.hex_len() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("manifest line {n} does not hold a {} digest ({} hex digits): {:?}", algo.name(), algo.hex_len(), shown()));
        }
        if name.is_empty() {
            return Err(bad());
        }
        if !seen.insert(name) {
            return Err(format!("the manifest lists {:?} twice", name.chars().take(100).collect::<String>()));
        }
        out.push(ManifestEntry { name: name.to_string(), algo, digest: digest.to_ascii_lowercase() });
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

/// Why a package is refused: the finding code the inspector reports, and the reason, a
/// lower-case fragment without a final period that the inspector puts in a sentence ("The OVA
/// is refused: {reason}.") and the extractor uses as its error. Every package rule below
/// returns these, so the two sides refuse the same packages in the same words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The finding code ([`crate::codes`]).
    pub code: &'static str,
    /// What is wrong, naming the member or element.
    pub reason: String,
}

fn refusal(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal { code, reason: reason.into() }
}

/// A `References/File` of the OVF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfFile {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: the member it names, normalised as member names are ([`tar::check_name`]).
    pub href: String,
    /// `ovf:size`: the member's length in bytes, when the OVF declares it (ovftool does,
    /// VirtualBox does not).
    pub size: Option<u64>,
}

impl OvfFile {
    /// Why the file's member is refused when it holds `holds` bytes (its tar header's size) and
    /// the File declares another `ovf:size`: the one rule of the inspector and the extractor,
    /// applied by [`MemberRules::next`]. Nothing when `ovf:size` is absent.
    pub fn size_mismatch(&self, holds: u64) -> Option<Refusal> {
        let said = self.size?;
        (said != holds).then(|| {
            refusal(
                codes::OVF_INVALID,
                format!(
                    "the OVF File {} ({}) has ovf:size {said} but its member holds {holds} bytes",
                    tar::quoted(&self.id),
                    tar::quoted(&self.href)
                ),
            )
        })
    }
}

/// A `DiskSection/Disk` of the OVF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvfDisk {
    /// `ovf:diskId`.
    pub id: String,
    /// `ovf:fileRef`: the `ovf:id` of its file.
    pub file_id: String,
    /// The member holding it (its file's `href`).
    pub href: String,
    /// Capacity in bytes (`ovf:capacity` × `ovf:capacityAllocationUnits`).
    pub capacity: u64,
    /// Its format, from `ovf:format`.
    pub format: DiskFormat,
    /// `ovf:format` as written.
    pub uri: String,
}

impl OvfDisk {
    /// Why the disk is refused when it holds `holds` bytes and the OVF says otherwise: a raw
    /// disk's member length, a VMDK disk's virtual size (docs/formats.md §2.5 #20).
    pub fn capacity_mismatch(&self, holds: u64) -> Option<Refusal> {
        let what = if self.format == DiskFormat::Raw { "raw member" } else { "VMDK" };
        (holds != self.capacity).then(|| {
            refusal(
                codes::OVF_CAPACITY,
                format!(
                    "disk {} ({}): the OVF says {} bytes but the {what} holds {holds}",
                    short(&self.id),
                    short(&self.href),
                    self.capacity
                ),
            )
        })
    }
}

/// What Hangar needs from an OVF descriptor, every rule of [`ovf_structure`] met.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Ovf {
    /// `References/File`, in document order.
    pub files: Vec<OvfFile>,
    /// `DiskSection/Disk`, in document order (at least one).
    pub disks: Vec<OvfDisk>,
    /// What the descriptor says about the virtual machine.
    pub vm: VmFacts,
}

/// The virtual machine an OVF describes (its first `VirtualSystem`): what the browser shows
/// before sending and what the import records as the image's `ovf_*` properties.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VmFacts {
    /// `<Name>`, else the `VirtualSystem`'s `ovf:id`.
    pub name: Option<String>,
    /// `osType` (VMware's attribute), else the OperatingSystemSection's `<Description>`.
    pub os_type: Option<String>,
    /// The CIM operating system id (`ovf:id` of the OperatingSystemSection).
    pub os_id: Option<u32>,
    /// Virtual CPUs (`Item` of ResourceType 3).
    pub cpus: Option<u64>,
    /// Memory in MiB (`Item` of ResourceType 4, its allocation units applied).
    pub memory_mib: Option<u64>,
}

/// Reads [`VmFacts`] from a parsed descriptor. Nothing here can refuse a package: absent or
/// unreadable facts are `None`.
pub fn vm_facts(doc: &roxmltree::Document) -> VmFacts {
    let mut vm = VmFacts::default();
    let attr = |n: roxmltree::Node, name: &str| n.attributes().find(|a| a.name() == name).map(|a| short(a.value().trim()));
    let Some(vs) = doc.root_element().descendants().find(|n| n.has_tag_name("VirtualSystem")) else {
        return vm;
    };
    vm.name = vs.children().find(|n| n.has_tag_name("Name")).and_then(|n| n.text()).map(|s| short(s.trim())).or_else(|| attr(vs, "id"));
    if let Some(os) = vs.descendants().find(|n| n.has_tag_name("OperatingSystemSection")) {
        vm.os_id = attr(os, "id").and_then(|v| v.parse().ok());
        vm.os_type = attr(os, "osType")
            .or_else(|| os.children().find(|n| n.has_tag_name("Description")).and_then(|n| n.text()).map(|s| short(s.trim())));
    }
    for item in vs.descendants().filter(|n| n.has_tag_name("Item")) {
        let field = |name: &str| item.children().find(|n| n.tag_name().name() == name).and_then(|n| n.text()).map(|s| s.trim().to_string());
        let qty: Option<u64> = field("VirtualQuantity").and_then(|v| v.parse().ok());
        match field("ResourceType").as_deref() {
            Some("3") => vm.cpus = qty,
            Some("4") => {
                let mult = allocation_units(field("AllocationUnits").as_deref().or(Some("byte * 2^20")));
                vm.memory_mib = qty.zip(mult).and_then(|(q, m)| q.checked_mul(m)).map(|b| b >> 20);
            }
            _ => {}
        }
    }
    vm
}

impl Ovf {
    /// True if a `File` names member `name`.
    pub fn references(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.href == name)
    }
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The multiplier of a capacity or memory allocation unit: `byte` (the default when absent),
/// `byte * 2^N`, `byte * N`, `bytes`, `KB`/`kilobytes`, `MB`/`megabytes`, `GB`/`gigabytes`,
/// blanks and ASCII case ignored. `None` for anything else.
pub fn allocation_units(u: Option<&str>) -> Option<u64> {
    let Some(u) = u else { return Some(1) };
    let s: String = u.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    match s.as_str() {
        "byte" | "bytes" => return Some(1),
        "kilobytes" | "kb" => return Some(1 << 10),
        "megabytes" | "mb" => return Some(1 << 20),
        "gigabytes" | "gb" => return Some(1 << 30),
        _ => {}
    }
    let rest = s.strip_prefix("byte*")?;
    if let Some(p) = rest.strip_prefix("2^") {
        let p: u32 = p.parse().ok()?;
        return 1u64.checked_shl(p).filter(|_| p < 64);
    }
    rest.parse().ok()
}

/// The first member: its name must end in `.ovf` and it may be at most [`OVF_MAX_SIZE`] bytes.
pub fn descriptor(name: &str, size: u64) -> Result<(), Refusal> {
    if !name.to_ascii_lowercase().ends_with(".ovf") {
        return Err(refusal(
            codes::OVA_OVF_FIRST,
            format!("the first member is {}; an OVA starts with its .ovf descriptor", tar::quoted(name)),
        ));
    }
    if size > OVF_MAX_SIZE {
        return Err(refusal(
            codes::OVF_INVALID,
            format!("the OVF descriptor {} is {size} bytes, more than the {OVF_MAX_SIZE} allowed", tar::quoted(name)),
        ));
    }
    Ok(())
}

/// The descriptor's bytes as text: UTF-8 (a byte-order mark is dropped).
pub fn ovf_text(bytes: &[u8]) -> Result<&str, Refusal> {
    let text = std::str::from_utf8(bytes).map_err(|_| refusal(codes::OVF_INVALID, "the OVF descriptor is not UTF-8 text"))?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Parses the descriptor's XML: no DTD or entity declarations (XXE), at most [`OVF_MAX_NODES`]
/// nodes, well-formed, an `<Envelope>` root.
pub fn ovf_document(text: &str) -> Result<roxmltree::Document<'_>, Refusal> {
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err(refusal(codes::OVF_INVALID, "the OVF descriptor contains a DTD or entity declaration, which is never accepted (XXE)"));
    }
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: OVF_MAX_NODES, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => {
            refusal(codes::OVF_INVALID, format!("the OVF descriptor has more than {OVF_MAX_NODES} XML nodes"))
        }
        e => refusal(codes::OVF_INVALID, format!("the OVF descriptor is not well-formed XML ({e})")),
    })?;
    let root = doc.root_element().tag_name().name();
    if root != "Envelope" {
        return Err(refusal(codes::OVF_INVALID, format!("the OVF descriptor's root element is <{}>, not <Envelope>", short(root))));
    }
    Ok(doc)
}

/// An `ovf:href`: a plain member name. No `:` (a URL such as `http://…` or `file:…`, or a
/// drive path such as `C:…`), a safe member name ([`tar::check_name`]), and not a name an OVA
/// reserves for its descriptor, manifest or certificate.
fn check_href(id: &str, href: &str) -> Result<String, Refusal> {
    if href.contains(':') {
        return Err(refusal(
            codes::OVF_HREF,
            format!(
                "the OVF File {} has ovf:href {}, which is a URL or a drive path (it holds ':'); an OVF may refer only to members of its OVA",
                tar::quoted(id),
                tar::quoted(href)
            ),
        ));
    }
    let name = tar::check_name(href.as_bytes(), false).map_err(|why| {
        refusal(
            codes::OVF_HREF,
            format!("the OVF File {} has ovf:href {}, which is not a safe member name: {why}", tar::quoted(id), tar::quoted(href)),
        )
    })?;
    let lower = name.to_ascii_lowercase();
    if [".ovf", ".mf", ".cert"].iter().any(|x| lower.ends_with(x)) {
        return Err(refusal(
            codes::OVF_HREF,
            format!(
                "the OVF File {} refers to {}; an OVA's .ovf, .mf and .cert members are its descriptor, manifest and certificate, never its files",
                tar::quoted(id),
                tar::quoted(&name)
            ),
        ));
    }
    Ok(name)
}

/// What the OVF declares, by the rules both sides apply (docs/formats.md §2.5 #20). Only `File`
/// elements of `References` and `Disk` elements of `DiskSection` count (elements of the same
/// name elsewhere are not files or disks). Every `File` has an `ovf:id` and an `ovf:href` that
/// is a plain member name (no `:`, so no URL or drive path; a safe name by
/// [`tar::check_name`]; not an `.ovf`, `.mf` or `.cert` name), is neither compressed nor
/// chunked, has an `ovf:size`, if any, that is a whole number of bytes below 2^64 (its member
/// must then be that long: [`OvfFile::size_mismatch`]), and is declared once (id and href);
/// every `Disk` has an `ovf:diskId`, an `ovf:fileRef` naming a declared `File`, an accepted
/// `ovf:format` ([`DiskFormat`]), an `ovf:capacity` that is a whole number of known
/// [`allocation_units`] below 2^64 bytes, and is declared once (id and file); there is at least
/// one disk. `Err` holds every problem found, in document order (the extractor reports the
/// first, the inspector all).
pub fn ovf_structure(doc: &roxmltree::Document) -> Result<Ovf, Vec<Refusal>> {
    let root = doc.root_element();
    let attr =
        |n: roxmltree::Node, name: &str| -> Option<String> { n.attributes().find(|a| a.name() == name).map(|a| a.value().to_string()) };
    let within = |n: &roxmltree::Node, tag: &str, parent: &str| n.has_tag_name(tag) && n.parent().is_some_and(|p| p.has_tag_name(parent));
    let q = |s: &str| tar::quoted(s);
    let mut problems = Vec::new();
    let mut ovf = Ovf::default();
    for f in root.descendants().filter(|n| within(n, "File", "References")) {
        let (id, href) = match (attr(f, "id"), attr(f, "href")) {
            (Some(id), Some(href)) => (id, href),
            (Some(id), None) => {
                problems.push(refusal(codes::OVF_INVALID, format!("the OVF File {} has no ovf:href", q(&id))));
                continue;
            }
            (None, Some(href)) => {
                problems.push(refusal(codes::OVF_INVALID, format!("the OVF File for {} has no ovf:id", q(&href))));
                continue;
            }
            (None, None) => {
                problems.push(refusal(codes::OVF_INVALID, "an OVF File has neither ovf:id nor ovf:href"));
                continue;
            }
        };
        let href = match check_href(&id, &href) {
            Ok(h) => h,
            Err(r) => {
                problems.push(r);
                continue;
            }
        };
        if let Some(c) = attr(f, "compression").filter(|c| c != "identity") {
            problems.push(refusal(
                codes::OVF_INVALID,
                format!(
                    "the OVF File {} ({}) is compressed (ovf:compression {}); compressed files are not supported",
                    q(&id),
                    q(&href),
                    q(&c)
                ),
            ));
        }
        if attr(f, "chunkSize").is_some() {
            problems.push(refusal(
                codes::OVF_INVALID,
                format!("the OVF File {} ({}) is split into chunks (ovf:chunkSize); chunked files are not supported", q(&id), q(&href)),
            ));
        }
        // The member's length in bytes, checked against its tar header by `MemberRules`.
        let size = attr(f, "size").and_then(|s| match s.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(refusal(
                    codes::OVF_INVALID,
                    format!("the OVF File {} ({}) has ovf:size {}, which is not a whole number of bytes", q(&id), q(&href), q(&s)),
                ));
                None
            }
        });
        if ovf.files.iter().any(|x| x.id == id) {
            problems.push(refusal(codes::OVF_INVALID, format!("the OVF declares File {} twice", q(&id))));
            continue;
        }
        if let Some(x) = ovf.files.iter().find(|x| x.href == href) {
            problems.push(refusal(codes::OVF_INVALID, format!("the OVF Files {} and {} both refer to {}", q(&x.id), q(&id), q(&href))));
            continue;
        }
        ovf.files.push(OvfFile { id, href, size });
    }
    let mut disk_elements = 0;
    for d in root.descendants().filter(|n| within(n, "Disk", "DiskSection")) {
        disk_elements += 1;
        let Some(id) = attr(d, "diskId") else {
            problems.push(refusal(codes::OVF_INVALID, "an OVF Disk has no ovf:diskId"));
            continue;
        };
        let disk = q(&id);
        let Some(file_id) = attr(d, "fileRef") else {
            problems.push(refusal(codes::OVF_HREF, format!("OVF disk {disk} has no ovf:fileRef (empty disks are not supported)")));
            continue;
        };
        let uri = attr(d, "format").unwrap_or_default();
        let format = DiskFormat::from_uri(&uri);
        if format.is_none() {
            problems.push(refusal(
                codes::OVF_DISK_FORMAT,
                format!("OVF disk {disk} has format {}; only {} disks are accepted", q(&uri), DiskFormat::accepted_list()),
            ));
        }
        let capacity = match attr(d, "capacity") {
            None => Err(format!("OVF disk {disk} has no ovf:capacity")),
            Some(c) => match c.trim().parse::<u64>() {
                Err(_) => Err(format!("OVF disk {disk} has ovf:capacity {}, which is not a whole number", q(&c))),
                Ok(c) => {
                    let units = attr(d, "capacityAllocationUnits");
                    match allocation_units(units.as_deref()) {
                        None => Err(format!(
                            "OVF disk {disk} has ovf:capacityAllocationUnits {}, which is not a unit of bytes this service knows (byte, byte * 2^N, byte * N, KB, MB, GB)",
                            q(units.as_deref().unwrap_or_default())
                        )),
                        Some(u) => c.checked_mul(u).ok_or_else(|| {
                            format!("OVF disk {disk} has a capacity of 2^64 bytes or more")
                        }),
                    }
                }
            },
        };
        let capacity = capacity.map_err(|why| problems.push(refusal(codes::OVF_CAPACITY, why)));
        let Some(file) = ovf.files.iter().find(|f| f.id == file_id) else {
            // A File that was refused above is not reported a second time.
            let refused = root.descendants().any(|n| within(&n, "File", "References") && attr(n, "id") == Some(file_id.clone()));
            if !refused {
                problems.push(refusal(
                    codes::OVF_HREF,
                    format!("OVF disk {disk} refers to file {}, which the OVF's References do not declare", q(&file_id)),
                ));
            }
            continue;
        };
        if ovf.disks.iter().any(|x| x.id == id) {
            problems.push(refusal(codes::OVF_INVALID, format!("the OVF declares Disk {disk} twice")));
            continue;
        }
        if let Some(x) = ovf.disks.iter().find(|x| x.href == file.href) {
            problems.push(refusal(codes::OVF_INVALID, format!("the OVF Disks {} and {disk} both use {}", q(&x.id), q(&file.href))));
            continue;
        }
        let (Some(format), Ok(capacity)) = (format, capacity) else {
            continue;
        };
        ovf.disks.push(OvfDisk { id, file_id, href: file.href.clone(), capacity, format, uri });
    }
    if disk_elements == 0 {
        problems.push(refusal(codes::OVF_DISK_FORMAT, "the OVF declares no disks"));
    }
    if problems.is_empty() {
        ovf.vm = vm_facts(doc);
        Ok(ovf)
    } else {
        Err(problems)
    }
}

/// The descriptor's bytes to an [`Ovf`]: [`ovf_text`], [`ovf_document`], [`ovf_structure`].
pub fn parse_ovf(bytes: &[u8]) -> Result<Ovf, Vec<Refusal>> {
    let text = ovf_text(bytes).map_err(|r| vec![r])?;
    let doc = ovf_document(text).map_err(|r| vec![r])?;
    ovf_structure(&doc)
}

/// What a member after the descriptor is ([`MemberRules::next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The manifest (`.mf`).
    Manifest,
    /// The certificate (`.cert`): never verified.
    Certificate,
    /// The file of `Ovf::disks[i]`.
    Disk(usize),
    /// A file the OVF references that is not a disk (install media, NVRAM …).
    File,
}

/// The member policy of an OVA (docs/formats.md §2.5 #19–#20), member by member in archive order,
/// as the extractor meets them in its stream and the inspector in its walk. An OVA holds its
/// descriptor (first), at most one manifest (`.mf`, at most [`MF_MAX_SIZE`] bytes), at most one
/// certificate (`.cert`, at most [`CERT_MAX_SIZE`] bytes, after the manifest: DSP0243 orders
/// descriptor, manifest, certificate), and the files its OVF references, each of the
/// `ovf:size` its `File` declares, if any ([`OvfFile::size_mismatch`]); nothing else.
#[derive(Clone, Debug, Default)]
pub struct MemberRules {
    manifest: Option<String>,
    certificate: Option<String>,
    seen: Vec<String>,
}

impl MemberRules {
    /// The next member after the descriptor: its role, or why it is refused.
    pub fn next(&mut self, ovf: &Ovf, name: &str, size: u64) -> Result<Role, Refusal> {
        self.seen.push(name.to_string());
        let q = tar::quoted;
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".ovf") {
            return Err(refusal(
                codes::OVA_OVF_FIRST,
                format!("the OVA holds a second descriptor, {}; an OVA has one .ovf, its first member", q(name)),
            ));
        }
        if lower.ends_with(".mf") {
            if let Some(first) = &self.manifest {
                return Err(refusal(
                    codes::OVA_MANIFEST,
                    format!("the OVA has two manifests, {} and {}; at most one is allowed", q(first), q(name)),
                ));
            }
            if let Some(cert) = &self.certificate {
                return Err(refusal(
                    codes::OVA_CERTIFICATE,
                    format!("the certificate {} comes before the manifest {}; an OVA puts the manifest first", q(cert), q(name)),
                ));
            }
            if size > MF_MAX_SIZE {
                return Err(refusal(
                    codes::OVA_MANIFEST,
                    format!("the manifest {} is {size} bytes, more than the {MF_MAX_SIZE} allowed", q(name)),
                ));
            }
            self.manifest = Some(name.to_string());
            return Ok(Role::Manifest);
        }
        if lower.ends_with(".cert") {
            if let Some(first) = &self.certificate {
                return Err(refusal(
                    codes::OVA_CERTIFICATE,
                    format!("the OVA has two certificates, {} and {}; at most one is allowed", q(first), q(name)),
                ));
            }
            if size > CERT_MAX_SIZE {
                return Err(refusal(
                    codes::OVA_CERTIFICATE,
                    format!("the certificate {} is {size} bytes, more than the {CERT_MAX_SIZE} allowed", q(name)),
                ));
            }
            self.certificate = Some(name.to_string());
            return Ok(Role::Certificate);
        }
        if let Some(r) = ovf.files.iter().find(|f| f.href == name).and_then(|f| f.size_mismatch(size)) {
            return Err(r);
        }
        if let Some(i) = ovf.disks.iter().position(|d| d.href == name) {
            return Ok(Role::Disk(i));
        }
        if ovf.references(name) {
            return Ok(Role::File);
        }
        Err(refusal(
            codes::OVA_UNREFERENCED,
            format!(
                "the OVA member {} is not referenced by the OVF; an OVA may hold only its descriptor, one manifest (.mf), one certificate (.cert) and the files its OVF references",
                q(name)
            ),
        ))
    }

    /// The certificate member met so far, if any.
    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// After the whole archive: every file the OVF references must have been a member.
    pub fn missing(&self, ovf: &Ovf) -> Vec<Refusal> {
        ovf.files
            .iter()
            .filter(|f| !self.seen.contains(&f.href))
            .map(|f| refusal(codes::OVF_HREF, format!("the OVF refers to {}, which is not in the OVA", tar::quoted(&f.href))))
            .collect()
    }
}

/// A manifest member's bytes to its entries: UTF-8 text, then [`parse_manifest`].
pub fn read_manifest(name: &str, bytes: &[u8]) -> Result<Vec<ManifestEntry>, Refusal> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| refusal(codes::OVA_MANIFEST, format!("the manifest {} is not UTF-8 text", tar::quoted(name))))?;
    parse_manifest(text).map_err(|why| refusal(codes::OVA_MANIFEST, why))
}

/// What a manifest must cover: the descriptor and every file the OVF references, each listed
/// (so every byte a disk is made of is verified), and nothing else (not itself, not the
/// certificate, nothing absent). Every problem, in manifest order.
pub fn manifest_coverage(descriptor: &str, ovf: &Ovf, entries: &[ManifestEntry]) -> Vec<Refusal> {
    let mut out = Vec::new();
    let wanted = std::iter::once(descriptor).chain(ovf.files.iter().map(|f| f.href.as_str()));
    for name in wanted {
        if !entries.iter().any(|e| e.name == name) {
            out.push(refusal(
                codes::OVA_MANIFEST,
                format!("the manifest does not list {}; it must list the descriptor and every file the OVF references", tar::quoted(name)),
            ));
        }
    }
    for e in entries {
        if e.name != descriptor && !ovf.references(&e.name) {
            out.push(refusal(
                codes::OVA_MANIFEST,
                format!("the manifest lists {}, which is neither the descriptor nor a file the OVF references", tar::quoted(&e.name)),
            ));
        }
    }
    out
}

/// Why a member whose digest differs from its manifest entry is refused.
pub fn digest_mismatch(name: &str) -> Refusal {
    refusal(
        codes::OVA_DIGEST,
        format!("the digest of {} does not match the manifest; the OVA is damaged or was modified", tar::quoted(name)),
    )
}

fn gz_err(cx: &mut Ctx, e: GzError) -> PResult<()> {
    crate::formats::gzip::report(cx, e)
}

/// Reports a package rule's refusal as an error finding.
fn refuse(cx: &mut Ctx, r: Refusal) {
    cx.error(r.code, format!("The OVA is refused: {}.", r.reason));
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let mut issues = Vec::new();
    // The server walks the whole archive; the browser what it holds or may still ask for.
    let walk = if cx.deep {
        let mut src = ReadAtSource { src: cx.src, pos: 0, end_at_missing: false };
        match tar::walk_to_end(&mut src, usize::MAX, 0, &mut issues) {
            Ok(w) => w,
            Err(e) => {
                gz_err(cx, e)?;
                return Ok(Parsed::new("ovf", None));
            }
        }
    } else {
        // The browser walks the member headers through the bytes it holds, asking for each
        // header it lacks while follow-up rounds are left, so it lists (and
        // judges) every member of a package with a few disks, not only those in the head.
        // One round is kept for the descriptor or the manifest ([`read_member`]).
        let mut src = ReadAtSource { src: cx.src, pos: 0, end_at_missing: cx.followups_left <= 1 };
        match tar::walk_to_end(&mut src, usize::MAX, 0, &mut issues) {
            Ok(w) => w,
            Err(GzError::Stop(stop)) => return Err(stop),
            Err(_) => tar::Walk { members: Vec::new(), end: None },
        }
    };
    let complete = cx.deep;
    for i in issues {
        if complete || i.code != codes::TRUNCATED {
            cx.error(i.code, i.message);
        }
    }
    if let (true, Some(end)) = (complete, walk.end) {
        if !zeros_from(cx, end)? {
            refuse(cx, refusal(codes::TAR_TRAILING_DATA, tar::TRAILING_DATA));
        }
    }
    let walk_end = walk.end;
    let members = walk.members;
    let Some(ovf_member) = members.first().cloned() else {
        cx.error(codes::OVA_OVF_FIRST, "The OVA has no members.");
        return Ok(Parsed::new("ovf", None));
    };
    if let Err(r) = descriptor(&ovf_member.name, ovf_member.size) {
        refuse(cx, r);
        return Ok(Parsed::new("ovf", None));
    }
    let Some(bytes) = read_member(cx, &ovf_member)? else {
        return Ok(Parsed::new("ovf", None));
    };
    let ovf = match parse_ovf(&bytes) {
        Ok(o) => o,
        Err(problems) => {
            for r in problems {
                refuse(cx, r);
            }
            return Ok(Parsed::new("ovf", None));
        }
    };
    drop(bytes);
    // Every member after the descriptor, in archive order (the browser: those in the head).
    let mut rules = MemberRules::default();
    let mut manifest_member = None;
    for m in members.iter().skip(1) {
        match rules.next(&ovf, &m.name, m.size) {
            Ok(Role::Manifest) => manifest_member = Some(m),
            Ok(_) => {}
            Err(r) => refuse(cx, r),
        }
    }
    // The browser's walk may have reached the end of the archive too: then it knows every member.
    let walked_all = complete || walk_end.is_some();
    if walked_all {
        for r in rules.missing(&ovf) {
            refuse(cx, r);
        }
    }
    for d in &ovf.disks {
        let Some(m) = members.iter().find(|m| m.name == d.href) else {
            continue;
        };
        // A raw disk's size is its member's length (exactly: no sector rounding), which the
        // member's header gives: the browser sees it too.
        if d.format == DiskFormat::Raw {
            if let Some(r) = d.capacity_mismatch(m.size) {
                refuse(cx, r);
            }
        }
        if !complete {
            // The browser walks only the head and does not inspect disk members; the one disk
            // check it can make is the VMDK subformat against the OVF's URI, when the head also
            // holds the disk's header and embedded descriptor (small OVFs: usually). The server
            // makes it below from the disk's full inspection, with the same wording.
            let start = usize::try_from(m.offset).unwrap_or(usize::MAX);
            let end = usize::try_from(m.offset.saturating_add(m.size)).unwrap_or(usize::MAX);
            let disk_head = det.head.get(start..end.min(det.head.len())).unwrap_or(&[]);
            if let Some(why) = d.format.head_mismatch(disk_head) {
                disk_format_mismatch(cx, m, &why);
            }
            continue;
        }
        if cx.depth > 0 {
            cx.error(codes::NESTING_TOO_DEEP, "Archives nested inside archives are not accepted.");
            continue;
        }
        let sub = SubRange::new(cx.src, m.offset, m.size);
        // A raw disk is inspected as raw: any other format's structure in it is a mismatch.
        let raw = d.format == DiskFormat::Raw;
        let opts = InspectOptions {
            declared: Some(if raw { Format::Raw } else { Format::Vmdk }),
            file_name: Some(m.name.clone()),
            ..Default::default()
        };
        let r = engine::inspect_dyn(&sub, &opts, cx.depth + 1);
        for f in r.findings.iter().filter(|f| f.severity == Severity::Error) {
            cx.error(
                codes::OVA_DISK,
                format!("Disk \"{}\" in the OVA is refused: {}", m.name.chars().take(100).collect::<String>(), f.message),
            );
        }
        // A VMDK disk must be the subformat its URI names (the extractor reads the two
        // differently: streamOptimized as a stream, monolithicSparse from a spooled file).
        if r.format == Format::Vmdk {
            if let Some(why) = r.subformat.as_deref().and_then(|s| d.format.vmdk_mismatch(s)) {
                disk_format_mismatch(cx, m, &why);
            }
            if let Some(v) = r.virtual_size {
                if let Some(why) = d.capacity_mismatch(v) {
                    refuse(cx, why);
                }
            }
        }
    }
    let mut manifest = None;
    if let Some(m) = manifest_member {
        // The browser reads the manifest (asking for it while follow-up rounds are left); the
        // digests need the whole archive.
        if let Some(bytes) = read_member(cx, m)? {
            match read_manifest(&m.name, &bytes) {
                Err(r) => refuse(cx, r),
                Ok(entries) => {
                    for r in manifest_coverage(&ovf_member.name, &ovf, &entries) {
                        refuse(cx, r);
                    }
                    manifest = Some(ManifestFacts {
                        member: short(&m.name),
                        algorithm: entries.first().map_or_else(String::new, |e| e.algo.name().to_owned()),
                        entries: entries.len(),
                    });
                    if complete {
                        verify_digests(cx, &members, &entries)?;
                    }
                }
            }
        }
    }
    let package = facts(&ovf, &members, walked_all, manifest);
    Ok(Parsed { subformat: Some("ovf".into()), virtual_size: ovf.disks.first().map(|d| d.capacity), package: Some(package) })
}

/// What the package holds, for people: the OVF's disks (sized by their members when the walk
/// met them), every member met, and the virtual machine's facts.
fn facts(ovf: &Ovf, members: &[Member], complete: bool, manifest: Option<ManifestFacts>) -> PackageFacts {
    let disks = ovf
        .disks
        .iter()
        .take(crate::limits::TAR_MAX_MEMBERS)
        .map(|d| PackageDisk {
            id: short(&d.id),
            member: short(&d.href),
            format: match d.format.vmdk_subformat() {
                Some(sub) => format!("vmdk ({sub})"),
                None => "raw".to_owned(),
            },
            capacity: Some(d.capacity),
            size: members.iter().find(|m| m.name == d.href).map(|m| m.size),
        })
        .collect();
    let members = members
        .iter()
        .take(crate::limits::TAR_MAX_MEMBERS)
        .enumerate()
        .map(|(i, m)| {
            let lower = m.name.to_ascii_lowercase();
            let role = if i == 0 {
                "descriptor"
            } else if lower.ends_with(".mf") {
                "manifest"
            } else if lower.ends_with(".cert") {
                "certificate"
            } else if ovf.disks.iter().any(|d| d.href == m.name) {
                "disk"
            } else {
                "other"
            };
            PackageMember { name: short(&m.name), size: m.size, role: role.to_owned() }
        })
        .collect();
    let vm = &ovf.vm;
    PackageFacts {
        disks,
        members,
        complete,
        name: vm.name.clone(),
        os: vm.os_type.clone(),
        cpus: vm.cpus,
        memory_mib: vm.memory_mib,
        manifest,
    }
}

/// A VMDK disk that is not the subformat its `ovf:format` names ([`DiskFormat::vmdk_mismatch`]).
fn disk_format_mismatch(cx: &mut Ctx, m: &Member, why: &str) {
    cx.error(codes::OVF_DISK_FORMAT, format!("Disk \"{}\" in the OVA is refused: {why}.", m.name.chars().take(100).collect::<String>()));
}

/// Reads a whole member (bounded by the caller); `None` when sniffing and not in the head.
fn read_member(cx: &mut Ctx, m: &Member) -> PResult<Option<Vec<u8>>> {
    let mut out = Vec::new();
    while (out.len() as u64) < m.size {
        let (at, left) = (m.offset + out.len() as u64, m.size - out.len() as u64);
        // Sniffing: asked for while follow-up rounds are left (a descriptor or manifest past
        // the head), else skipped.
        let chunk = if cx.followups_left > 0 { Some(cx.read(at, left)?) } else { cx.read_opt(at, left)? };
        let Some(chunk) = chunk else {
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

/// Every manifest entry's digest against its member ([`manifest_coverage`] has refused the
/// entries that name no member the OVF references; one naming a missing member is skipped:
/// [`MemberRules::missing`] reported it).
fn verify_digests(cx: &mut Ctx, members: &[Member], entries: &[ManifestEntry]) -> PResult<()> {
    for e in entries {
        let Some(target) = members.iter().find(|x| x.name == e.name) else {
            continue;
        };
        let got = match e.algo {
            DigestAlgo::Sha1 => digest::<sha1::Sha1>(cx, target)?,
            DigestAlgo::Sha256 => digest::<sha2::Sha256>(cx, target)?,
            DigestAlgo::Sha512 => digest::<sha2::Sha512>(cx, target)?,
        };
        if got != e.digest {
            refuse(cx, digest_mismatch(&e.name));
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
    fn allocation_units_as_exporters_write_them() {
        assert_eq!(allocation_units(None), Some(1));
        for (u, want) in [
            ("byte", 1),
            ("Bytes", 1),
            ("byte * 2^30", 1 << 30),
            ("Byte*2^20", 1 << 20),
            ("byte * 1024", 1024),
            ("KB", 1 << 10),
            ("megabytes", 1 << 20),
            ("GigaBytes", 1 << 30),
        ] {
            assert_eq!(allocation_units(Some(u)), Some(want), "{u}");
        }
        for u in ["furlongs", "byte * 2^64", "byte * 2^99", "byte * 10^3", "", "2^20"] {
            assert_eq!(allocation_units(Some(u)), None, "{u}");
        }
    }

    /// A minimal OVF with these `References` and `DiskSection` contents.
    fn envelope(refs: &str, disks: &str) -> String {
        format!(
            r#"<Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References>{refs}</References><DiskSection>{disks}</DiskSection></Envelope>"#
        )
    }

    #[test]
    fn ovf_structure_reports_every_problem() {
        let refs = r#"<File ovf:id="f0" ovf:href="./disk1.vmdk"/><File ovf:id="f1" ovf:href="tools.iso"/>"#;
        let disk = format!(
            r#"<Disk ovf:diskId="d0" ovf:fileRef="f0" ovf:capacity="12" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="{SPARSE_URI}"/>"#
        );
        let ovf = parse_ovf(envelope(refs, &disk).as_bytes()).unwrap();
        assert_eq!(ovf.files.iter().map(|f| f.href.as_str()).collect::<Vec<_>>(), ["disk1.vmdk", "tools.iso"]);
        assert_eq!(ovf.disks.len(), 1);
        let d = &ovf.disks[0];
        assert_eq!((d.id.as_str(), d.href.as_str(), d.capacity, d.format), ("d0", "disk1.vmdk", 12 << 20, DiskFormat::Sparse));
        assert!(ovf.references("tools.iso") && !ovf.references("./disk1.vmdk"));
        assert_eq!(d.capacity_mismatch(12 << 20), None);
        assert_eq!(
            d.capacity_mismatch(1).map(|r| r.reason),
            Some("disk d0 (disk1.vmdk): the OVF says 12582912 bytes but the VMDK holds 1".into())
        );

        // Several problems: all of them, in document order.
        let bad = envelope(
            r#"<File ovf:id="f0" ovf:href="C:\d.vmdk"/><File ovf:id="f1" ovf:href="a.vmdk" ovf:chunkSize="9"/>"#,
            r#"<Disk ovf:diskId="d0" ovf:fileRef="f1" ovf:format="x"/>"#,
        );
        let problems = parse_ovf(bad.as_bytes()).unwrap_err();
        let got: Vec<(&str, &str)> = problems.iter().map(|r| (r.code, r.reason.split(',').next().unwrap_or_default())).collect();
        assert_eq!(
            got,
            [
                (codes::OVF_HREF, r#"the OVF File "f0" has ovf:href "C:\\d.vmdk""#),
                (
                    codes::OVF_INVALID,
                    r#"the OVF File "f1" ("a.vmdk") is split into chunks (ovf:chunkSize); chunked files are not supported"#
                ),
                (
                    codes::OVF_DISK_FORMAT,
                    r#"OVF disk "d0" has format "x"; only streamOptimized VMDK (http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized)"#
                ),
                (codes::OVF_CAPACITY, r#"OVF disk "d0" has no ovf:capacity"#),
            ]
        );
        // A Disk that names a File refused for its own reason is not reported twice.
        let bad = envelope(r#"<File ovf:id="f0" ovf:href="../d.vmdk"/>"#, &disk);
        assert_eq!(parse_ovf(bad.as_bytes()).unwrap_err().len(), 1);
        // Only References/File and DiskSection/Disk count.
        let stray = envelope(refs, &disk).replace("</Envelope>", r#"<Other><File ovf:id="x"/><Disk ovf:diskId="y"/></Other></Envelope>"#);
        assert_eq!(parse_ovf(stray.as_bytes()).unwrap().disks.len(), 1);
        // A byte-order mark is not a problem; another root element is.
        let bom = format!("\u{feff}{}", envelope(refs, &disk));
        assert!(parse_ovf(bom.as_bytes()).is_ok());
        let root = envelope(refs, &disk).replace("Envelope", "Env");
        assert_eq!(parse_ovf(root.as_bytes()).unwrap_err()[0].reason, "the OVF descriptor's root element is <Env>, not <Envelope>");
    }

    #[test]
    fn file_sizes_are_whole_numbers_and_their_members_lengths() {
        let disk = format!(r#"<Disk ovf:diskId="d0" ovf:fileRef="f0" ovf:capacity="1" ovf:format="{STREAM_OPTIMIZED_URI}"/>"#);
        let with = |size: &str| {
            parse_ovf(
                envelope(&format!(r#"<File ovf:id="f0" ovf:href="disk1.vmdk"{size}/><File ovf:id="f1" ovf:href="tools.iso"/>"#), &disk)
                    .as_bytes(),
            )
        };
        let ovf = with(r#" ovf:size=" 4096 ""#).unwrap();
        assert_eq!((ovf.files[0].size, ovf.files[1].size), (Some(4096), None));
        assert_eq!(ovf.files[0].size_mismatch(4096), None);
        assert_eq!(
            ovf.files[0].size_mismatch(4095).map(|r| (r.code, r.reason)),
            Some((codes::OVF_INVALID, r#"the OVF File "f0" ("disk1.vmdk") has ovf:size 4096 but its member holds 4095 bytes"#.to_string()))
        );
        // Absent: any length.
        assert_eq!(ovf.files[1].size_mismatch(0), None);
        assert_eq!(ovf.files[1].size_mismatch(u64::MAX), None);
        // The member rules apply it to the disk and to any other referenced file.
        let mut rules = MemberRules::default();
        assert_eq!(rules.next(&ovf, "disk1.vmdk", 1).map_err(|r| r.code), Err(codes::OVF_INVALID));
        assert_eq!(rules.next(&ovf, "tools.iso", 7), Ok(Role::File));
        let mut rules = MemberRules::default();
        assert_eq!(rules.next(&ovf, "disk1.vmdk", 4096), Ok(Role::Disk(0)));
        let ovf = with(r#" ovf:size="0""#).unwrap();
        assert!(ovf.files[0].size_mismatch(0).is_none());
        assert!(ovf.files[0].size_mismatch(1).is_some());
        for bad in ["", "12 MB", "-1", "0x10", "1.5", "18446744073709551616"] {
            let problems = with(&format!(r#" ovf:size="{bad}""#)).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad}");
            assert_eq!(problems[0].code, codes::OVF_INVALID);
            assert_eq!(
                problems[0].reason,
                format!(r#"the OVF File "f0" ("disk1.vmdk") has ovf:size {bad:?}, which is not a whole number of bytes"#)
            );
        }
    }

    #[test]
    fn member_policy_and_manifest_coverage() {
        let ovf = parse_ovf(
            envelope(
                r#"<File ovf:id="f0" ovf:href="disk1.vmdk"/><File ovf:id="f1" ovf:href="tools.iso"/>"#,
                &format!(r#"<Disk ovf:diskId="d0" ovf:fileRef="f0" ovf:capacity="1" ovf:format="{STREAM_OPTIMIZED_URI}"/>"#),
            )
            .as_bytes(),
        )
        .unwrap();
        let mut rules = MemberRules::default();
        let mut next = |name: &str, size: u64| rules.next(&ovf, name, size).map_err(|r| r.code);
        assert_eq!(next("test.mf", 10), Ok(Role::Manifest));
        assert_eq!(next("disk1.vmdk", 10), Ok(Role::Disk(0)));
        assert_eq!(next("extra.txt", 10), Err(codes::OVA_UNREFERENCED));
        assert_eq!(next("other.mf", 10), Err(codes::OVA_MANIFEST));
        assert_eq!(next("other.OVF", 10), Err(codes::OVA_OVF_FIRST));
        assert_eq!(next("big.cert", CERT_MAX_SIZE + 1), Err(codes::OVA_CERTIFICATE));
        assert_eq!(next("test.CERT", 10), Ok(Role::Certificate));
        assert_eq!(next("b.cert", 10), Err(codes::OVA_CERTIFICATE));
        assert_eq!(rules.certificate(), Some("test.CERT"));
        let missing = rules.missing(&ovf);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].reason, "the OVF refers to \"tools.iso\", which is not in the OVA");
        // A certificate before the manifest; a manifest too large.
        let mut rules = MemberRules::default();
        assert!(rules.next(&ovf, "a.cert", 1).is_ok());
        assert_eq!(rules.next(&ovf, "a.mf", 1).unwrap_err().code, codes::OVA_CERTIFICATE);
        let mut rules = MemberRules::default();
        assert_eq!(
            rules.next(&ovf, "a.mf", MF_MAX_SIZE + 1).unwrap_err().reason,
            "the manifest \"a.mf\" is 65537 bytes, more than the 65536 allowed"
        );

        let d = "0".repeat(64);
        let mf = |names: &[&str]| {
            let text: String = names.iter().map(|n| format!("SHA256({n})= {d}\n")).collect();
            read_manifest("t.mf", text.as_bytes()).unwrap()
        };
        let all = mf(&["t.ovf", "disk1.vmdk", "tools.iso"]);
        assert!(manifest_coverage("t.ovf", &ovf, &all).is_empty());
        let reasons = |names: &[&str]| -> Vec<String> {
            manifest_coverage("t.ovf", &ovf, &mf(names))
                .into_iter()
                .map(|r| r.reason.split(';').next().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(
            reasons(&["disk1.vmdk", "tools.iso", "t.cert"]),
            [
                "the manifest does not list \"t.ovf\"",
                "the manifest lists \"t.cert\", which is neither the descriptor nor a file the OVF references"
            ]
        );
        assert_eq!(read_manifest("t.mf", b"SHA1(a)= \xff").unwrap_err().reason, "the manifest \"t.mf\" is not UTF-8 text");
    }

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
        if let Some(at) =
            usize::try_from(desc_sector.saturating_mul(512)).ok().filter(|&at| at.checked_add(text.len()).is_some_and(|end| end <= len))
        {
            h[at..at + text.len()].copy_from_slice(text.as_bytes());
        }
        h
    }

    #[test]
    fn vmdk_subformat_must_match_the_uri() {
        use DiskFormat::{Raw, Sparse, StreamOptimized};
        let so = StreamOptimized.vmdk_mismatch("monolithicSparse").unwrap();
        assert_eq!(so, format!("the OVF says a streamOptimized VMDK ({STREAM_OPTIMIZED_URI}) but the member is a monolithicSparse VMDK"));
        let sp = Sparse.vmdk_mismatch("streamoptimized").unwrap();
        assert_eq!(sp, format!("the OVF says a monolithicSparse VMDK ({SPARSE_URI}) but the member is a streamOptimized VMDK"));
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
        for (off, n) in [(0, 20), (1, 0), (u64::MAX, 20), (1, u64::MAX), (u64::MAX / 512, 2), (1, (1 << 20) / 512 + 1), (200, 20)] {
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
        let text =
            format!("SHA1(a.ovf)= {d1}\r\nSHA256 (disk1.vmdk) = {d256}\n\n  sha512(disk (2).vmdk)={d512}  \nSha256(x=y.iso)= {d256}\n");
        let m = parse_manifest(&text).unwrap();
        let got: Vec<(&str, DigestAlgo, &str)> = m.iter().map(|e| (e.name.as_str(), e.algo, e.digest.as_str())).collect();
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
        refused("MD5(a.ovf)= 00112233445566778899aabbccddeeff", "\"MD5\" is not accepted");
        refused(&format!("SHA-256(a.ovf)= {d256}"), "not accepted");
        refused(&format!("SHA2560(a.ovf)= {d256}"), "not accepted");
        // The digest must be hex of exactly the algorithm's length.
        refused(&format!("SHA1(a.ovf)= {d256}"), "SHA1 digest (40 hex digits)");
        refused(&format!("SHA512(a.ovf)= {d256}"), "SHA512 digest (128 hex digits)");
        refused(&format!("SHA256(a.ovf)= {}", "0".repeat(63)), "SHA256 digest");
        refused(&format!("SHA256(a.ovf)= {}g", "0".repeat(63)), "SHA256 digest");
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
        refused(&format!("SHA256(a.ovf)= {d256}\nsha256(a.ovf)= {d256}"), "lists \"a.ovf\" twice");
        // A huge line is quoted in part only.
        refused(&format!("SHA256({})= 0", "x".repeat(1 << 20)), "SHA256 digest");
        refused(&"(".repeat(1 << 20), "is not");
    }
}
