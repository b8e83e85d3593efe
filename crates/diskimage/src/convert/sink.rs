//! Output writers. A reader drives a [`Sink`] in guest order: data and zero runs, sequentially.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::error::{Error, Result};
use super::io::{is_zero, Meter};

/// Where a reader puts the guest disk, front to back.
pub(crate) trait Sink {
    /// The next `buf.len()` guest bytes (they may contain zeros; the sink detects them).
    fn data(&mut self, buf: &[u8], m: &mut Meter) -> Result<()>;
    /// The next `len` guest bytes read as zero.
    fn zeros(&mut self, len: u64, m: &mut Meter) -> Result<()>;
    /// Guest bytes consumed so far.
    fn position(&self) -> u64;
    /// Pads to the virtual size with zeros and writes the metadata.
    fn finish(&mut self, m: &mut Meter) -> Result<()>;
}

/// Zero detection granularity of the raw writer: the file-system block, so holes are as fine
/// as the file system can represent (qemu-img's default `-S 4k`).
const RAW_HOLE_GRAIN: usize = 4096;

/// A sparse raw writer: zero blocks become holes (never written), the length is set at the end.
pub(crate) struct RawSink<'f> {
    f: &'f File,
    vsize: u64,
    pos: u64,
}

impl<'f> RawSink<'f> {
    pub(crate) fn new(f: &'f File, vsize: u64) -> Self {
        RawSink { f, vsize, pos: 0 }
    }
}

impl Sink for RawSink<'_> {
    fn data(&mut self, buf: &[u8], m: &mut Meter) -> Result<()> {
        let end = self.pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.vsize) {
            return Err(super::error::corrupt("the input holds more data than its virtual size"));
        }
        // Coalesce consecutive non-zero blocks into one write.
        let mut run: Option<usize> = None;
        let mut i = 0;
        while i < buf.len() {
            let j = (i + RAW_HOLE_GRAIN).min(buf.len());
            let zero = is_zero(&buf[i..j]);
            match (zero, run) {
                (false, None) => run = Some(i),
                (true, Some(s)) => {
                    self.write(&buf[s..i], self.pos + s as u64, m)?;
                    run = None;
                }
                _ => {}
            }
            i = j;
        }
        if let Some(s) = run {
            self.write(&buf[s..], self.pos + s as u64, m)?;
        }
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn zeros(&mut self, len: u64, _m: &mut Meter) -> Result<()> {
        self.pos = self.pos.saturating_add(len);
        if self.pos > self.vsize {
            return Err(super::error::corrupt("the input holds more data than its virtual size"));
        }
        Ok(())
    }
    fn position(&self) -> u64 {
        self.pos
    }
    fn finish(&mut self, _m: &mut Meter) -> Result<()> {
        // The tail (and every skipped zero range) is a hole: set_len never writes zeros.
        self.f.set_len(self.vsize).map_err(|e| Error::io("setting the output length", e))?;
        self.pos = self.vsize;
        Ok(())
    }
}

impl RawSink<'_> {
    fn write(&self, buf: &[u8], off: u64, m: &mut Meter) -> Result<()> {
        self.f.write_all_at(buf, off).map_err(|e| Error::io("writing the raw output", e))?;
        m.wrote(buf.len() as u64);
        Ok(())
    }
}
