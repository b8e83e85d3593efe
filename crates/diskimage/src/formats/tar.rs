//! tar walking with the member policy of formats.md §2.5 #19 (shared by OVA and UEC).
//!
//! Nothing is ever extracted: the walker only records names, types, sizes and offsets, and
//! optionally the first bytes of a few members so the caller can identify them.

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
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&c| c == b' ')
        .take_while(|&c| c != 0 && c != b' ')
        .collect();
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
    /// Reads up to `buf.len()` bytes; 0 at the end.
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
}

impl Source for ReadAtSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, GzError> {
        let n = (buf.len() as u64).min(self.src.size().saturating_sub(self.pos)) as usize;
        if let Some(b) = buf.get_mut(..n) {
            self.src
                .read_exact_at(self.pos, b)
                .map_err(|e| GzError::Stop(e.into()))?;
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

/// Validates a member name; returns the normalised name or a reason.
fn check_name(raw: &[u8]) -> Result<String, String> {
    if raw.len() > TAR_MAX_NAME {
        return Err("a member name is too long".into());
    }
    let name =
        core::str::from_utf8(raw).map_err(|_| "a member name is not valid UTF-8".to_string())?;
    let mut n = name;
    while let Some(s) = n.strip_prefix("./") {
        n = s;
    }
    if n.is_empty() {
        return Err("a member has an empty name".into());
    }
    if n.starts_with('/') {
        return Err(format!("member \"{}\" has an absolute name", short(n)));
    }
    if n.contains('\\') || n.contains('\0') || n.chars().any(|c| c.is_control()) {
        return Err(format!(
            "member \"{}\" has a name with backslashes or control characters",
            short(n)
        ));
    }
    if n.split('/').any(|c| c == "..") {
        return Err(format!(
            "member \"{}\" has a name that climbs out of the archive (..)",
            short(n)
        ));
    }
    Ok(n.trim_end_matches('/').to_string())
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Parses PAX records; returns (path override, size override present).
fn parse_pax(data: &[u8]) -> (Option<Vec<u8>>, bool) {
    let mut path = None;
    let mut size = false;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&c| c == b' ') else {
            break;
        };
        let Some(len) = core::str::from_utf8(slice(rest, 0, sp))
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp || len > rest.len() {
            break;
        }
        let rec = slice(rest, sp + 1, len - sp - 1);
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&c| c == b'=') {
            let (k, v) = (slice(rec, 0, eq), slice(rec, eq + 1, rec.len() - eq - 1));
            match k {
                b"path" => path = Some(v.to_vec()),
                b"size" | b"GNU.sparse.size" | b"GNU.sparse.realsize" | b"GNU.sparse.map" => {
                    size = true
                }
                _ => {}
            }
        }
        rest = rest.get(len..).unwrap_or(&[]);
    }
    (path, size)
}

