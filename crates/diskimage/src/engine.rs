//! Sniff and inspect: detection, the per-format parsers, and the generic rules (declared format,
//! polyglots, maximum virtual size).

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed, Stop};
use crate::detect::{detect, Detection, PartTable};
use crate::formats;
use crate::limits::{DEFAULT_MAX_VIRTUAL_SIZE, SNIFF_FETCH_GRANULE, SNIFF_MAX_FOLLOWUPS};
use crate::read::{ByteRange, ReadAt, SparseBytes};
use crate::report::{Finding, Format, Report, Severity, Verdict};

/// Options for [`inspect`] (and [`sniff_with`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectOptions {
    /// The format the user declared; a different detected format is refused.
    pub declared: Option<Format>,
    /// Largest virtual size accepted, in bytes (default 16 TiB).
    pub max_virtual_size: u64,
    /// The uploaded file's name, if known (compared with a VMDK's own extent name).
    pub file_name: Option<String>,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions { declared: None, max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE, file_name: None }
    }
}

/// The answer of [`sniff`]: either a report, or the ranges the browser must read next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SniffOutcome {
    /// Read these ranges (e.g. with `Blob.slice`), add them to the [`SparseBytes`], sniff again.
    NeedMore(Vec<ByteRange>),
    /// Sniffing is finished. The verdict is advice; the server inspects again.
    Done(Report),
}

/// Sniffs the bytes the browser holds (head, tail and follow-up pieces) with default options.
pub fn sniff(bytes: &SparseBytes) -> SniffOutcome {
    sniff_with(bytes, &InspectOptions::default())
}

/// Sniffs with options (declared format, size limit).
///
/// Runs the same parsers as [`inspect`], skipping the checks that need the whole file (table
/// walks, digests). When a needed structure lies outside the pieces held, the answer is
/// [`SniffOutcome::NeedMore`], at most [`SNIFF_MAX_FOLLOWUPS`] times; after that the report says
/// `sniff-incomplete`.
pub fn sniff_with(bytes: &SparseBytes, opts: &InspectOptions) -> SniffOutcome {
    sniff_rounds(bytes, opts, (2 + SNIFF_MAX_FOLLOWUPS).saturating_sub(bytes.piece_count()))
}

/// [`sniff_with`] over what `bytes` holds, asking for nothing its optional reads (an OVA's member
/// walk) could do without: a stream's head and tail are all there will ever be.
#[cfg(feature = "convert")]
pub(crate) fn sniff_held(bytes: &SparseBytes, opts: &InspectOptions) -> SniffOutcome {
    sniff_rounds(bytes, opts, 0)
}

fn sniff_rounds(bytes: &SparseBytes, opts: &InspectOptions, followups_left: usize) -> SniffOutcome {
    let mut cx = Ctx::new(bytes, false);
    cx.file_name = opts.file_name.clone();
    cx.followups_left = followups_left;
    match analyse(&mut cx, opts) {
        Ok(r) => SniffOutcome::Done(r),
        Err(Stop::Need(r)) => {
            if bytes.piece_count() < 2 + SNIFF_MAX_FOLLOWUPS {
                let len = r.len.clamp(SNIFF_FETCH_GRANULE, crate::limits::SNIFF_MAX_PIECE);
                let len = len.min(bytes.size().saturating_sub(r.offset));
                SniffOutcome::NeedMore(vec![ByteRange { offset: r.offset, len }])
            } else {
                // Give the format detected so far, without the structures we could not reach.
                let mut cx = Ctx::new(bytes, false);
                let det = detect(&cx, opts.declared);
                let mut report = match det {
                    Ok(det) => {
                        let (format, _) = resolve(&mut cx, &det);
                        bare_report(format, None)
                    }
                    Err(_) => bare_report(Format::Unknown, None),
                };
                report.findings.push(Finding {
                    code: codes::SNIFF_INCOMPLETE.into(),
                    severity: Severity::Info,
                    message:
                        "The browser could not read enough of the file to check everything; the server will check it after the upload."
                            .into(),
                });
                SniffOutcome::Done(report)
            }
        }
        Err(Stop::Io(e)) => SniffOutcome::Done(io_report(&e)),
    }
}

