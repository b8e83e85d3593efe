//! Random-access reading: the only boundary between the parsers and the bytes.
//!
//! The parsers never do I/O themselves. They ask a [`ReadAt`] for a range; the browser answers
//! from the `Blob.slice` pieces it holds ([`SparseBytes`]), the server from the uploaded file
//! (`std::fs::File`, native only). A piece that is not held is reported as
//! [`ReadError::Missing`] with the exact range, so the caller can fetch it and ask again.

use serde::{Deserialize, Serialize};

/// A half-open byte range `offset .. offset + len` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte of the range.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// Exclusive end of the range (saturating).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// Why a read did not deliver its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The bytes exist in the file but this view does not hold them (sniffing in the browser).
    Missing(ByteRange),
    /// The underlying storage failed (server side).
    Io(String),
}

/// Random access to the bytes of one file.
///
/// Implementations must fill `buf` completely from `offset` or fail. Callers (the parsers) never
/// ask for bytes beyond [`ReadAt::size`].
pub trait ReadAt {
    /// Total size of the file in bytes (the browser knows it from `File.size`).
    fn size(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError>;
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        (**self).read_exact_at(offset, buf)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let start = usize::try_from(offset).map_err(|_| out_of_range(offset, buf.len()))?;
        let end = start.checked_add(buf.len()).ok_or_else(|| out_of_range(offset, buf.len()))?;
        let src = self.get(start..end).ok_or_else(|| out_of_range(offset, buf.len()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

fn out_of_range(offset: u64, len: usize) -> ReadError {
    ReadError::Io(format!("read of {len} bytes at {offset} is past the end of the data"))
}

/// Some pieces of a file plus its total size: what the browser holds after `Blob.slice` reads.
///
/// ```
/// use diskimage::{sniff, SniffOutcome, SparseBytes};
/// // A 1 MiB file of which the browser read the head and the tail.
/// let file = vec![0u8; 1 << 20];
/// let mut bytes = SparseBytes::new(file.len() as u64);
/// let (head, tail) = SparseBytes::initial_ranges(file.len() as u64);
/// bytes.insert(head.offset, file[head.offset as usize..head.end() as usize].to_vec());
/// bytes.insert(tail.offset, file[tail.offset as usize..tail.end() as usize].to_vec());
/// loop {
///     match sniff(&bytes) {
///         SniffOutcome::NeedMore(ranges) => {
///             for r in ranges {
///                 bytes.insert(r.offset, file[r.offset as usize..r.end() as usize].to_vec());
///             }
///         }
///         SniffOutcome::Done(report) => {
///             assert_eq!(report.format.as_str(), "raw");
///             break;
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseBytes {
    size: u64,
    pieces: Vec<(u64, Vec<u8>)>,
}

impl SparseBytes {
    /// An empty view of a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        SparseBytes { size, pieces: Vec::new() }
    }

    /// The head and tail ranges the browser reads first (64 KiB and 1.5 KiB, clamped to the file).
    pub fn initial_ranges(size: u64) -> (ByteRange, ByteRange) {
        let head = ByteRange { offset: 0, len: size.min(crate::limits::SNIFF_HEAD) };
        let tail_len = size.min(crate::limits::SNIFF_TAIL);
        let tail = ByteRange { offset: size - tail_len, len: tail_len };
        (head, tail)
    }

    /// Builds the initial view (head + tail) from any reader.
    pub fn from_head_tail(src: &dyn ReadAt) -> Result<Self, ReadError> {
        let size = src.size();
        let mut s = SparseBytes::new(size);
        let (head, tail) = Self::initial_ranges(size);
        for r in [head, tail] {
            s.fetch_from(src, r)?;
        }
        Ok(s)
    }

    /// Copies `range` from `src` into this view (used by the CLI and tests to emulate the browser).
    pub fn fetch_from(&mut self, src: &dyn ReadAt, range: ByteRange) -> Result<(), ReadError> {
        let len = usize::try_from(range.len.min(crate::limits::SNIFF_MAX_PIECE)).map_err(|_| ReadError::Io("range too large".into()))?;
        let mut buf = vec![0u8; len];
        src.read_exact_at(range.offset, &mut buf)?;
        self.insert(range.offset, buf);
        Ok(())
    }

    /// Adds a piece. Pieces may overlap; bytes past the file size are ignored.
    pub fn insert(&mut self, offset: u64, mut bytes: Vec<u8>) {
        let room = self.size.saturating_sub(offset);
        if (bytes.len() as u64) > room {
            bytes.truncate(room as usize);
        }
        if !bytes.is_empty() {
            self.pieces.push((offset, bytes));
        }
    }

    /// Number of pieces held.
    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// Total bytes held (for memory accounting).
    pub fn held_bytes(&self) -> u64 {
        self.pieces.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

impl ReadAt for SparseBytes {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let want = ByteRange { offset, len: buf.len() as u64 };
        if want.end() > self.size {
            return Err(out_of_range(offset, buf.len()));
        }
        // Fill from pieces; any byte not covered makes the read Missing (the whole range).
        let mut covered = 0u64;
        let mut cursor = offset;
        while cursor < want.end() {
            let piece = self.pieces.iter().find(|(o, b)| *o <= cursor && cursor < o.saturating_add(b.len() as u64));
            let Some((po, pb)) = piece else {
                return Err(ReadError::Missing(ByteRange { offset: cursor, len: want.end() - cursor }));
            };
            let from = (cursor - po) as usize;
            let n = ((pb.len() - from) as u64).min(want.end() - cursor) as usize;
            let dst_from = (cursor - offset) as usize;
            if let (Some(d), Some(s)) = (buf.get_mut(dst_from..dst_from + n), pb.get(from..from + n)) {
                d.copy_from_slice(s);
            }
            cursor += n as u64;
            covered += n as u64;
        }
        debug_assert_eq!(covered, want.len);
        Ok(())
    }
}

/// A window `base .. base + len` of another reader, seen as a file of its own (OVA/tar members).
pub struct SubRange<'a> {
    inner: &'a dyn ReadAt,
    base: u64,
    len: u64,
}

impl<'a> SubRange<'a> {
    /// A view of `len` bytes starting at `base` (clamped to the inner size).
    pub fn new(inner: &'a dyn ReadAt, base: u64, len: u64) -> Self {
        let len = len.min(inner.size().saturating_sub(base));
        SubRange { inner, base, len }
    }
}

impl ReadAt for SubRange<'_> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(out_of_range(offset, buf.len()));
        }
        match self.inner.read_exact_at(self.base.saturating_add(offset), buf) {
            Err(ReadError::Missing(r)) => Err(ReadError::Missing(r)),
            other => other,
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod file_impl {
    use super::{ReadAt, ReadError};

    /// The server's boundary: positional reads on an open upload (no shared cursor).
    impl ReadAt for std::fs::File {
        fn size(&self) -> u64 {
            self.metadata().map(|m| m.len()).unwrap_or(0)
        }
        #[cfg(unix)]
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            use std::os::unix::fs::FileExt;
            FileExt::read_exact_at(self, buf, offset).map_err(|e| ReadError::Io(e.to_string()))
        }
        #[cfg(not(unix))]
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            use std::os::windows::fs::FileExt;
            let mut done = 0usize;
            while done < buf.len() {
                let n = self.seek_read(&mut buf[done..], offset + done as u64).map_err(|e| ReadError::Io(e.to_string()))?;
                if n == 0 {
                    return Err(ReadError::Io("unexpected end of file".into()));
                }
                done += n;
            }
            Ok(())
        }
    }

    /// A file whose size is read once (avoids a `metadata` call per read).
    pub struct SizedFile {
        file: std::fs::File,
        size: u64,
    }

    impl SizedFile {
        /// Opens `path` read-only.
        pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            Ok(SizedFile { file, size })
        }
    }

    impl ReadAt for SizedFile {
        fn size(&self) -> u64 {
            self.size
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            ReadAt::read_exact_at(&self.file, offset, buf)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use file_impl::SizedFile;
