//! Verdicts over generated fixtures (docs/formats.md §2.5–§2.7, §3): one data-driven table, one
//! `check()` helper. Fixtures are built at test time by `fixtures/make_fixtures.py` with
//! qemu-img, xorriso, zstd and lz4; a missing tool fails the test.
//!
//! For every accepted fixture whose format qemu knows, the virtual size must equal
//! `qemu-img info -f <fmt> --output=json` (always `-f`: never let qemu-img probe). For every
//! fixture, the browser's sniff must name the same format as the server's inspect.

use diskimage::{codes, inspect, sniff_reader, Format, InspectOptions, Report, Severity, SizedFile, Verdict};
use std::path::Path;
use std::process::Command;

/// Expected outcome of one fixture.
struct Case {
    file: &'static str,
    declared: Option<&'static str>,
    format: &'static str,
    subformat: Option<&'static str>,
    accepted: bool,
    /// Codes that must be among the findings.
    codes: &'static [&'static str],
}

const fn ok(file: &'static str, format: &'static str, subformat: &'static str) -> Case {
    Case { file, declared: None, format, subformat: Some(subformat), accepted: true, codes: &[] }
}

const fn bad(file: &'static str, format: &'static str, codes: &'static [&'static str]) -> Case {
    Case { file, declared: None, format, subformat: None, accepted: false, codes }
}

const fn declared(mut c: Case, d: &'static str) -> Case {
    c.declared = Some(d);
    c
}

