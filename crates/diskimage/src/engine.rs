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
        InspectOptions {
            declared: None,
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
            file_name: None,
        }
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
    let mut cx = Ctx::new(bytes, false);
    cx.file_name = opts.file_name.clone();
    match analyse(&mut cx, opts) {
        Ok(r) => SniffOutcome::Done(r),
        Err(Stop::Need(r)) => {
            if bytes.piece_count() < 2 + SNIFF_MAX_FOLLOWUPS {
                let len = r
                    .len
                    .clamp(SNIFF_FETCH_GRANULE, crate::limits::SNIFF_MAX_PIECE);
                let len = len.min(bytes.size().saturating_sub(r.offset));
                SniffOutcome::NeedMore(vec![ByteRange {
                    offset: r.offset,
                    len,
                }])
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
                    message: "The browser could not read enough of the file to check everything; the server will check it after the upload.".into(),
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

/// Inspects a complete file: every structural check of formats.md §2.5.
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
        Err(Stop::Need(r)) => io_report(&format!(
            "bytes {}..{} are not available to the inspector",
            r.offset,
            r.end()
        )),
        Err(Stop::Io(e)) => io_report(&e),
    }
}

fn bare_report(format: Format, virtual_size: Option<u64>) -> Report {
    Report {
        format,
        subformat: None,
        virtual_size,
        verdict: Verdict::Accepted,
        findings: Vec::new(),
    }
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
    }
}

/// Picks the format from the matches; records a polyglot as an error.
fn resolve(cx: &mut Ctx, det: &Detection) -> (Format, bool) {
    let names = |d: &Detection| {
        let mut v: Vec<&str> = d.rich.iter().map(|(f, _)| f.as_str()).collect();
        if let Some(p) = d.part {
            v.push(if matches!(p, PartTable::Mbr) {
                "mbr"
            } else {
                "gpt"
            });
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
            let code = if det.has(Format::Iso) {
                codes::ISO_POLYGLOT
            } else {
                codes::MULTIPLE_FORMATS
            };
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
    let parsed = match format {
        Format::Raw => formats::raw::inspect(cx, &det)?,
        Format::Qcow => formats::qcow2::inspect_v1(cx, &det)?,
        Format::Qcow2 => formats::qcow2::inspect(cx, &det)?,
        Format::Qed => formats::qed::inspect(cx, &det)?,
        Format::Luks => formats::luks::inspect(cx, &det)?,
        Format::Vdi => formats::vdi::inspect(cx, &det)?,
        Format::Vhd => formats::vhd::inspect(cx, &det)?,
        Format::Vhdx => formats::vhdx::inspect(cx, &det)?,
        Format::Vmdk => formats::vmdk::inspect(cx, &det)?,
        Format::Iso => formats::iso::inspect(cx, &det)?,
        Format::Ova => formats::ova::inspect(cx, &det)?,
        Format::Uec => formats::uec::inspect(cx, &det)?,
        Format::Aki => formats::kernel::inspect_aki(cx, &det)?,
        Format::Ari => formats::kernel::inspect_ari(cx, &det)?,
        Format::Unknown => {
            let what = det.rich.first().map(|(_, why)| *why).unwrap_or("archive");
            cx.error(
                codes::UNSUPPORTED_CONTAINER,
                format!("The file is a {what} that is neither an OVA nor a UEC tarball; upload the disk image itself."),
            );
            Parsed::default()
        }
    };
    Ok(finish(cx, format, parsed, opts))
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
            } else {
                format!("choose {} or upload the right file", format.as_str())
            };
            cx.error(
                codes::FORMAT_MISMATCH,
                format!(
                    "The file was declared as {} but it is a {} ({}); {}.",
                    declared.as_str(),
                    format.as_str(),
                    format.label(),
                    hint
                ),
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
        let aligned_formats = matches!(
            format,
            Format::Qcow2 | Format::Vdi | Format::Vhdx | Format::Vhd | Format::Vmdk | Format::Qed
        );
        if aligned_formats && vs % 512 != 0 {
            cx.error(
                codes::VIRTUAL_SIZE_UNALIGNED,
                format!("The virtual size {vs} is not a multiple of 512 bytes, which no disk has."),
            );
        }
    }
    let mut findings = core::mem::take(&mut cx.findings);
    findings.sort_by_key(|f| core::cmp::Reverse(f.severity));
    let verdict = if findings.iter().any(|f| f.severity == Severity::Error) {
        Verdict::Rejected
    } else {
        Verdict::Accepted
    };
    Report {
        format,
        subformat: parsed.subformat,
        virtual_size: parsed.virtual_size,
        verdict,
        findings,
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
