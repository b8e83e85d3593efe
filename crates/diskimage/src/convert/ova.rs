//! OVA extraction: the tar is walked as a stream (docs/formats.md §2.5 #19–20), the OVF is parsed
//! without DTDs, every disk is converted to qcow2 (or raw), and the manifest digests (SHA-1,
//! SHA-256 or SHA-512) are verified. Outputs get names we generate, inside the output directory.
//!
//! Disks are accepted in three formats, named by their `ovf:format` URI under the package
//! inspector's rule ([`DiskFormat::from_uri`]: the whole URI, ASCII case ignored):
//! * streamOptimized VMDK ([`STREAM_OPTIMIZED_URI`], what VMware and VirtualBox write), converted
//!   on the fly by the VMDK stream reader with its structural checks;
//! * raw ([`RAW_URI`], what oVirt/RHV write), converted on the fly: the member must hold exactly
//!   the OVF capacity in bytes, and its head and tail must pass the sniff checks as a raw disk,
//!   so a qcow2, VMDK, VHD, VHDX, VDI, QED or LUKS image declared raw is refused (docs/formats.md
//!   §2.5 #1) — as soon as its first 64 KiB have arrived when the head gives it away;
//! * monolithicSparse VMDK ([`SPARSE_URI`]): its grain tables may point anywhere, so it cannot be
//!   read front to back. The member is spooled (hashed as it streams) into a temporary file
//!   inside the output directory, under a name we make (`.disk{n}.vmdk.part`); that file is
//!   inspected like any file to be converted (it must be a monolithicSparse VMDK the inspector
//!   accepts, of the OVF's capacity), converted by the file reader, and removed whatever happens.
//!
//! A VMDK disk must be the subformat its URI names ([`DiskFormat::vmdk_mismatch`], the
//! inspector's rule and wording): the member's first 64 KiB are looked at before anything is
//! converted or spooled, and a spooled disk's subformat is checked again by the inspector.
//! Streamed disks pass the stream gate's sniff checks on the member's head and tail, spooled
//! ones the full inspector; nothing is published unless every disk and the manifest pass.
//!
//! Every package rule is the package inspector's own function ([`crate::formats::ova`]), with its
//! wording ([`Refusal`]), so an upload the inspector accepted is not refused here, and what is
//! refused here the inspector refused first: the descriptor ([`rules::descriptor`],
//! [`rules::ovf_structure`]: which `File`s and `Disk`s count, hrefs without `:`, capacities and
//! their units, each declared once), the members ([`MemberRules`]: the files the OVF references,
//! each of its `ovf:size` when declared, one manifest, one certificate, nothing else), the manifest ([`rules::read_manifest`],
//! [`rules::manifest_coverage`]: it lists the descriptor and every referenced file),
//! the digests and capacities, and the tar rules ([`crate::formats::tar`], through
//! `walk_tar`).
//!
//! A `.cert` member (the signature over the manifest) is allowed once, bounded in size and only
//! after the `.mf` (the OVF specification, DSP0243, orders an OVA's members descriptor,
//! manifest, certificate, or puts manifest then certificate at the end). It is **not verified**
//! — there is no trust store — and [`OvaReport::unverified_certificate`] says so.

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::error::{package, Error, Result};
use super::io::{Meter, Progress};
use super::out::OutFile;
use super::pkg::{prepare_outdir, walk_tar, Algo, Digests, Hashing};
use super::{convert_accepted_into, convert_stream_into, inspect_for_conversion, ConvertOptions, SourceFormat, TargetFormat};
use crate::formats::ova::{self as rules, DiskFormat, ManifestEntry, MemberRules, Refusal, Role};
use crate::limits::{MF_MAX_SIZE, OVF_MAX_SIZE, SNIFF_HEAD};

/// Largest OVF descriptor we parse (real ones are a few KiB to a few hundred KiB): the
/// inspector's limit ([`rules::descriptor`]).
pub const MAX_OVF_BYTES: u64 = OVF_MAX_SIZE;
/// Bytes moved per read while spooling a monolithicSparse member to its temporary file.
const SPOOL_CHUNK: usize = 1 << 20;
/// The `ovf:format` URIs of the accepted disk formats (the package inspector's; see
/// [`DiskFormat`]).
pub use crate::formats::ova::{RAW_URI, SPARSE_URI, STREAM_OPTIMIZED_URI};

/// A package rule's refusal ([`Refusal`]: the inspector's reason) as the extractor's error.
fn refused(r: Refusal) -> Error {
    package(r.reason)
}

