//! Conversion round trips with qemu-img as the oracle (always with pinned `-f`/`-F`).
//! The tests fail loudly when qemu-img is missing: it is part of every machine of this kind.
#![cfg(feature = "convert")]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::convert::{convert_file, convert_stream, Compression, ConvertOptions, ErrorKind, NoProgress, SourceFormat, TargetFormat};

fn qemu_img(args: &[&str]) -> std::process::Output {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("qemu-img is required for these tests and could not run: {e}"));
    out
}

fn qemu_ok(args: &[&str]) -> String {
    let out = qemu_img(args);
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures need no RNG crate.
fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

/// A raw payload of an odd size (not a multiple of 512 or of a cluster): random runs,
/// compressible text, zero runs written as zeros, and holes.
fn make_payload(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut buf = vec![0u8; 300_000];
    let mut off = 4096u64 * 3 + 17;
    let mut seed = 7;
    while off < size {
        let n = (buf.len() as u64).min(size - off) as usize;
        match seed % 4 {
            0 => fill_random(&mut buf[..n], seed),
            1 => {
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = b"hangar converts disk images "[i % 28];
                }
            }
            2 => buf[..n].fill(0),
            _ => {
                fill_random(&mut buf[..n], seed);
                buf[..n / 2].fill(0);
            }
        }
        f.write_all_at(&buf[..n], off).unwrap();
        seed += 1;
        off += n as u64 + (seed % 3) * 1_000_003;
    }
    // The very last byte is data, so the odd tail matters.
    f.write_all_at(&[0xAB], size - 1).unwrap();
}

fn opts(to: TargetFormat, c: Compression) -> ConvertOptions {
    ConvertOptions { to, compression: c, sync: false }
}

