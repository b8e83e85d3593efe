//! The inspection gate: nothing is converted unless the crate's inspector accepted it.
//!
//! Files go through [`crate::inspect`] (every check of docs/formats.md §2.5) before a reader opens
//! them. Streams cannot be inspected before they have arrived, so a stream conversion keeps
//! the head (64 KiB) and tail (1.5 KiB) it saw and runs [`crate::sniff_with`] on them at the
//! end — the same checks the browser runs, which decide every streamable format — and the
//! output is published only if that verdict is "accepted". A stream of known length (raw) is
//! also judged as soon as its head is in: when the head alone already makes that final verdict
//! a refusal (a qcow2, VMDK, VDI, LUKS, QED … header in a "raw" disk), the stream fails there,
//! with the same message, before anything is converted; what only the tail shows (a fixed
//! VHD's footer) is still caught at the end. The readers' own structural checks (no
//! backing/data files, no parents, no foreign extents) apply in both cases.

use std::fs::File;
use std::io::{self, Read};

use super::error::{rejected, unsupported, Error, Result};
use super::SourceFormat;
use crate::engine::{sniff_head, HeadVerdict};
use crate::limits::{SNIFF_HEAD, SNIFF_TAIL};
use crate::{Format, InspectOptions, Report, SniffOutcome, SparseBytes};

/// Why a stream is refused when its head and tail cannot settle the sniff checks.
const UNVERIFIABLE: &str = "this stream cannot be verified from its head and tail; store it and convert the file";

/// Proof that an input was inspected and accepted for conversion. Only the gate makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    format: SourceFormat,
    report: Report,
    /// (device, inode, size) of the inspected file: the proof is valid for that file only.
    identity: Option<(u64, u64, u64)>,
}

impl Accepted {
    /// The detected (and, if declared, matching) format.
    pub fn format(&self) -> SourceFormat {
        self.format
    }
    /// The inspector's report.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Refuses to use this proof for a file other than (or changed since) the inspected one.
    pub(crate) fn check_file(&self, file: &File) -> Result<()> {
        if self.identity.is_some() && self.identity != identity(file) {
            return Err(rejected("this file is not the one that was inspected (or it changed since); inspect it again"));
        }
        Ok(())
    }
}

fn identity(file: &File) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino(), m.len()))
}

fn to_format(f: SourceFormat) -> Format {
    match f {
        SourceFormat::Raw => Format::Raw,
        SourceFormat::Qcow2 => Format::Qcow2,
        SourceFormat::Vdi => Format::Vdi,
        SourceFormat::Vmdk => Format::Vmdk,
        SourceFormat::Vhd => Format::Vhd,
        SourceFormat::Vhdx => Format::Vhdx,
    }
}

fn from_report(r: &Report, declared: Option<SourceFormat>) -> Result<Accepted> {
    if !r.is_accepted() {
        let reasons: Vec<String> = r.errors().map(|f| format!("{} ({})", f.message, f.code)).collect();
        return Err(rejected(format!("the inspector rejected this {} file: {}", r.format.as_str(), reasons.join("; "))));
    }
    let format = match r.format {
        Format::Raw => SourceFormat::Raw,
        // An ISO's bytes are the disk: convert it as raw (never through another parser).
        Format::Iso if declared.is_none_or(|d| d == SourceFormat::Raw) => SourceFormat::Raw,
        Format::Qcow2 => SourceFormat::Qcow2,
        Format::Vdi => SourceFormat::Vdi,
        Format::Vmdk => SourceFormat::Vmdk,
        Format::Vhd => SourceFormat::Vhd,
        Format::Vhdx => SourceFormat::Vhdx,
        Format::Ova | Format::Uec => {
            return Err(unsupported(format!("this is a {} package; use `extract`, not `convert`", r.format.as_str())))
        }
        f => return Err(unsupported(format!("{} files are not converted", f.as_str()))),
    };
    if let Some(d) = declared {
        if d != format {
            return Err(rejected(format!("declared {} but the file is {}; refusing to convert", d.as_str(), format.as_str())));
        }
    }
    Ok(Accepted { format, report: r.clone(), identity: None })
}

/// Inspects a whole file; refuses it when rejected or when it is not `declared`.
pub(crate) fn inspect_file(file: &File, declared: Option<SourceFormat>, file_name: Option<String>) -> Result<Accepted> {
    let opts = InspectOptions { declared: declared.map(to_format), file_name, ..Default::default() };
    let report = crate::inspect(file, &opts);
    let mut a = from_report(&report, declared)?;
    a.identity = identity(file);
    Ok(a)
}