/// Sniffs a whole file the way the browser would: head + tail, then follow-up ranges.
pub fn sniff_reader(src: &dyn ReadAt, opts: &InspectOptions) -> Report {
    let mut bytes = match SparseBytes::from_head_tail(src) {
        Ok(b) => b,
        Err(e) => return io_report(&format!("{e:?}")),
    };
    for _ in 0..=SNIFF_MAX_FOLLOWUPS + 1 {
        match sniff_with(&bytes, opts) {
            SniffOutcome::Done(r) => return r,
            SniffOutcome::NeedMore(ranges) => {
                for r in ranges {
                    if let Err(e) = bytes.fetch_from(src, r) {
                        return io_report(&format!("{e:?}"));
                    }
                }
            }
        }
    }
    io_report("sniffing did not converge")
}

/// Inspects a complete file: every structural check of docs/formats.md §2.5.
///
/// ```
/// use diskimage::{inspect, Format, InspectOptions, Verdict};
/// let disk = vec![0u8; 4096];
/// let report = inspect(&disk[..], &InspectOptions { declared: Some(Format::Raw), ..Default::default() });
/// assert_eq!(report.format, Format::Raw);
/// assert_eq!(report.verdict, Verdict::Accepted);
/// assert_eq!(report.virtual_size, Some(4096));
/// ```
pub fn inspect<R: ReadAt + ?Sized>(src: &R, opts: &InspectOptions) -> Report {
    inspect_dyn(&src, opts, 0)
}

pub(crate) fn inspect_dyn(src: &dyn ReadAt, opts: &InspectOptions, depth: u8) -> Report {
    let mut cx = Ctx::new(src, true);
    cx.depth = depth;
    cx.file_name = opts.file_name.clone();
    match analyse(&mut cx, opts) {
        Ok(r) => r,
        Err(Stop::Need(r)) => io_report(&format!("bytes {}..{} are not available to the inspector", r.offset, r.end())),
        Err(Stop::Io(e)) => io_report(&e),
    }
}

fn bare_report(format: Format, virtual_size: Option<u64>) -> Report {
    Report { format, subformat: None, virtual_size, verdict: Verdict::Accepted, findings: Vec::new(), package: None }
}

fn io_report(e: &str) -> Report {
    Report {
        format: Format::Unknown,
        subformat: None,
        virtual_size: None,
        verdict: Verdict::Rejected,
        findings: vec![Finding {
            code: codes::READ_ERROR.into(),
            severity: Severity::Error,
            message: format!("The file could not be read ({e})."),
        }],
        package: None,
    }
}

/// Picks the format from the matches; records a polyglot as an error.
fn resolve(cx: &mut Ctx, det: &Detection) -> (Format, bool) {
    let names = |d: &Detection| {
        let mut v: Vec<&str> = d.rich.iter().map(|(f, _)| f.as_str()).collect();
        if let Some(p) = d.part {
            v.push(if matches!(p, PartTable::Mbr) { "mbr" } else { "gpt" });
        }
        v.join(", ")
    };
    match det.rich.as_slice() {
        [] => (Format::Raw, false),
        [(f, _)] => {
            // ISO + MBR/GPT is a hybrid ISO (Glance allows it); a fixed VHD's data is a raw disk,
            // which may carry a partition table. Anything else + a partition table is a polyglot.
            let ok_with_part = matches!(f, Format::Iso | Format::Vhd);
            if det.part.is_some() && !ok_with_part {
                cx.error(
                    codes::MULTIPLE_FORMATS,
                    format!(
                        "The file matches several formats at once ({}); such polyglot files are refused because different tools would read them differently.",
                        names(det)
                    ),
                );
                (*f, true)
            } else {
                (*f, false)
            }
        }
        [(first, _), ..] => {
            let code = if det.has(Format::Iso) { codes::ISO_POLYGLOT } else { codes::MULTIPLE_FORMATS };
            cx.error(
                code,
                format!(
                    "The file matches several formats at once ({}); such polyglot files are refused because different tools would read them differently.",
                    names(det)
                ),
            );
            (*first, true)
        }
    }
}