/// Walks the archive. `max` regular members are returned (more is an issue); `capture` bytes of
/// head are kept for the first few members. Policy violations go to `issues`; the walk stops at
/// the first structural problem.
pub(crate) fn walk(
    src: &mut dyn Source,
    max: usize,
    capture: usize,
    issues: &mut Vec<Issue>,
) -> Result<Vec<Member>, GzError> {
    let mut members: Vec<Member> = Vec::new();
    let mut next_name: Option<Vec<u8>> = None;
    let mut hdr = [0u8; 512];
    let mut headers = 0usize;
    let issue = |issues: &mut Vec<Issue>, code: &'static str, message: String| {
        issues.push(Issue { code, message })
    };
    loop {
        let n = src.read(&mut hdr)?;
        if n == 0 {
            break;
        }
        if n < 512 {
            issue(
                issues,
                codes::TRUNCATED,
                "The archive ends inside a member header; it is truncated.".into(),
            );
            break;
        }
        if hdr.iter().all(|&c| c == 0) {
            break; // End-of-archive marker.
        }
        headers += 1;
        if headers > TAR_MAX_MEMBERS * 3 {
            issue(
                issues,
                codes::TAR_TOO_MANY,
                format!("The archive has more than {TAR_MAX_MEMBERS} members."),
            );
            break;
        }
        if !is_tar_header(&hdr) || !checksum_ok(&hdr) {
            issue(
                issues,
                codes::TAR_HEADER,
                "A tar member header is damaged (bad magic or checksum).".into(),
            );
            break;
        }
        let Some(size) = parse_number(slice(&hdr, 124, 12)) else {
            issue(
                issues,
                codes::TAR_HEADER,
                "A tar member has an invalid size field.".into(),
            );
            break;
        };
        let typeflag = byte(&hdr, 156);
        let data_off = src.pos();
        let padded = size.div_ceil(BLOCK).saturating_mul(BLOCK);
        match typeflag {
            b'x' | b'g' | b'L' => {
                let limit = if typeflag == b'L' {
                    TAR_MAX_NAME as u64 + 1
                } else {
                    TAR_MAX_PAX
                };
                if size > limit {
                    issue(
                        issues,
                        codes::TAR_PAX,
                        "A tar extended header is too large.".into(),
                    );
                    break;
                }
                let mut data = vec![0u8; padded as usize];
                if src.read(&mut data)? < padded as usize {
                    issue(
                        issues,
                        codes::TRUNCATED,
                        "The archive ends inside an extended header; it is truncated.".into(),
                    );
                    break;
                }
                data.truncate(size as usize);
                if typeflag == b'L' {
                    next_name = Some(cstr(&data).to_vec());
                } else {
                    let (path, size_override) = parse_pax(&data);
                    if size_override {
                        issue(
                            issues,
                            codes::TAR_PAX,
                            "The archive overrides a member size in a PAX header, which tar readers disagree about (TARmageddon); it is refused.".into(),
                        );
                        break;
                    }
                    if typeflag == b'x' {
                        if let Some(p) = path {
                            next_name = Some(p);
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        let raw_name = match next_name.take() {
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
        let name = match check_name(&raw_name) {
            Ok(n) => n,
            Err(m) => {
                issue(
                    issues,
                    codes::TAR_MEMBER_NAME,
                    format!("The archive is refused: {m}."),
                );
                String::from_utf8_lossy(&raw_name)
                    .chars()
                    .take(100)
                    .collect()
            }
        };
        match typeflag {
            b'0' | 0 | b'7' => {}
            b'5' if size == 0 => {
                // An empty directory entry: harmless, not a member.
                continue;
            }
            b'1' | b'2' | b'K' => issue(
                issues,
                codes::TAR_MEMBER_TYPE,
                format!(
                    "Member \"{}\" is a link; links are not accepted in archives.",
                    short(&name)
                ),
            ),
            b'3' | b'4' | b'6' => issue(
                issues,
                codes::TAR_MEMBER_TYPE,
                format!("Member \"{}\" is a device or FIFO.", short(&name)),
            ),
            b'5' => issue(
                issues,
                codes::TAR_MEMBER_TYPE,
                format!("Member \"{}\" is a directory with content.", short(&name)),
            ),
            t => issue(
                issues,
                codes::TAR_MEMBER_TYPE,
                format!(
                    "Member \"{}\" has an unsupported type '{}'.",
                    short(&name),
                    t as char
                ),
            ),
        }
        if members.iter().any(|m| m.name == name) {
            issue(
                issues,
                codes::TAR_DUPLICATE,
                format!("The archive contains \"{}\" twice.", short(&name)),
            );
        }
        if members.len() >= TAR_MAX_MEMBERS {
            issue(
                issues,
                codes::TAR_TOO_MANY,
                format!("The archive has more than {TAR_MAX_MEMBERS} members."),
            );
            break;
        }
        let mut m = Member {
            name,
            typeflag,
            size,
            offset: data_off,
            head: Vec::new(),
            tail: Vec::new(),
        };
        let want_capture = capture > 0 && members.len() < MAX_CAPTURED;
        let mut consumed = 0u64;
        if want_capture {
            let k = (capture as u64).min(size) as usize;
            m.head = vec![0u8; k];
            let got = src.read(&mut m.head)?;
            m.head.truncate(got);
            consumed = got as u64;
        }
        let keep_tail = want_capture && !src.seekable();
        let mut tail: Vec<u8> = Vec::new();
        if keep_tail {
            let h = &m.head;
            tail.extend_from_slice(h.get(h.len().saturating_sub(CAPTURE_TAIL)..).unwrap_or(&[]));
        }
        let rest = padded.saturating_sub(consumed);
        let data_rest = size.saturating_sub(consumed);
        let mut seen = 0u64;
        let skipped = src.skip(rest, &mut |chunk: &[u8]| {
            if keep_tail {
                let useful = data_rest.saturating_sub(seen).min(chunk.len() as u64) as usize;
                tail.extend_from_slice(chunk.get(..useful).unwrap_or(&[]));
                if tail.len() > CAPTURE_TAIL {
                    tail.drain(..tail.len() - CAPTURE_TAIL);
                }
            }
            seen += chunk.len() as u64;
        })?;
        m.tail = tail;
        if skipped < rest && consumed.saturating_add(skipped) < size {
            issue(
                issues,
                codes::TRUNCATED,
                format!(
                    "The archive ends inside member \"{}\"; it is truncated.",
                    short(&m.name)
                ),
            );
            members.push(m);
            break;
        }
        members.push(m);
        if members.len() >= max {
            break;
        }
    }
    Ok(members)
}
