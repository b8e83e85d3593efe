//! UEC tarball extraction (docs/formats.md §2.5 #21): bounded gunzip, then the tar walk of
//! [`super::pkg`]; the AMI (raw file-system image), AKI (kernel) and ARI (initrd) members are
//! validated and written under names we choose.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::error::{limit, package, Error, Result};
use super::io::{Meter, Progress};
use super::out::OutFile;
use super::pkg::{prepare_outdir, walk_source, Walk};
use super::{convert_stream_into, Compression, ConvertOptions, SourceFormat, TargetFormat};
use crate::ctx::Stop;
use crate::formats::gzip::{GzError, GzStream};
use crate::formats::tar::GzSource;
use crate::read::ReadAt;

/// Bounds on inflating a UEC tarball.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UecLimits {
    /// Most bytes the gzip stream may inflate to (the tar including every member).
    pub max_output: u64,
    /// Most output bytes per compressed input byte, checked once past `ratio_grace` bytes.
    /// A mostly-empty file system compresses ~100:1; deflate's own ceiling is ~1032:1.
    pub max_ratio: u64,
    /// Output allowed before the ratio is enforced (small, highly compressible headers).
    pub ratio_grace: u64,
}

impl Default for UecLimits {
    /// The inspector's limits (`crate::limits::GZIP_*`): what passes inspection unpacks.
    fn default() -> Self {
        UecLimits {
            max_output: crate::limits::GZIP_MAX_OUTPUT,
            max_ratio: crate::limits::GZIP_MAX_RATIO,
            ratio_grace: crate::limits::GZIP_RATIO_GRACE,
        }
    }
}

/// What a UEC member turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UecRole {
    /// Machine image: a raw file-system image.
    Ami,
    /// Kernel.
    Aki,
    /// Initial ramdisk.
    Ari,
}

/// One extracted member.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UecPart {
    /// Role.
    pub role: UecRole,
    /// Member name in the tarball.
    pub member: String,
    /// Output file (name chosen by us: `ami.raw`, `aki.bin`, `ari.bin`).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// The result of a UEC extraction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UecReport {
    /// Extracted parts (the AMI always; AKI and ARI when present).
    pub parts: Vec<UecPart>,
    /// Members that are none of the three (README files, loaders): read, not extracted.
    pub skipped_members: Vec<String>,
    /// Compressed bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Extracts a gzip'd UEC tarball from `input` into `outdir`. On any error nothing is left.
///
/// The gzip stream is read by the inspector's gzip reader (`formats::gzip::GzStream`, bounded
/// by `limits`) and the tar inside by its tar reader: a hostile tarball meets one parser.
pub fn extract_uec(input: &dyn ReadAt, outdir: &Path, limits: UecLimits, progress: &mut dyn Progress) -> Result<UecReport> {
    let start = Instant::now();
    let outdir = prepare_outdir(outdir)?;
    let mut m = Meter::new(progress);
    let mut head = vec![0u8; (64u64 << 10).min(input.size()) as usize];
    input.read_exact_at(0, &mut head).map_err(|e| gz_error(GzError::Stop(e.into())))?;
    let gz = GzStream::bounded(input, &head, limits.max_output, false, limits.max_ratio, limits.ratio_grace).map_err(gz_error)?.whole();
    let mut src = GzSource { gz, pos: 0, buf: Vec::new() };
    let mut pending: Vec<(OutFile, UecPart)> = Vec::new();
    let mut skipped = Vec::new();
    let res = walk_source(&mut src, |mem| {
        let role = classify(&mem.name);
        let Some(role) = role else {
            skipped.push(mem.name);
            return Ok(());
        };
        if pending.iter().any(|(_, p)| p.role == role) {
            return Err(package(format!("the tarball holds two {role:?} members")));
        }
        let (fname, what) = match role {
            UecRole::Ami => ("ami.raw", "machine image"),
            UecRole::Aki => ("aki.bin", "kernel"),
            UecRole::Ari => ("ari.bin", "ramdisk"),
        };
        let path = outdir.join(fname);
        let out = OutFile::create(&path)?;
        // Look at the head first: the members are validated before their bulk is written.
        let mut head = vec![0u8; 64 << 10];
        let n = read_up_to(mem.reader, &mut head).map_err(|e| Error::io("reading a member", e))?;
        head.truncate(n);
        validate(role, &head, &mem.name)?;
        let mut chained = io::Cursor::new(head).chain(mem.reader);
        match role {
            UecRole::Ami => {
                let opts = ConvertOptions { to: TargetFormat::Raw, compression: Compression::None, sync: false };
                convert_stream_into(&mut chained, SourceFormat::Raw, Some(mem.size), None, out.file(), &opts, &mut m)?;
            }
            UecRole::Aki | UecRole::Ari => {
                let mut w = out.file();
                let k = io::copy(&mut chained, &mut w).map_err(|e| Error::io(format!("writing the {what}"), e))?;
                m.wrote(k)?;
            }
        }
        pending.push((out, UecPart { role, member: mem.name, path, size: mem.size }));
        Ok(())
    });
    res.map_err(|w| match w {
        Walk::Gz(e) => gz_error(e),
        Walk::Refused(e) => e,
    })?;
    if !pending.iter().any(|(_, p)| p.role == UecRole::Ami) {
        return Err(package("the tarball has no machine image (*.img)"));
    }
    // The walk read the stream to its end and its trailer ends the input (`whole`).
    let bytes_in = input.size();
    m.read(bytes_in)?;
    m.finish();
    let mut parts = Vec::new();
    for (out, p) in pending {
        out.publish(true)?;
        parts.push(p);
    }
    Ok(UecReport { parts, skipped_members: skipped, bytes_in, bytes_out: m.bytes_out, seconds: start.elapsed().as_secs_f64() })
}

