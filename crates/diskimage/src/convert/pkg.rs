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
use crate::formats::tar::{
    after_end, check_name, duplicate_member, header_ok, member_type, pax_path, too_many_members, GLOBAL_PAX, HEADER_DAMAGED,
};
use crate::limits::{TAR_MAX_MEMBERS, TAR_MAX_NAME, TAR_MAX_PAX};

/// Most members a package may have (an OVA has an .ovf, .mf, .cert and a few disks): the
/// inspector's limit.
pub const MAX_MEMBERS: usize = TAR_MAX_MEMBERS;
/// PAX extended header payload cap (real ones are a few hundred bytes): the inspector's.
const MAX_PAX_BYTES: u64 = TAR_MAX_PAX;
/// Longest GNU long-name record: the longest name [`check_name`] accepts and its NUL.
const MAX_NAME_BYTES: u64 = TAR_MAX_NAME as u64 + 1;

/// One member as the walker hands it over.
pub(crate) struct Member<'r> {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) reader: &'r mut dyn Read,
}

/// Walks a tar stream header by header (raw mode: PAX and GNU long-name records are handled
/// here, with bounds). Calls `f` for every regular-file member, in archive order. Refuses what
/// the inspector's walk refuses: damaged headers, links, devices, FIFOs, sparse files,
/// directories with content, PAX `size` and `linkpath` records and global PAX headers, unsafe
/// or duplicate names, more than [`MAX_MEMBERS`] members, and data after the end of the archive.
pub(crate) fn walk_tar<R: Read>(r: R, mut f: impl FnMut(Member<'_>) -> Result<()>) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let entries = ar.entries().map_err(|e| bad_tar("cannot read the archive", e))?;
    let entries = entries.raw(true);
    let mut names: Vec<String> = Vec::new();
    let mut pending_name: Option<Vec<u8>> = None;
    let mut headers = 0usize;
    let mut index = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_tar("the archive is malformed", e))?;
        headers += 1;
        if headers > MAX_MEMBERS * 3 {
            return Err(package(too_many_members()));
        }
        if !header_ok(entry.header().as_bytes()) {
            return Err(package(HEADER_DAMAGED));
        }
        let et = entry.header().entry_type();
        let size = entry.size();
        match et.as_byte() {
            b'x' => {
                let data = read_capped(&mut entry, size, MAX_PAX_BYTES, "a PAX header")?;
                if let Some(path) = pax_path(&data).map_err(package)? {
                    pending_name = Some(path);
                }
                continue;
            }
            b'g' => return Err(package(GLOBAL_PAX)),
            b'L' => {
                let data = read_capped(&mut entry, size, MAX_NAME_BYTES, "a GNU long name")?;
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                pending_name = Some(data[..end].to_vec());
                continue;
            }
            _ => {}
        }
        let raw_name = match pending_name.take() {
            Some(n) => n,
            None => entry.path_bytes().into_owned(),
        };
        let name = check_name(&raw_name, et.as_byte() == b'5').map_err(package)?;
        if !member_type(&name, et.as_byte(), size).map_err(package)? {
            continue; // An empty directory entry: harmless, not a member.
        }
        if names.contains(&name) {
            return Err(package(duplicate_member(&name)));
        }
        index += 1;
        if index > MAX_MEMBERS {
            return Err(package(too_many_members()));
        }
        names.push(name.clone());
        let mut counted = Counted { inner: &mut entry, n: 0 };
        f(Member { index: index - 1, name: name.clone(), size, reader: &mut counted })?;
        // Whatever the consumer left is read here: a short member means a truncated archive.
        io::copy(&mut counted, &mut io::sink()).map_err(|e| bad_tar("reading a member", e))?;
        if counted.n != size {
            return Err(package(format!("member {name:?} is truncated ({} of {size} bytes)", counted.n)));
        }
    }
    if pending_name.is_some() {
        return Err(package("the archive ends after a name record without its member"));
    }
    // After the end-of-archive block only zero padding may follow: anything else would be a
    // payload that a different tar reader might see. The inspector's rule ([`after_end`]); the
    // stream is read to its end (for UEC, inflated within the caller's bounds).
    let mut rest = ar.into_inner();
    let read = |buf: &mut [u8]| loop {
        match rest.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    };
    after_end(read).map_err(|e| bad_tar("reading the end of the archive", e))?.map_err(package)
}

fn bad_tar(what: &str, e: io::Error) -> Error {
    package(format!("{what}: {e}"))
}

fn read_capped(r: &mut dyn Read, size: u64, cap: u64, what: &str) -> Result<Vec<u8>> {
    if size > cap {
        return Err(package(format!("{what} of {size} bytes exceeds {cap} bytes")));
    }
    let mut v = Vec::with_capacity(size as usize);
    r.take(size).read_to_end(&mut v).map_err(|e| bad_tar(what, e))?;
    if v.len() as u64 != size {
        return Err(package(format!("{what} is truncated")));
    }
    Ok(v)
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
