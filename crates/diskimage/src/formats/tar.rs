//! tar walking with the member policy of docs/formats.md §2.5 #19 (shared by OVA and UEC).
//!
//! Nothing is ever extracted: the walker only records names, types, sizes and offsets, and
//! optionally the first bytes of a few members so the caller can identify them.
//!
//! The member policy itself — [`header_ok`], [`check_name`], [`member_type`], [`pax_path`], the
//! member limit and the end of the archive — is the one the package extractor's walker
//! (`convert::pkg::walk_tar`) applies too, in the same words, so a package the inspector lets
//! through is not refused at import for its tar structure, nor the reverse.

use crate::codes;
use crate::formats::gzip::{GzError, GzStream};
use crate::limits::{TAR_MAX_MEMBERS, TAR_MAX_NAME, TAR_MAX_PAX};
use crate::read::ReadAt;
use crate::util::{byte, has_at, slice};

/// Block size of tar.
pub const BLOCK: u64 = 512;
/// Bytes kept from the end of each captured member.
const CAPTURE_TAIL: usize = 1536;
/// At most this many members get their head captured (bounds memory: 8 × 64 KiB).
const MAX_CAPTURED: usize = 8;

/// True if `h` starts with a POSIX or GNU tar header.
pub fn is_tar_header(h: &[u8]) -> bool {
    has_at(h, 257, b"ustar\x0000") || has_at(h, 257, b"ustar  \0")
}

/// Parses a tar number field: octal (NUL/space terminated) or GNU base-256.
pub fn parse_number(f: &[u8]) -> Option<u64> {
    if byte(f, 0) & 0x80 != 0 {
        // Base-256, big-endian, first byte's top bit is the marker; negative values refused.
        if byte(f, 0) & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = u64::from(byte(f, 0) & 0x3f);
        for &c in f.iter().skip(1) {
            v = v.checked_mul(256)?.checked_add(u64::from(c))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f.iter().copied().skip_while(|&c| c == b' ').take_while(|&c| c != 0 && c != b' ').collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v = 0u64;
    for c in s {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

fn cstr(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    slice(b, 0, n)
}

/// The header checksum is valid (unsigned sum with the field as spaces; signed accepted too).
pub fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = parse_number(slice(h, 148, 8)) else {
        return false;
    };
    let mut u: u64 = 0;
    let mut s: i64 = 0;
    for (i, &c) in h.iter().take(512).enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        u += u64::from(c);
        s += i64::from(c as i8);
    }
    stored == u || i64::try_from(stored).is_ok_and(|x| x == s)
}

/// A member header both walkers accept: POSIX or GNU magic and a checksum that is the
/// unsigned byte sum (what every tar writes; the signed sum that [`checksum_ok`] also allows
/// for detection is refused by the extractor's tar reader, so it is refused here too).
pub fn header_ok(h: &[u8]) -> bool {
    let Some(stored) = parse_number(slice(h, 148, 8)) else {
        return false;
    };
    let sum: u64 = h.iter().take(512).enumerate().map(|(i, &c)| u64::from(if (148..156).contains(&i) { b' ' } else { c })).sum();
    h.len() >= 512 && is_tar_header(h) && stored == sum
}

/// Why a header that fails [`header_ok`] is refused.
pub const HEADER_DAMAGED: &str = "a tar member header is damaged (bad magic or checksum)";
/// Why a global PAX header (`g`) is refused: what it sets applies to every later member, and
/// readers disagree about which records they honour.
pub const GLOBAL_PAX: &str = "the archive has a global PAX header; packages may not use them";
/// Why anything but zeros after the end-of-archive block is refused.
pub const TRAILING_DATA: &str = "data follows the end of the archive; another tar reader might see it as more members";

/// The rule after the end-of-archive block, the one of both walkers (the inspector's on a
/// stored or inflated archive, the extractor's on its stream): every byte from there to the end
/// of the (inflated) stream is zero. `read` fills its buffer from the stream, `Ok(0)` at the
/// end; it is called until the end or the first non-zero byte, so its bounds (the gzip output
/// and ratio caps) are the only bound. `Ok(Err(TRAILING_DATA))` when data follows; a read
/// error is passed through.
pub fn after_end<E>(mut read: impl FnMut(&mut [u8]) -> Result<usize, E>) -> Result<Result<(), &'static str>, E> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = read(&mut buf)?;
        if n == 0 {
            return Ok(Ok(()));
        }
        if buf.get(..n).unwrap_or(&buf).iter().any(|&b| b != 0) {
            return Ok(Err(TRAILING_DATA));
        }
    }
}

