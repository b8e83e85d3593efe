//! gzip: header parsing and bounded streaming inflate (UEC tarballs, gzip'd initrds).
//!
//! Inflate has no natural bound, so every use caps the output ([`GZIP_SNIFF_OUTPUT`] when
//! sniffing; [`GZIP_MAX_OUTPUT`] and [`GZIP_MAX_RATIO`] when inspecting).

use crate::codes;
use crate::ctx::{Ctx, PResult, Stop};
use crate::limits::{GZIP_MAX_OUTPUT, GZIP_MAX_RATIO, GZIP_RATIO_GRACE, GZIP_SNIFF_OUTPUT, MAX_READ_CHUNK};
use crate::read::ReadAt;
use crate::util::{byte, crc32_update, has_at, le16, le32};
use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// True for the gzip magic with the deflate method.
pub fn is_gzip(h: &[u8]) -> bool {
    has_at(h, 0, b"\x1f\x8b\x08")
}

/// Length of the gzip member header in `h`, or `None` if it is invalid or does not fit.
pub fn header_len(h: &[u8]) -> Option<usize> {
    if !is_gzip(h) || h.len() < 10 {
        return None;
    }
    let flg = byte(h, 3);
    if flg & 0xE0 != 0 {
        return None;
    }
    let mut o = 10usize;
    if flg & 4 != 0 {
        o = o.checked_add(2 + usize::from(le16(h, o)))?;
    }
    for bit in [8u8, 16] {
        if flg & bit != 0 {
            let rest = h.get(o..)?;
            let nul = rest.iter().position(|&c| c == 0)?;
            o = o.checked_add(nul + 1)?;
        }
    }
    if flg & 2 != 0 {
        o += 2;
    }
    (o <= h.len()).then_some(o)
}

/// What a gzip stream holds, judged from its first inflated bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// A tar archive (a UEC tarball).
    Tar,
    /// A cpio archive (an initrd).
    Cpio,
    /// Anything else.
    Other,
}

/// Inflates at most [`GZIP_SNIFF_OUTPUT`] bytes from `head` and classifies them.
pub fn sniff_inner(head: &[u8]) -> Inner {
    let Some(start) = header_len(head) else {
        return Inner::Other;
    };
    let mut st = InflateState::new_boxed(DataFormat::Raw);
    let mut out = vec![0u8; GZIP_SNIFF_OUTPUT];
    let input = head.get(start..).unwrap_or(&[]);
    let r = inflate(&mut st, input, &mut out, MZFlush::None);
    let got = out.get(..r.bytes_written).unwrap_or(&[]);
    classify(got)
}

/// Classifies decompressed bytes.
pub fn classify(b: &[u8]) -> Inner {
    if crate::formats::tar::is_tar_header(b) {
        Inner::Tar
    } else if crate::formats::kernel::initrd_kind(b, false) == Some("cpio") {
        Inner::Cpio
    } else {
        Inner::Other
    }
}

/// Why bytes after the gzip member's trailer are refused (a UEC tarball: [`GzStream::whole`]).
pub const GZIP_TRAILING: &str = "data follows the end of the gzip stream; another gzip reader might read it as more of the archive";

/// Why a gzip stream could not be read.
#[derive(Debug)]
pub(crate) enum GzError {
    Stop(Stop),
    Corrupt(String),
    Bomb(String),
}

impl From<Stop> for GzError {
    fn from(s: Stop) -> Self {
        GzError::Stop(s)
    }
}

/// A sequential reader of the inflated bytes of the gzip member at the start of `src`.
pub(crate) struct GzStream<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
    state: Box<InflateState>,
    inbuf: Vec<u8>,
    in_start: usize,
    out_total: u64,
    crc: u32,
    finished: bool,
    /// Output cap. `soft`: reaching it ends the stream quietly (sniffing looks at a prefix only).
    limit: u64,
    soft: bool,
    /// Most output bytes per compressed byte, enforced past `ratio_grace` output bytes.
    max_ratio: u64,
    ratio_grace: u64,
    /// The stream must end the input: nothing may follow its trailer (see [`GzStream::whole`]).
    whole: bool,
}

impl<'a> GzStream<'a> {
    /// A stream capped at [`GZIP_MAX_OUTPUT`] (an error beyond it).
    pub fn new(src: &'a dyn ReadAt, head: &[u8]) -> Result<Self, GzError> {
        Self::with_limit(src, head, GZIP_MAX_OUTPUT, false)
    }

    /// A stream capped at `limit` output bytes; with `soft`, the cap ends the stream quietly.
    pub fn with_limit(src: &'a dyn ReadAt, head: &[u8], limit: u64, soft: bool) -> Result<Self, GzError> {
        Self::bounded(src, head, limit, soft, GZIP_MAX_RATIO, GZIP_RATIO_GRACE)
    }

