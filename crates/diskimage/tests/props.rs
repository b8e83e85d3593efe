//! Property tests: random and mutated inputs never panic, stay under the memory bound, and sniff
//! agrees with inspect on the format wherever sniff decides.
//!
//! Heap use is measured by a counting global allocator (per thread, so parallel tests do not
//! disturb each other). Implementing `GlobalAlloc` needs `unsafe impl`; the crate itself forbids
//! unsafe code, this test binary is the one exception.
#![allow(unsafe_code)]

use diskimage::limits::MEMORY_BOUND;
use diskimage::{codes, inspect, sniff, InspectOptions, SniffOutcome, SparseBytes};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Command;
use std::sync::OnceLock;

struct Counting;

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
    static PEAK: Cell<u64> = const { Cell::new(0) };
}

fn add(n: u64) {
    let _ = CURRENT.try_with(|c| {
        let v = c.get().saturating_add(n);
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn sub(n: u64) {
    let _ = CURRENT.try_with(|c| c.set(c.get().saturating_sub(n)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        add(l.size() as u64);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        sub(l.size() as u64);
        // SAFETY: `p` was allocated by `System` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        add(l.size() as u64);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        add(new as u64);
        sub(l.size() as u64);
        // SAFETY: `p`/`l` come from this allocator; `new` is the caller's requested size.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result and the peak heap it added on this thread.
fn measured<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    (r, peak)
}

/// The browser's view: head + tail, then follow-ups from the same bytes.
fn sniff_like_browser(data: &[u8]) -> diskimage::Report {
    let mut view = SparseBytes::new(data.len() as u64);
    let (h, t) = SparseBytes::initial_ranges(data.len() as u64);
    for r in [h, t] {
        view.insert(r.offset, data[r.offset as usize..r.end() as usize].to_vec());
    }
    for _ in 0..16 {
        match sniff(&view) {
            SniffOutcome::Done(r) => return r,
            SniffOutcome::NeedMore(ranges) => {
                for r in ranges {
                    assert!(r.len > 0 && r.end() <= data.len() as u64, "sniff asked for {r:?} of {}", data.len());
                    view.insert(r.offset, data[r.offset as usize..r.end() as usize].to_vec());
                }
            }
        }
    }
    panic!("sniff did not finish within 16 rounds");
}

/// Inspect + sniff one input and check the properties.
fn check_input(data: &[u8]) -> Result<(), TestCaseError> {
    let (report, peak) = measured(|| inspect(data, &InspectOptions::default()));
    prop_assert!(peak < MEMORY_BOUND, "inspect used {peak} bytes of heap (format {})", report.format);
    let (s, speak) = measured(|| sniff_like_browser(data));
    // The sniff view itself holds the pieces; the bound is on the parser's own use on top.
    prop_assert!(speak < MEMORY_BOUND + 2 * (256 << 10), "sniff used {speak} bytes");
    if !s.has(codes::SNIFF_INCOMPLETE) {
        prop_assert_eq!(s.format, report.format, "sniff and inspect disagree");
    }
    Ok(())
}

/// Small valid images of several formats, made once by qemu-img (and a hand-made tar/ISO).
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let base = d.join("base.raw");
        let mut raw = vec![0u8; 4 << 20];
        raw[(1 << 20)..(1 << 20) + 4096].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 % 251) as u8);
        raw[510] = 0x55;
        raw[511] = 0xAA;
        raw[446 + 4] = 0x83;
        raw[446 + 8] = 1;
        std::fs::write(&base, &raw).expect("write base");
        let qemu = |args: &[&str]| {
            let st = Command::new("qemu-img").args(args).status().expect("qemu-img is required");
            assert!(st.success(), "qemu-img {args:?} failed");
        };
        let b = base.to_str().expect("utf8 path");
        let out = |n: &str| d.join(n).to_string_lossy().into_owned();
        qemu(&["convert", "-f", "raw", "-O", "qcow2", b, &out("a.qcow2")]);
        qemu(&["convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", b, &out("b.qcow2")]);
        qemu(&["convert", "-f", "raw", "-O", "vdi", b, &out("c.vdi")]);
        qemu(&["convert", "-f", "raw", "-O", "vpc", b, &out("d.vhd")]);
        qemu(&["convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", b, &out("e.vhd")]);
        qemu(&["convert", "-f", "raw", "-O", "vhdx", b, &out("f.vhdx")]);
        qemu(&["convert", "-f", "raw", "-O", "vmdk", b, &out("g.vmdk")]);
        qemu(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", b, &out("h.vmdk")]);
        qemu(&["create", "-q", "-f", "qed", &out("i.qed"), "4M"]);
        let mut v: Vec<Vec<u8>> = ["a.qcow2", "b.qcow2", "c.vdi", "d.vhd", "e.vhd", "f.vhdx", "g.vmdk", "h.vmdk", "i.qed"]
            .iter()
            .map(|n| std::fs::read(d.join(n)).expect("read seed"))
            .collect();
        v.push(raw);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..70_000)) {
        check_input(&data)?;
    }

    #[test]
    fn random_bytes_behind_a_magic_never_panic(
        magic in prop::sample::select(vec![
            &b"QFI\xfb\0\0\0\x03"[..], b"QFI\xfb\0\0\0\x02", b"KDMV", b"COWD", b"conectix", b"vhdxfile", b"QED\0",
            b"LUKS\xba\xbe", b"\x1f\x8b\x08\0", b"070701", b"\x28\xb5\x2f\xfd", b"# Disk DescriptorFile\nversion=1\n",
        ]),
        body in proptest::collection::vec(any::<u8>(), 0..300_000),
    ) {
        let mut data = magic.to_vec();
        data.extend_from_slice(&body);
        check_input(&data)?;
    }

    #[test]
    fn mutated_images_never_panic(
        seed in 0usize..10,
        edits in proptest::collection::vec((0usize..(1 << 20), any::<u8>(), any::<bool>()), 1..24),
        cut in proptest::option::of(0usize..(8 << 20)),
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        for (off, val, near_head) in edits {
            if data.is_empty() { break; }
            // Half the edits hit the first 1 KiB (headers), the rest anywhere in the first MiB
            // or, mirrored, near the end (footers).
            let off = if near_head { off % 1024 } else { off };
            let len = data.len();
            let idx = if off % 3 == 0 { len - 1 - (off % len) } else { off % len };
            data[idx] = val;
        }
        if let Some(c) = cut {
            data.truncate(c.min(data.len()));
        }
        check_input(&data)?;
    }
}

#[test]
fn valid_seeds_are_accepted_with_bounded_memory() {
    for (i, s) in seeds().iter().enumerate() {
        let (r, peak) = measured(|| inspect(&s[..], &InspectOptions::default()));
        assert!(peak < MEMORY_BOUND, "seed {i}: {peak} bytes");
        let qed = r.format == diskimage::Format::Qed;
        assert_eq!(r.is_accepted(), !qed, "seed {i}: {r:?}");
    }
}

#[test]
fn hostile_sizes_stay_bounded() {
    // A qcow2 header claiming the largest tables QEMU allows, on a tiny file.
    let mut h = vec![0u8; 4096];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&21u32.to_be_bytes());
    h[24..32].copy_from_slice(&(1u64 << 50).to_be_bytes());
    h[36..40].copy_from_slice(&(4u32 << 20).to_be_bytes());
    h[40..48].copy_from_slice(&(2u64 << 20).to_be_bytes());
    h[48..56].copy_from_slice(&(4u64 << 20).to_be_bytes());
    h[56..60].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&112u32.to_be_bytes());
    let (r, peak) = measured(|| inspect(&h[..], &InspectOptions::default()));
    assert!(!r.is_accepted());
    assert!(peak < MEMORY_BOUND, "{peak}");
    // A VMDK claiming a 2 GiB descriptor (oslo's memory test) and a VDI claiming 2^28 blocks.
    let mut v = vec![0u8; 1024];
    v[0..4].copy_from_slice(b"KDMV");
    v[4..8].copy_from_slice(&1u32.to_le_bytes());
    v[12..20].copy_from_slice(&(1u64 << 40).to_le_bytes());
    v[20..28].copy_from_slice(&128u64.to_le_bytes());
    v[28..36].copy_from_slice(&1u64.to_le_bytes());
    v[36..44].copy_from_slice(&(4u64 << 20).to_le_bytes());
    v[44..48].copy_from_slice(&512u32.to_le_bytes());
    let (r, peak) = measured(|| inspect(&v[..], &InspectOptions::default()));
    assert!(r.has(codes::VMDK_DESCRIPTOR_LOCATION), "{r:?}");
    assert!(peak < MEMORY_BOUND, "{peak}");
}

/// A ustar header for `name` with `size` bytes of data.
fn tar_header(name: &str, size: usize) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

#[test]
fn large_ovf_descriptors_stay_bounded() {
    // Just under the OVF size limit, just under the node limit, long attribute values.
    for nodes in [100usize, 4_000, 9_000, 20_000] {
        let mut xml = String::from("<?xml version=\"1.0\"?><Envelope xmlns:ovf=\"x\"><References>");
        let pad = "a".repeat((240_000 / nodes).saturating_sub(40));
        for i in 0..nodes {
            xml.push_str(&format!("<File ovf:id=\"f{i}\" ovf:href=\"{pad}\"/>"));
            if xml.len() > 250_000 {
                break;
            }
        }
        xml.push_str("</References></Envelope>");
        let mut ova = tar_header("big.ovf", xml.len());
        ova.extend_from_slice(xml.as_bytes());
        ova.resize(ova.len().div_ceil(512) * 512 + 1024, 0);
        let (r, peak) = measured(|| inspect(&ova[..], &InspectOptions::default()));
        assert_eq!(r.format, diskimage::Format::Ova);
        assert!(!r.is_accepted());
        assert!(peak < MEMORY_BOUND, "{nodes} nodes: {peak} bytes");
    }
}
