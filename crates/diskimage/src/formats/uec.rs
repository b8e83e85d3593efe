//! UEC tarballs: a gzip'd tar with a machine image (`*.img`), usually a kernel (`*vmlinuz*`) and
//! a ramdisk (`*initrd*`). docs/formats.md §2.5 #21.

use crate::codes;
use crate::ctx::{Ctx, PResult, Parsed};
use crate::detect::{detect, Detection};
use crate::formats::gzip::{self, GzStream};
use crate::formats::kernel;
use crate::formats::tar::{self, GzSource};
use crate::limits::{GZIP_SNIFF_WALK, UEC_MEMBER_HEAD};
use crate::read::SparseBytes;
use crate::report::{PackageDisk, PackageFacts, PackageMember};

/// The role of a UEC member, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `*.img`: the machine image (AMI).
    Image,
    /// `*vmlinuz*`: the kernel (AKI).
    Kernel,
    /// `*initrd*`: the ramdisk (ARI).
    Ramdisk,
    /// README, loader, anything else.
    Other,
}

/// Classifies a member name.
pub fn role(name: &str) -> Role {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    if base.contains("vmlinuz") || base.contains("kernel") {
        Role::Kernel
    } else if base.contains("initrd") || base.contains("initramfs") {
        Role::Ramdisk
    } else if base.ends_with(".img") {
        Role::Image
    } else {
        Role::Other
    }
}

pub(crate) fn inspect(cx: &mut Ctx, det: &Detection) -> PResult<Parsed> {
    let mut issues = Vec::new();
    // The browser looks at the members inside the inflated head only.
    let members = if cx.deep {
        let gz = match GzStream::new(cx.src, &det.head).map(GzStream::whole) {
            Ok(g) => g,
            Err(e) => {
                gzip::report(cx, e)?;
                return Ok(Parsed::new("tar.gz", None));
            }
        };
        let mut src = GzSource { gz, pos: 0, buf: Vec::new() };
        // The whole stream is inflated (within the gzip caps), past the end of the archive
        // too: after it only zeros may follow, as the extractor requires (the shared rule).
        let walked = tar::walk_to_end(&mut src, usize::MAX, UEC_MEMBER_HEAD, &mut issues).and_then(|w| {
            if w.end.is_some() {
                tar::check_after_end(&mut src, &mut issues)?;
            }
            Ok((w.members, w.end.is_some()))
        });
        match walked {
            Ok(w) => w,
            Err(e) => {
                gzip::report(cx, e)?;
                return Ok(Parsed::new("tar.gz", None));
            }
        }
    } else {
        let gz = match GzStream::with_limit(&det.head, &det.head, GZIP_SNIFF_WALK, true) {
            Ok(g) => g,
            Err(_) => return Ok(Parsed::new("tar.gz", None)),
        };
        let mut src = GzSource { gz, pos: 0, buf: Vec::new() };
        // What the head inflates to past the end of the archive is checked too: a non-zero
        // byte there is trailing data whatever follows (zeros up to the head's end prove
        // nothing, and stay silent).
        match tar::walk_to_end(&mut src, usize::MAX, 4096, &mut issues) {
            Ok(w) => {
                if w.end.is_some() {
                    let _ = tar::check_after_end(&mut src, &mut issues);
                }
                (w.members, w.end.is_some())
            }
            Err(_) => (Vec::new(), false),
        }
    };
    let (members, complete) = members;
    for i in issues {
        if cx.deep || i.code != codes::TRUNCATED {
            cx.error(i.code, i.message);
        }
    }
    let mut images = 0;
    let mut image_size = None;
    for m in &members {
        let name: String = m.name.chars().take(100).collect();
        match role(&m.name) {
            Role::Kernel => {
                if !m.head.is_empty() && !kernel::is_kernel_member(&m.head) {
                    cx.error(codes::UEC_KERNEL, format!("UEC member \"{name}\" is named like a kernel but is not a Linux kernel."));
                }
            }
            Role::Ramdisk => {
                let ok = kernel::initrd_kind(&m.head, true).is_some() || gzip::is_gzip(&m.head);
                if !m.head.is_empty() && !ok {
                    cx.error(codes::UEC_RAMDISK, format!("UEC member \"{name}\" is named like a ramdisk but is not an initrd."));
                }
            }
            Role::Image => {
                images += 1;
                image_size = Some(m.size);
                if cx.deep {
                    // The image must be raw: run detection over its head and tail.
                    let mut view = SparseBytes::new(m.size);
                    view.insert(0, m.head.clone());
                    let tail_off = m.size.saturating_sub(m.tail.len() as u64);
                    if tail_off >= m.head.len() as u64 || m.size <= m.head.len() as u64 {
                        view.insert(tail_off, m.tail.clone());
                    }
                    let inner = Ctx::new(&view, false);
                    match detect(&inner, None) {
                        Ok(d) if d.rich.is_empty() => {}
                        Ok(d) => {
                            let names: Vec<&str> = d.rich.iter().map(|(f, _)| f.as_str()).collect();
                            cx.error(
                                codes::UEC_IMAGE,
                                format!("The machine image \"{name}\" in the UEC tarball is not a raw disk but {}; such hidden formats are refused.", names.join(", ")),
                            );
                        }
                        Err(_) => {}
                    }
                }
            }
            Role::Other => {
                cx.info(codes::UEC_MEMBERS, format!("UEC member \"{name}\" is not a kernel, ramdisk or image and will be ignored."))
            }
        }
    }
    if cx.deep && images != 1 {
        cx.error(codes::UEC_MEMBERS, format!("A UEC tarball must hold exactly one machine image (*.img); this one holds {images}."));
    }
    let mut parsed = Parsed::new("tar.gz", image_size);
    parsed.package = Some(facts(&members, complete));
    Ok(parsed)
}

/// What the tarball holds, for people: its machine image, kernel and ramdisk (each becomes an
/// image) and every member met (the browser: those the inflated head holds).
fn facts(members: &[tar::Member], complete: bool) -> PackageFacts {
    let short = |s: &str| s.chars().take(100).collect::<String>();
    let mut facts = PackageFacts { complete, ..PackageFacts::default() };
    for m in members.iter().take(crate::limits::TAR_MAX_MEMBERS) {
        let (role, format) = match role(&m.name) {
            Role::Image => ("image", Some("ami")),
            Role::Kernel => ("kernel", Some("aki")),
            Role::Ramdisk => ("ramdisk", Some("ari")),
            Role::Other => ("other", None),
        };
        if let Some(format) = format {
            facts.disks.push(PackageDisk {
                id: role.to_owned(),
                member: short(&m.name),
                format: format.to_owned(),
                capacity: (role == "image").then_some(m.size),
                size: Some(m.size),
            });
        }
        facts.members.push(PackageMember { name: short(&m.name), size: m.size, role: role.to_owned() });
    }
    // The machine image first: it is the image the upload becomes.
    facts.disks.sort_by_key(|d| d.id != "image");
    facts
}