/// [`after_end`] on the rest of `src`, which a walk left just after the end-of-archive block
/// ([`Walk::end`]): trailing data becomes an issue ("The archive is refused: {reason}.").
pub(crate) fn check_after_end(src: &mut dyn Source, issues: &mut Vec<Issue>) -> Result<(), GzError> {
    if let Err(why) = after_end(|b| src.read(b))? {
        issues.push(Issue { code: codes::TAR_TRAILING_DATA, message: format!("The archive is refused: {why}.") });
    }
    Ok(())
}

/// Why an archive with more than [`TAR_MAX_MEMBERS`] members is refused.
pub fn too_many_members() -> String {
    format!("the archive has more than {TAR_MAX_MEMBERS} members")
}

/// Why a second member of the same name is refused.
pub fn duplicate_member(name: &str) -> String {
    format!("the archive holds {} twice", quoted(name))
}

/// Name of the first regular member (after PAX/GNU long-name headers) within `head`.
pub fn first_member_name(head: &[u8]) -> Option<String> {
    let mut src = SliceSource { b: head, pos: 0 };
    let mut issues = Vec::new();
    let m = walk(&mut src, 1, 0, &mut issues).ok()?;
    m.into_iter().next().map(|m| m.name)
}

/// True if the first member of the tar in `head` is an `.ovf` descriptor.
pub fn first_member_is_ovf(head: &[u8]) -> bool {
    first_member_name(head).is_some_and(|n| n.to_ascii_lowercase().ends_with(".ovf"))
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Normalised name (leading `./` removed).
    pub name: String,
    /// Type flag byte.
    pub typeflag: u8,
    /// Data size.
    pub size: u64,
    /// Offset of the data in the (decompressed) stream.
    pub offset: u64,
    /// First bytes of the data (only when capturing).
    pub head: Vec<u8>,
    /// Last bytes of the data (only when capturing).
    pub tail: Vec<u8>,
}

/// A policy violation found while walking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Finding code.
    pub code: &'static str,
    /// User-facing message.
    pub message: String,
}

/// A sequential byte source.
pub(crate) trait Source {
    /// Fills `buf`, or as much of it as the source holds before its end (0 at the end): a
    /// short read means the end, never "try again".
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError>;
    /// Current position.
    fn pos(&self) -> u64;
    /// Skips `n` bytes; sources that cannot seek read through them (the callback sees them).
    fn skip(&mut self, n: u64, see: &mut dyn FnMut(&[u8])) -> Result<u64, GzError>;
    /// True if `skip` only moves a cursor (the callback is not called).
    fn seekable(&self) -> bool;
}

struct SliceSource<'a> {
    b: &'a [u8],
    pos: u64,
}

impl Source for SliceSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError> {
        let rest = self.b.get(self.pos as usize..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), rest.get(..n)) {
            d.copy_from_slice(s);
        }
        self.pos += n as u64;
        Ok(n)
    }
    fn pos(&self) -> u64 {
        self.pos
    }
    fn skip(&mut self, n: u64, _see: &mut dyn FnMut(&[u8])) -> Result<u64, GzError> {
        let avail = (self.b.len() as u64).saturating_sub(self.pos);
        let k = n.min(avail);
        self.pos += k;
        Ok(k)
    }
    fn seekable(&self) -> bool {
        true
    }
}

