//! Shared by OVA and UEC: a streaming tar walk with the member policy of docs/formats.md §2.5 #19,
//! hashing readers, and output-directory handling. Member names are only ever compared with
//! other names; nothing is created from them.
//!
//! The member policy is the package inspector's ([`crate::formats::tar`]: [`header_ok`],
//! [`check_name`], [`member_type`], [`pax_path`], [`TAR_MAX_MEMBERS`], nothing but zeros after
//! the end of the archive), applied here to a stream, with the same reasons.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use super::error::{package, Error, Result};
use crate::ctx::Stop;
use crate::formats::gzip::GzError;
use crate::formats::tar::{after_end, Next, Source, TarReader};

/// One member as the walker hands it over.
pub(crate) struct Member<'r> {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) reader: &'r mut dyn Read,
}

/// Walks a tar stream with the inspector's reader ([`TarReader`]: one parser of hostile
/// archives for both) and calls `f` for every regular-file member, in archive order. The first
/// rule the reader raises refuses the package, in the inspector's words: damaged headers,
/// links, devices, FIFOs, sparse files, directories with content, PAX `size` and `linkpath`
/// records and global PAX headers, unsafe or duplicate names, more than [`crate::limits::TAR_MAX_MEMBERS`]
/// members, truncation, and data after the end of the archive.
pub(crate) fn walk_tar<R: Read>(r: R, f: impl FnMut(Member<'_>) -> Result<()>) -> Result<()> {
    let mut src = ReadSource { inner: r, pos: 0, buf: Vec::new(), failed: None };
    let walked = walk_source(&mut src, f);
    walked.map_err(|w| match w {
        // An I/O error of the input is one, not a verdict on the package.
        Walk::Gz(e) => match src.failed.take() {
            Some(io) => Error::io("reading the archive", io),
            None => package(format!("reading the archive: {}", gz_message(&e))),
        },
        Walk::Refused(e) => e,
    })
}

/// [`walk_tar`] on any of the tar reader's sources (the UEC extractor's: the inflated bytes of
/// the inspector's gzip reader). Reaching the end-of-archive block, the rest of the stream is
/// read to its end: only zero padding may follow, anything else would be a payload that a
/// different tar reader might see.
pub(crate) fn walk_source(src: &mut dyn Source, f: impl FnMut(Member<'_>) -> Result<()>) -> std::result::Result<(), Walk> {
    let mut issues = Vec::new();
    if walk_members(src, &mut issues, f)? {
        if let Err(why) = after_end(|b| src.read(b)).map_err(Walk::Gz)? {
            return Err(Walk::Refused(package(why)));
        }
    }
    Ok(())
}

/// Why a walk stopped early.
pub(crate) enum Walk {
    /// The stream failed (I/O, or the caller's inflate bounds).
    Gz(GzError),
    /// The package is refused (by a tar rule or by the member consumer).
    Refused(Error),
}

/// The member loop of [`walk_tar`]: true when it reached the end-of-archive block.
fn walk_members(
    src: &mut dyn Source,
    issues: &mut Vec<crate::formats::tar::Issue>,
    mut f: impl FnMut(Member<'_>) -> Result<()>,
) -> std::result::Result<bool, Walk> {
    let mut reader = TarReader::new(src);
    let mut index = 0usize;
    loop {
        let next = reader.next(issues).map_err(Walk::Gz)?;
        if let Some(why) = reader.refusal.take() {
            return Err(Walk::Refused(package(why)));
        }
        let h = match next {
            Next::Member(h) => h,
            Next::End(_) => return Ok(true),
            Next::Stop => return Ok(false),
        };
        let mut data = MemberData { reader: &mut reader, failed: None };
        let outcome = f(Member { index, name: h.name, size: h.size, reader: &mut data });
        if let Some(e) = data.failed.take() {
            return Err(Walk::Gz(e));
        }
        outcome.map_err(Walk::Refused)?;
        index += 1;
        // Whatever the consumer left is skipped here: a short member is a truncated archive.
        reader.finish_member(issues, &mut |_| {}).map_err(Walk::Gz)?;
        if let Some(why) = reader.refusal.take() {
            return Err(Walk::Refused(package(why)));
        }
    }
}

/// A plain byte stream as the tar reader's source: it cannot seek, so skipping reads through.
struct ReadSource<R> {
    inner: R,
    pos: u64,
    buf: Vec<u8>,
    /// The I/O error behind a [`GzError`] this source returned, kept whole for the caller.
    failed: Option<io::Error>,
}

impl<R: Read> Source for ReadSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::result::Result<usize, GzError> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(buf.get_mut(done..).unwrap_or(&mut [])) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let message = e.to_string();
                    self.failed = Some(e);
                    return Err(GzError::Stop(Stop::Io(message)));
                }
            }
        }
        self.pos += done as u64;
        Ok(done)
    }
    fn pos(&self) -> u64 {
        self.pos
    }
    fn skip(&mut self, n: u64, see: &mut dyn FnMut(&[u8])) -> std::result::Result<u64, GzError> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; 64 << 10];
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut left = n;
        let res = loop {
            if left == 0 {
                break Ok(n);
            }
            let want = left.min(buf.len() as u64) as usize;
            match self.read(buf.get_mut(..want).unwrap_or(&mut [])) {
                Ok(0) => break Ok(n - left),
                Ok(k) => {
                    see(buf.get(..k).unwrap_or(&[]));
                    left -= k as u64;
                }
                Err(e) => break Err(e),
            }
        };
        self.buf = buf;
        res
    }
    fn seekable(&self) -> bool {
        false
    }
}