/// The whole pipeline; `cx.deep` selects sniff or inspect.
fn analyse(cx: &mut Ctx, opts: &InspectOptions) -> PResult<Report> {
    if cx.size == 0 {
        cx.error(codes::EMPTY_FILE, "The file is empty.");
        return Ok(finish(cx, Format::Raw, Parsed::new("none", Some(0)), opts));
    }
    let det = detect(cx, opts.declared)?;
    let (format, _polyglot) = resolve(cx, &det);
    let parsed = parse(cx, format, &det)?;
    Ok(finish(cx, format, parsed, opts))
}

/// Runs the parser of `format` (its structural checks).
fn parse(cx: &mut Ctx, format: Format, det: &Detection) -> PResult<Parsed> {
    Ok(match format {
        Format::Raw => formats::raw::inspect(cx, det)?,
        Format::Qcow => formats::qcow2::inspect_v1(cx, det)?,
        Format::Qcow2 => formats::qcow2::inspect(cx, det)?,
        Format::Qed => formats::qed::inspect(cx, det)?,
        Format::Luks => formats::luks::inspect(cx, det)?,
        Format::Vdi => formats::vdi::inspect(cx, det)?,
        Format::Vhd => formats::vhd::inspect(cx, det)?,
        Format::Vhdx => formats::vhdx::inspect(cx, det)?,
        Format::Vmdk => formats::vmdk::inspect(cx, det)?,
        Format::Iso => formats::iso::inspect(cx, det)?,
        Format::Ova => formats::ova::inspect(cx, det)?,
        Format::Uec => formats::uec::inspect(cx, det)?,
        Format::Aki => formats::kernel::inspect_aki(cx, det)?,
        Format::Ari => formats::kernel::inspect_ari(cx, det)?,
        Format::Unknown => {
            let what = det.rich.first().map(|(_, why)| *why).unwrap_or("archive");
            cx.error(
                codes::UNSUPPORTED_CONTAINER,
                format!("The file is a {what} that is neither an OVA nor a UEC tarball; upload the disk image itself."),
            );
            Parsed::default()
        }
    })
}

/// What the head of a stream alone settles; see [`sniff_head`].
#[cfg(feature = "convert")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadVerdict {
    /// Nothing yet: the sniff over head and tail at the end of the stream decides.
    Open,
    /// The sniff at the end will refuse the stream; this report says why.
    Refused(Report),
    /// The sniff at the end will not be able to decide from head and tail (the format's checks
    /// need bytes between them, e.g. a VHDX's headers), so the stream will be refused as
    /// unverifiable.
    Unverifiable,
}

/// Judges a stream of `size` bytes from its complete head (its first `min(size, 64 KiB)`
/// bytes) before the rest has arrived, so a stream converter can refuse it before converting
/// anything. It answers only what the sniff over head + tail at the end of the stream would
/// answer too: when the head alone matches a format (a qcow2, VMDK, VDI, LUKS, QED … header)
/// other than the declared one, or several formats, that sniff refuses it whatever the tail
/// holds (the tail can only add a match, never remove one). A head without any such match is
/// left [`HeadVerdict::Open`]: formats found only in the tail (a fixed VHD's footer) are decided
/// at the end.
///
/// The message is the end-of-stream sniff's: the format mismatch (and polyglot) findings, or
/// [`HeadVerdict::Unverifiable`] when that sniff would stop for bytes neither the head nor the
/// tail holds. The format's parser runs here only to learn that; its findings are not kept,
/// because without the tail they could differ from the end's.
#[cfg(feature = "convert")]
pub(crate) fn sniff_head(head: &[u8], size: u64, opts: &InspectOptions) -> HeadVerdict {
    use crate::limits::{SNIFF_HEAD, SNIFF_TAIL};
    if head.is_empty() || head.len() as u64 != size.min(SNIFF_HEAD) {
        return HeadVerdict::Open;
    }
    let det = crate::detect::classify(head.to_vec(), Vec::new(), opts.declared);
    if det.rich.is_empty() {
        return HeadVerdict::Open;
    }
    let mut bytes = SparseBytes::new(size);
    bytes.insert(0, head.to_vec());
    let mut cx = Ctx::new(&bytes, false);
    cx.file_name = opts.file_name.clone();
    let (format, _polyglot) = resolve(&mut cx, &det);
    let mut probe = Ctx::new(&bytes, false);
    probe.file_name = opts.file_name.clone();
    let tail_start = size - size.min(SNIFF_TAIL);
    if let Err(Stop::Need(r)) = parse(&mut probe, format, &det) {
        if r.offset < tail_start {
            return HeadVerdict::Unverifiable;
        }
    }
    let report = finish(&mut cx, format, Parsed::default(), opts);
    if report.is_accepted() {
        HeadVerdict::Open
    } else {
        HeadVerdict::Refused(report)
    }
}