/// A tar stored uncompressed (OVA): reads through [`ReadAt`], skips by moving the cursor.
pub(crate) struct ReadAtSource<'a> {
    pub src: &'a dyn ReadAt,
    pub pos: u64,
    /// Sniffing without follow-up rounds left: bytes the browser does not hold end the archive
    /// there (a partial walk the server completes) instead of being asked for.
    pub end_at_missing: bool,
}

impl Source for ReadAtSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError> {
        let n = (buf.len() as u64).min(self.src.size().saturating_sub(self.pos)) as usize;
        if let Some(b) = buf.get_mut(..n) {
            match self.src.read_exact_at(self.pos, b) {
                Ok(()) => {}
                Err(crate::read::ReadError::Missing(_)) if self.end_at_missing => return Ok(0),
                Err(e) => return Err(GzError::Stop(e.into())),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
    fn pos(&self) -> u64 {
        self.pos
    }
    fn skip(&mut self, n: u64, _see: &mut dyn FnMut(&[u8])) -> Result<u64, GzError> {
        let k = n.min(self.src.size().saturating_sub(self.pos));
        self.pos += k;
        Ok(k)
    }
    fn seekable(&self) -> bool {
        true
    }
}

/// The inflated bytes of a gzip stream (UEC).
pub(crate) struct GzSource<'a> {
    pub gz: GzStream<'a>,
    pub pos: u64,
    pub buf: Vec<u8>,
}

impl Source for GzSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.gz.read(buf.get_mut(done..).unwrap_or(&mut []))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        self.pos += done as u64;
        Ok(done)
    }
    fn pos(&self) -> u64 {
        self.pos
    }
    fn skip(&mut self, n: u64, see: &mut dyn FnMut(&[u8])) -> Result<u64, GzError> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; 64 << 10];
        }
        let mut left = n;
        while left > 0 {
            let want = (left.min(self.buf.len() as u64)) as usize;
            let mut buf = core::mem::take(&mut self.buf);
            let got = self.read(buf.get_mut(..want).unwrap_or(&mut []));
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    self.buf = buf;
                    return Err(e);
                }
            };
            see(buf.get(..got).unwrap_or(&[]));
            self.buf = buf;
            if got == 0 {
                break;
            }
            left -= got as u64;
        }
        Ok(n - left)
    }
    fn seekable(&self) -> bool {
        false
    }
}

/// Validates a member name (or an OVF `href`, which must be one): the one rule of both
/// walkers. Returns the normalised name (leading `./` removed; a directory's trailing `/` too)
/// or the reason, a lower-case fragment. Refused: names longer than [`TAR_MAX_NAME`] bytes or
/// not UTF-8, empty or absolute names, backslashes, NUL and control characters, `..`
/// components, and empty or `.` components (`a//b`, `a/./b`), which name the same file as
/// another spelling would.
pub fn check_name(raw: &[u8], directory: bool) -> Result<String, String> {
    if raw.len() > TAR_MAX_NAME {
        return Err(format!("a member name is {} bytes, longer than the {TAR_MAX_NAME} allowed", raw.len()));
    }
    let name = core::str::from_utf8(raw).map_err(|_| "a member name is not UTF-8".to_string())?;
    let mut n = name;
    while let Some(s) = n.strip_prefix("./") {
        n = s;
    }
    if directory {
        n = n.trim_end_matches('/');
    }
    if n.is_empty() {
        return Err("a member has an empty name".into());
    }
    if n.starts_with('/') {
        return Err(format!("member {} has an absolute name", quoted(n)));
    }
    if n.contains('\\') || n.chars().any(|c| c.is_control()) {
        return Err(format!("member {} has a name with backslashes or control characters", quoted(n)));
    }
    if n.split('/').any(|c| c == "..") {
        return Err(format!("member {} has a name that climbs out of the archive (..)", quoted(n)));
    }
    if n.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(format!("member {} has an empty or \".\" name component", quoted(n)));
    }
    Ok(n.to_string())
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// A name from an archive, quoted for a message: at most 100 characters, escaped as Rust
/// escapes string literals (so control characters show as `\u{..}`).
pub fn quoted(s: &str) -> String {
    format!("{:?}", short(s))
}