/// A disk as the OVF describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OvfDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// The member holding it (`ovf:href` of the referenced file).
    pub member: String,
    /// Capacity in bytes (units applied).
    pub capacity: u64,
    /// `ovf:format` URI.
    pub format: String,
}

/// Facts read from the OVF descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OvfInfo {
    /// Virtual system name (`<Name>` or `ovf:id`).
    pub name: Option<String>,
    /// OS type (`vmw:osType`, else the OperatingSystemSection description).
    pub os_type: Option<String>,
    /// CIM OS id (`ovf:id` of OperatingSystemSection).
    pub os_id: Option<u32>,
    /// Virtual CPUs (ResourceType 3).
    pub cpus: Option<u64>,
    /// Memory in MiB (ResourceType 4).
    pub memory_mib: Option<u64>,
    /// Disks in DiskSection order.
    pub disks: Vec<OvfDisk>,
    /// Every member the OVF references (`ovf:href` of `<References>/<File>`).
    pub references: Vec<String>,
}

/// One extracted disk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExtractedDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// Member name in the OVA.
    pub member: String,
    /// Output file (inside the output directory; the name is ours).
    pub path: PathBuf,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// The disk's format inside the package ([`SourceFormat::Vmdk`] or [`SourceFormat::Raw`]),
    /// from its `ovf:format` and confirmed by the reader and the sniff checks.
    #[serde(serialize_with = "source_format_name")]
    pub source_format: SourceFormat,
}

fn source_format_name<S: serde::Serializer>(f: &SourceFormat, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.as_str())
}

/// The result of an OVA extraction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OvaReport {
    /// OVF facts.
    pub ovf: OvfInfo,
    /// Every disk, converted.
    pub disks: Vec<ExtractedDisk>,
    /// Whether a manifest was present (then every member's digest was verified).
    pub manifest_verified: bool,
    /// Referenced files that are not disks (ISO media, NVRAM): verified, not extracted.
    pub skipped_members: Vec<String>,
    /// The `.cert` member, if the package has one. Its signature is **not verified** (there is
    /// no trust store): the package must be treated as unsigned whatever this says.
    pub unverified_certificate: Option<String>,
    /// Bytes read from the package.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Extracts an OVA read from `input` into `outdir` (created if missing). Disks are written as