    /// A stream with every bound given: the package extractor's (its `UecLimits`) and, through
    /// [`GzStream::with_limit`], the inspector's. The one gzip reader of both.
    pub fn bounded(src: &'a dyn ReadAt, head: &[u8], limit: u64, soft: bool, max_ratio: u64, ratio_grace: u64) -> Result<Self, GzError> {
        let start = header_len(head).ok_or_else(|| GzError::Corrupt("the gzip header is invalid".into()))?;
        Ok(GzStream {
            src,
            pos: start as u64,
            state: InflateState::new_boxed(DataFormat::Raw),
            inbuf: Vec::new(),
            in_start: 0,
            out_total: 0,
            crc: 0,
            finished: false,
            limit,
            soft,
            max_ratio,
            ratio_grace,
            whole: false,
        })
    }

    /// Requires the gzip member to end the input. A UEC tarball is one member: a second one
    /// after it (or any other bytes) would be more of the archive to `gzip -dc` and to most
    /// gzip libraries, which read concatenated members, while a single-member reader stops.
    /// The inspector and the extractor both refuse it. (Not for initrds: the kernel reads
    /// concatenated segments itself.)
    pub fn whole(mut self) -> Self {
        self.whole = true;
        self
    }

    /// Fills `buf` as far as possible; 0 means the end of the stream (trailer verified).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError> {
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        if self.soft && self.out_total >= self.limit {
            return Ok(0);
        }
        loop {
            if self.in_start >= self.inbuf.len() {
                let size = self.src.size();
                let n = MAX_READ_CHUNK.min(size.saturating_sub(self.pos)) as usize;
                self.inbuf.resize(n, 0);
                if n > 0 {
                    self.src.read_exact_at(self.pos, &mut self.inbuf).map_err(|e| GzError::Stop(e.into()))?;
                }
                self.in_start = 0;
            }
            let input = self.inbuf.get(self.in_start..).unwrap_or(&[]);
            let had_input = !input.is_empty();
            let r = inflate(&mut self.state, input, buf, MZFlush::None);
            self.in_start += r.bytes_consumed;
            self.pos += r.bytes_consumed as u64;
            let written = buf.get(..r.bytes_written).unwrap_or(&[]);
            self.crc = crc32_update(self.crc, written);
            self.out_total += r.bytes_written as u64;
            if self.out_total > self.limit && !self.soft {
                return Err(GzError::Bomb(format!("it inflates to more than {} bytes", self.limit)));
            }
            if self.out_total > self.pos.saturating_mul(self.max_ratio).max(self.ratio_grace) {
                return Err(GzError::Bomb(format!("it inflates more than {} times its size (a decompression bomb)", self.max_ratio)));
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.finished = true;
                    self.check_trailer()?;
                    return Ok(r.bytes_written);
                }
                Ok(_) if r.bytes_written > 0 => return Ok(r.bytes_written),
                Ok(_) => {}
                Err(MZError::Buf) if r.bytes_written > 0 => return Ok(r.bytes_written),
                Err(MZError::Buf) if had_input || self.pos < self.src.size() => {}
                Err(MZError::Buf) if self.soft => return Ok(0),
                Err(_) => return Err(GzError::Corrupt("the compressed data is damaged or truncated".into())),
            }
            if !had_input && self.pos >= self.src.size() {
                if self.soft {
                    // Sniffing sees a prefix of the stream: its end is not an error.
                    return Ok(0);
                }
                return Err(GzError::Corrupt("the compressed stream is truncated".into()));
            }
        }
    }

    fn check_trailer(&mut self) -> Result<(), GzError> {
        let mut t = [0u8; 8];
        if self.pos.saturating_add(8) > self.src.size() {
            return Err(GzError::Corrupt("the gzip trailer is missing".into()));
        }
        self.src.read_exact_at(self.pos, &mut t).map_err(|e| GzError::Stop(e.into()))?;
        if le32(&t, 0) != self.crc || le32(&t, 4) != (self.out_total & 0xFFFF_FFFF) as u32 {
            return Err(GzError::Corrupt("the gzip checksum does not match the data".into()));
        }
        if self.whole && self.pos.saturating_add(8) < self.src.size() {
            return Err(GzError::Corrupt(GZIP_TRAILING.into()));
        }
        Ok(())
    }
}

/// Records a gzip error as a finding; passes `Stop` through.
pub(crate) fn report(cx: &mut Ctx, e: GzError) -> PResult<()> {
    match e {
        GzError::Stop(s) => Err(s),
        GzError::Corrupt(m) => {
            cx.error(codes::GZIP_INVALID, format!("The gzip stream is invalid: {m}."));
            Ok(())
        }
        GzError::Bomb(m) => {
            cx.error(codes::GZIP_BOMB, format!("The gzip stream is refused: {m}."));
            Ok(())
        }
    }
}

/// Inflates the whole stream into a small buffer, checking the caps and the trailer.
pub(crate) fn verify_stream(cx: &mut Ctx) -> PResult<()> {
    let head = cx.read(0, 64 << 10)?;
    let src = cx.src;
    let res = (|| -> Result<(), GzError> {
        let mut gz = GzStream::new(src, &head)?;
        let mut buf = vec![0u8; 64 << 10];
        while gz.read(&mut buf)? > 0 {}
        Ok(())
    })();
    match res {
        Ok(()) => Ok(()),
        Err(e) => report(cx, e),
    }
}
