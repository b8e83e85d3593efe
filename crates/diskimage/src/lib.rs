//! diskimage: sniff, inspect and (feature `convert`) convert virtual machine disk images.
//!
//! The sniff/inspect half has no I/O, no async, no unsafe code and no panics on any input; it
//! builds for `wasm32-unknown-unknown`. It reads through [`ReadAt`], implemented for byte slices,
//! for [`SparseBytes`] (the pieces a browser read with `Blob.slice`) and, natively, for
//! `std::fs::File`.
//!
//! - Browser: [`sniff`] the head and tail; when it answers [`SniffOutcome::NeedMore`], read those
//!   ranges and sniff again. The verdict is advice.
//! - Server: [`inspect`] the complete upload before anything else touches it; its [`Report`] is
//!   the verdict (docs/formats.md §2.5). Every rejection has a stable code from [`codes`].
//!
//! Architecture invariants: detection uses only the head (64 KiB) and tail (1.5 KiB), so sniff
//! and inspect agree on the format; no parser allocates from an unchecked length (see
//! [`limits`]); no code path opens a file named inside an image.
#![forbid(unsafe_code)]

pub mod codes;
#[cfg(feature = "convert")]
pub mod convert;
mod ctx;
mod detect;
mod engine;
pub mod formats;
pub mod limits;
pub mod read;
pub mod report;
mod util;

pub use engine::{inspect, sniff, sniff_reader, sniff_with, InspectOptions, SniffOutcome};
#[cfg(not(target_arch = "wasm32"))]
pub use read::SizedFile;
pub use read::{ByteRange, ReadAt, ReadError, SparseBytes, SubRange};
pub use report::{Finding, Format, ManifestFacts, PackageDisk, PackageFacts, PackageMember, Report, Severity, Verdict, ALL_FORMATS};