/// Applies the generic rules and builds the report.
fn finish(cx: &mut Ctx, format: Format, parsed: Parsed, opts: &InspectOptions) -> Report {
    if let Some(declared) = opts.declared {
        if declared != format {
            let hint = if format == Format::Raw {
                format!(
                    "no {} structure was found and the file looks like a raw disk; choose raw or upload the right file",
                    declared.as_str()
                )
            } else if format == Format::Ova {
                "an OVA is a package: declare container_format ova, with disk_format naming the disk inside (usually vmdk), \
                 or upload the right file"
                    .to_owned()
            } else if format == Format::Uec {
                "a UEC tarball is a package: declare container_format uec with disk_format ami, or upload the right file".to_owned()
            } else {
                format!("choose {} or upload the right file", format.as_str())
            };
            cx.error(
                codes::FORMAT_MISMATCH,
                format!("The file was declared as {} but it is a {} ({}); {}.", declared.as_str(), format.as_str(), format.label(), hint),
            );
        }
    }
    if let Some(vs) = parsed.virtual_size {
        if vs > opts.max_virtual_size {
            cx.error(
                codes::VIRTUAL_SIZE_TOO_LARGE,
                format!(
                    "The disk claims a virtual size of {} bytes ({}), more than the {} allowed here.",
                    vs,
                    human(vs),
                    human(opts.max_virtual_size)
                ),
            );
        }
        let aligned_formats = matches!(format, Format::Qcow2 | Format::Vdi | Format::Vhdx | Format::Vhd | Format::Vmdk | Format::Qed);
        if aligned_formats && vs % 512 != 0 {
            cx.error(codes::VIRTUAL_SIZE_UNALIGNED, format!("The virtual size {vs} is not a multiple of 512 bytes, which no disk has."));
        }
    }
    let mut findings = core::mem::take(&mut cx.findings);
    findings.sort_by_key(|f| core::cmp::Reverse(f.severity));
    let verdict = if findings.iter().any(|f| f.severity == Severity::Error) { Verdict::Rejected } else { Verdict::Accepted };
    Report {
        format,
        subformat: parsed.subformat,
        virtual_size: parsed.virtual_size,
        verdict,
        findings,
        package: parsed.package.map(Box::new),
    }
}

/// "16 GiB" style rendering for messages.
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(all(test, feature = "convert"))]
mod tests {
    use super::*;

    const SIZE: u64 = 8 << 20;

    fn raw_opts() -> InspectOptions {
        InspectOptions { declared: Some(Format::Raw), ..Default::default() }
    }

