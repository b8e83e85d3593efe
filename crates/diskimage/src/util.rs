//! Small helpers: bounds-checked integer getters and checksums.
//!
//! The getters return 0 when the bytes are not there, so callers must check the buffer length
//! first when a missing field matters (each parser checks its header length up front).

macro_rules! getter {
    ($name:ident, $ty:ty, $n:expr, $conv:ident) => {
        /// Reads an integer at `off`; 0 if the slice is too short.
        pub fn $name(b: &[u8], off: usize) -> $ty {
            match off.checked_add($n).and_then(|end| b.get(off..end)) {
                Some(s) => {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(s);
                    <$ty>::$conv(a)
                }
                None => 0,
            }
        }
    };
}

getter!(be16, u16, 2, from_be_bytes);
getter!(be32, u32, 4, from_be_bytes);
getter!(be64, u64, 8, from_be_bytes);
getter!(le16, u16, 2, from_le_bytes);
getter!(le32, u32, 4, from_le_bytes);
getter!(le64, u64, 8, from_le_bytes);

/// One byte at `off`, 0 if out of range.
pub fn byte(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// True if `b[off..]` starts with `pat`.
pub fn has_at(b: &[u8], off: usize, pat: &[u8]) -> bool {
    off.checked_add(pat.len()).and_then(|end| b.get(off..end)).is_some_and(|s| s == pat)
}

/// A sub-slice, empty if out of range.
pub fn slice(b: &[u8], off: usize, len: usize) -> &[u8] {
    off.checked_add(len).and_then(|end| b.get(off..end)).unwrap_or(&[])
}

/// A 16-byte array at `off` (zeroes if out of range).
pub fn arr16(b: &[u8], off: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    let s = slice(b, off, 16);
    if s.len() == 16 {
        a.copy_from_slice(s);
    }
    a
}

const fn crc_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
static CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

fn crc_update(table: &[u32; 256], mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// Streaming CRC-32 (IEEE, as used by GPT and gzip): pass the previous value, start with 0.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    !crc_update(&CRC32_TABLE, !crc, data)
}

/// CRC-32 (IEEE).
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// CRC-32C (Castagnoli, as used by VHDX).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc_update(&CRC32C_TABLE, !0, data)
}

/// Decodes UTF-16 (LE or BE) up to the first NUL, lossily.
pub fn utf16_lossy(b: &[u8], big_endian: bool) -> String {
    let units = b.chunks_exact(2).map(|c| {
        let a = [c[0], c[1]];
        if big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    });
    let units: Vec<u16> = units.take_while(|&u| u != 0).collect();
    String::from_utf16_lossy(&units)
}

/// Printable rendering of a short byte string for messages.
pub fn printable(b: &[u8], max: usize) -> String {
    let mut s: String =
        b.iter().take(max).take_while(|&&c| c != 0).map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '?' }).collect();
    if b.len() > max {
        s.push('…');
    }
    s
}

/// True if `[a, a+al)` and `[b, b+bl)` overlap (empty ranges never overlap).
pub fn overlaps(a: u64, al: u64, b: u64, bl: u64) -> bool {
    al != 0 && bl != 0 && a < b.saturating_add(bl) && b < a.saturating_add(al)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_vectors() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn getters_are_total() {
        assert_eq!(be32(&[1, 2, 3], 0), 0);
        assert_eq!(be32(&[0, 0, 1, 0], 0), 256);
        assert_eq!(le64(&[], usize::MAX), 0);
        assert!(!has_at(b"ab", usize::MAX, b"a"));
    }
}
