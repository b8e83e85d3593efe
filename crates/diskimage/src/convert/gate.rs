//! The inspection gate: nothing is converted unless it was inspected and accepted.
//!
//! FIXME(coordination): the crate's `inspect()` is landing in parallel; until it is wired in,
//! the gate detects the format from its magic bytes and relies on each reader's structural
//! checks (which refuse backing/data files, parents, encryption and foreign extents).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::error::{rejected, Error, Result};
use super::SourceFormat;

/// Proof that an input was inspected and accepted for conversion. Only the gate makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    format: SourceFormat,
}

impl Accepted {
    /// The detected (and, if declared, matching) format.
    pub fn format(&self) -> SourceFormat {
        self.format
    }
}

/// Inspects `file`; refuses it when rejected or when it is not `declared`.
pub(crate) fn inspect_file(file: &File, declared: Option<SourceFormat>) -> Result<Accepted> {
    let detected = detect(file)?;
    if let Some(d) = declared {
        if d != detected {
            return Err(rejected(format!(
                "declared {} but the file is {}; refusing to convert",
                d.as_str(),
                detected.as_str()
            )));
        }
    }
    Ok(Accepted { format: detected })
}

fn detect(file: &File) -> Result<SourceFormat> {
    let size = file.metadata().map_err(|e| Error::io("cannot stat the input", e))?.len();
    let mut head = [0u8; 512];
    let n = read_some(file, 0, &mut head)?;
    let head = &head[..n];
    let mut tail = [0u8; 512];
    let tail_n = if size >= 512 { read_some(file, size - 512, &mut tail)? } else { 0 };
    let found = if head.starts_with(b"QFI\xfb") {
        SourceFormat::Qcow2
    } else if head.starts_with(b"KDMV") {
        SourceFormat::Vmdk
    } else if head.starts_with(b"vhdxfile") {
        SourceFormat::Vhdx
    } else if head.len() >= 0x44 && head[0x40..0x44] == 0xBEDA_107Fu32.to_le_bytes() {
        SourceFormat::Vdi
    } else if head.starts_with(b"conectix") || (tail_n == 512 && tail.starts_with(b"conectix")) {
        SourceFormat::Vhd
    } else if head.starts_with(b"QFI") || head.starts_with(b"QED\0") || head.starts_with(b"LUKS\xba\xbe")
        || head.starts_with(b"COWD")
    {
        return Err(rejected("this image format is refused (qcow v1, QED, LUKS or COWD)"));
    } else if head.starts_with(b"# Disk DescriptorFile") {
        return Err(rejected("VMDK descriptor files name other files and are refused"));
    } else {
        SourceFormat::Raw
    };
    Ok(found)
}

fn read_some(file: &File, off: u64, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the input header", e)),
        }
    }
    Ok(n)
}