    /// A head of 64 KiB: an MBR with one partition, then `magic` written at `at`.
    fn head(magic: &[u8], at: usize) -> Vec<u8> {
        let mut h = bare_head(magic, at);
        h[446 + 4] = 0x83;
        h[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        h[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
        h[510] = 0x55;
        h[511] = 0xAA;
        h
    }

    /// A head of 64 KiB of zeros with `magic` written at `at`.
    fn bare_head(magic: &[u8], at: usize) -> Vec<u8> {
        let mut h = vec![0u8; SNIFF_HEAD_LEN];
        h[at..at + magic.len()].copy_from_slice(magic);
        h
    }
    const SNIFF_HEAD_LEN: usize = crate::limits::SNIFF_HEAD as usize;

    /// The end-of-stream sniff over `head` and `tail` (what the stream gate runs last).
    fn sniff_end(head: &[u8], tail: &[u8]) -> SniffOutcome {
        let mut b = SparseBytes::new(SIZE);
        b.insert(0, head.to_vec());
        b.insert(SIZE - tail.len() as u64, tail.to_vec());
        sniff_with(&b, &raw_opts())
    }

    #[test]
    fn head_verdicts() {
        // A raw disk's head settles nothing: a fixed VHD footer may still come in the tail.
        let raw = head(b"", 0);
        assert_eq!(sniff_head(&raw, SIZE, &raw_opts()), HeadVerdict::Open);
        // Not yet complete: nothing is judged.
        let q = head(b"QFI\xfb\0\0\0\x03", 0);
        assert_eq!(sniff_head(&q[..4096], SIZE, &raw_opts()), HeadVerdict::Open);
        match sniff_head(&q, SIZE, &raw_opts()) {
            HeadVerdict::Refused(r) => assert!(r.has(codes::FORMAT_MISMATCH), "{r:?}"),
            v => panic!("a qcow2 head declared raw: {v:?}"),
        }
        // Declared as what it is: left to the end (unless the head is a polyglot, such as this
        // qcow2 header on an MBR).
        let as_qcow2 = InspectOptions { declared: Some(Format::Qcow2), ..Default::default() };
        let bare = bare_head(b"QFI\xfb\0\0\0\x03", 0);
        assert!(!matches!(sniff_head(&bare, SIZE, &as_qcow2), HeadVerdict::Refused(_)));
        match sniff_head(&q, SIZE, &as_qcow2) {
            HeadVerdict::Refused(r) => assert!(r.has(codes::MULTIPLE_FORMATS), "{r:?}"),
            v => panic!("a qcow2 + MBR polyglot head: {v:?}"),
        }
        // VHDX headers lie beyond the head: the end could not decide either.
        let x = head(b"vhdxfile", 0);
        assert_eq!(sniff_head(&x, SIZE, &raw_opts()), HeadVerdict::Unverifiable);
        assert!(matches!(sniff_end(&x, &[0u8; 1536]), SniffOutcome::NeedMore(_)));
    }

    /// Whatever the tail holds, a head refused early is refused at the end too (the early
    /// check never refuses what the end-of-stream sniff would accept).
    #[test]
    fn early_refusal_implies_refusal_at_the_end() {
        let mut footer = [0u8; 1536];
        footer[1024..1032].copy_from_slice(b"conectix");
        let tails: [(&[u8], bool); 3] = [(&[0u8; 1536], false), (&[0xA5u8; 1536], false), (&footer, true)];
        let heads = [
            head(b"", 0),
            bare_head(b"", 0),
            bare_head(b"QFI\xfb\0\0\0\x03", 0),
            head(b"QFI\xfb\0\0\0\x03", 0),
            head(b"QED\0", 0),
            head(b"LUKS\xba\xbe\0\x01", 0),
            head(&0xBEDA_107Fu32.to_le_bytes(), 0x40),
            head(b"conectix", 0),
            head(b"vhdxfile", 0),
            head(b"KDMV\x01\0\0\0", 0),
            head(b"CD001", 0x8001),
            head(b"ustar\x0000", 257),
        ];
        for h in &heads {
            let early = sniff_head(h, SIZE, &raw_opts());
            for (t, adds_a_match) in tails {
                let end = sniff_end(h, t);
                let refused_at_end = match &end {
                    SniffOutcome::Done(r) => !r.is_accepted(),
                    SniffOutcome::NeedMore(_) => true,
                };
                if early != HeadVerdict::Open {
                    assert!(refused_at_end, "{early:?} but the end says {end:?}");
                }
                // (A tail that adds a match makes a polyglot, refused with that reason instead.)
                if early == HeadVerdict::Unverifiable && !adds_a_match {
                    assert!(matches!(end, SniffOutcome::NeedMore(_)), "{end:?}");
                }
            }
        }
    }
}
