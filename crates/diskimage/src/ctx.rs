//! The parsing context shared by all format parsers: bounded reads and collected findings.

use crate::limits::MAX_READ_CHUNK;
use crate::read::{ByteRange, ReadAt, ReadError};
use crate::report::{Finding, Severity};

/// Why a parser stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Sniffing: these bytes are needed and the view does not hold them.
    Need(ByteRange),
    /// The storage failed.
    Io(String),
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Missing(r) => Stop::Need(r),
            ReadError::Io(s) => Stop::Io(s),
        }
    }
}

pub(crate) type PResult<T> = Result<T, Stop>;

/// At most this many findings are kept per report (a hostile file must not grow the report).
pub(crate) const MAX_FINDINGS: usize = 64;

/// Parsing context.
pub(crate) struct Ctx<'a> {
    pub src: &'a dyn ReadAt,
    /// File size in bytes.
    pub size: u64,
    /// Inspect (true) runs every check; sniff (false) only those the head/tail can answer.
    pub deep: bool,
    pub findings: Vec<Finding>,
    /// Nesting depth (an OVA member is inspected at depth 1; deeper nesting is refused).
    pub depth: u8,
    /// Name of the file, when known (VMDK extent names are compared with it).
    pub file_name: Option<String>,
    /// Sniffing: how many more follow-up rounds the browser may be asked for (parsers whose
    /// reads past the head are optional, such as an OVA's member walk, ask only while some are
    /// left). Zero when inspecting.
    pub followups_left: usize,
}

impl<'a> Ctx<'a> {
    pub fn new(src: &'a dyn ReadAt, deep: bool) -> Self {
        Ctx { src, size: src.size(), deep, findings: Vec::new(), depth: 0, file_name: None, followups_left: 0 }
    }

    /// Reads up to `len` bytes at `off`, clamped to the end of the file and to `MAX_READ_CHUNK`.
    /// The result is shorter than `len` only at the end of the file.
    pub fn read(&self, off: u64, len: u64) -> PResult<Vec<u8>> {
        let avail = self.size.saturating_sub(off);
        let n = len.min(avail).min(MAX_READ_CHUNK) as usize;
        let mut buf = vec![0u8; n];
        if n > 0 {
            self.src.read_exact_at(off, &mut buf)?;
        }
        Ok(buf)
    }

    /// Like [`Ctx::read`], but when sniffing a missing range yields `None` instead of asking for
    /// it (for advisory checks that are not worth a round trip).
    pub fn read_opt(&self, off: u64, len: u64) -> PResult<Option<Vec<u8>>> {
        match self.read(off, len) {
            Ok(b) => Ok(Some(b)),
            Err(Stop::Need(_)) if !self.deep => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True if `[off, off+len)` lies inside the file.
    pub fn inside(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.size)
    }

    fn push(&mut self, severity: Severity, code: &str, message: String) {
        if self.findings.iter().any(|f| f.code == code && f.message == message) {
            return;
        }
        if self.findings.len() >= MAX_FINDINGS {
            return;
        }
        self.findings.push(Finding { code: code.to_string(), severity, message });
    }

    pub fn error(&mut self, code: &str, message: impl Into<String>) {
        self.push(Severity::Error, code, message.into());
    }

    pub fn warn(&mut self, code: &str, message: impl Into<String>) {
        self.push(Severity::Warning, code, message.into());
    }

    pub fn info(&mut self, code: &str, message: impl Into<String>) {
        self.push(Severity::Info, code, message.into());
    }

    pub fn has_error(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// What a format parser learned beyond the format itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parsed {
    pub subformat: Option<String>,
    pub virtual_size: Option<u64>,
    /// A package's contents (OVA, UEC).
    pub package: Option<crate::report::PackageFacts>,
}

impl Parsed {
    pub fn new(subformat: impl Into<String>, virtual_size: Option<u64>) -> Self {
        Parsed { subformat: Some(subformat.into()), virtual_size, package: None }
    }
}