/// What a header of `typeflag` is, once PAX and GNU long-name records are consumed: `Ok(true)`
/// a regular file (a member), `Ok(false)` an empty directory (skipped), `Err` why it is refused
/// (links, devices, FIFOs, directories with content, sparse and unknown types). Both walkers.
pub fn member_type(name: &str, typeflag: u8, size: u64) -> Result<bool, String> {
    let kind = match typeflag {
        // '7' is a "contiguous" file: a regular file to every reader.
        b'0' | 0 | b'7' => return Ok(true),
        b'5' if size == 0 => return Ok(false),
        b'5' => return Err(format!("directory {} has content", quoted(name))),
        b'1' => "hard link",
        b'2' => "symbolic link",
        b'K' => "link (GNU long link name)",
        b'3' | b'4' => "device",
        b'6' => "FIFO",
        b'S' => "sparse file",
        _ => {
            return Err(format!(
                "member {} has the unsupported type {:?}; packages may hold regular files only",
                quoted(name),
                char::from(typeflag)
            ))
        }
    };
    Err(format!("member {} is a {kind}; packages may hold regular files only", quoted(name)))
}

/// Reads a PAX extended header (`x`): returns its `path`, if any, or why it is refused. The one
/// PAX rule of both walkers: every record must be `<len> <key>=<value>\n` in UTF-8, with `len`
/// its exact length; a `size` or `GNU.sparse.*` record (a member size that tar readers
/// disagree about: TARmageddon) and a `linkpath` record (a link) are refused.
pub fn pax_path(data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let malformed = || "a PAX header is malformed".to_string();
    let mut path = None;
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ').ok_or_else(malformed)?;
        let len = core::str::from_utf8(slice(rest, 0, sp))
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(malformed)?;
        if len <= sp + 1 || len > rest.len() || byte(rest, len - 1) != b'\n' {
            return Err(malformed());
        }
        let rec = core::str::from_utf8(slice(rest, sp + 1, len - sp - 2))
            .map_err(|_| "a PAX header is malformed (a record is not UTF-8)".to_string())?;
        let (k, v) = rec.split_once('=').ok_or_else(malformed)?;
        match k {
            "size" => return Err("a PAX header overrides a member size, which tar readers disagree about (TARmageddon)".into()),
            k if k.starts_with("GNU.sparse.") => {
                return Err("a PAX header overrides a member size, which tar readers disagree about (TARmageddon)".into())
            }
            "linkpath" => return Err("a PAX header gives a link target (linkpath); packages may hold regular files only".into()),
            "path" => path = Some(v.as_bytes().to_vec()),
            _ => {}
        }
        rest = rest.get(len..).unwrap_or(&[]);
    }
    Ok(path)
}

/// A walk's members and, when it reached the end-of-archive block, where that block starts
/// (after it only zeros may follow: see [`TRAILING_DATA`]).
pub(crate) struct Walk {
    /// Regular members, in archive order.
    pub members: Vec<Member>,
    /// Offset of the first all-zero header block, if the walk got there.
    pub end: Option<u64>,
}

/// Walks the archive: [`walk_to_end`] without the end position.
pub(crate) fn walk(src: &mut dyn Source, max: usize, capture: usize, issues: &mut Vec<Issue>) -> Result<Vec<Member>, GzError> {
    Ok(walk_to_end(src, max, capture, issues)?.members)
}

/// A regular member's header, as [`TarReader::next`] hands it over; its data follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Normalised name ([`check_name`]), or a lossy form of a refused one.
    pub name: String,
    pub typeflag: u8,
    pub size: u64,
    /// Offset of the data in the (decompressed) stream.
    pub offset: u64,
}

/// What [`TarReader::next`] found.
pub(crate) enum Next {
    /// A regular member (refused or not: see the issues); read its data with [`TarReader::read`].
    Member(Header),
    /// The end-of-archive block, at this offset; only zeros may follow ([`check_after_end`]).
    End(u64),
    /// The stream ended at a header boundary without an end block, or a structural problem
    /// (in the issues) stops the walk.
    Stop,
}

