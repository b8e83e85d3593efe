//! The one error type of the conversion layer.

use std::fmt;
use std::io;

/// What went wrong, in categories a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Reading the input or writing the output failed (disk full, permission, …).
    Io,
    /// The inspector (or our own structural checks) refused the input: it must not be converted.
    Rejected,
    /// The input is structurally broken (an offset outside the file, a bad compressed cluster).
    Corrupt,
    /// The input is valid but uses something this converter does not implement.
    Unsupported,
    /// A size limit was hit (virtual size, member count, inflate ratio …).
    Limit,
    /// An OVA or UEC package broke the member policy (docs/formats.md §2.5 #19–21).
    Package,
    /// The caller asked for something impossible (bad option, output already exists).
    Usage,
    /// The caller stopped the conversion (see `Progress::cancelled`); nothing was kept.
    Cancelled,
}

/// A conversion error: a kind, a message for the operator, and the I/O cause if any.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    msg: String,
    source: Option<io::Error>,
}

impl Error {
    /// An error of `kind` with an operator-facing message.
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error { kind, msg: msg.into(), source: None }
    }

    /// An I/O error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error { kind: ErrorKind::Io, msg: context.into(), source: Some(source) }
    }

    /// The category.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the cause.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Result alias for the conversion layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn corrupt(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, msg)
}

pub(crate) fn unsupported(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, msg)
}

pub(crate) fn rejected(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Rejected, msg)
}

pub(crate) fn limit(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Limit, msg)
}

pub(crate) fn package(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Package, msg)
}

pub(crate) fn cancelled() -> Error {
    Error::new(ErrorKind::Cancelled, "the conversion was cancelled")
}