/// Records the head and the tail of a stream as it passes through (and, when asked, judges
/// the head as soon as it is complete).
pub(crate) struct HeadTail<'a> {
    inner: &'a mut dyn Read,
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
    /// The head check still to run, once the head is complete.
    early: Option<EarlyCheck>,
    /// Set when the head check refused the stream: every read fails from then on.
    refused: bool,
    /// Why, until [`HeadTail::take_refusal`] hands it over.
    refusal: Option<Error>,
}

/// What the head check needs to know about the stream.
struct EarlyCheck {
    declared: SourceFormat,
    file_name: Option<String>,
    /// The stream's whole length (the sniff's view of the file).
    size: u64,
}

impl<'a> HeadTail<'a> {
    pub(crate) fn new(inner: &'a mut dyn Read) -> Self {
        HeadTail { inner, head: Vec::new(), tail: Vec::new(), total: 0, early: None, refused: false, refusal: None }
    }

    /// Judges the stream, declared `declared` and `size` bytes long, as soon as its head is
    /// complete (see [`sniff_head`]): if the head alone makes the final verdict a refusal, the
    /// read that completes the head fails, before its bytes reach a reader, and
    /// [`HeadTail::take_refusal`] gives the reason.
    pub(crate) fn check_head_early(&mut self, declared: SourceFormat, file_name: Option<String>, size: u64) {
        self.early = Some(EarlyCheck { declared, file_name, size });
    }

    /// The head check's refusal, if it refused the stream.
    pub(crate) fn take_refusal(&mut self) -> Option<Error> {
        self.refusal.take()
    }

    /// Runs the head check if it is due (the head is complete); false if it refused.
    fn judge_head(&mut self) -> bool {
        let due = self.early.as_ref().is_some_and(|c| self.head.len() as u64 == c.size.min(SNIFF_HEAD));
        if !due {
            return true;
        }
        let Some(c) = self.early.take() else {
            return true;
        };
        let opts = InspectOptions { declared: Some(to_format(c.declared)), file_name: c.file_name, ..Default::default() };
        let refusal = match sniff_head(&self.head, c.size, &opts) {
            HeadVerdict::Open => None,
            HeadVerdict::Refused(r) => from_report(&r, Some(c.declared)).err(),
            HeadVerdict::Unverifiable => Some(rejected(UNVERIFIABLE)),
        };
        self.refused = refusal.is_some();
        self.refusal = refusal;
        !self.refused
    }

    /// The first (up to 64 KiB) and the last (up to 1.5 KiB) bytes that passed through.
    pub(crate) fn head_and_tail(&self) -> (&[u8], &[u8]) {
        (&self.head, &self.tail)
    }

    /// Runs the sniff checks on what passed through (after the stream was read to its end).
    pub(crate) fn verdict(&self, declared: SourceFormat, file_name: Option<String>) -> Result<Accepted> {
        let mut bytes = SparseBytes::new(self.total);
        bytes.insert(0, self.head.clone());
        let tail_len = self.tail.len() as u64;
        bytes.insert(self.total - tail_len, self.tail.clone());
        let opts = InspectOptions { declared: Some(to_format(declared)), file_name, ..Default::default() };
        match crate::engine::sniff_held(&bytes, &opts) {
            SniffOutcome::Done(r) => from_report(&r, Some(declared)),
            SniffOutcome::NeedMore(_) => Err(rejected(UNVERIFIABLE)),
        }
    }
}

impl Read for HeadTail<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.refused {
            return Err(io::Error::other("refused by the sniff checks"));
        }
        let k = self.inner.read(buf)?;
        let data = &buf[..k];
        if (self.head.len() as u64) < SNIFF_HEAD {
            let room = SNIFF_HEAD as usize - self.head.len();
            self.head.extend_from_slice(&data[..room.min(k)]);
        }
        let keep = SNIFF_TAIL as usize;
        if k >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[k - keep..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > keep {
                let cut = self.tail.len() - keep;
                self.tail.drain(..cut);
            }
        }
        self.total += k as u64;
        if !self.judge_head() {
            return Err(io::Error::other("refused by the sniff checks"));
        }
        Ok(k)
    }
}