/// The one tar reader of the package inspector ([`walk_to_end`]) and the package extractor
/// (`convert::pkg::walk_tar`): header by header, PAX and GNU long-name records consumed with
/// their bounds, every rule of docs/formats.md §2.5 #19 applied in one order. Violations go to
/// the caller's issues ("The archive is refused: {reason}." for the rules' reasons); the first
/// one's bare reason is kept in [`TarReader::refusal`] for the extractor's error.
pub(crate) struct TarReader<'s> {
    src: &'s mut dyn Source,
    next_name: Option<Vec<u8>>,
    headers: usize,
    names: Vec<String>,
    /// The current member's name, data bytes not yet read or skipped, and padding after them.
    current: String,
    left: u64,
    pad: u64,
    /// The reason (or message) of the first issue this reader raised.
    pub refusal: Option<String>,
}

impl<'s> TarReader<'s> {
    pub(crate) fn new(src: &'s mut dyn Source) -> Self {
        TarReader { src, next_name: None, headers: 0, names: Vec::new(), current: String::new(), left: 0, pad: 0, refusal: None }
    }

    /// Whether the source only moves a cursor to skip (see [`Source::seekable`]).
    pub(crate) fn seekable(&self) -> bool {
        self.src.seekable()
    }

    fn issue(&mut self, issues: &mut Vec<Issue>, code: &'static str, message: String) {
        self.refusal.get_or_insert_with(|| message.trim_end_matches('.').to_owned());
        issues.push(Issue { code, message });
    }

    fn refuse(&mut self, issues: &mut Vec<Issue>, code: &'static str, reason: &str) {
        self.refusal.get_or_insert_with(|| reason.to_owned());
        issues.push(Issue { code, message: format!("The archive is refused: {reason}.") });
    }