/// A gzip failure in the extractor's words: a bound is a limit, the rest a damaged package, and
/// a failing read an I/O error (with its OS error code when the message carries one, so the
/// server tells its own failure from a bad package).
fn gz_error(e: GzError) -> Error {
    match e {
        GzError::Bomb(m) => limit(format!("the tarball is refused: {m}")),
        GzError::Corrupt(m) => package(format!("the gzip stream is invalid: {m}")),
        GzError::Stop(Stop::Io(m)) => Error::io("reading the tarball", os_error(&m)),
        GzError::Stop(Stop::Need(r)) => Error::io("reading the tarball", io::Error::other(format!("bytes {r:?} are missing"))),
    }
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `*.img` is the AMI, `*vmlinuz*`/`*kernel*` the AKI, `*initrd*`/`*initramfs*` the ARI.
/// A member's role by its name: the inspector's rule (`formats::uec::role`), so both sides
/// give a member the same one (a kernel or ramdisk name wins over an `.img` ending).
fn classify(name: &str) -> Option<UecRole> {
    use crate::formats::uec::{role, Role};
    match role(name) {
        Role::Image => Some(UecRole::Ami),
        Role::Kernel => Some(UecRole::Aki),
        Role::Ramdisk => Some(UecRole::Ari),
        Role::Other => None,
    }
}

fn validate(role: UecRole, head: &[u8], name: &str) -> Result<()> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let ok = match role {
        // x86 bzImage (HdrS), EFI stub (MZ), arm64 Image (ARM\x64), vmlinux (ELF).
        UecRole::Aki => at(0x202, b"HdrS") || at(0, b"MZ") || at(0x38, b"ARM\x64") || at(0, b"\x7fELF"),
        UecRole::Ari => [
            &b"070701"[..],
            b"070702",
            b"070707",
            b"\x1f\x8b",
            b"\x28\xb5\x2f\xfd",
            b"\xfd7zXZ\x00",
            b"\x02\x21\x4c\x18",
            b"\x04\x22\x4d\x18",
            b"BZh",
            b"\x89LZO\x00",
            b"\x5d\x00\x00",
        ]
        .iter()
        .any(|m| at(0, m)),
        // The AMI must be raw: no other image format's header hidden in it.
        UecRole::Ami => {
            let foreign: [(usize, &[u8]); 8] = [
                (0, b"QFI\xfb"),
                (0, b"KDMV"),
                (0, b"vhdxfile"),
                (0, b"conectix"),
                (0, b"QED\0"),
                (0, b"LUKS\xba\xbe"),
                (0, b"COWD"),
                (0x40, &[0x7F, 0x10, 0xDA, 0xBE]),
            ];
            !foreign.iter().any(|(o, m)| at(*o, m))
        }
    };
    if !ok {
        let what = match role {
            UecRole::Ami => "is not a raw image (it carries another disk format's header)",
            UecRole::Aki => "is not a kernel (no bzImage, EFI, arm64 or ELF header)",
            UecRole::Ari => "is not an initrd (not cpio or a known compressed stream)",
        };
        return Err(package(format!("member {name:?} {what}")));
    }
    Ok(())
}

/// An I/O error from a read's message: `std::io::Error` prints an OS error as "… (os error N)"
/// and `ReadAt` passes only the message on; the code is what makes it the server's failure.
fn os_error(message: &str) -> io::Error {
    let code = message.rsplit_once("(os error ").and_then(|(_, rest)| rest.strip_suffix(')')).and_then(|n| n.parse::<i32>().ok());
    match code {
        Some(c) => io::Error::from_raw_os_error(c),
        None => io::Error::other(message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_keeps_its_code_through_the_reader() {
        let eio = io::Error::from_raw_os_error(5);
        assert_eq!(os_error(&eio.to_string()).raw_os_error(), Some(5));
        assert_eq!(os_error("read of 10 bytes at 0 is past the end of the data").raw_os_error(), None);
        let e = gz_error(GzError::Stop(Stop::Io(eio.to_string())));
        assert_eq!(e.kind(), super::super::error::ErrorKind::Io);
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()).map(io::Error::raw_os_error);
        assert_eq!(source, Some(Some(5)));
    }
}