const fn sub(mut c: Case, s: &'static str) -> Case {
    c.subformat = Some(s);
    c
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // raw and partition tables
    ok("base.raw", "raw", "none"),
    ok("raw-zero.raw", "raw", "none"),
    ok("raw-odd.raw", "raw", "none"),
    ok("raw-mbr.raw", "raw", "mbr"),
    ok("raw-gpt.raw", "raw", "gpt"),
    ok("raw-ext4.raw", "raw", "none"),
    declared(ok("raw-mbr.raw", "raw", "mbr"), "raw"),
    bad("empty.raw", "raw", &[codes::EMPTY_FILE]),
    bad("evil-mbr-bootflag.raw", "raw", &[codes::MBR_INVALID]),
    bad("evil-mbr-noparts.raw", "raw", &[codes::MBR_INVALID]),
    bad("evil-gpt-extra.raw", "raw", &[codes::MBR_INVALID]),
    bad("evil-gpt-badcrc.raw", "raw", &[codes::GPT_INVALID]),
    // qcow2: accepted variants
    ok("q2-empty.qcow2", "qcow2", "v2"),
    ok("q2-data.qcow2", "qcow2", "v2"),
    ok("q3-data.qcow2", "qcow2", "v3"),
    declared(ok("q3-data.qcow2", "qcow2", "v3"), "qcow2"),
    ok("q3-zlib.qcow2", "qcow2", "v3"),
    ok("q3-zstd.qcow2", "qcow2", "v3"),
    ok("q3-extl2.qcow2", "qcow2", "v3"),
    ok("q3-512.qcow2", "qcow2", "v3"),
    ok("q3-2m.qcow2", "qcow2", "v3"),
    ok("q3-rc64.qcow2", "qcow2", "v3"),
    ok("q3-odd.qcow2", "qcow2", "v3"),
    Case { file: "q3-snap.qcow2", declared: None, format: "qcow2", subformat: Some("v3"), accepted: true, codes: &[codes::QCOW2_SNAPSHOTS] },
    // qcow2: refused (docs/formats.md 2.5 #6-#11 and the 2.4 gaps)
    bad("evil-backing.qcow2", "qcow2", &[codes::QCOW2_BACKING_FILE, codes::QCOW2_BACKING_FORMAT]),
    bad("evil-backing-passwd.qcow2", "qcow2", &[codes::QCOW2_BACKING_FILE]),
    bad("evil-v2-backing-noformat.qcow2", "qcow2", &[codes::QCOW2_BACKING_FILE]),
    bad("evil-datafile.qcow2", "qcow2", &[codes::QCOW2_DATA_FILE]),
    bad("evil-datafile-ext-only.qcow2", "qcow2", &[codes::QCOW2_DATA_FILE]),
    bad("evil-datafile-raw-autoclear.qcow2", "qcow2", &[codes::QCOW2_DATA_FILE]),
    bad("evil-corrupt-bit.qcow2", "qcow2", &[codes::QCOW2_CORRUPT]),
    bad("evil-dirty-bit.qcow2", "qcow2", &[codes::QCOW2_DIRTY]),
    bad("evil-unknown-bit5.qcow2", "qcow2", &[codes::QCOW2_UNKNOWN_FEATURES]),
    bad("evil-unknown-bit40.qcow2", "qcow2", &[codes::QCOW2_UNKNOWN_FEATURES]),
    bad("evil-v4.qcow2", "qcow2", &[codes::QCOW2_VERSION]),
    bad("evil-aes.qcow2", "qcow2", &[codes::QCOW2_ENCRYPTED]),
    bad("q3-luks.qcow2", "qcow2", &[codes::QCOW2_ENCRYPTED]),
    bad("qcow1.qcow", "qcow", &[codes::FORMAT_NOT_ALLOWED]),
    bad("evil-truncated.qcow2", "qcow2", &[codes::QCOW2_OUTSIDE_FILE]),
    bad("evil-truncated-data.qcow2", "qcow2", &[codes::QCOW2_OUTSIDE_FILE]),
    bad("evil-huge-vsize.qcow2", "qcow2", &[codes::VIRTUAL_SIZE_TOO_LARGE]),
    bad("evil-cluster-bits.qcow2", "qcow2", &[codes::QCOW2_CLUSTER_BITS]),
    bad("evil-header-length.qcow2", "qcow2", &[codes::QCOW2_HEADER_LENGTH]),
    bad("evil-l1-outside.qcow2", "qcow2", &[codes::QCOW2_OUTSIDE_FILE]),
    bad("evil-l1-overlap-header.qcow2", "qcow2", &[codes::QCOW2_OVERLAP]),
    bad("evil-l1-huge.qcow2", "qcow2", &[codes::QCOW2_L1_SIZE]),
    bad("evil-l1-too-small.qcow2", "qcow2", &[codes::QCOW2_L1_SIZE]),
    bad("evil-reftable-huge.qcow2", "qcow2", &[codes::QCOW2_REFCOUNT_TABLE]),
    bad("evil-l2-outside.qcow2", "qcow2", &[codes::QCOW2_OUTSIDE_FILE]),
    bad("evil-snapshot-l1-outside.qcow2", "qcow2", &[codes::QCOW2_OUTSIDE_FILE]),
    bad("evil-l2-shared.qcow2", "qcow2", &[codes::QCOW2_OVERLAP]),
    bad("evil-data-on-refblock.qcow2", "qcow2", &[codes::QCOW2_OVERLAP]),
    bad("evil-qcow2-mbr-polyglot.qcow2", "qcow2", &[codes::MULTIPLE_FORMATS]),
    // declared vs detected (CVE-2024-40767: a "raw" image that is a qcow2)
    declared(bad("evil-raw-is-qcow2.raw", "qcow2", &[codes::FORMAT_MISMATCH]), "raw"),
    declared(bad("vdi-dynamic.vdi", "vdi", &[codes::FORMAT_MISMATCH]), "qcow2"),
    declared(bad("base.raw", "raw", &[codes::FORMAT_MISMATCH]), "vhd"),
    declared(bad("iso-plain.iso", "iso", &[codes::FORMAT_MISMATCH]), "raw"),
    // QED, LUKS
    bad("qed.qed", "qed", &[codes::FORMAT_NOT_ALLOWED]),
    bad("luks.luks", "luks", &[codes::LUKS_ENCRYPTED]),
    // VDI
    ok("vdi-dynamic.vdi", "vdi", "dynamic"),
    ok("vdi-static.vdi", "vdi", "static"),
    bad("evil-vdi-diff.vdi", "vdi", &[codes::VDI_TYPE, codes::VDI_PARENT]),
    bad("evil-vdi-undo.vdi", "vdi", &[codes::VDI_TYPE]),
    bad("evil-vdi-blocksize.vdi", "vdi", &[codes::VDI_HEADER]),
    bad("evil-vdi-truncated.vdi", "vdi", &[codes::TRUNCATED]),
    bad("evil-vdi-shared-block.vdi", "vdi", &[codes::VDI_BLOCK_MAP]),
    // VHD (fixed VHDs are recognised by their footer at the end)
    ok("vhd-dynamic.vhd", "vhd", "dynamic"),
    ok("vhd-fixed.vhd", "vhd", "fixed"),
    declared(ok("vhd-fixed.vhd", "vhd", "fixed"), "vhd"),
    ok("vhd-fixed-forcesize.vhd", "vhd", "fixed"),
    ok("vhd-fixed-mbr.vhd", "vhd", "fixed"),
    sub(bad("evil-vhd-differencing.vhd", "vhd", &[codes::VHD_PARENT]), "differencing"),
    bad("evil-vhd-badcksum.vhd", "vhd", &[codes::VHD_CHECKSUM]),
    bad("evil-vhd-fixed-badcksum.vhd", "vhd", &[codes::VHD_CHECKSUM]),
    bad("evil-vhd-footer-mismatch.vhd", "vhd", &[codes::VHD_FOOTER_MISMATCH]),
    bad("evil-vhd-fixed-truncated.vhd", "vhd", &[codes::TRUNCATED]),
    // VHDX
    ok("vhdx-dynamic.vhdx", "vhdx", "dynamic"),
    ok("vhdx-fixed.vhdx", "vhdx", "fixed"),
    bad("evil-vhdx-log.vhdx", "vhdx", &[codes::VHDX_LOG]),
    bad("evil-vhdx-parent.vhdx", "vhdx", &[codes::VHDX_PARENT]),
    bad("evil-vhdx-region-crc.vhdx", "vhdx", &[codes::VHDX_REGIONS]),
    // VMDK (descriptor files, NUL-padded by qemu, are recognised as VMDK and refused)
    ok("vmdk-monolithicSparse.vmdk", "vmdk", "monolithicSparse"),
    ok("vmdk-streamOptimized.vmdk", "vmdk", "streamOptimized"),
    ok("vmdk-stream-gd-at-end.vmdk", "vmdk", "streamOptimized"),
    sub(bad("vmdk-monolithicFlat.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_FILE]), "monolithicFlat"),
    sub(bad("vmdk-twoGbMaxExtentFlat.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_FILE]), "twoGbMaxExtentFlat"),
    sub(bad("vmdk-twoGbMaxExtentSparse.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_FILE]), "twoGbMaxExtentSparse"),
    bad("vmdk-split-extent.vmdk", "vmdk", &[codes::VMDK_EXTENTS]),
    bad("evil-vmdk-flat-passwd.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_FILE, codes::VMDK_EXTENT_PATH]),
    declared(bad("evil-vmdk-flat-passwd.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_FILE]), "vmdk"),
    bad("evil-vmdk-embedded-flat-line.vmdk", "vmdk", &[codes::VMDK_EXTENTS, codes::VMDK_EXTENT_PATH]),
    bad("evil-vmdk-embedded-parent.vmdk", "vmdk", &[codes::VMDK_PARENT]),
    bad("evil-vmdk-embedded-createtype.vmdk", "vmdk", &[codes::VMDK_CREATE_TYPE]),
    bad("evil-vmdk-embedded-wronly.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_SYNTAX]),
    bad("evil-vmdk-desc-offset.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_LOCATION]),
    bad("evil-vmdk-desc-huge.vmdk", "vmdk", &[codes::VMDK_DESCRIPTOR_LOCATION]),
    bad("evil-vmdk-version0.vmdk", "vmdk", &[codes::VMDK_HEADER]),
    bad("evil-vmdk-cowd.vmdk", "vmdk", &[codes::FORMAT_NOT_ALLOWED]),
    bad("evil-vmdk-stream-zero-footer.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-footer-in-footer.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-bad-eos.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-footer-descriptor.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    // docs/formats.md 2.5 #13, one broken rule per file (see check_vmdk_footer_rules)
    ok("vmdk-stream-marker-val0.vmdk", "vmdk", "streamOptimized"),
    bad("evil-vmdk-stream-footer-signature.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-footer-version.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-footer-desc-offset.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-marker-size.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-marker-type.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-marker-pad.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-eos-val.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-eos-size.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-eos-pad.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-stream-too-short.vmdk", "vmdk", &[codes::VMDK_FOOTER]),
    bad("evil-vmdk-truncated.vmdk", "vmdk", &[codes::VMDK_TABLES]),
    // ISO (hybrid ISO+MBR is the one allowed double match)
    ok("iso-plain.iso", "iso", "iso9660"),
    ok("iso-joliet.iso", "iso", "iso9660"),
    ok("iso-eltorito.iso", "iso", "iso9660+eltorito"),
    ok("iso-hybrid-mbr.iso", "iso", "iso9660+eltorito+hybrid-mbr"),
    ok("iso-hybrid-gpt.iso", "iso", "iso9660+eltorito+hybrid-gpt"),
    ok("iso-udf.iso", "iso", "udf"),
    bad("evil-iso-qcow2-polyglot.iso", "qcow2", &[codes::ISO_POLYGLOT]),
    bad("evil-iso-truncated.iso", "iso", &[codes::TRUNCATED]),
    // Kernels are not MBR disks; initrds are not raw
    ok("vmlinuz.aki", "aki", "bzimage"),
    declared(ok("vmlinuz.aki", "aki", "bzimage"), "aki"),
    ok("arm64-Image.aki", "aki", "arm64"),
    ok("initrd-cpio.ari", "ari", "cpio"),
    ok("initrd-gzip.ari", "ari", "gzip"),
    ok("initrd-xz.ari", "ari", "xz"),
    ok("initrd-bzip2.ari", "ari", "bzip2"),
    ok("initrd-zstd.ari", "ari", "zstd"),
    ok("initrd-lz4.ari", "ari", "lz4"),
    declared(bad("initrd-cpio.raw", "ari", &[codes::FORMAT_MISMATCH]), "raw"),
    // OVA (docs/formats.md 2.5 #19-#20)
    ok("ova-good.ova", "ova", "ovf"),
    ok("ova-sha1.ova", "ova", "ovf"),
    ok("ova-nomf.ova", "ova", "ovf"),
    bad("evil-ova-ovf-second.ova", "unknown", &[codes::UNSUPPORTED_CONTAINER]),
    bad("evil-ova-symlink.ova", "ova", &[codes::TAR_MEMBER_TYPE]),
    bad("evil-ova-hardlink.ova", "ova", &[codes::TAR_MEMBER_TYPE]),
    bad("evil-ova-traversal.ova", "ova", &[codes::TAR_MEMBER_NAME]),
    bad("evil-ova-absolute.ova", "ova", &[codes::TAR_MEMBER_NAME]),
    bad("evil-ova-duplicate.ova", "ova", &[codes::TAR_DUPLICATE]),
    bad("evil-ova-xxe.ova", "ova", &[codes::OVF_INVALID]),
    bad("evil-ova-flat-disk.ova", "ova", &[codes::OVA_DISK]),
    bad("evil-ova-qcow2-disk.ova", "ova", &[codes::OVA_DISK]),
    bad("evil-ova-bad-digest.ova", "ova", &[codes::OVA_DIGEST]),
    bad("evil-ova-md5.ova", "ova", &[codes::OVA_MANIFEST]),
    bad("evil-ova-url-href.ova", "ova", &[codes::OVF_HREF]),
    bad("evil-ova-missing-disk.ova", "ova", &[codes::OVF_HREF]),
    bad("evil-ova-pax-size.ova", "ova", &[codes::TAR_PAX]),
    bad("evil-ova-capacity.ova", "ova", &[codes::OVF_CAPACITY]),
    bad("evil-ova-disk-format.ova", "ova", &[codes::OVF_DISK_FORMAT]),
    // One rule with the extractor (formats/ova.rs): whole URIs, ASCII case ignored; a VMDK
    // disk is the subformat its URI names; manifests as ovftool or VirtualBox write them.
    ok("ova-vbox-mf.ova", "ova", "ovf"),
    ok("ova-lower-mf.ova", "ova", "ovf"),
    ok("ova-uri-upper.ova", "ova", "ovf"),
    bad("evil-ova-mf-short-digest.ova", "ova", &[codes::OVA_MANIFEST]),
    bad("evil-ova-uri-lookalike.ova", "ova", &[codes::OVF_DISK_FORMAT]),
    bad("evil-ova-uri-suffix.ova", "ova", &[codes::OVF_DISK_FORMAT]),
    bad("evil-ova-stream-uri-sparse-disk.ova", "ova", &[codes::OVF_DISK_FORMAT]),
    bad("evil-ova-sparse-uri-stream-disk.ova", "ova", &[codes::OVF_DISK_FORMAT]),
    bad("plain.tar", "unknown", &[codes::UNSUPPORTED_CONTAINER]),
    // UEC (docs/formats.md 2.5 #21)
    ok("uec-good.tar.gz", "uec", "tar.gz"),
    bad("evil-uec-qcow2-image.tar.gz", "uec", &[codes::UEC_IMAGE]),
    bad("evil-uec-bad-kernel.tar.gz", "uec", &[codes::UEC_KERNEL]),
    bad("evil-uec-no-image.tar.gz", "uec", &[codes::UEC_MEMBERS]),
    bad("evil-uec-bomb.tar.gz", "uec", &[codes::GZIP_BOMB]),
    bad("evil-uec-truncated.tar.gz", "uec", &[codes::GZIP_INVALID]),
    bad("gzip-random.gz", "unknown", &[codes::UNSUPPORTED_CONTAINER]),
];

/// qemu-img's driver name for a format, if qemu can read it (ISO is read as raw).
fn qemu_driver(f: Format) -> Option<&'static str> {
    match f {
        Format::Raw | Format::Iso => Some("raw"),
        Format::Qcow2 => Some("qcow2"),
        Format::Vdi => Some("vdi"),
        Format::Vhd => Some("vpc"),
        Format::Vhdx => Some("vhdx"),
        Format::Vmdk => Some("vmdk"),
        _ => None,
    }
}

fn qemu_virtual_size(path: &Path, driver: &str) -> Result<u64, String> {
    let out = Command::new("qemu-img")
        .args(["info", "-f", driver, "--output=json"])
        .arg(path)
        .output()
        .map_err(|e| format!("qemu-img is required for these tests: {e}"))?;
    if !out.status.success() {
        return Err(format!("qemu-img info -f {driver} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["virtual-size"].as_u64().ok_or_else(|| "no virtual-size in qemu-img output".into())
}

fn inspect_file(path: &Path, declared: Option<&str>) -> Report {
    let f = SizedFile::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let opts = InspectOptions {
        declared: declared.map(|d| d.parse().expect("declared format name")),
        file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        ..Default::default()
    };
    inspect(&f, &opts)
}

/// Runs one case; returns the problems found (empty = pass).
fn check(dir: &Path, c: &Case) -> Vec<String> {
    let path = dir.join(c.file);
    let mut errs = Vec::new();
    let r = inspect_file(&path, c.declared);
    let tag = format!("{} (declared {:?})", c.file, c.declared);
    if r.format.as_str() != c.format {
        errs.push(format!("{tag}: format {} != expected {}", r.format, c.format));
    }
    if let Some(s) = c.subformat {
        if r.subformat.as_deref() != Some(s) {
            errs.push(format!("{tag}: subformat {:?} != expected {s}", r.subformat));
        }
    }
    let want = if c.accepted { Verdict::Accepted } else { Verdict::Rejected };
    if r.verdict != want {
        errs.push(format!("{tag}: verdict {:?} != {want:?}; findings {:?}", r.verdict, r.findings));
    }
    for code in c.codes {
        if !r.has(code) {
            errs.push(format!("{tag}: missing finding {code}; findings {:?}", r.findings));
        }
    }
    for f in &r.findings {
        if !codes::ALL.contains(&f.code.as_str()) {
            errs.push(format!("{tag}: undocumented code {}", f.code));
        }
        if f.message.len() < 15 || !f.message.ends_with('.') {
            errs.push(format!("{tag}: message is not a sentence: {:?}", f.message));
        }
    }
    if r.verdict == Verdict::Rejected && !r.findings.iter().any(|f| f.severity == Severity::Error) {
        errs.push(format!("{tag}: rejected without an error finding"));
    }
    if r.verdict == Verdict::Accepted {
        if let Some(driver) = qemu_driver(r.format) {
            match qemu_virtual_size(&path, driver) {
                Ok(q) if Some(q) == r.virtual_size => {}
                Ok(q) => errs.push(format!("{tag}: virtual size {:?} != qemu-img info -f {driver}: {q}", r.virtual_size)),
                Err(e) => errs.push(format!("{tag}: {e}")),
            }
        }
    }
    // The browser's sniff names the same format wherever it decides.
    let f = SizedFile::open(&path).expect("open");
    let opts = InspectOptions { declared: c.declared.map(|d| d.parse().expect("format")), ..Default::default() };
    let s = sniff_reader(&f, &opts);
    if !s.has(codes::SNIFF_INCOMPLETE) && s.format != r.format {
        errs.push(format!("{tag}: sniff says {} but inspect says {}", s.format, r.format));
    }
    if r.verdict == Verdict::Accepted && s.verdict == Verdict::Rejected {
        errs.push(format!("{tag}: sniff rejects what inspect accepts: {:?}", s.findings));
    }
    errs
}

/// Runs the CLI and returns (exit code, stdout).
fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diskimage")).args(args).output().expect("run the diskimage CLI");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_cli(dir: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    /// (arguments, exit status, expected (format, verdict) in the JSON output)
    type CliCase<'a> = (&'a [&'a str], i32, Option<(&'a str, &'a str)>);
    let cases: [CliCase; 7] = [
        (&["inspect", &p("q3-data.qcow2"), "--json"], 0, Some(("qcow2", "accepted"))),
        (&["inspect", &p("evil-backing.qcow2"), "--json"], 1, Some(("qcow2", "rejected"))),
        (&["inspect", &p("vhd-fixed.vhd"), "--declared", "vhd", "--json"], 0, Some(("vhd", "accepted"))),
        (&["inspect", &p("evil-raw-is-qcow2.raw"), "--declared", "raw", "--json"], 1, Some(("qcow2", "rejected"))),
        (&["sniff", &p("vhdx-dynamic.vhdx"), "--json"], 0, Some(("vhdx", "accepted"))),
        (&["inspect", &p("does-not-exist")], 2, None),
        (&["inspect", &p("q3-data.qcow2"), "--declared", "nonsense"], 2, None),
    ];
    for (args, code, want) in cases {
        let (rc, out) = cli(args);
        if rc != code {
            errs.push(format!("cli {args:?}: exit {rc} != {code}"));
        }
        if let Some((format, verdict)) = want {
            match serde_json::from_str::<serde_json::Value>(out.trim()) {
                Ok(v) => {
                    if v["format"] != format
                        || v["verdict"] != verdict
                        || !v["findings"].is_array()
                        || v.get("virtual_size").is_none()
                        || v.get("subformat").is_none()
                    {
                        errs.push(format!("cli {args:?}: unexpected JSON {v}"));
                    }
                    if let Some(first) = v["findings"].as_array().and_then(|a| a.first()) {
                        if !first["code"].is_string() || !first["message"].is_string() {
                            errs.push(format!("cli {args:?}: finding without code/message: {first}"));
                        }
                    }
                }
                Err(e) => errs.push(format!("cli {args:?}: not one JSON object ({e}): {out}")),
            }
        }
    }
    let (rc, out) = cli(&["inspect", &p("evil-vhd-differencing.vhd")]);
    if rc != 1 || !out.contains("verdict:      rejected") || !out.contains("vhd-parent") {
        errs.push(format!("cli readable summary unexpected: {out}"));
    }
    let (rc, _) = cli(&[]);
    if rc != 2 {
        errs.push("cli without arguments must exit 2".into());
    }
    errs
}

fn check_options(dir: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    let f = SizedFile::open(&dir.join("q3-data.qcow2")).expect("open");
    let r = inspect(&f, &InspectOptions { max_virtual_size: 1 << 20, ..Default::default() });
    if r.verdict != Verdict::Rejected || !r.has(codes::VIRTUAL_SIZE_TOO_LARGE) {
        errs.push(format!("max_virtual_size not enforced: {r:?}"));
    }
    let f = SizedFile::open(&dir.join("vdi-dynamic.vdi")).expect("open");
    let r = inspect(&f, &InspectOptions { declared: Some(Format::Qcow2), ..Default::default() });
    let msg = r.errors().map(|e| e.message.clone()).collect::<Vec<_>>().join(" ");
    if !msg.contains("vdi") || !msg.contains("VirtualBox") {
        errs.push(format!("mismatch message must name the real format: {msg}"));
    }
    errs
}

/// A VMDK disk that is not the subformat its OVF URI names is refused in the browser too when
/// the head holds the disk's header and descriptor (small OVFs), with the server's wording.
fn check_ova_subformat_sniff(dir: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    for (file, want) in [
        (
            "evil-ova-stream-uri-sparse-disk.ova",
            "the OVF says a streamOptimized VMDK (http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized) but the member is a monolithicSparse VMDK",
        ),
        (
            "evil-ova-sparse-uri-stream-disk.ova",
            "the OVF says a monolithicSparse VMDK (http://www.vmware.com/interfaces/specifications/vmdk.html#sparse) but the member is a streamOptimized VMDK",
        ),
    ] {
        let f = SizedFile::open(&dir.join(file)).expect("open");
        let says = |r: &Report| {
            r.errors()
                .any(|e| e.code == codes::OVF_DISK_FORMAT && e.message.contains(want))
        };
        let s = sniff_reader(&f, &InspectOptions::default());
        let r = inspect(&f, &InspectOptions::default());
        if !says(&s) || !says(&r) {
            errs.push(format!(
                "{file}: sniff and inspect must both say \"{want}\": sniff {:?}, inspect {:?}",
                s.findings, r.findings
            ));
        }
    }
    errs
}

/// docs/formats.md §2.5 #13: a VMDK whose header says GD_AT_END is judged by its footer, which must
/// agree with the header (oslo.utils' footer check). The browser's sniff holds the last 1.5 KiB,
/// so it reaches the inspector's verdict with the same finding: each mutated footer is refused
/// by both, for its own rule and no other footer rule; the valid ones are accepted by both.
fn check_vmdk_footer_rules(dir: &Path) -> Vec<String> {
    use diskimage::formats::vmdk::FooterProblem as P;
    let mut errs = Vec::new();
    let cases: &[(&str, Option<P>)] = &[
        ("vmdk-streamOptimized.vmdk", None),
        ("vmdk-stream-gd-at-end.vmdk", None),
        ("vmdk-stream-marker-val0.vmdk", None),
        ("evil-vmdk-stream-zero-footer.vmdk", Some(P::Signature)),
        ("evil-vmdk-stream-footer-signature.vmdk", Some(P::Signature)),
        ("evil-vmdk-stream-footer-version.vmdk", Some(P::Version)),
        ("evil-vmdk-stream-footer-desc-offset.vmdk", Some(P::Descriptor)),
        ("evil-vmdk-stream-footer-descriptor.vmdk", Some(P::Descriptor)),
        ("evil-vmdk-stream-footer-in-footer.vmdk", Some(P::AnotherFooter)),
        ("evil-vmdk-stream-marker-size.vmdk", Some(P::Marker)),
        ("evil-vmdk-stream-marker-type.vmdk", Some(P::Marker)),
        ("evil-vmdk-stream-marker-pad.vmdk", Some(P::Marker)),
        ("evil-vmdk-stream-bad-eos.vmdk", Some(P::EndOfStream)),
        ("evil-vmdk-stream-eos-val.vmdk", Some(P::EndOfStream)),
        ("evil-vmdk-stream-eos-size.vmdk", Some(P::EndOfStream)),
        ("evil-vmdk-stream-eos-pad.vmdk", Some(P::EndOfStream)),
        ("evil-vmdk-stream-too-short.vmdk", Some(P::TooShort)),
    ];
    for (file, want) in cases {
        let f = SizedFile::open(&dir.join(file)).expect("open");
        let opts = InspectOptions { file_name: Some(file.to_string()), ..Default::default() };
        for (how, r) in [("inspect", inspect(&f, &opts)), ("sniff", sniff_reader(&f, &opts))] {
            let footer: Vec<&str> = r.errors().filter(|e| e.code == codes::VMDK_FOOTER).map(|e| e.message.as_str()).collect();
            let ok = match want {
                None => r.verdict == Verdict::Accepted && r.format == Format::Vmdk,
                Some(p) => r.verdict == Verdict::Rejected && r.format == Format::Vmdk && footer == [p.message()],
            };
            if !ok {
                errs.push(format!(
                    "{file}: {how} should {} ({want:?}): {:?} {:?}",
                    if want.is_some() { "refuse it" } else { "accept it" },
                    r.verdict,
                    r.findings
                ));
            }
        }
    }
    errs
}

#[test]
fn fixture_verdicts_virtual_sizes_and_cli() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_fixtures.py");
    let out = Command::new("python3").arg(&script).arg(dir).output().expect("python3 is required to build fixtures");
    assert!(
        out.status.success(),
        "fixture generation failed (qemu-img, xorriso, zstd and lz4 are required): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut errs: Vec<String> = CASES.iter().flat_map(|c| check(dir, c)).collect();
    errs.extend(check_cli(dir));
    errs.extend(check_options(dir));
    errs.extend(check_ova_subformat_sniff(dir));
    errs.extend(check_vmdk_footer_rules(dir));
    assert!(errs.is_empty(), "{} problem(s):\n{}", errs.len(), errs.join("\n"));
}

#[test]
fn every_format_is_covered_by_a_case() {
    for f in diskimage::ALL_FORMATS {
        assert!(CASES.iter().any(|c| c.format == f.as_str()), "no fixture case for {f}");
    }
    for code in codes::ALL {
        assert!(code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{code} is not kebab-case");
    }
}