/// `disk1.qcow2`, `disk2.qcow2`, … (or `.raw` with `opts.to = Raw`). On any error every output
/// of this call is deleted.
pub fn extract_ova(input: &mut dyn Read, outdir: &Path, opts: &ConvertOptions, progress: &mut dyn Progress) -> Result<OvaReport> {
    let start = Instant::now();
    let outdir = prepare_outdir(outdir)?;
    let mut m = Meter::new(progress);
    let mut st = State::default();
    let mut pending: Vec<(OutFile, ExtractedDisk)> = Vec::new();
    let mut counted = super::pkg::Counted { inner: input, n: 0 };
    walk_tar(&mut counted, |mem| {
        if mem.index == 0 {
            rules::descriptor(&mem.name, mem.size).map_err(refused)?;
            // No manifest can have been read yet: compute every digest it may ask for.
            let mut h = Hashing::new(mem.reader, &ALL_ALGOS);
            let mut text = Vec::new();
            (&mut h).take(MAX_OVF_BYTES).read_to_end(&mut text).map_err(|e| Error::io("reading the OVF", e))?;
            st.digests.push((mem.name.clone(), h.finish()));
            st.descriptor = mem.name.clone();
            st.ovf = Some(read_ovf(&text)?);
            return Ok(());
        }
        let (ovf, _) = st.ovf.as_ref().ok_or_else(|| package("no OVF"))?;
        let disk = match st.rules.next(ovf, &mem.name, mem.size).map_err(refused)? {
            Role::Manifest => {
                let mut bytes = Vec::new();
                mem.reader.take(MF_MAX_SIZE).read_to_end(&mut bytes).map_err(|e| Error::io("reading the manifest", e))?;
                let entries = rules::read_manifest(&mem.name, &bytes).map_err(refused)?;
                // What it must list is known from the OVF already: refuse it before any disk
                // is converted.
                if let Some(r) = rules::manifest_coverage(&st.descriptor, ovf, &entries).into_iter().next() {
                    return Err(refused(r));
                }
                st.manifest = Some(entries);
                return Ok(());
            }
            // Signature checking needs a trust store, so the certificate is not read at all
            // (walk_tar drains it); it is recorded as present and unverified.
            Role::Certificate => return Ok(()),
            Role::Disk(i) => Some(&ovf.disks[i]),
            Role::File => None,
        };
        // Only the algorithms the manifest uses; before (or without) a manifest, every one it
        // may still ask for (a manifest may come last).
        let algos: Vec<Algo> = match &st.manifest {
            Some(mf) => mf.iter().map(|e| e.algo).collect(),
            None => ALL_ALGOS.to_vec(),
        };
        let mut h = Hashing::new(mem.reader, &algos);
        match disk {
            Some(d) => {
                let format = d.format;
                let from = if format == DiskFormat::Raw { SourceFormat::Raw } else { SourceFormat::Vmdk };
                // A raw disk is its bytes: the member must be exactly the capacity. (The raw
                // stream reader also refuses a stream that is not `raw_len` long.)
                if from == SourceFormat::Raw {
                    if let Some(r) = d.capacity_mismatch(mem.size) {
                        return Err(refused(r));
                    }
                }
                // A VMDK disk must be the subformat its URI names. Its first bytes (the header
                // and the embedded descriptor) say which, before anything of it is converted or
                // spooled; they are handed on to the reader below.
                let mut head = Vec::new();
                if from == SourceFormat::Vmdk {
                    (&mut h).take(SNIFF_HEAD).read_to_end(&mut head).map_err(|e| disk_error(d, Error::io("reading the member", e)))?;
                    if let Some(why) = format.head_mismatch(&head) {
                        return Err(disk_error(d, package(why)));
                    }
                }
                let n = pending.len() + 1;
                let ext = if opts.to == TargetFormat::Raw { "raw" } else { "qcow2" };
                let path = outdir.join(format!("disk{n}.{ext}"));
                let (out, vsize) = {
                    let mut member = Cursor::new(head).chain(&mut h);
                    if format == DiskFormat::Sparse {
                        let spool = outdir.join(format!(".disk{n}.vmdk.part"));
                        convert_spooled(&mut member, mem.size, d, &spool, &path, opts, &mut m)?
                    } else {
                        let out = OutFile::create(&path)?;
                        // The gate sniffs the member's head and tail as `from`: a raw member
                        // that is really another disk format fails there (format mismatch), and
                        // nothing of it is published.
                        let vsize = convert_stream_into(
                            &mut member,
                            from,
                            (from == SourceFormat::Raw).then_some(d.capacity),
                            Some(&d.href),
                            out.file(),
                            opts,
                            &mut m,
                        )
                        .map_err(|e| disk_error(d, e))?;
                        (out, vsize)
                    }
                };
                // For raw the member length was checked against the capacity above (qcow2
                // output rounds the virtual size up to whole sectors).
                if from == SourceFormat::Vmdk {
                    if let Some(r) = d.capacity_mismatch(vsize) {
                        return Err(refused(r));
                    }
                }
                pending.push((
                    out,
                    ExtractedDisk { disk_id: d.id.clone(), member: d.href.clone(), path, virtual_size: vsize, source_format: from },
                ));
            }
            None => {
                std::io::copy(&mut h, &mut std::io::sink()).map_err(|e| Error::io("reading a member", e))?;
                st.skipped.push(mem.name.clone());
            }
        }
        st.digests.push((mem.name, h.finish()));
        Ok(())
    })?;
    m.read(counted.n.saturating_sub(m.bytes_in))?;
    let (ovf, info) = st.ovf.take().ok_or_else(|| package("the package is empty (no OVF)"))?;
    if let Some(r) = st.rules.missing(&ovf).into_iter().next() {
        return Err(refused(r));
    }
    let manifest_verified = match &st.manifest {
        None => false,
        Some(mf) => {
            // It lists the descriptor and every referenced file (checked when it arrived), and
            // every referenced file was a member: each digest was computed.
            for (name, digests) in &st.digests {
                let Some(e) = mf.iter().find(|e| e.name == *name) else {
                    return Err(package(format!("the manifest does not list {name:?}")));
                };
                if digests.get(e.algo) != Some(e.digest.as_str()) {
                    return Err(refused(rules::digest_mismatch(name)));
                }
            }
            true
        }
    };
    m.finish();
    let mut disks = Vec::new();
    for (out, d) in pending {
        out.publish(opts.sync)?;
        disks.push(d);
    }
    Ok(OvaReport {
        ovf: info,
        disks,
        manifest_verified,
        skipped_members: st.skipped,
        unverified_certificate: st.rules.certificate().map(str::to_string),
        bytes_in: counted.n,
        bytes_out: m.bytes_out,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Converts a monolithicSparse VMDK member: spools it (through `member`, which hashes it) into
/// the temporary file `spool` (inside the output directory), has the inspector accept that file
/// as a monolithicSparse VMDK of the OVF's capacity, converts it into a new output at `path`, and
/// removes the spool on every way out. Returns the unpublished output and its virtual size.
fn convert_spooled(
    member: &mut dyn Read,
    size: u64,
    d: &rules::OvfDisk,
    spool: &Path,
    path: &Path,
    opts: &ConvertOptions,
    m: &mut Meter,
) -> Result<(OutFile, u64)> {
    let spool = Spool::create(spool)?;
    spool.fill(member, size, m).map_err(|e| disk_error(d, e))?;
    let accepted = inspect_for_conversion(&spool.file, Some(SourceFormat::Vmdk), Some(&d.href)).map_err(|e| disk_error(d, e))?;
    let report = accepted.report();
    // Seen from the head already when it holds the descriptor; checked again on the whole file.
    let sub = report.subformat.as_deref().unwrap_or("unknown");
    if !sub.eq_ignore_ascii_case("monolithicSparse") {
        let why = DiskFormat::Sparse
            .vmdk_mismatch(sub)
            .unwrap_or_else(|| format!("the OVF says a monolithicSparse VMDK ({SPARSE_URI}) but the member is not one"));
        return Err(disk_error(d, package(why)));
    }
    // Refuse a capacity mismatch before converting anything (checked again on the output).
    if let Some(r) = report.virtual_size.and_then(|v| d.capacity_mismatch(v)) {
        return Err(refused(r));
    }
    let out = OutFile::create(path)?;
    // The spooled bytes were counted as input while they arrived.
    let vsize = m.without_input(|m| convert_accepted_into(&spool.file, &accepted, out.file(), opts, m)).map_err(|e| disk_error(d, e))?;
    Ok((out, vsize))
}

/// A disk's conversion error, as a package error naming the disk and its member.
fn disk_error(d: &rules::OvfDisk, e: Error) -> Error {
    package(format!("disk {} ({}): {e}", d.id, d.href))
}

/// A temporary copy of a member, created exclusively under a name we make and removed when
/// dropped (after the conversion, or on any error or panic).
struct Spool {
    path: PathBuf,
    file: File,
}

impl Spool {
    fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(Spool { path: path.to_path_buf(), file })
    }

    /// Copies `r` to the end into the file; it must be exactly `size` bytes (the tar header's).
    fn fill(&self, r: &mut dyn Read, size: u64, m: &mut Meter) -> Result<()> {
        let mut buf = vec![0u8; SPOOL_CHUNK];
        let mut w = &self.file;
        let mut n = 0u64;
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading the member", e)),
            };
            w.write_all(&buf[..k]).map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
            n += k as u64;
            m.read(k as u64)?;
        }
        if n != size {
            return Err(package(format!("the member is truncated ({n} of {size} bytes)")));
        }
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every manifest digest algorithm accepted (the inspector's).
const ALL_ALGOS: [Algo; 3] = Algo::ALL;

#[derive(Default)]
struct State {
    /// The descriptor by the package rules, and as reported.
    ovf: Option<(rules::Ovf, OvfInfo)>,
    /// The descriptor's member name.
    descriptor: String,
    /// The member policy, member by member (it also remembers the certificate).
    rules: MemberRules,
    manifest: Option<Vec<ManifestEntry>>,
    digests: Vec<(String, Digests)>,
    skipped: Vec<String>,
}

/// Parses the OVF by the package inspector's rules ([`rules::ovf_text`],
/// [`rules::ovf_document`], [`rules::ovf_structure`]: no DTD, bounded, every href a plain
/// member name, capacities with their units, each `File` and `Disk` declared once), then reads
/// what the report tells about the virtual machine.
pub fn parse_ovf(bytes: &[u8]) -> Result<OvfInfo> {
    read_ovf(bytes).map(|(_, info)| info)
}

fn read_ovf(bytes: &[u8]) -> Result<(rules::Ovf, OvfInfo)> {
    let text = rules::ovf_text(bytes).map_err(refused)?;
    let doc = rules::ovf_document(text).map_err(refused)?;
    let ovf = rules::ovf_structure(&doc)
        .map_err(|problems| problems.into_iter().next().map_or_else(|| package("the OVF is refused"), refused))?;
    let mut info = OvfInfo {
        disks: ovf
            .disks
            .iter()
            .map(|d| OvfDisk { disk_id: d.id.clone(), member: d.href.clone(), capacity: d.capacity, format: d.uri.clone() })
            .collect(),
        references: ovf.files.iter().map(|f| f.href.clone()).collect(),
        ..OvfInfo::default()
    };
    let vm = &ovf.vm;
    info.name = vm.name.clone();
    info.os_type = vm.os_type.clone();
    info.os_id = vm.os_id;
    info.cpus = vm.cpus;
    info.memory_mib = vm.memory_mib;
    Ok((ovf, info))
}