    /// Fills `buf` with the current member's data (at most what is left of it, as
    /// [`Source::read`] fills); 0 at its end, or where the stream ends early
    /// ([`TarReader::finish_member`] then reports the truncation).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.src.read(buf.get_mut(..want).unwrap_or(&mut []))?;
        self.left -= n as u64;
        Ok(n)
    }

    /// Skips the rest of the current member's data (`see` is shown it on sources that read
    /// through) and its padding. False, with a truncation issue, when the stream ends inside
    /// the data.
    pub(crate) fn finish_member(&mut self, issues: &mut Vec<Issue>, see: &mut dyn FnMut(&[u8])) -> Result<bool, GzError> {
        let (left, pad) = (self.left, self.pad);
        self.left = 0;
        self.pad = 0;
        let skipped = if left > 0 { self.src.skip(left, see)? } else { 0 };
        if skipped < left {
            let message = format!("The archive ends inside member \"{}\"; it is truncated.", short(&self.current));
            self.issue(issues, codes::TRUNCATED, message);
            return Ok(false);
        }
        if pad > 0 {
            self.src.skip(pad, &mut |_| {})?;
        }
        Ok(true)
    }

    /// The next regular member, after finishing the current one.
    pub(crate) fn next(&mut self, issues: &mut Vec<Issue>) -> Result<Next, GzError> {
        if (self.left > 0 || self.pad > 0) && !self.finish_member(issues, &mut |_| {})? {
            return Ok(Next::Stop);
        }
        let mut hdr = [0u8; 512];
        loop {
            let at = self.src.pos();
            let n = self.src.read(&mut hdr)?;
            if n == 0 {
                if self.next_name.is_some() {
                    self.refuse(issues, codes::TAR_HEADER, "the archive ends after a name record without its member");
                }
                return Ok(Next::Stop);
            }
            if n < 512 {
                self.issue(issues, codes::TRUNCATED, "The archive ends inside a member header; it is truncated.".into());
                return Ok(Next::Stop);
            }
            if hdr.iter().all(|&c| c == 0) {
                if self.next_name.is_some() {
                    self.refuse(issues, codes::TAR_HEADER, "the archive ends after a name record without its member");
                    return Ok(Next::Stop);
                }
                return Ok(Next::End(at));
            }
            self.headers += 1;
            if self.headers > TAR_MAX_MEMBERS * 3 {
                self.refuse(issues, codes::TAR_TOO_MANY, &too_many_members());
                return Ok(Next::Stop);
            }
            if !header_ok(&hdr) {
                self.refuse(issues, codes::TAR_HEADER, HEADER_DAMAGED);
                return Ok(Next::Stop);
            }
            let Some(size) = parse_number(slice(&hdr, 124, 12)) else {
                self.issue(issues, codes::TAR_HEADER, "A tar member has an invalid size field.".into());
                return Ok(Next::Stop);
            };
            let typeflag = byte(&hdr, 156);
            let offset = self.src.pos();
            let padded = size.div_ceil(BLOCK).saturating_mul(BLOCK);
            if matches!(typeflag, b'x' | b'g' | b'L') {
                let limit = if typeflag == b'L' { TAR_MAX_NAME as u64 + 1 } else { TAR_MAX_PAX };
                if size > limit {
                    self.issue(issues, codes::TAR_PAX, "A tar extended header is too large.".into());
                    return Ok(Next::Stop);
                }
                // Bounded by `limit` (a few KiB) just above.
                let mut data = vec![0u8; padded as usize];
                if self.src.read(&mut data)? < data.len() {
                    self.issue(issues, codes::TRUNCATED, "The archive ends inside an extended header; it is truncated.".into());
                    return Ok(Next::Stop);
                }
                data.truncate(size as usize);
                match typeflag {
                    b'L' => self.next_name = Some(cstr(&data).to_vec()),
                    b'g' => {
                        self.refuse(issues, codes::TAR_PAX, GLOBAL_PAX);
                        return Ok(Next::Stop);
                    }
                    _ => match pax_path(&data) {
                        Ok(Some(p)) => self.next_name = Some(p),
                        Ok(None) => {}
                        Err(why) => {
                            self.refuse(issues, codes::TAR_PAX, &why);
                            return Ok(Next::Stop);
                        }
                    },
                }
                continue;
            }
            let raw_name = match self.next_name.take() {
                Some(n) => n,
                None => {
                    let mut n = Vec::new();
                    if has_at(&hdr, 257, b"ustar\x0000") && byte(&hdr, 345) != 0 {
                        n.extend_from_slice(cstr(slice(&hdr, 345, 155)));
                        n.push(b'/');
                    }
                    n.extend_from_slice(cstr(slice(&hdr, 0, 100)));
                    n
                }
            };
            let name = match check_name(&raw_name, typeflag == b'5') {
                Ok(n) => n,
                Err(m) => {
                    self.refuse(issues, codes::TAR_MEMBER_NAME, &m);
                    String::from_utf8_lossy(&raw_name).chars().take(100).collect()
                }
            };
            self.current = name.clone();
            self.left = size;
            self.pad = padded - size;
            match member_type(&name, typeflag, size) {
                Ok(true) => {}
                // An empty directory entry: harmless, not a member.
                Ok(false) => continue,
                Err(why) => self.refuse(issues, codes::TAR_MEMBER_TYPE, &why),
            }
            if self.names.contains(&name) {
                self.refuse(issues, codes::TAR_DUPLICATE, &duplicate_member(&name));
            }
            if self.names.len() >= TAR_MAX_MEMBERS {
                self.refuse(issues, codes::TAR_TOO_MANY, &too_many_members());
                return Ok(Next::Stop);
            }
            self.names.push(name.clone());
            return Ok(Next::Member(Header { name, typeflag, size, offset }));
        }
    }
}

