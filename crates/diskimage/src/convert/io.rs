//! Input access (positional file or sequential stream), progress metering and zero detection.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{corrupt, Error, Result};

/// Size of one sequential read: large enough that syscall overhead vanishes, small enough that
/// a conversion stays far below its 64 MiB memory budget.
pub(crate) const IO_CHUNK: usize = 4 << 20;

/// Progress is reported at most once per this many bytes moved (keeps callbacks cheap).
const REPORT_EVERY: u64 = 16 << 20;

/// Receives progress: bytes consumed from the input and bytes written to the output so far.
pub trait Progress {
    /// Called now and then during a conversion, and once at the end.
    fn update(&mut self, bytes_in: u64, bytes_out: u64);
    /// Asked as often as [`Progress::update`] is called (every 16 MiB moved): `true` stops the
    /// conversion with an [`ErrorKind::Cancelled`](super::ErrorKind::Cancelled) error, and its
    /// output is deleted like on any other failure.
    fn cancelled(&mut self) -> bool {
        false
    }
}

impl<F: FnMut(u64, u64)> Progress for F {
    fn update(&mut self, bytes_in: u64, bytes_out: u64) {
        self(bytes_in, bytes_out)
    }
}

/// A [`Progress`] that also stops the conversion once `flag` is set (by another thread: a job
/// being cancelled, a server shutting down).
pub struct Cancellable<'a, P> {
    progress: P,
    flag: &'a AtomicBool,
}

impl<'a, P: Progress> Cancellable<'a, P> {
    /// Wraps `progress`; the conversion stops soon after `flag` becomes true.
    pub fn new(progress: P, flag: &'a AtomicBool) -> Self {
        Cancellable { progress, flag }
    }
}

impl<P: Progress> Progress for Cancellable<'_, P> {
    fn update(&mut self, bytes_in: u64, bytes_out: u64) {
        self.progress.update(bytes_in, bytes_out)
    }
    fn cancelled(&mut self) -> bool {
        self.flag.load(Ordering::Relaxed) || self.progress.cancelled()
    }
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&mut self, _: u64, _: u64) {}
}

/// Counts bytes in and out and forwards them to a [`Progress`] in coarse steps.
pub(crate) struct Meter<'a> {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    last: u64,
    /// False while converting a copy of input already counted (see [`Meter::without_input`]).
    count_input: bool,
    cb: &'a mut dyn Progress,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(cb: &'a mut dyn Progress) -> Self {
        Meter { bytes_in: 0, bytes_out: 0, last: 0, count_input: true, cb }
    }
    /// Counts `n` input bytes; fails when the caller asked to stop (see [`Progress::cancelled`]).
    pub(crate) fn read(&mut self, n: u64) -> Result<()> {
        if self.count_input {
            self.bytes_in = self.bytes_in.saturating_add(n);
        }
        self.maybe_report()
    }
    /// Runs `f` without counting input: for converting a spooled copy of bytes that were
    /// counted as they arrived (so `bytes_in` never exceeds what the caller was given).
    pub(crate) fn without_input<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let was = std::mem::replace(&mut self.count_input, false);
        let r = f(self);
        self.count_input = was;
        r
    }
    /// Counts `n` output bytes; fails when the caller asked to stop.
    pub(crate) fn wrote(&mut self, n: u64) -> Result<()> {
        self.bytes_out = self.bytes_out.saturating_add(n);
        self.maybe_report()
    }
    fn maybe_report(&mut self) -> Result<()> {
        let t = self.bytes_in.saturating_add(self.bytes_out);
        if t.saturating_sub(self.last) >= REPORT_EVERY {
            self.last = t;
            self.cb.update(self.bytes_in, self.bytes_out);
            if self.cb.cancelled() {
                return Err(super::error::cancelled());
            }
        }
        Ok(())
    }
    pub(crate) fn finish(&mut self) {
        self.cb.update(self.bytes_in, self.bytes_out);
    }
}

