//! Inspect time for large sparse images: it must not grow with the virtual size (metadata-only
//! checks; docs/formats.md §2.5), target well under 10 ms for a 4 GiB qcow2.
//!
//! `cargo bench -p diskimage --bench inspect` builds the images with qemu-img in a temporary
//! directory, inspects each one N times and prints the median and the 4 GiB / 64 MiB ratio.

use diskimage::{inspect, InspectOptions, SizedFile};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 200;

fn qemu(args: &[&str]) {
    let st = Command::new("qemu-img").args(args).status().expect("qemu-img is required");
    assert!(st.success(), "qemu-img {args:?}");
}

/// A sparse raw file with 1 MiB of data every 256 MiB (so L2 tables exist across the disk).
fn sparse_raw(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    f.set_len(size).expect("set_len");
    let chunk = vec![0xA5u8; 1 << 20];
    let mut off = 0;
    while off < size {
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&chunk).expect("write");
        off += 256 << 20;
    }
}

fn median(path: &Path, fmt: &str) -> Duration {
    let file = SizedFile::open(path).expect("open");
    let opts = InspectOptions { declared: Some(fmt.parse().expect("format")), ..Default::default() };
    let first = inspect(&file, &opts);
    assert!(first.is_accepted(), "{}: {:?}", path.display(), first.findings);
    let mut t: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let s = Instant::now();
            let r = inspect(&file, &opts);
            let e = s.elapsed();
            assert!(r.is_accepted());
            e
        })
        .collect();
    t.sort();
    t[RUNS / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let mut rows = Vec::new();
    for (label, size, sz) in [("64 MiB", 64u64 << 20, "64M"), ("4 GiB", 4u64 << 30, "4G")] {
        qemu(&["create", "-q", "-f", "qcow2", &p(&format!("empty-{sz}.qcow2")), sz]);
        sparse_raw(&d.join(format!("data-{sz}.raw")), size);
        qemu(&["convert", "-f", "raw", "-O", "qcow2", &p(&format!("data-{sz}.raw")), &p(&format!("data-{sz}.qcow2"))]);
        qemu(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            &p(&format!("data-{sz}.raw")),
            &p(&format!("data-{sz}.vmdk")),
        ]);
        qemu(&["convert", "-f", "raw", "-O", "vhdx", &p(&format!("data-{sz}.raw")), &p(&format!("data-{sz}.vhdx"))]);
        qemu(&["convert", "-f", "raw", "-O", "vdi", &p(&format!("data-{sz}.raw")), &p(&format!("data-{sz}.vdi"))]);
        std::fs::remove_file(d.join(format!("data-{sz}.raw"))).expect("rm");
        for (kind, file, fmt) in [
            ("qcow2 empty", format!("empty-{sz}.qcow2"), "qcow2"),
            ("qcow2 1 MiB/256 MiB", format!("data-{sz}.qcow2"), "qcow2"),
            ("vmdk stream", format!("data-{sz}.vmdk"), "vmdk"),
            ("vhdx", format!("data-{sz}.vhdx"), "vhdx"),
            ("vdi", format!("data-{sz}.vdi"), "vdi"),
        ] {
            rows.push((kind, label, median(&d.join(file), fmt)));
        }
    }
    println!("inspect, median of {RUNS} runs (page cache warm)");
    for (kind, label, t) in &rows {
        println!("  {kind:<22} {label:>7}: {:>9.3} ms", t.as_secs_f64() * 1e3);
    }
    for kind in ["qcow2 empty", "qcow2 1 MiB/256 MiB", "vmdk stream", "vhdx", "vdi"] {
        let small = rows.iter().find(|r| r.0 == kind && r.1 == "64 MiB").map(|r| r.2);
        let big = rows.iter().find(|r| r.0 == kind && r.1 == "4 GiB").map(|r| r.2);
        if let (Some(s), Some(b)) = (small, big) {
            println!("  ratio 4 GiB / 64 MiB for {kind:<20}: {:.2}", b.as_secs_f64() / s.as_secs_f64().max(1e-9));
        }
    }
    let q4 = rows.iter().find(|r| r.0 == "qcow2 empty" && r.1 == "4 GiB").map(|r| r.2).unwrap_or_default();
    assert!(q4 < Duration::from_millis(10), "4 GiB qcow2 inspect took {q4:?}");
}