/// The current member's data as an [`io::Read`] for the consumer.
struct MemberData<'a, 's> {
    reader: &'a mut TarReader<'s>,
    failed: Option<GzError>,
}

impl Read for MemberData<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf).map_err(|e| {
            let message = gz_message(&e);
            self.failed = Some(e);
            io::Error::other(message)
        })
    }
}

fn gz_message(e: &GzError) -> String {
    match e {
        GzError::Stop(Stop::Io(m)) => m.clone(),
        GzError::Stop(Stop::Need(r)) => format!("bytes {r:?} are not available"),
        GzError::Corrupt(m) | GzError::Bomb(m) => m.clone(),
    }
}

/// Counts bytes read through it.
pub(crate) struct Counted<'a> {
    pub(crate) inner: &'a mut dyn Read,
    pub(crate) n: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Digest algorithms of OVF manifests (the package inspector's, so both accept the same).
pub(crate) use crate::formats::ova::DigestAlgo as Algo;

/// Lowercase hex digests of one member, for the algorithms computed (None for the others).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Digests {
    pub(crate) sha1: Option<String>,
    pub(crate) sha256: Option<String>,
    pub(crate) sha512: Option<String>,
}

impl Digests {
    /// The digest for `algo`, if it was computed.
    pub(crate) fn get(&self, algo: Algo) -> Option<&str> {
        match algo {
            Algo::Sha1 => self.sha1.as_deref(),
            Algo::Sha256 => self.sha256.as_deref(),
            Algo::Sha512 => self.sha512.as_deref(),
        }
    }
}

/// Hashes everything read through it (SHA-1, SHA-256 and/or SHA-512, only what is needed).
pub(crate) struct Hashing<'a> {
    pub(crate) inner: &'a mut dyn Read,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
}

impl<'a> Hashing<'a> {
    /// Computes the algorithms in `algos` (each once, however often it is listed).
    pub(crate) fn new(inner: &'a mut dyn Read, algos: &[Algo]) -> Self {
        let wants = |a: Algo| algos.contains(&a);
        Hashing {
            inner,
            sha1: wants(Algo::Sha1).then(sha1::Sha1::new),
            sha256: wants(Algo::Sha256).then(sha2::Sha256::new),
            sha512: wants(Algo::Sha512).then(sha2::Sha512::new),
        }
    }
    /// Lowercase hex digests (None for an algorithm not computed).
    pub(crate) fn finish(self) -> Digests {
        Digests {
            sha1: self.sha1.map(|h| hex(&h.finalize())),
            sha256: self.sha256.map(|h| hex(&h.finalize())),
            sha512: self.sha512.map(|h| hex(&h.finalize())),
        }
    }
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        let data = &buf[..k];
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        Ok(k)
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[usize::from(x >> 4)] as char);
        s.push(H[usize::from(x & 15)] as char);
    }
    s
}

/// Makes sure `dir` exists and is a directory (created if missing, not its parents).
pub(crate) fn prepare_outdir(dir: &Path) -> Result<PathBuf> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(format!("{}", dir.display()), e))?;
    if !md.is_dir() {
        return Err(Error::new(super::error::ErrorKind::Usage, format!("{} is not a directory", dir.display())));
    }
    Ok(dir.to_path_buf())
}