/// A whole input file, read by offset. Reads past the end are a structural error of the image
/// (every offset we follow comes from the image), never a panic.
pub(crate) struct FileIn {
    file: File,
    size: u64,
}

impl FileIn {
    pub(crate) fn new(file: File) -> Result<Self> {
        let size = file.metadata().map_err(|e| Error::io("cannot stat the input", e))?.len();
        Ok(FileIn { file, size })
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
    /// Reads exactly `buf.len()` bytes at `off`; `what` names the structure for the error.
    pub(crate) fn read_at(&self, off: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(corrupt(format!(
                "{what} at offset {off} (+{} bytes) lies beyond the end of the file ({} bytes)",
                buf.len(),
                self.size
            )));
        }
        self.file.read_exact_at(buf, off).map_err(|e| Error::io(format!("reading {what} at offset {off}"), e))
    }
    /// Fails unless `[off, off+len)` lies inside the file.
    pub(crate) fn check_range(&self, off: u64, len: u64, what: &str) -> Result<()> {
        match off.checked_add(len) {
            Some(e) if e <= self.size => Ok(()),
            _ => Err(corrupt(format!("{what} at offset {off} (+{len} bytes) lies beyond the end of the file ({} bytes)", self.size))),
        }
    }
    /// Reads up to `buf.len()` bytes at `off`, clamped to the file end; returns the count.
    pub(crate) fn read_clamped(&self, off: u64, buf: &mut [u8], what: &str) -> Result<usize> {
        let avail = self.size.saturating_sub(off);
        let n = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
        self.read_at(off, &mut buf[..n], what)?;
        Ok(n)
    }
}

/// A sequential input (an upload arriving, a tar member): it can only move forward.
pub(crate) struct StreamIn<'a> {
    r: &'a mut dyn Read,
    pos: u64,
}

impl<'a> StreamIn<'a> {
    pub(crate) fn new(r: &'a mut dyn Read) -> Self {
        StreamIn { r, pos: 0 }
    }
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }
    /// Fills as much of `buf` as the stream still has; returns the count (short only at EOF).
    pub(crate) fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the input stream", e)),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
    /// Reads exactly `buf.len()` bytes or fails with a truncation error naming `what`.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let at = self.pos;
        let n = self.read_full(buf)?;
        if n < buf.len() {
            return Err(corrupt(format!("the input ends inside {what} (at offset {at})")));
        }
        Ok(())
    }
    /// Moves forward to absolute offset `to` (discarding bytes); going back is an error.
    pub(crate) fn skip_to(&mut self, to: u64, scratch: &mut [u8], what: &str) -> Result<()> {
        if to < self.pos {
            return Err(corrupt(format!(
                "{what} at offset {to} lies before the current stream position {}: \
                 this file is not in streaming order",
                self.pos
            )));
        }
        while self.pos < to {
            let n = usize::try_from(to - self.pos).unwrap_or(usize::MAX).min(scratch.len());
            self.read_exact(&mut scratch[..n], what)?;
        }
        Ok(())
    }
    /// Reads and discards everything that is left; returns the count.
    pub(crate) fn drain(&mut self, scratch: &mut [u8]) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.read_full(scratch)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    }
}

