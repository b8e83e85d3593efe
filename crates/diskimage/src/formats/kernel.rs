//! AKI (Linux kernels) and ARI (initrds): docs/formats.md §2.5 #21.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::util::{byte, has_at, le16};

/// Kernel kinds Hangar recognises.
pub fn kernel_kind(h: &[u8]) -> Option<&'static str> {
    if has_at(h, 0x202, b"HdrS") {
        Some("bzimage")
    } else if has_at(h, 0x38, b"ARM\x64") {
        Some("arm64")
    } else if has_at(h, 0x30, b"RSC\x05") {
        Some("riscv")
    } else if has_at(h, 0, b"\x7fELF") {
        Some("elf")
    } else {
        None
    }
}

/// A kernel for a UEC member check: the above, or a PE/COFF (`MZ`) EFI-stub kernel.
pub fn is_kernel_member(h: &[u8]) -> bool {
    kernel_kind(h).is_some() || has_at(h, 0, b"MZ")
}

/// Initrd kinds: cpio archives and the compressed streams the kernel can unpack.
/// `weak` also accepts the legacy lzma header (`5D 00 00`), which is too weak to detect alone.
pub fn initrd_kind(h: &[u8], weak: bool) -> Option<&'static str> {
    if has_at(h, 0, b"070701")
        || has_at(h, 0, b"070702")
        || has_at(h, 0, b"070707")
        || has_at(h, 0, b"\xc7\x71")
        || has_at(h, 0, b"\x71\xc7")
    {
        Some("cpio")
    } else if has_at(h, 0, b"\x28\xb5\x2f\xfd") {
        Some("zstd")
    } else if has_at(h, 0, b"\xfd7zXZ\0") {
        Some("xz")
    } else if has_at(h, 0, b"\x02\x21\x4c\x18") || has_at(h, 0, b"\x04\x22\x4d\x18") {
        Some("lz4")
    } else if has_at(h, 0, b"BZh") && (b'1'..=b'9').contains(&byte(h, 3)) {
        Some("bzip2")
    } else if has_at(h, 0, b"\x89LZO\0\r\n\x1a\n") {
        Some("lzop")
    } else if weak && has_at(h, 0, b"\x5d\0\0") {
        Some("lzma")
    } else {
        None
    }
}

pub(crate) fn inspect_aki(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let h = det.head.as_slice();
    let kind = kernel_kind(h).unwrap_or("unknown");
    if kind == "bzimage" {
        // Boot protocol ≥ 2.00 and the boot-sector signature (Linux boot protocol, x86).
        if le16(h, 0x206) < 0x200 || !has_at(h, 0x1FE, b"\x55\xAA") {
            cx.error(codes::AKI_INVALID, "The kernel's x86 boot header is invalid.");
        }
    }
    if kind == "elf" && !matches!(byte(h, 4), 1 | 2) {
        cx.error(codes::AKI_INVALID, "The ELF kernel header is invalid.");
    }
    Ok(Parsed::new(kind, None))
}

pub(crate) fn inspect_ari(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let h = det.head.as_slice();
    if crate::formats::gzip::is_gzip(h) {
        if cx.deep {
            crate::formats::gzip::verify_stream(cx)?;
        }
        return Ok(Parsed::new("gzip", None));
    }
    let kind = initrd_kind(h, true).unwrap_or("unknown");
    if kind == "cpio" && has_at(h, 0, b"0707") {
        // newc/crc: 110-byte header of hex fields.
        if h.len() < 110 || !h.iter().take(110).skip(6).all(|c| c.is_ascii_hexdigit()) && !has_at(h, 0, b"070707") {
            cx.error(codes::ARI_INVALID, "The initrd's cpio header is invalid.");
        }
    }
    Ok(Parsed::new(kind, None))
}