/// Walks the archive with the [`TarReader`]. The walk stops after `max` regular members (a
/// partial look: pass `usize::MAX` to walk it all; more than [`TAR_MAX_MEMBERS`] is an issue
/// either way); `capture` bytes of head are kept for the first few members. Policy violations
/// go to `issues`; the walk stops at the first structural problem.
pub(crate) fn walk_to_end(src: &mut dyn Source, max: usize, capture: usize, issues: &mut Vec<Issue>) -> Result<Walk, GzError> {
    let mut reader = TarReader::new(src);
    let mut members: Vec<Member> = Vec::new();
    let mut end = None;
    loop {
        let h = match reader.next(issues)? {
            Next::Member(h) => h,
            Next::End(at) => {
                end = Some(at);
                break;
            }
            Next::Stop => break,
        };
        let mut m = Member { name: h.name, typeflag: h.typeflag, size: h.size, offset: h.offset, head: Vec::new(), tail: Vec::new() };
        let want_capture = capture > 0 && members.len() < MAX_CAPTURED;
        if want_capture {
            m.head = vec![0u8; (capture as u64).min(h.size) as usize];
            let got = reader.read(&mut m.head)?;
            m.head.truncate(got);
        }
        let keep_tail = want_capture && !reader.seekable();
        let mut tail: Vec<u8> = Vec::new();
        if keep_tail {
            let h = &m.head;
            tail.extend_from_slice(h.get(h.len().saturating_sub(CAPTURE_TAIL)..).unwrap_or(&[]));
        }
        let complete = reader.finish_member(issues, &mut |chunk: &[u8]| {
            if keep_tail {
                tail.extend_from_slice(chunk);
                if tail.len() > CAPTURE_TAIL {
                    tail.drain(..tail.len() - CAPTURE_TAIL);
                }
            }
        })?;
        m.tail = tail;
        members.push(m);
        if !complete || members.len() >= max {
            break;
        }
    }
    Ok(Walk { members, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        for (raw, dir, want) in [
            ("a.ovf", false, "a.ovf"),
            ("./disk1.vmdk", false, "disk1.vmdk"),
            ("././disk1.vmdk", false, "disk1.vmdk"),
            ("sub/x.vmdk", false, "sub/x.vmdk"),
            ("disk..1.vmdk", false, "disk..1.vmdk"),
            ("C:disk1.vmdk", false, "C:disk1.vmdk"),
            ("sub/", true, "sub"),
        ] {
            assert_eq!(check_name(raw.as_bytes(), dir).as_deref(), Ok(want), "{raw}");
        }
        for (raw, why) in [
            ("/etc/passwd", "absolute"),
            ("../x", "climbs out"),
            ("a/../b", "climbs out"),
            ("", "empty name"),
            ("./", "empty name"),
            ("a//b", "empty or \".\" name component"),
            ("a/./b", "empty or \".\" name component"),
            (".", "empty or \".\" name component"),
            ("x/", "empty or \".\" name component"),
            ("a\\b", "backslashes"),
            ("a\nb", "control characters"),
            ("a\0b", "control characters"),
        ] {
            let e = check_name(raw.as_bytes(), false).expect_err(raw);
            assert!(e.contains(why), "{raw:?}: {e}");
        }
        assert!(check_name(b"a\xffb", false).unwrap_err().contains("UTF-8"));
        let long = "x".repeat(TAR_MAX_NAME + 1);
        assert!(check_name(long.as_bytes(), false).unwrap_err().contains("longer than the 1024 allowed"));
        // A name is quoted escaped, and cut at 100 characters.
        let e = check_name("../\u{1b}[31m".as_bytes(), false).unwrap_err();
        assert!(e.contains(r#""../\u{1b}[31m""#), "{e}");
    }

    #[test]
    fn pax_records() {
        assert_eq!(pax_path(b"20 path=abc/def.txt\n"), Ok(Some(b"abc/def.txt".to_vec())));
        assert_eq!(pax_path(b"15 comment=hey\n"), Ok(None));
        assert_eq!(pax_path(b""), Ok(None));
        for bad in [&b"99 path=x\n"[..], b"x", b"garbage", b"11 path=x\n", b"10 path=x!", b"9 pathx\n", b" 9 path=\n", b"+9 path=x\n"] {
            assert_eq!(pax_path(bad), Err("a PAX header is malformed".into()), "{bad:?}");
        }
        assert!(pax_path(b"10 path=\xff\n").unwrap_err().contains("not UTF-8"));
        for key in ["size", "GNU.sparse.size", "GNU.sparse.map"] {
            let rec = format!(" {key}=0\n");
            let rec = format!("{}{rec}", rec.len() + 2);
            assert!(pax_path(rec.as_bytes()).unwrap_err().contains("TARmageddon"), "{key}");
        }
        assert!(pax_path(b"21 linkpath=/etc/pwd\n").unwrap_err().contains("link target"));
    }

    #[test]
    fn only_zeros_after_the_end() {
        // `read` hands out `data` in pieces of `step` bytes.
        let run = |data: &[u8], step: usize| {
            let mut at = 0;
            let mut calls = 0;
            let r = after_end(|buf: &mut [u8]| -> Result<usize, ()> {
                calls += 1;
                let n = step.min(buf.len()).min(data.len() - at);
                buf[..n].copy_from_slice(&data[at..at + n]);
                at += n;
                Ok(n)
            });
            (r, at, calls)
        };
        assert_eq!(run(b"", 7).0, Ok(Ok(())));
        assert_eq!(run(&[0u8; 200_000], 100_000).0, Ok(Ok(())));
        let mut data = vec![0u8; 200_000];
        data[150_000] = 1;
        let (r, at, _) = run(&data, 1 << 20);
        assert_eq!(r, Ok(Err(TRAILING_DATA)));
        // It stops at the first piece holding data: the rest is never read.
        assert!(at < data.len(), "{at}");
        assert_eq!(run(b"\0\0x", 1).0, Ok(Err(TRAILING_DATA)));
        // Read errors pass through.
        assert_eq!(after_end(|_: &mut [u8]| Err::<usize, _>("eio")), Err("eio"));
        // Through a walker's source: an issue in the shared words.
        let mut issues = Vec::new();
        let mut src = SliceSource { b: b"\0\0PK", pos: 0 };
        check_after_end(&mut src, &mut issues).unwrap();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].code, codes::TAR_TRAILING_DATA);
        assert_eq!(issues[0].message, format!("The archive is refused: {TRAILING_DATA}."));
        let mut src = SliceSource { b: &[0u8; 1024], pos: 0 };
        check_after_end(&mut src, &mut issues).unwrap();
        assert_eq!(issues.len(), 1);
    }

    #[test]
    fn member_types() {
        for t in [b'0', 0, b'7'] {
            assert_eq!(member_type("a", t, 5), Ok(true));
        }
        assert_eq!(member_type("d", b'5', 0), Ok(false));
        for (t, why) in [
            (b'5', "directory \"d\" has content"),
            (b'1', "is a hard link"),
            (b'2', "is a symbolic link"),
            (b'K', "is a link"),
            (b'3', "is a device"),
            (b'4', "is a device"),
            (b'6', "is a FIFO"),
            (b'S', "is a sparse file"),
            (b'V', "the unsupported type 'V'"),
            (1, "the unsupported type '\\u{1}'"),
        ] {
            let e = member_type("d", t, 1).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn headers() {
        let mut h = [0u8; 512];
        h[..5].copy_from_slice(b"a.ovf");
        h[124..136].copy_from_slice(b"00000000005\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sign = |h: &mut [u8; 512]| {
            h[148..156].fill(b' ');
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        };
        sign(&mut h);
        assert!(header_ok(&h) && checksum_ok(&h));
        // A pre-POSIX header: no magic.
        let mut v7 = h;
        v7[257..265].fill(0);
        sign(&mut v7);
        assert!(!header_ok(&v7));
        // A signed checksum (bytes above 0x7f summed as negative): detection allows it, the
        // walkers do not (the extractor's tar reader refuses it).
        let mut signed = h;
        signed[0] = 0xe9;
        let s: i64 = signed.iter().enumerate().map(|(i, &c)| i64::from(if (148..156).contains(&i) { 32 } else { c as i8 })).sum();
        signed[148..156].copy_from_slice(format!("{s:06o}\0 ").as_bytes());
        assert!(checksum_ok(&signed) && !header_ok(&signed));
        assert!(!header_ok(&h[..511]));
    }
}