fn check_qcow2(path: &Path) {
    let out = qemu_img(&["check", "-f", "qcow2", "--output=json", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "qemu-img check failed ({:?}): {text}", out.status.code());
    assert!(text.contains("\"check-errors\": 0"), "{text}");
    assert!(!text.contains("corruptions") && !text.contains("leaks"), "{text}");
}

fn compare(src_fmt: &str, src: &Path, dst_fmt: &str, dst: &Path) {
    let out = qemu_img(&["compare", "-f", src_fmt, "-F", dst_fmt, src.to_str().unwrap(), dst.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "qemu-img compare -f {src_fmt} -F {dst_fmt} {} {}: {}{}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn files_equal(a: &Path, b: &Path) {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{} vs {}", a.display(), b.display());
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < la {
        let n = (la - off).min(ba.len() as u64) as usize;
        fa.read_exact_at(&mut ba[..n], off).unwrap();
        fb.read_exact_at(&mut bb[..n], off).unwrap();
        assert!(ba[..n] == bb[..n], "content differs near offset {off}");
        off += n as u64;
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture { dir: tempfile::tempdir().unwrap() }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Converts `src` (qemu format name `qfmt`) to qcow2 (plain, zlib, zstd) and raw, checks and
/// compares each with qemu-img, and reads our qcow2 back with our own reader.
fn roundtrip(fx: &Fixture, src: &Path, qfmt: &str, from: SourceFormat, raw_ref: &Path) {
    let tag = src.file_name().unwrap().to_str().unwrap().to_string();
    let mut plain_size = 0;
    for (c, name) in [(Compression::None, "plain"), (Compression::Zlib, "zlib"), (Compression::Zstd, "zstd")] {
        let out = fx.p(&format!("{tag}.{name}.qcow2"));
        let s = convert_file(src, &out, Some(from), &opts(TargetFormat::Qcow2, c), &mut NoProgress)
            .unwrap_or_else(|e| panic!("{tag} -> qcow2 {name}: {e}"));
        assert_eq!(s.from, from);
        check_qcow2(&out);
        compare(qfmt, src, "qcow2", &out);
        // The payload has compressible runs: compression must actually shrink the file.
        let size = fs::metadata(&out).unwrap().len();
        if c == Compression::None {
            plain_size = size;
        } else {
            assert!(size < plain_size * 9 / 10, "{tag} {name}: {size} vs plain {plain_size}");
        }
        // Our own reader: qcow2 -> raw must equal qemu's raw view of the source.
        let back = fx.p(&format!("{tag}.{name}.back.raw"));
        convert_file(&out, &back, Some(SourceFormat::Qcow2), &opts(TargetFormat::Raw, Compression::None), &mut NoProgress).unwrap();
        files_equal(raw_ref, &back);
        fs::remove_file(&back).unwrap();
        fs::remove_file(&out).unwrap();
    }
    let out = fx.p(&format!("{tag}.raw"));
    convert_file(src, &out, Some(from), &opts(TargetFormat::Raw, Compression::None), &mut NoProgress).unwrap();
    compare(qfmt, src, "raw", &out);
    // raw -> raw keeps the exact byte size; every other source has a sector-multiple size.
    files_equal(if from == SourceFormat::Raw { src } else { raw_ref }, &out);
    fs::remove_file(&out).unwrap();
}

#[test]
fn every_input_format_roundtrips() {
    let fx = Fixture::new();
    let base = fx.p("base.raw");
    // 21 MiB + 1 odd byte tail: spans several VHD/VDI blocks and ends mid-sector.
    make_payload(&base, 21 * 1024 * 1024 + 12_345);
    // qemu's raw view pads to a sector; our raw reference is qemu's own raw conversion.
    let reference = fx.p("reference.raw");
    qemu_ok(&["convert", "-f", "raw", "-O", "raw", base.to_str().unwrap(), reference.to_str().unwrap()]);

    let b = base.to_str().unwrap();
    let cases: &[(&str, &str, &[&str], SourceFormat)] = &[
        ("q2.qcow2", "qcow2", &["-O", "qcow2", "-o", "compat=0.10"], SourceFormat::Qcow2),
        ("q3.qcow2", "qcow2", &["-O", "qcow2"], SourceFormat::Qcow2),
        ("q3-4k.qcow2", "qcow2", &["-O", "qcow2", "-o", "cluster_size=4096"], SourceFormat::Qcow2),
        ("q3-zlib.qcow2", "qcow2", &["-O", "qcow2", "-c"], SourceFormat::Qcow2),
        ("q3-zstd.qcow2", "qcow2", &["-O", "qcow2", "-c", "-o", "compression_type=zstd"], SourceFormat::Qcow2),
        ("dyn.vdi", "vdi", &["-O", "vdi"], SourceFormat::Vdi),
        ("static.vdi", "vdi", &["-O", "vdi", "-o", "static=on"], SourceFormat::Vdi),
        ("sparse.vmdk", "vmdk", &["-O", "vmdk"], SourceFormat::Vmdk),
        ("stream.vmdk", "vmdk", &["-O", "vmdk", "-o", "subformat=streamOptimized"], SourceFormat::Vmdk),
        ("dyn.vhd", "vpc", &["-O", "vpc"], SourceFormat::Vhd),
        ("fixed.vhd", "vpc", &["-O", "vpc", "-o", "subformat=fixed"], SourceFormat::Vhd),
        ("dyn.vhdx", "vhdx", &["-O", "vhdx"], SourceFormat::Vhdx),
        ("fixed.vhdx", "vhdx", &["-O", "vhdx", "-o", "subformat=fixed"], SourceFormat::Vhdx),
    ];
    for (name, qfmt, args, from) in cases {
        let src = fx.p(name);
        let mut a = vec!["convert", "-f", "raw"];
        a.extend_from_slice(args);
        a.push(b);
        a.push(src.to_str().unwrap());
        qemu_ok(&a);
        // VHD sizes round to the CHS geometry: qemu's raw view of the VHD is the reference.
        let reference = if *qfmt == "vpc" {
            let r = fx.p(&format!("{name}.ref.raw"));
            qemu_ok(&["convert", "-f", "vpc", "-O", "raw", src.to_str().unwrap(), r.to_str().unwrap()]);
            r
        } else {
            reference.clone()
        };
        roundtrip(&fx, &src, qfmt, *from, &reference);
        fs::remove_file(&src).unwrap();
    }
    // Raw itself.
    roundtrip(&fx, &base, "raw", SourceFormat::Raw, &reference);
}

/// A streamOptimized VMDK in the VMware layout (header gdOffset = GD_AT_END; footer marker,
/// footer and end-of-stream marker at the end, docs/formats.md §2.5 #13) converts, as a file and as
/// a stream, to what qemu reads through its footer.
#[test]
fn footer_based_vmdk_roundtrips() {
    let fx = Fixture::new();
    let base = fx.p("base.raw");
    make_payload(&base, 5 * 1024 * 1024 + 777);
    let reference = fx.p("reference.raw");
    qemu_ok(&["convert", "-f", "raw", "-O", "raw", base.to_str().unwrap(), reference.to_str().unwrap()]);
    let qsrc = fx.p("qemu-stream.vmdk");
    qemu_ok(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", base.to_str().unwrap(), qsrc.to_str().unwrap()]);
    let mut d = fs::read(&qsrc).unwrap();
    let footer = d[..512].to_vec();
    d[56..64].copy_from_slice(&[0xFF; 8]);
    let mut marker = [0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&marker);
    d.extend_from_slice(&footer);
    d.extend_from_slice(&[0u8; 512]);
    let src = fx.p("footer.vmdk");
    fs::write(&src, &d).unwrap();
    roundtrip(&fx, &src, "vmdk", SourceFormat::Vmdk, &reference);
    let out = fx.p("footer-stream.qcow2");
    let mut r = std::io::BufReader::with_capacity(1000, File::open(&src).unwrap());
    let s = convert_stream(
        &mut r,
        SourceFormat::Vmdk,
        None,
        Some("footer.vmdk"),
        &out,
        &opts(TargetFormat::Qcow2, Compression::None),
        &mut NoProgress,
    )
    .unwrap_or_else(|e| panic!("footer.vmdk as a stream: {e}"));
    assert_eq!(s.bytes_in, d.len() as u64);
    check_qcow2(&out);
    compare("vmdk", &src, "qcow2", &out);
    // A footer the inspector refuses (end-of-stream marker not zero) is refused either way.
    let n = d.len();
    d[n - 512] = 1;
    let bad = fx.p("bad-eos.vmdk");
    fs::write(&bad, &d).unwrap();
    let e = convert_file(&bad, &fx.p("bad.qcow2"), Some(SourceFormat::Vmdk), &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    assert!(e.to_string().contains("vmdk-footer"), "{e}");
    let e = convert_stream(
        &mut File::open(&bad).unwrap(),
        SourceFormat::Vmdk,
        None,
        Some("bad-eos.vmdk"),
        &fx.p("bad-stream.qcow2"),
        &ConvertOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    assert!(!fx.p("bad.qcow2").exists() && !fx.p("bad-stream.qcow2").exists());
}

#[test]
fn all_zero_and_tiny_inputs() {
    let fx = Fixture::new();
    // The inspector refuses an empty file; nothing is written for it.
    let empty = fx.p("empty.raw");
    File::create(&empty).unwrap();
    let e = convert_file(&empty, &fx.p("empty.qcow2"), None, &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    assert!(!fx.p("empty.qcow2").exists());
    for (name, size) in [("zero.raw", 100u64 << 20), ("tiny.raw", 12_345), ("one.raw", 1)] {
        let src = fx.p(name);
        File::create(&src).unwrap().set_len(size).unwrap();
        if size == 1 {
            fs::write(&src, [7u8]).unwrap();
        }
        let out = fx.p(&format!("{name}.qcow2"));
        let s = convert_file(&src, &out, Some(SourceFormat::Raw), &opts(TargetFormat::Qcow2, Compression::Zlib), &mut NoProgress).unwrap();
        check_qcow2(&out);
        compare("raw", &src, "qcow2", &out);
        // header + L1 + one refcount block + table (+ data cluster and L2 when non-zero).
        let clusters = fs::metadata(&out).unwrap().len() / 65536;
        assert!(clusters <= 6, "{name}: {clusters} clusters");
        assert_eq!(s.virtual_size, size.next_multiple_of(512));
    }
}

#[test]
fn output_is_sparse_raw() {
    let fx = Fixture::new();
    let src = fx.p("s.raw");
    let f = File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(&[1u8; 4096], 10 << 20).unwrap();
    drop(f);
    let q = fx.p("s.qcow2");
    convert_file(&src, &q, None, &opts(TargetFormat::Qcow2, Compression::None), &mut NoProgress).unwrap();
    let out = fx.p("s.out.raw");
    convert_file(&q, &out, None, &opts(TargetFormat::Raw, Compression::None), &mut NoProgress).unwrap();
    files_equal(&src, &out);
    use std::os::unix::fs::MetadataExt;
    let blocks = fs::metadata(&out).unwrap().blocks();
    assert!(blocks * 512 <= 1 << 20, "raw output is not sparse: {} bytes allocated", blocks * 512);
}

/// Larger than 2 GiB of host clusters, so the refcount table needs two blocks, and larger
/// than 4 GiB virtual, so the L1 table has several L2 tables.
#[test]
fn more_than_one_refcount_block() {
    let fx = Fixture::new();
    let src = fx.p("big.raw");
    let f = File::create(&src).unwrap();
    let size: u64 = (6 << 30) + 4321;
    f.set_len(size).unwrap();
    // 2 GiB + 8 MiB of non-zero (cheap, compressible) data in the middle, plus a tail byte.
    let mut buf = vec![0u8; 8 << 20];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    let start = 1u64 << 30;
    let mut off = start;
    while off < start + (2 << 30) + (8 << 20) {
        f.write_all_at(&buf, off).unwrap();
        off += buf.len() as u64;
    }
    f.write_all_at(&[9], size - 1).unwrap();
    drop(f);
    let out = fx.p("big.qcow2");
    convert_file(&src, &out, Some(SourceFormat::Raw), &opts(TargetFormat::Qcow2, Compression::None), &mut NoProgress).unwrap();
    check_qcow2(&out);
    compare("raw", &src, "qcow2", &out);
    fs::remove_file(&src).unwrap(); // keep disk use low
    let info = qemu_ok(&["info", "-f", "qcow2", "--output=json", out.to_str().unwrap()]);
    assert!(info.contains("\"compat\": \"1.1\""), "{info}");
    // Our own reader back to raw, compared with qemu's reading of our qcow2.
    let back = fx.p("big.back.raw");
    convert_file(&out, &back, None, &opts(TargetFormat::Raw, Compression::None), &mut NoProgress).unwrap();
    compare("qcow2", &out, "raw", &back);
    let mut probe = vec![0u8; 4096];
    File::open(&back).unwrap().read_exact_at(&mut probe, start + (1 << 30)).unwrap();
    assert_eq!(probe[..4], [1, 1, 3, 3]);
    assert_eq!(fs::metadata(&back).unwrap().len(), size.next_multiple_of(512));
}

#[test]
fn streaming_inputs() {
    let fx = Fixture::new();
    let base = fx.p("base.raw");
    make_payload(&base, 9 * 1024 * 1024 + 333);
    let reference = fx.p("ref.raw");
    qemu_ok(&["convert", "-f", "raw", "-O", "raw", base.to_str().unwrap(), reference.to_str().unwrap()]);
    let len = fs::metadata(&base).unwrap().len();
    // raw stream
    let out = fx.p("raw-stream.qcow2");
    let mut events = 0u32;
    let mut progress = |_: u64, _: u64| events += 1;
    let s = convert_stream(
        &mut File::open(&base).unwrap(),
        SourceFormat::Raw,
        Some(len),
        None,
        &out,
        &opts(TargetFormat::Qcow2, Compression::None),
        &mut progress,
    )
    .unwrap();
    assert!(events >= 1);
    assert_eq!(s.bytes_in, len);
    check_qcow2(&out);
    compare("raw", &base, "qcow2", &out);
    // a truncated raw stream is an error, not a zero tail
    let out2 = fx.p("raw-short.qcow2");
    let e = convert_stream(
        &mut File::open(&base).unwrap(),
        SourceFormat::Raw,
        Some(len + 512),
        None,
        &out2,
        &opts(TargetFormat::Qcow2, Compression::None),
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(!out2.exists());
    // VDI and streamOptimized VMDK, through a pipe-like reader (no Seek).
    for (name, qfmt, args, from) in [
        ("s.vdi", "vdi", vec!["-O", "vdi"], SourceFormat::Vdi),
        ("s.vmdk", "vmdk", vec!["-O", "vmdk", "-o", "subformat=streamOptimized"], SourceFormat::Vmdk),
    ] {
        let src = fx.p(name);
        let mut a = vec!["convert", "-f", "raw"];
        a.extend(args);
        a.push(base.to_str().unwrap());
        a.push(src.to_str().unwrap());
        qemu_ok(&a);
        let out = fx.p(&format!("{name}.qcow2"));
        let mut r = std::io::BufReader::with_capacity(1000, File::open(&src).unwrap());
        let s = convert_stream(&mut r, from, None, Some(name), &out, &opts(TargetFormat::Qcow2, Compression::Zlib), &mut NoProgress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.bytes_in, fs::metadata(&src).unwrap().len(), "{name}: whole stream consumed");
        check_qcow2(&out);
        compare(qfmt, &src, "qcow2", &out);
        let back = fx.p(&format!("{name}.back.raw"));
        convert_file(&out, &back, None, &opts(TargetFormat::Raw, Compression::None), &mut NoProgress).unwrap();
        files_equal(&reference, &back);
    }
    // monolithicSparse needs random access: refused clearly while streaming.
    let src = fx.p("ms.vmdk");
    qemu_ok(&["convert", "-f", "raw", "-O", "vmdk", base.to_str().unwrap(), src.to_str().unwrap()]);
    let e = convert_stream(
        &mut File::open(&src).unwrap(),
        SourceFormat::Vmdk,
        None,
        Some("ms.vmdk"),
        &fx.p("ms.qcow2"),
        &opts(TargetFormat::Qcow2, Compression::None),
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

#[test]
fn refusals_and_no_partial_output() {
    let fx = Fixture::new();
    let base = fx.p("b.raw");
    make_payload(&base, 2 << 20);
    // backing file
    let backed = fx.p("backed.qcow2");
    qemu_ok(&["create", "-f", "qcow2", "-F", "raw", "-b", base.to_str().unwrap(), backed.to_str().unwrap()]);
    let out = fx.p("o.qcow2");
    let e = convert_file(&backed, &out, None, &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    // declared format mismatch
    let e = convert_file(&base, &out, Some(SourceFormat::Qcow2), &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    // truncated qcow2: its metadata points beyond the end (the inspector refuses it)
    let q = fx.p("t.qcow2");
    qemu_ok(&["convert", "-f", "raw", "-O", "qcow2", base.to_str().unwrap(), q.to_str().unwrap()]);
    let f = OpenOptions::new().write(true).open(&q).unwrap();
    f.set_len(4 * 65536).unwrap();
    let e = convert_file(&q, &out, None, &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    assert!(e.to_string().contains("outside the file"), "{e}");
    // VMDK flat descriptor
    let d = fx.p("flat.vmdk");
    let mut df = File::create(&d).unwrap();
    df.write_all(b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n").unwrap();
    let e = convert_file(&d, &out, Some(SourceFormat::Vmdk), &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e}");
    // nothing left behind, not even temporaries
    let left: Vec<_> = fs::read_dir(fx.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!out.exists());
    assert!(left.iter().all(|n| !n.to_string_lossy().contains("partial")), "{left:?}");
    // an existing output is never overwritten
    let e = convert_file(&base, &q, None, &ConvertOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
}

/// A conversion told to stop (a cancelled import job) stops within the next progress step,
/// says so with its own error kind, and leaves nothing behind, on every data path: file to
/// qcow2 (kernel copies on a writer thread), compressed (worker pool), raw output, qcow2
/// input and a stream.
#[test]
fn a_cancelled_conversion_stops_midway_and_keeps_nothing() {
    use diskimage::convert::{convert_stream, Cancellable};
    use std::sync::atomic::{AtomicBool, Ordering};
    let fx = Fixture::new();
    let total: u64 = 96 << 20;
    let src = fx.p("big.raw");
    {
        let f = File::create(&src).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..total >> 20 {
            fill_random(&mut buf, i + 1);
            f.write_all_at(&buf, i << 20).unwrap();
        }
    }
    let q = fx.p("big.qcow2");
    qemu_ok(&["convert", "-f", "raw", "-O", "qcow2", src.to_str().unwrap(), q.to_str().unwrap()]);
    let cases = [
        ("raw -> qcow2", &src, SourceFormat::Raw, TargetFormat::Qcow2, Compression::None, false),
        ("raw -> qcow2 zlib", &src, SourceFormat::Raw, TargetFormat::Qcow2, Compression::Zlib, false),
        ("raw -> raw", &src, SourceFormat::Raw, TargetFormat::Raw, Compression::None, false),
        ("qcow2 -> raw", &q, SourceFormat::Qcow2, TargetFormat::Raw, Compression::None, false),
        ("stream raw -> qcow2", &src, SourceFormat::Raw, TargetFormat::Qcow2, Compression::None, true),
    ];
    for (what, input, from, to, c, stream) in cases {
        let out = fx.p("cancelled.out");
        let stop = AtomicBool::new(false);
        let mut seen = 0u64;
        let mut updates = 0;
        let r = {
            let mut p = Cancellable::new(
                |bytes_in: u64, _out: u64| {
                    updates += 1;
                    seen = seen.max(bytes_in);
                    // Another thread would set it; here the first report does.
                    stop.store(true, Ordering::Relaxed);
                },
                &stop,
            );
            if stream {
                let mut f = File::open(input).unwrap();
                convert_stream(&mut f, from, Some(total), None, &out, &opts(to, c), &mut p)
            } else {
                convert_file(input, &out, Some(from), &opts(to, c), &mut p)
            }
        };
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{what}: {e}");
        assert!(e.to_string().contains("cancelled"), "{what}: {e}");
        assert_eq!(updates, 1, "{what}: stopped at the first check after the flag");
        assert!(seen > 0 && seen < total / 2, "{what}: read {seen} of {total} bytes");
        assert!(!out.exists(), "{what}: output kept");
        let left: Vec<_> = fs::read_dir(fx.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.contains("cancelled"))
            .collect();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
    }
    // Without the flag the same Progress lets the conversion finish.
    let stop = AtomicBool::new(false);
    let out = fx.p("whole.qcow2");
    let mut p = Cancellable::new(|_: u64, _: u64| {}, &stop);
    convert_file(&src, &out, Some(SourceFormat::Raw), &opts(TargetFormat::Qcow2, Compression::None), &mut p).unwrap();
    compare("raw", &src, "qcow2", &out);
}

/// Ctrl-C during `diskimage convert` stops the conversion cleanly: exit status 130, a clear
/// message, and no output or `.partial` file left behind.
#[test]
fn ctrl_c_stops_the_cli_and_leaves_nothing() {
    use rustix::process::{kill_process, Pid, Signal};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let fx = Fixture::new();
    let src = fx.p("int.raw");
    {
        let f = File::create(&src).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..256u64 {
            fill_random(&mut buf, i + 11);
            f.write_all_at(&buf, i << 20).unwrap();
        }
    }
    let out = fx.p("int.qcow2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_diskimage"))
        .args(["convert", src.to_str().unwrap(), out.to_str().unwrap(), "--to", "qcow2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = || fs::read_dir(fx.dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial"));
    let t0 = Instant::now();
    while !partial() {
        assert!(child.try_wait().unwrap().is_none(), "the conversion ended before it could be interrupted");
        assert!(t0.elapsed() < Duration::from_secs(60), "no output was started");
        std::thread::sleep(Duration::from_millis(1));
    }
    kill_process(Pid::from_child(&child), Signal::INT).unwrap();
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert!(!out.exists(), "output kept");
    assert!(!partial(), "partial output kept");
}
