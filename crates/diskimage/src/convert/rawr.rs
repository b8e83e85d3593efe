//! Raw reader. A file is read data-region by data-region (`SEEK_DATA`/`SEEK_HOLE`), so holes
//! cost nothing; a stream is read front to back.

use rustix::fs::SeekFrom;

use super::error::{corrupt, Result};
use super::io::{FileIn, Input, IoBuf, Meter, IO_CHUNK};
use super::sink::Sink;

/// Raw file: holes are zeros without reading them.
pub(crate) fn pump_file(inp: &FileIn, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
    let size = inp.size();
    let mut buf = IoBuf::new(IO_CHUNK);
    let mut off = 0u64;
    while off < size {
        // Where the next data starts. A file system without SEEK_DATA reports the whole file
        // as data (the kernel's generic fallback), which is still correct, just slower.
        let data = match rustix::fs::seek(inp.file(), SeekFrom::Data(off)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(_) => off,
        };
        if data > off {
            sink.zeros(data - off, m)?;
            off = data;
        }
        if off >= size {
            break;
        }
        let hole = match rustix::fs::seek(inp.file(), SeekFrom::Hole(off)) {
            Ok(h) => h.clamp(off + 1, size),
            Err(_) => size,
        };
        while off < hole {
            let n = (hole - off).min(IO_CHUNK as u64) as usize;
            sink.data_from_file(inp, off, n, &mut buf, m)?;
            off += n as u64;
        }
    }
    Ok(())
}

/// Raw stream of exactly `len` bytes: all of it is read; a short or long stream is an error
/// (a truncated upload must not become a disk with a zero tail).
pub(crate) fn pump_stream(inp: &mut Input, len: u64, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
    let mut buf = IoBuf::new(IO_CHUNK);
    let mut off = 0u64;
    loop {
        let n = inp.read_clamped(off, &mut buf, "raw data", m)?;
        if n == 0 {
            if off != len {
                return Err(corrupt(format!("the raw stream ended after {off} of {len} bytes")));
            }
            return Ok(());
        }
        sink.data_owned(&mut buf, n, m)?;
        off += n as u64;
    }
}
