//! LUKS and QED: recognised in order to refuse them with a clear message.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::Detection;
use crate::util::{be16, be32, le64};

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let h = det.head.as_slice();
    let version = be16(h, 6);
    cx.error(
        codes::LUKS_ENCRYPTED,
        "This is a LUKS encrypted volume; its contents cannot be checked without the key, so upload the decrypted disk image.",
    );
    // LUKS1: payload offset (sectors) at 104; the payload is the guest disk.
    let vs = if version == 1 && h.len() >= 108 { cx.size.checked_sub(u64::from(be32(h, 104)).saturating_mul(512)) } else { None };
    Ok(Parsed::new(format!("luks{version}"), vs))
}

pub(crate) fn inspect_qed(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    cx.error(
        codes::FORMAT_NOT_ALLOWED,
        "QED images are not accepted (QEMU has deprecated the format); convert it to qcow2 with qemu-img first.",
    );
    let vs = if det.head.len() >= 56 { Some(le64(&det.head, 48)) } else { None };
    Ok(Parsed { subformat: None, virtual_size: vs, package: None })
}