/// An input a reader can ask for bytes by offset. A file serves any offset; a stream serves
/// only offsets at or after its position (a reader that goes back gets a clear error saying the
/// file is not in streaming order).
pub(crate) enum Input<'a> {
    File(&'a FileIn),
    Stream(StreamIn<'a>, Vec<u8>),
}

impl Input<'_> {
    /// The file size when known (streams do not know it).
    pub(crate) fn size(&self) -> Option<u64> {
        match self {
            Input::File(f) => Some(f.size()),
            Input::Stream(..) => None,
        }
    }
    /// Reads exactly `buf.len()` bytes at `off`, counting them as input consumed.
    pub(crate) fn read_at(&mut self, off: u64, buf: &mut [u8], what: &str, m: &mut Meter) -> Result<()> {
        match self {
            Input::File(f) => {
                f.read_at(off, buf, what)?;
                m.read(buf.len() as u64)?;
            }
            Input::Stream(s, scratch) => {
                let before = s.pos();
                if scratch.is_empty() {
                    scratch.resize(64 << 10, 0);
                }
                s.skip_to(off, scratch, what)?;
                s.read_exact(buf, what)?;
                m.read(s.pos() - before)?;
            }
        }
        Ok(())
    }
    /// Reads up to `buf.len()` bytes at `off` (short at the end of the input); returns the count.
    pub(crate) fn read_clamped(&mut self, off: u64, buf: &mut [u8], what: &str, m: &mut Meter) -> Result<usize> {
        match self {
            Input::File(f) => {
                let n = f.read_clamped(off, buf, what)?;
                m.read(n as u64)?;
                Ok(n)
            }
            Input::Stream(s, scratch) => {
                let before = s.pos();
                if scratch.is_empty() {
                    scratch.resize(64 << 10, 0);
                }
                s.skip_to(off, scratch, what)?;
                let n = s.read_full(buf)?;
                m.read(s.pos() - before)?;
                Ok(n)
            }
        }
    }
    /// Passes `len` input bytes at `off` to the sink: a file may be copied in the kernel, a
    /// stream is read into `buf` (at least `len` long) and handed over.
    pub(crate) fn pass(
        &mut self,
        sink: &mut dyn super::sink::Sink,
        off: u64,
        len: usize,
        buf: &mut IoBuf,
        what: &str,
        m: &mut Meter,
    ) -> Result<()> {
        match self {
            Input::File(f) => sink.data_from_file(f, off, len, buf, m),
            Input::Stream(..) => {
                self.read_at(off, &mut buf[..len], what, m)?;
                sink.data_owned(buf, len, m)
            }
        }
    }
    /// Consumes the rest of a stream (so a caller hashing it sees every byte).
    pub(crate) fn drain(&mut self, m: &mut Meter) -> Result<()> {
        if let Input::Stream(s, scratch) = self {
            if scratch.is_empty() {
                scratch.resize(64 << 10, 0);
            }
            let n = s.drain(scratch)?;
            m.read(n)?;
        }
        Ok(())
    }
}

/// True when every byte of `buf` is zero. Works on 64-byte blocks so the compiler vectorises
/// the OR, and stops at the first non-zero block (random data is rejected after 64 bytes).
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    for b in &mut blocks {
        let mut acc = 0u8;
        for &x in b {
            acc |= x;
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| x == 0)
}

#[inline]
pub(crate) fn be_u16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
#[inline]
pub(crate) fn be_u32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
#[inline]
pub(crate) fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}
#[inline]
pub(crate) fn le_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
#[inline]
pub(crate) fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
#[inline]
pub(crate) fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// `len` as a `usize` for a buffer, refusing anything above `max` (a named limit).
pub(crate) fn checked_len(len: u64, max: usize, what: &str) -> Result<usize> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(super::error::limit(format!("{what} of {len} bytes exceeds the limit of {max} bytes"))),
    }
}

/// Page alignment for I/O buffers: the kernel copies between the page cache and user memory
/// page by page, and a source that straddles pages (malloc returns page + 16 bytes for large
/// blocks) makes every buffered write measurably slower.
const BUF_ALIGN: usize = 4096;

/// A zero-initialised, page-aligned byte buffer of fixed length (safe code: a Vec with slack,
/// used from its first aligned byte).
pub(crate) struct IoBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl IoBuf {
    pub(crate) fn new(len: usize) -> Self {
        let v = vec![0u8; len + BUF_ALIGN];
        let off = (BUF_ALIGN - (v.as_ptr() as usize % BUF_ALIGN)) % BUF_ALIGN;
        IoBuf { v, off, len }
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 65536 + 7];
        assert!(is_zero(&v));
        for i in [0, 63, 64, 65535, 65542] {
            v[i] = 1;
            assert!(!is_zero(&v), "byte {i}");
            v[i] = 0;
        }
        assert!(is_zero(&[]));
    }
}
