//! OVA and UEC extraction: good packages extract, every malicious variant of docs/formats.md
//! §2.5 #19–21 is refused with a clear error and leaves nothing behind. Tar files are built by
//! hand here (so the hostile ones can be built at all); qemu-img makes the VMDK disks.
#![cfg(feature = "convert")]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::convert::ova::{extract_ova, OvaReport};
use diskimage::convert::uec::{extract_uec, UecLimits, UecRole};
use diskimage::convert::{convert_stream, Compression, ConvertOptions, ErrorKind, NoProgress, SourceFormat, TargetFormat};
use diskimage::{codes, InspectOptions, Report};

const SO_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
const SPARSE_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse";
/// What oVirt/RHV write for a raw disk (written out here, not taken from the crate, so a typo
/// there fails these tests).
const BYTE_URI: &str = "http://en.wikipedia.org/wiki/Byte";

fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd} is required for these tests and could not run: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// One ustar header + data, padded to 512.
fn tar_member(out: &mut Vec<u8>, name: &str, typeflag: u8, data: &[u8], linkname: &str) {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + linkname.len()].copy_from_slice(linkname.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn tar_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

fn pax(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut d = 1;
    while (body.len() + d).to_string().len() != d {
        d += 1;
    }
    format!("{}{body}", body.len() + d).into_bytes()
}

fn sha256_hex(b: &[u8]) -> String {
    sum_hex("sha256sum", b)
}

/// The hex digest coreutils' `tool` (sha1sum, sha256sum, sha512sum) prints for `b`.
fn sum_hex(tool: &str, b: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    fs::write(&p, b).unwrap();
    let out = String::from_utf8(run(tool, &[p.to_str().unwrap()])).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

fn ovf(disks: &[(&str, &str, u64)], extra: &str) -> String {
    let mut refs = String::new();
    let mut dsks = String::new();
    for (i, (href, fmt, cap)) in disks.iter().enumerate() {
        refs += &format!("<File ovf:id=\"file{i}\" ovf:href=\"{href}\"/>");
        // Whole MiB as exporters write them; anything else in bytes (the default unit).
        let capacity = if cap % (1 << 20) == 0 {
            format!("ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte * 2^20\"", cap >> 20)
        } else {
            format!("ovf:capacity=\"{cap}\"")
        };
        dsks += &format!("<Disk ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" {capacity} ovf:format=\"{fmt}\"/>");
    }
    ovf_envelope(extra, &refs, &dsks)
}

/// An OVF descriptor with `refs` inside `<References>` and `disks` inside `<DiskSection>`
/// (`extra` goes right after the XML declaration).
fn ovf_envelope(extra: &str, refs: &str, disks: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{extra}
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>{refs}</References>
  <DiskSection><Info>disks</Info>{disks}</DiskSection>
  <VirtualSystem ovf:id="testvm">
    <Info>vm</Info><Name>Test VM</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info>os</Info><Description>Ubuntu</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#
    )
}

struct Env {
    dir: tempfile::TempDir,
    /// streamOptimized VMDKs of `raw1` and of a 3 MiB raw disk.
    disk1: Vec<u8>,
    disk2: Vec<u8>,
    /// A monolithicSparse VMDK of `raw1` (its extent is named `sparse1.vmdk`).
    sparse1: Vec<u8>,
    raw1: PathBuf,
}

const CAP1: u64 = 12 << 20;
const CAP2: u64 = 3 << 20;

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let raw1 = dir.path().join("d1.raw");
    let mut data = vec![0u8; CAP1 as usize];
    for (i, b) in data.iter_mut().enumerate().skip(1 << 20).take(5 << 20) {
        *b = (i * 7 % 253) as u8;
    }
    fs::write(&raw1, &data).unwrap();
    let raw2 = dir.path().join("d2.raw");
    fs::write(&raw2, vec![0x5Au8; CAP2 as usize]).unwrap();
    let mk = |raw: &Path, name: &str, subformat: &str| {
        let out = dir.path().join(name);
        run(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "vmdk", "-o", &format!("subformat={subformat}"), raw.to_str().unwrap(), out.to_str().unwrap()],
        );
        fs::read(out).unwrap()
    };
    let disk1 = mk(&raw1, "disk1.vmdk", "streamOptimized");
    let disk2 = mk(&raw2, "disk2.vmdk", "streamOptimized");
    let sparse1 = mk(&raw1, "sparse1.vmdk", "monolithicSparse");
    Env { dir, disk1, disk2, sparse1, raw1 }
}

fn good_ova(e: &Env) -> Vec<u8> {
    let o = ovf(&[("disk1.vmdk", SO_URI, CAP1), ("disk2.vmdk", SO_URI, CAP2)], "");
    let mf = format!(
        "SHA256(test.ovf)= {}\nSHA256(disk1.vmdk)= {}\nSHA1(disk2.vmdk)= {}\n",
        sha256_hex(o.as_bytes()),
        sha256_hex(&e.disk1),
        sha1_hex(&e.disk2)
    );
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
    tar_member(&mut t, "test.mf", b'0', mf.as_bytes(), "");
    tar_member(&mut t, "disk1.vmdk", b'0', &e.disk1, "");
    tar_member(&mut t, "disk2.vmdk", b'0', &e.disk2, "");
    tar_end(&mut t);
    t
}

fn sha1_hex(b: &[u8]) -> String {
    sum_hex("sha1sum", b)
}

fn opts() -> ConvertOptions {
    ConvertOptions { to: TargetFormat::Qcow2, compression: Compression::None, sync: false }
}

/// Everything under `root` (relative paths), to prove nothing was written anywhere else.
fn listing(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for s in listing(&e.path()) {
                v.push(format!("{name}/{s}"));
            }
        }
        v.push(name);
    }
    v.sort();
    v
}

#[test]
fn good_ova_extracts_every_disk() {
    let e = env();
    let ova = good_ova(&e);
    let out = e.dir.path().join("out");
    let r = extract_ova(&mut &ova[..], &out, &opts(), &mut NoProgress).unwrap();
    assert!(r.manifest_verified);
    assert_eq!(r.unverified_certificate, None);
    assert_eq!(r.ovf.name.as_deref(), Some("Test VM"));
    assert_eq!(r.ovf.os_type.as_deref(), Some("ubuntu64Guest"));
    assert_eq!(r.ovf.os_id, Some(94));
    assert_eq!(r.ovf.cpus, Some(2));
    assert_eq!(r.ovf.memory_mib, Some(1024));
    assert_eq!(r.disks.len(), 2);
    assert_eq!(r.disks[0].virtual_size, CAP1);
    assert!(r.disks.iter().all(|d| d.source_format == SourceFormat::Vmdk));
    assert_eq!(r.bytes_in, ova.len() as u64);
    for d in &r.disks {
        assert!(d.path.starts_with(&out));
        let chk = Command::new("qemu-img").args(["check", "-f", "qcow2", d.path.to_str().unwrap()]).output().unwrap();
        assert!(chk.status.success(), "{}", String::from_utf8_lossy(&chk.stdout));
    }
    run("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", e.raw1.to_str().unwrap(), r.disks[0].path.to_str().unwrap()]);
    assert_eq!(listing(&out), vec!["disk1.qcow2".to_string(), "disk2.qcow2".to_string()]);
}

/// Each case: a package and a fragment of the expected error message.
fn malicious_ovas(e: &Env) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let o1 = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "");
    let mut v = Vec::new();
    let mut add = |name, build: &dyn Fn(&mut Vec<u8>), msg| {
        let mut t = Vec::new();
        build(&mut t);
        tar_end(&mut t);
        v.push((name, t, msg));
    };
    add(
        "ovf-not-first",
        &|t| {
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
        },
        "first member",
    );
    add(
        "traversal",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "../disk1.vmdk", b'0', &e.disk1, "");
        },
        "member \"../disk1.vmdk\" has a name that climbs out of the archive (..)",
    );
    add(
        "absolute",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "/tmp/disk1.vmdk", b'0', &e.disk1, "");
        },
        "member \"/tmp/disk1.vmdk\" has an absolute name",
    );
    add(
        "symlink",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'2', b"", "/etc/passwd");
        },
        "symbolic link",
    );
    add(
        "hardlink",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'1', b"", "test.ovf");
        },
        "hard link",
    );
    add(
        "device",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'3', b"", "");
        },
        "device",
    );
    add(
        "duplicate",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "the archive holds \"disk1.vmdk\" twice",
    );
    add(
        "pax-size",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "PaxHeader", b'x', &pax("size", "0"), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "TARmageddon",
    );
    let dtd = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>");
    add(
        "xxe",
        &|t| {
            tar_member(t, "test.ovf", b'0', dtd.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "DTD",
    );
    let url = ovf(&[("http://evil.example/disk1.vmdk", SO_URI, CAP1)], "");
    add(
        "href-url",
        &|t| {
            tar_member(t, "test.ovf", b'0', url.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "URL",
    );
    let up = ovf(&[("../../etc/passwd", SO_URI, CAP1)], "");
    add(
        "href-traversal",
        &|t| {
            tar_member(t, "test.ovf", b'0', up.as_bytes(), "");
        },
        "which is not a safe member name",
    );
    let missing = ovf(&[("disk9.vmdk", SO_URI, CAP1)], "");
    add(
        "href-missing",
        &|t| {
            tar_member(t, "test.ovf", b'0', missing.as_bytes(), "");
        },
        "not in the OVA",
    );
    add(
        "unreferenced-member",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
            tar_member(t, "extra.bin", b'0', b"hello", "");
        },
        "not referenced",
    );
    add(
        "bad-digest",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            let mf = format!("SHA256(test.ovf)= {}\nSHA256(disk1.vmdk)= {}\n", sha256_hex(o1.as_bytes()), "0".repeat(64));
            tar_member(t, "test.mf", b'0', mf.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "the digest of \"disk1.vmdk\" does not match the manifest",
    );
    add(
        "md5-manifest",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "test.mf", b'0', b"MD5(disk1.vmdk)= 00112233445566778899aabbccddeeff\n", "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "not accepted",
    );
    add(
        "flat-descriptor-disk",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(
                t,
                "disk1.vmdk",
                b'0',
                b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n",
                "",
            );
        },
        "disk vmdisk0",
    );
    let wrong_cap = ovf(&[("disk1.vmdk", SO_URI, CAP1 * 2)], "");
    add(
        "capacity-mismatch",
        &|t| {
            tar_member(t, "test.ovf", b'0', wrong_cap.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "the OVF says",
    );
    let flat = ovf(&[("disk1.vmdk", "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicFlat", CAP1)], "");
    add(
        "non-stream-format",
        &|t| {
            tar_member(t, "test.ovf", b'0', flat.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "only streamOptimized VMDK",
    );
    add(
        "trailing-payload",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
            t.extend_from_slice(&[0u8; 1024]);
            tar_member(t, "hidden.vmdk", b'0', &e.disk1, "");
        },
        "follows the end of the archive",
    );
    add(
        "truncated",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
            let cut = t.len() - e.disk1.len().next_multiple_of(512) / 2;
            t.truncate(cut);
        },
        "",
    );
    // Raw disks (docs/formats.md §2.5 #20): the member must be exactly the capacity.
    let raw = ovf(&[("disk1.img", BYTE_URI, CAP2)], "");
    add(
        "raw-disk-short",
        &|t| {
            tar_member(t, "test.ovf", b'0', raw.as_bytes(), "");
            tar_member(t, "disk1.img", b'0', &raw_payload(CAP2 - 512), "");
        },
        "disk vmdisk0 (disk1.img): the OVF says 3145728 bytes but the raw member holds 3145216",
    );
    add(
        "raw-disk-long",
        &|t| {
            tar_member(t, "test.ovf", b'0', raw.as_bytes(), "");
            tar_member(t, "disk1.img", b'0', &raw_payload(CAP2 + 512), "");
        },
        "disk vmdisk0 (disk1.img): the OVF says 3145728 bytes but the raw member holds 3146240",
    );
    // The raw URI is compared whole, like the VMDK ones (ASCII case is ignored: see
    // `agreement_on_uris_subformats_and_manifests` in `inspector_and_extractor_agree`).
    let byte_order = ovf(&[("disk1.img", "http://en.wikipedia.org/wiki/Byte_order", CAP2)], "");
    add(
        "raw-uri-lookalike",
        &|t| {
            tar_member(t, "test.ovf", b'0', byte_order.as_bytes(), "");
            tar_member(t, "disk1.img", b'0', &raw_payload(CAP2), "");
        },
        "only streamOptimized",
    );
    // Certificates: at most one, bounded, after the manifest.
    let mf1 = manifest_for(&o1, &[("disk1.vmdk", &e.disk1)]);
    add(
        "two-certificates",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "test.mf", b'0', mf1.as_bytes(), "");
            tar_member(t, "test.cert", b'0', &cert(&mf1), "");
            tar_member(t, "other.cert", b'0', &cert(&mf1), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "two certificates",
    );
    add(
        "certificate-before-manifest",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "test.cert", b'0', &cert(&mf1), "");
            tar_member(t, "test.mf", b'0', mf1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "comes before the manifest",
    );
    // monolithicSparse disks are spooled to a temporary file in OUTDIR: whichever step refuses
    // them, that file must be gone too (the harness lists OUTDIR, dot-files included).
    let sp = ovf(&[("sparse1.vmdk", SPARSE_URI, CAP1)], "");
    add(
        "sparse-bad-digest",
        &|t| {
            tar_member(t, "test.ovf", b'0', sp.as_bytes(), "");
            let mf = format!("SHA256(test.ovf)= {}\nSHA256(sparse1.vmdk)= {}\n", sha256_hex(sp.as_bytes()), "0".repeat(64));
            tar_member(t, "test.mf", b'0', mf.as_bytes(), "");
            tar_member(t, "sparse1.vmdk", b'0', &e.sparse1, "");
        },
        "the digest of \"sparse1.vmdk\" does not match the manifest",
    );
    let sp_cap = ovf(&[("sparse1.vmdk", SPARSE_URI, CAP1 * 2)], "");
    add(
        "sparse-capacity-mismatch",
        &|t| {
            tar_member(t, "test.ovf", b'0', sp_cap.as_bytes(), "");
            tar_member(t, "sparse1.vmdk", b'0', &e.sparse1, "");
        },
        "disk vmdisk0 (sparse1.vmdk): the OVF says 25165824 bytes but the VMDK holds 12582912",
    );
    let sp_so = ovf(&[("disk1.vmdk", SPARSE_URI, CAP1)], "");
    add(
        "sparse-uri-stream-optimized-disk",
        &|t| {
            tar_member(t, "test.ovf", b'0', sp_so.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "the OVF says a monolithicSparse VMDK",
    );
    // The streamOptimized URI on a monolithicSparse disk: refused from the member's head, with
    // the inspector's wording, before anything is converted.
    let so_sp = ovf(&[("sparse1.vmdk", SO_URI, CAP1)], "");
    add(
        "stream-uri-monolithic-sparse-disk",
        &|t| {
            tar_member(t, "test.ovf", b'0', so_sp.as_bytes(), "");
            tar_member(t, "sparse1.vmdk", b'0', &e.sparse1, "");
        },
        "disk vmdisk0 (sparse1.vmdk): the OVF says a streamOptimized VMDK (http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized) but the member is a monolithicSparse VMDK",
    );
    // The spooled file goes through the inspector: a parent disk is refused there.
    let mut with_parent = e.sparse1.clone();
    let at = with_parent.windows(18).position(|w| w == b"parentCID=ffffffff").expect("qemu's descriptor has parentCID=ffffffff");
    with_parent[at..at + 18].copy_from_slice(b"parentCID=1234abcd");
    add(
        "sparse-with-parent",
        &|t| {
            tar_member(t, "test.ovf", b'0', sp.as_bytes(), "");
            tar_member(t, "sparse1.vmdk", b'0', &with_parent, "");
        },
        "the inspector rejected this vmdk file",
    );
    add(
        "sparse-truncated",
        &|t| {
            tar_member(t, "test.ovf", b'0', sp.as_bytes(), "");
            tar_member(t, "sparse1.vmdk", b'0', &e.sparse1, "");
            t.truncate(t.len() - e.sparse1.len().next_multiple_of(512) / 2);
        },
        "truncated",
    );
    add(
        "certificate-too-large",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "test.mf", b'0', mf1.as_bytes(), "");
            tar_member(t, "test.cert", b'0', &vec![b'A'; (64 << 10) + 1], "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "more than the 65536 allowed",
    );
    v
}

#[test]
fn malicious_ovas_are_refused_and_leave_nothing() {
    let e = env();
    let before = listing(e.dir.path());
    for (name, pkg, msg) in malicious_ovas(&e) {
        let out = e.dir.path().join(format!("out-{name}"));
        let err = extract_ova(&mut &pkg[..], &out, &opts(), &mut NoProgress).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(matches!(err.kind(), ErrorKind::Package | ErrorKind::Rejected | ErrorKind::Corrupt), "{name}: {err}");
        assert!(err.to_string().contains(msg), "{name}: {err}");
        assert_eq!(listing(&out), Vec::<String>::new(), "{name}: output left behind");
        fs::remove_dir(&out).unwrap();
    }
    assert_eq!(listing(e.dir.path()), before, "something was written outside OUTDIR");
}

/// A raw disk of `len` bytes the way oVirt exports one: an MBR with one Linux partition, data
/// in the middle, zeros (holes in the output) elsewhere, a non-zero tail.
fn raw_payload(len: u64) -> Vec<u8> {
    let mut d = vec![0u8; len as usize];
    d[446] = 0x80; // bootable
    d[446 + 4] = 0x83; // Linux
    d[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    d[446 + 12..446 + 16].copy_from_slice(&((len / 512).saturating_sub(2048) as u32).to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xAA;
    for (i, b) in d.iter_mut().enumerate().skip(1 << 20).take(700 << 10) {
        *b = (i * 13 % 251) as u8;
    }
    let tail = d.len().saturating_sub(100 << 10);
    d[tail..].fill(0xA5);
    d
}

/// `SHA256(name)= hex` lines for the OVF and the given members.
fn manifest_for(ovf_text: &str, members: &[(&str, &[u8])]) -> String {
    let mut mf = format!("SHA256(test.ovf)= {}\n", sha256_hex(ovf_text.as_bytes()));
    for (name, data) in members {
        mf += &format!("SHA256({name})= {}\n", sha256_hex(data));
    }
    mf
}

/// What ovftool writes into a `.cert`: the manifest's signature and a PEM certificate. The
/// signature is fake: nothing may check it (there is no trust store), and the report says so.
fn cert(mf: &str) -> Vec<u8> {
    format!(
        "SHA256(test.mf)= {}\n-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUTESTTESTTESTTESTTESTTESTTESTwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n",
        sha256_hex(mf.as_bytes()).repeat(8)
    )
    .into_bytes()
}

fn inspect_bytes(b: &[u8]) -> Report {
    diskimage::inspect(b, &InspectOptions::default())
}

fn qemu_img_check(path: &Path) {
    let chk = Command::new("qemu-img").args(["check", "-f", "qcow2", "--output=json", path.to_str().unwrap()]).output().unwrap();
    assert!(chk.status.success(), "qemu-img check {}: {}", path.display(), String::from_utf8_lossy(&chk.stdout));
}

fn compare(fmt1: &str, a: &Path, fmt2: &str, b: &Path) {
    run("qemu-img", &["compare", "-f", fmt1, "-F", fmt2, a.to_str().unwrap(), b.to_str().unwrap()]);
}

/// An OVA with a streamOptimized VMDK disk and a raw disk (and a manifest over both).
fn mixed_ova(e: &Env, raw: &[u8]) -> Vec<u8> {
    let o = ovf(&[("disk1.vmdk", SO_URI, CAP1), ("disk2.img", BYTE_URI, raw.len() as u64)], "");
    let mf = manifest_for(&o, &[("disk1.vmdk", &e.disk1), ("disk2.img", raw)]);
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
    tar_member(&mut t, "test.mf", b'0', mf.as_bytes(), "");
    tar_member(&mut t, "disk1.vmdk", b'0', &e.disk1, "");
    tar_member(&mut t, "disk2.img", b'0', raw, "");
    tar_end(&mut t);
    t
}

#[test]
fn ova_with_vmdk_and_raw_disks_extracts_both() {
    let e = env();
    let raw = raw_payload(CAP2);
    let raw_path = e.dir.path().join("disk2.img");
    fs::write(&raw_path, &raw).unwrap();
    let ova = mixed_ova(&e, &raw);
    // The package inspector (what the server and the CLI run first) accepts it too.
    let rep = inspect_bytes(&ova);
    assert!(rep.is_accepted(), "{:?}", rep.findings);

    let check = |r: &OvaReport, out: &Path, ext: &str| {
        assert!(r.manifest_verified);
        assert_eq!(r.disks.len(), 2);
        let (d1, d2) = (&r.disks[0], &r.disks[1]);
        assert_eq!((d1.disk_id.as_str(), d1.member.as_str(), d1.source_format), ("vmdisk0", "disk1.vmdk", SourceFormat::Vmdk));
        assert_eq!((d2.disk_id.as_str(), d2.member.as_str(), d2.source_format), ("vmdisk1", "disk2.img", SourceFormat::Raw));
        assert_eq!((d1.virtual_size, d2.virtual_size), (CAP1, CAP2));
        assert_eq!(d2.path, out.join(format!("disk2.{ext}")));
        assert_eq!(listing(out), vec![format!("disk1.{ext}"), format!("disk2.{ext}")]);
    };

    // qcow2 output: qemu-img is the oracle.
    let out = e.dir.path().join("out-qcow2");
    let r = extract_ova(&mut &ova[..], &out, &opts(), &mut NoProgress).unwrap();
    check(&r, &out, "qcow2");
    for d in &r.disks {
        qemu_img_check(&d.path);
    }
    compare("raw", &e.raw1, "qcow2", &r.disks[0].path);
    compare("raw", &raw_path, "qcow2", &r.disks[1].path);
    // The JSON the CLI prints names the source formats.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["disks"][0]["source_format"], "vmdk");
    assert_eq!(json["disks"][1]["source_format"], "raw");
    assert_eq!(json["unverified_certificate"], serde_json::Value::Null);

    // raw output: byte for byte.
    let out = e.dir.path().join("out-raw");
    let raw_opts = ConvertOptions { to: TargetFormat::Raw, ..opts() };
    let r = extract_ova(&mut &ova[..], &out, &raw_opts, &mut NoProgress).unwrap();
    check(&r, &out, "raw");
    assert!(fs::read(&r.disks[0].path).unwrap() == fs::read(&e.raw1).unwrap());
    assert!(fs::read(&r.disks[1].path).unwrap() == raw);
}

/// Disk images of other formats, to be passed off as raw disks: (format, bytes, whether the
/// first 64 KiB give it away). qemu-img makes them from a 2 MiB raw disk in `dir`.
fn disguised_disks(dir: &Path) -> Vec<(&'static str, Vec<u8>, bool)> {
    let src = dir.join("small.raw");
    let mut data = vec![0u8; 2 << 20];
    data[4096..300_000].fill(0x3C);
    fs::write(&src, &data).unwrap();
    let qemu = |name: &str, args: &[&str]| -> Vec<u8> {
        let out = dir.join(name);
        let mut a = vec!["convert", "-f", "raw"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[src.to_str().unwrap(), out.to_str().unwrap()]);
        run("qemu-img", &a);
        fs::read(out).unwrap()
    };
    let mut luks = vec![0u8; 1 << 20];
    luks[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x01");
    luks[8..13].copy_from_slice(b"aes\0\0");
    let qed = {
        let p = dir.join("x.qed");
        run("qemu-img", &["create", "-q", "-f", "qed", p.to_str().unwrap(), "2M"]);
        fs::read(p).unwrap()
    };
    vec![
        ("qcow2", qemu("x.qcow2", &["-O", "qcow2"]), true),
        ("vmdk", qemu("x.vmdk", &["-O", "vmdk"]), true),
        ("vmdk", qemu("so.vmdk", &["-O", "vmdk", "-o", "subformat=streamOptimized"]), true),
        ("vdi", qemu("x.vdi", &["-O", "vdi"]), true),
        ("vhd", qemu("dyn.vhd", &["-O", "vpc"]), true),
        // A fixed VHD has its footer only at the end: the tail check must see it.
        ("vhd", qemu("fixed.vhd", &["-O", "vpc", "-o", "subformat=fixed"]), false),
        // VHDX keeps its metadata beyond the 64 KiB head the gate holds: the sniff cannot decide
        // from head and tail, so the stream is refused as unverifiable (still refused).
        ("vhdx", qemu("x.vhdx", &["-O", "vhdx"]), true),
        ("qed", qed, true),
        ("luks", luks, true),
    ]
}

/// What the extractor says when a raw disk is really a `fmt` image.
fn disguise_refusal(fmt: &str) -> String {
    if fmt == "vhdx" {
        "this stream cannot be verified from its head and tail".to_string()
    } else {
        format!("declared as raw but it is a {fmt} (")
    }
}

/// Counts the bytes read through it.
struct Counting<'a> {
    inner: &'a [u8],
    n: usize,
}

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k;
        Ok(k)
    }
}

/// A raw disk whose head gives it away as another format is refused as soon as that head has
/// arrived: before anything of it is converted, and without reading the rest of the package.
/// Each image is padded with non-zero data to 40 MiB and followed by another disk, so a refusal
/// that came only after converting the member would show in the progress (bytes written) and
/// in how much of the package was read.
#[test]
fn disguised_raw_disk_is_refused_before_converting() {
    const PADDED: usize = 40 << 20;
    let e = env();
    let dir = e.dir.path();
    let cases = disguised_disks(dir);
    let before = listing(dir);
    for (i, (fmt, bytes, in_head)) in cases.into_iter().enumerate() {
        if !in_head {
            continue; // seen only at the end; `raw_disk_that_is_another_format_is_refused`
        }
        let mut disk = bytes;
        let n = disk.len();
        disk.resize(PADDED, 0);
        for (j, b) in disk[n..].iter_mut().enumerate() {
            *b = (j % 251) as u8 | 1;
        }
        let o = ovf(&[("disk1.img", BYTE_URI, PADDED as u64), ("disk2.vmdk", SO_URI, CAP2)], "");
        let mut t = Vec::new();
        tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
        tar_member(&mut t, "disk1.img", b'0', &disk, "");
        tar_member(&mut t, "disk2.vmdk", b'0', &e.disk2, "");
        tar_end(&mut t);
        drop(disk);
        let out = dir.join(format!("out-{i}-{fmt}"));
        let mut seen = Vec::new();
        let mut progress = |i: u64, o: u64| seen.push((i, o));
        let mut input = Counting { inner: &t[..], n: 0 };
        let err = extract_ova(&mut input, &out, &opts(), &mut progress)
            .err()
            .unwrap_or_else(|| panic!("{fmt}: a {fmt} image was extracted as a raw disk"));
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Package, "{fmt}: {msg}");
        assert!(msg.contains("disk vmdisk0 (disk1.img): ") && msg.contains(&disguise_refusal(fmt)), "{fmt}: {msg}");
        assert!(seen.iter().all(|&(_, o)| o == 0), "{fmt}: output was written before the refusal: {seen:?}");
        assert!(input.n < PADDED / 4, "{fmt}: {} of the package's {} bytes were read before the refusal", input.n, t.len());
        assert_eq!(listing(&out), Vec::<String>::new(), "{fmt}: output left behind");
        fs::remove_dir(&out).unwrap();
    }
    assert_eq!(listing(dir), before, "something was written outside OUTDIR");
}

/// A member the OVF calls raw whose head (or tail) is another disk format: the sniff checks of
/// the stream gate refuse it (docs/formats.md §2.5 #1; CVE-2024-40767 was a "raw" qcow2). The
/// refused disk is the second one, so the first disk's finished output must go too.
#[test]
fn raw_disk_that_is_another_format_is_refused() {
    let e = env();
    let dir = e.dir.path();
    let cases = disguised_disks(dir);
    let before = listing(dir);
    for (i, (fmt, bytes, _)) in cases.iter().enumerate() {
        let ova = mixed_ova(&e, bytes);
        let out = dir.join(format!("out-{i}-{fmt}"));
        let err = extract_ova(&mut &ova[..], &out, &opts(), &mut NoProgress)
            .err()
            .unwrap_or_else(|| panic!("{fmt}: a {fmt} image was extracted as a raw disk"));
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Package, "{fmt}: {msg}");
        assert!(msg.contains("disk vmdisk1 (disk2.img): ") && msg.contains(&disguise_refusal(fmt)), "{fmt}: {msg}");
        assert_eq!(listing(&out), Vec::<String>::new(), "{fmt}: output left behind");
        fs::remove_dir(&out).unwrap();
        // The package inspector refuses the same package.
        let rep = inspect_bytes(&ova);
        assert!(!rep.is_accepted() && rep.has(codes::OVA_DISK), "{fmt}: inspector: {:?}", rep.findings);
    }
    assert_eq!(listing(dir), before, "something was written outside OUTDIR");
}

/// The raw stream reader itself refuses a stream that is not exactly `raw_len` long (the OVA
/// extractor checks the member size first; this is the second line).
#[test]
fn raw_stream_length_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let data = raw_payload(CAP2);
    for (name, raw_len) in [("long", CAP2 - 512), ("short", CAP2 + 512)] {
        let out = dir.path().join(format!("{name}.qcow2"));
        let err = convert_stream(&mut &data[..], SourceFormat::Raw, Some(raw_len), None, &out, &opts(), &mut NoProgress)
            .err()
            .unwrap_or_else(|| panic!("{name}: a raw stream of the wrong length was accepted"));
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
        assert!(!out.exists(), "{name}");
    }
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[test]
fn ova_certificate_is_reported_unverified() {
    let e = env();
    let o = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "");
    let mf = manifest_for(&o, &[("disk1.vmdk", &e.disk1)]);
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
    tar_member(&mut t, "test.mf", b'0', mf.as_bytes(), "");
    tar_member(&mut t, "test.cert", b'0', &cert(&mf), "");
    tar_member(&mut t, "disk1.vmdk", b'0', &e.disk1, "");
    tar_end(&mut t);
    let rep = inspect_bytes(&t);
    assert!(rep.is_accepted(), "{:?}", rep.findings);

    let out = e.dir.path().join("out");
    let r = extract_ova(&mut &t[..], &out, &opts(), &mut NoProgress).unwrap();
    assert_eq!(r.unverified_certificate.as_deref(), Some("test.cert"));
    assert!(r.manifest_verified);
    assert_eq!(r.disks.len(), 1);
    assert_eq!(listing(&out), vec!["disk1.qcow2".to_string()]);
    compare("raw", &e.raw1, "qcow2", &r.disks[0].path);

    // The CLI says it in words, not only in the JSON.
    let ova = e.dir.path().join("signed.ova");
    fs::write(&ova, &t).unwrap();
    let outdir = e.dir.path().join("cli-out");
    let text = cli_extract(&ova, &outdir);
    assert!(
        text.contains("\"unverified_certificate\": \"test.cert\"")
            && text.contains("certificate test.cert: present, NOT verified")
            && text.contains("\"source_format\": \"vmdk\"")
            && text.contains("disk vmdisk0 (disk1.vmdk, vmdk) -> "),
        "{text}"
    );

    // Two certificates, one before the manifest, one too large: the inspector refuses them
    // too (the extractor's refusals are in `malicious_ovas`).
    let pkg = |members: &[(&str, Vec<u8>)]| {
        let mut t = Vec::new();
        tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
        for (n, d) in members {
            tar_member(&mut t, n, b'0', d, "");
        }
        tar_member(&mut t, "disk1.vmdk", b'0', &e.disk1, "");
        tar_end(&mut t);
        t
    };
    let mfb = mf.as_bytes().to_vec();
    for (name, p) in [
        ("two", pkg(&[("test.mf", mfb.clone()), ("a.cert", cert(&mf)), ("b.cert", cert(&mf))])),
        ("before-mf", pkg(&[("test.cert", cert(&mf)), ("test.mf", mfb.clone())])),
        ("large", pkg(&[("test.mf", mfb.clone()), ("test.cert", vec![b'A'; (64 << 10) + 1])])),
    ] {
        let rep = inspect_bytes(&p);
        assert!(!rep.is_accepted() && rep.has(codes::OVA_CERTIFICATE), "{name}: {:?}", rep.findings);
    }
}

/// A monolithicSparse VMDK disk (the `#sparse` URI, which the package inspector accepts) cannot
/// be read front to back: it is spooled to a temporary file in OUTDIR, inspected, converted from
/// that file, and the temporary file is removed. Here next to a streamOptimized disk.
#[test]
fn ova_with_monolithic_sparse_disk_extracts() {
    let e = env();
    let o = ovf(&[("sparse1.vmdk", SPARSE_URI, CAP1), ("disk2.vmdk", SO_URI, CAP2)], "");
    let mf = manifest_for(&o, &[("sparse1.vmdk", &e.sparse1), ("disk2.vmdk", &e.disk2)]);
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
    tar_member(&mut t, "test.mf", b'0', mf.as_bytes(), "");
    tar_member(&mut t, "sparse1.vmdk", b'0', &e.sparse1, "");
    tar_member(&mut t, "disk2.vmdk", b'0', &e.disk2, "");
    tar_end(&mut t);
    let rep = inspect_bytes(&t);
    assert!(rep.is_accepted(), "{:?}", rep.findings);

    let before = listing(e.dir.path());
    for (to, ext) in [(TargetFormat::Qcow2, "qcow2"), (TargetFormat::Raw, "raw")] {
        let out = e.dir.path().join(format!("out-{ext}"));
        let mut seen = Vec::new();
        let mut progress = |i: u64, o: u64| seen.push((i, o));
        let o2 = ConvertOptions { to, ..opts() };
        let r = extract_ova(&mut &t[..], &out, &o2, &mut progress).unwrap();
        assert!(r.manifest_verified);
        assert_eq!(r.disks.len(), 2);
        let d = &r.disks[0];
        assert_eq!((d.disk_id.as_str(), d.member.as_str(), d.source_format), ("vmdisk0", "sparse1.vmdk", SourceFormat::Vmdk));
        assert_eq!(d.virtual_size, CAP1);
        assert_eq!(d.path, out.join(format!("disk1.{ext}")));
        // No temporary file is left, and the spooled copy is not counted as input twice.
        assert_eq!(listing(&out), vec![format!("disk1.{ext}"), format!("disk2.{ext}")]);
        assert_eq!(r.bytes_in, t.len() as u64);
        assert!(seen.iter().all(|&(i, _)| i <= t.len() as u64), "progress reported more input than the package has: {seen:?}");
        if to == TargetFormat::Qcow2 {
            for d in &r.disks {
                qemu_img_check(&d.path);
            }
            compare("raw", &e.raw1, "qcow2", &d.path);
        } else {
            assert!(fs::read(&d.path).unwrap() == fs::read(&e.raw1).unwrap());
        }
    }
    let mut after = listing(e.dir.path());
    after.retain(|n| !n.starts_with("out-"));
    assert_eq!(after, before, "something was written outside OUTDIR");
}

/// SHA-512 manifests (which the package inspector accepts) are verified by the extractor too,
/// whether the manifest comes before the disks or after them (then every digest it may ask for
/// was computed while the disks streamed).
#[test]
fn ova_with_sha512_manifest_extracts() {
    let e = env();
    let o = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "");
    let mf = |disk_hex: &str| format!("SHA512(test.ovf)= {}\nSHA512(disk1.vmdk)= {disk_hex}\n", sum_hex("sha512sum", o.as_bytes()));
    let good = mf(&sum_hex("sha512sum", &e.disk1));
    let package = |mf: &str, manifest_last: bool| {
        let mut t = Vec::new();
        tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
        if !manifest_last {
            tar_member(&mut t, "test.mf", b'0', mf.as_bytes(), "");
        }
        tar_member(&mut t, "disk1.vmdk", b'0', &e.disk1, "");
        if manifest_last {
            tar_member(&mut t, "test.mf", b'0', mf.as_bytes(), "");
        }
        tar_end(&mut t);
        t
    };
    for (i, manifest_last) in [false, true].into_iter().enumerate() {
        let t = package(&good, manifest_last);
        let rep = inspect_bytes(&t);
        assert!(rep.is_accepted(), "{:?}", rep.findings);
        let out = e.dir.path().join(format!("out-{i}"));
        let r =
            extract_ova(&mut &t[..], &out, &opts(), &mut NoProgress).unwrap_or_else(|err| panic!("manifest last: {manifest_last}: {err}"));
        assert!(r.manifest_verified, "manifest last: {manifest_last}");
        assert_eq!(listing(&out), vec!["disk1.qcow2".to_string()]);
        compare("raw", &e.raw1, "qcow2", &r.disks[0].path);
    }

    // One wrong hex digit in the disk's SHA-512: refused, nothing left behind.
    let mut bad_hex = sum_hex("sha512sum", &e.disk1);
    let last = if bad_hex.ends_with('0') { "1" } else { "0" };
    bad_hex.replace_range(127.., last);
    let before = listing(e.dir.path());
    for (i, manifest_last) in [false, true].into_iter().enumerate() {
        let t = package(&mf(&bad_hex), manifest_last);
        let rep = inspect_bytes(&t);
        assert!(rep.has(codes::OVA_DIGEST), "{:?}", rep.findings);
        let out = e.dir.path().join(format!("bad-{i}"));
        let err = extract_ova(&mut &t[..], &out, &opts(), &mut NoProgress)
            .err()
            .unwrap_or_else(|| panic!("manifest last: {manifest_last}: a wrong SHA-512 passed"));
        assert_eq!(err.kind(), ErrorKind::Package, "{err}");
        assert!(err.to_string().contains("the digest of \"disk1.vmdk\" does not match the manifest"), "{err}");
        assert_eq!(listing(&out), Vec::<String>::new());
        fs::remove_dir(&out).unwrap();
    }
    assert_eq!(listing(e.dir.path()), before);
}

/// One package of the agreement table: what the OVF says, the members after it (a manifest
/// among them, if any), and the expected outcome: `None` = both accept, `Some(fragment)` = both
/// refuse, the inspector with `code` and a message containing `fragment`, the extractor with
/// an error containing it.
struct Agreement {
    name: &'static str,
    package: Vec<u8>,
    refusal: Option<(&'static str, String)>,
}

/// The package inspector (which the browser and the server run first) and the extractor apply
/// one rule each to disk format URIs (the whole URI, ASCII case ignored), to a VMDK disk's
/// subformat against its URI, and to manifest lines (algorithm names in any case, ovftool's
/// and VirtualBox's spacing, digests of the algorithm's length): whatever one accepts the other
/// accepts, and what one refuses the other refuses, in the same words.
fn agreement_on_uris_subformats_and_manifests(e: &Env) -> Table {
    let raw = raw_payload(CAP2);
    let package = |disks: &[(&str, &str, u64)], mf: Option<&dyn Fn(&str) -> String>| {
        let o = ovf(disks, "");
        let mut t = Vec::new();
        tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
        if let Some(mf) = mf {
            tar_member(&mut t, "test.mf", b'0', mf(&o).as_bytes(), "");
        }
        for (href, _, _) in disks {
            let data: &[u8] = match *href {
                "disk1.vmdk" => &e.disk1,
                "sparse1.vmdk" => &e.sparse1,
                "disk1.img" => &raw,
                other => panic!("no member {other}"),
            };
            tar_member(&mut t, href, b'0', data, "");
        }
        tar_end(&mut t);
        t
    };
    let so = |uri: &'static str| [("disk1.vmdk", uri, CAP1)];
    let disk1_sha256 = sha256_hex(&e.disk1);
    let disk1_sha512 = sum_hex("sha512sum", &e.disk1);
    let refuse = |code: &'static str, why: &str| Some((code, why.to_string()));
    let mismatch = |want: &str, uri: &str, got: &str| format!("the OVF says a {want} VMDK ({uri}) but the member is a {got} VMDK");
    let cases = vec![
        // Format URIs.
        Agreement {
            name: "uri-lower-case",
            package: package(&so("http://www.vmware.com/interfaces/specifications/vmdk.html#streamoptimized"), None),
            refusal: None,
        },
        Agreement {
            name: "sparse-uri-upper-case",
            package: package(&[("sparse1.vmdk", "HTTP://WWW.VMWARE.COM/INTERFACES/SPECIFICATIONS/VMDK.HTML#SPARSE", CAP1)], None),
            refusal: None,
        },
        Agreement {
            name: "raw-uri-lower-case",
            package: package(&[("disk1.img", "http://en.wikipedia.org/wiki/byte", CAP2)], None),
            refusal: None,
        },
        Agreement {
            name: "uri-lookalike",
            package: package(&so("http://evil.example/vmdk.html#streamOptimized"), None),
            refusal: refuse(codes::OVF_DISK_FORMAT, "only streamOptimized VMDK ("),
        },
        Agreement {
            name: "uri-suffix",
            package: package(&so("http://www.vmware.com/interfaces/specifications/vmdk.html#sparse-ish"), None),
            refusal: refuse(codes::OVF_DISK_FORMAT, "only streamOptimized VMDK ("),
        },
        // A VMDK disk's subformat against its URI.
        Agreement {
            name: "stream-uri-sparse-disk",
            package: package(&[("sparse1.vmdk", SO_URI, CAP1)], None),
            refusal: refuse(codes::OVF_DISK_FORMAT, &mismatch("streamOptimized", SO_URI, "monolithicSparse")),
        },
        Agreement {
            name: "sparse-uri-stream-disk",
            package: package(&[("disk1.vmdk", SPARSE_URI, CAP1)], None),
            refusal: refuse(codes::OVF_DISK_FORMAT, &mismatch("monolithicSparse", SPARSE_URI, "streamOptimized")),
        },
        // Manifests.
        Agreement {
            name: "manifest-lower-case",
            package: package(
                &so(SO_URI),
                Some(&|o: &str| {
                    format!("sha256(test.ovf)= {}\nSha512(disk1.vmdk)= {}\n", sha256_hex(o.as_bytes()), disk1_sha512.to_ascii_uppercase())
                }),
            ),
            refusal: None,
        },
        Agreement {
            name: "manifest-virtualbox",
            package: package(
                &so(SO_URI),
                Some(&|o: &str| format!("SHA256 (test.ovf) = {}\r\nSHA256 (disk1.vmdk) = {disk1_sha256}\r\n", sha256_hex(o.as_bytes()))),
            ),
            refusal: None,
        },
        Agreement {
            name: "manifest-short-digest",
            package: package(
                &so(SO_URI),
                Some(&|o: &str| format!("SHA256(test.ovf)= {}\nSHA256(disk1.vmdk)= {}\n", sha256_hex(o.as_bytes()), sha1_hex(&e.disk1))),
            ),
            refusal: refuse(codes::OVA_MANIFEST, "manifest line 2 does not hold a SHA256 digest (64 hex digits)"),
        },
        Agreement {
            name: "manifest-md5",
            package: package(&so(SO_URI), Some(&|_: &str| "md5(disk1.vmdk)= 00112233445566778899aabbccddeeff\n".into())),
            refusal: refuse(codes::OVA_MANIFEST, "manifest digest algorithm \"md5\" is not accepted (SHA1, SHA256, SHA512)"),
        },
        Agreement {
            name: "manifest-duplicate",
            package: package(
                &so(SO_URI),
                Some(&|o: &str| {
                    format!(
                        "SHA256(test.ovf)= {}\nSHA256(disk1.vmdk)= {disk1_sha256}\nsha512(disk1.vmdk)= {disk1_sha512}\n",
                        sha256_hex(o.as_bytes())
                    )
                }),
            ),
            refusal: refuse(codes::OVA_MANIFEST, "the manifest lists \"disk1.vmdk\" twice"),
        },
    ];
    Table { kind: Kind::Ova, cases, sniff_blind: Vec::new() }
}

/// Which extractor the packages of an agreement table go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// [`extract_ova`] (qcow2 output).
    Ova,
    /// [`extract_uec`] (default limits).
    Uec,
}

/// One group of the agreement table: packages for one extractor, and the cases whose evidence
/// the browser's sniff cannot see (see [`check_agreement`]).
struct Table {
    kind: Kind,
    cases: Vec<Agreement>,
    sniff_blind: Vec<&'static str>,
}

/// The inspector (which the browser and the server run first) and the extractor agree: one
/// table of packages, grouped by the rules they exercise (each group's comment says which), run
/// through both sides and the browser's sniff by [`check_agreement`]. Each case was once a
/// package one side accepted and the other refused, or refused in other words.
#[test]
fn inspector_and_extractor_agree() {
    let e = env();
    let tables = vec![
        agreement_on_uris_subformats_and_manifests(&e),
        agreement_on_tar_rules(&e),
        agreement_on_members_declarations_and_limits(&e),
        agreement_on_ovf_file_sizes(&e),
        agreement_on_uec_trailing_data(),
    ];
    let mut names: Vec<&str> = tables.iter().flat_map(|t| t.cases.iter().map(|c| c.name)).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "case names are unique across the table");
    check_agreement(&e, tables);
}

/// Runs every case through the server's inspector, the browser's sniff and its group's
/// extractor:
/// * a package both accept: the sniff accepts it too and one disk is extracted (an OVA's
///   `disk1.qcow2` of the OVF's capacity; a UEC's `ami.raw` and whatever else it reports);
/// * a package both refuse: the extractor's error and one of the inspector's errors (with the
///   case's code) contain the case's reason, and nothing is left in the output directory. The
///   sniff refuses it with the same code and reason, unless the case is in `sniff_blind` (its
///   evidence lies beyond the head the browser reads, or needs the whole archive): then the
///   sniff may stay silent, but it may not refuse it for another reason.
fn check_agreement(e: &Env, tables: Vec<Table>) {
    let before = listing(e.dir.path());
    let mut problems = Vec::new();
    for (kind, sniff_blind, c) in tables.iter().flat_map(|t| t.cases.iter().map(move |c| (t.kind, &t.sniff_blind, c))) {
        let name = c.name;
        let rep = inspect_bytes(&c.package);
        let sniff = diskimage::sniff_reader(&&c.package[..], &InspectOptions::default());
        let out = e.dir.path().join(format!("out-{name}"));
        // On success: what is wrong with the extraction (if anything), and the files it wrote.
        let got = match kind {
            Kind::Ova => extract_ova(&mut &c.package[..], &out, &opts(), &mut NoProgress).map(|r| {
                let ok = r.disks.len() == 1 && r.disks[0].virtual_size == r.ovf.disks[0].capacity;
                ((!ok).then(|| format!("extracted {:?}", r.disks)), vec!["disk1.qcow2".to_string()])
            }),
            Kind::Uec => extract_uec(&&c.package[..], &out, UecLimits::default(), &mut NoProgress).map(|r| {
                let ok = r.parts.iter().filter(|p| p.role == UecRole::Ami).count() == 1;
                let mut files: Vec<String> = r.parts.iter().map(|p| p.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
                files.sort();
                ((!ok).then(|| format!("extracted {:?}", r.parts)), files)
            }),
        };
        let mut problem = |p: String| problems.push(format!("{name}: {p}"));
        match (&c.refusal, got) {
            (None, Ok((wrong, files))) => {
                if !rep.is_accepted() {
                    problem(format!("the inspector refuses: {:?}", rep.findings));
                }
                // The browser's sniff never refuses what the server's inspector accepts.
                if !sniff.is_accepted() {
                    problem(format!("the sniff refuses: {:?}", sniff.findings));
                }
                if let Some(wrong) = wrong {
                    problem(wrong);
                }
                if listing(&out) != files {
                    problem(format!("output {:?}", listing(&out)));
                }
            }
            (None, Err(err)) => problem(format!("the extractor refuses ({err}); the inspector says {:?}", rep.verdict)),
            (Some((_, why)), Ok(_)) => problem(format!("the extractor accepts; expected {why:?} (the inspector says {:?})", rep.findings)),
            (Some((code, why)), Err(err)) => {
                if err.kind() != ErrorKind::Package || !err.to_string().contains(why.as_str()) {
                    problem(format!("the extractor must say {why:?}: {err}"));
                }
                let says = |r: &Report| r.errors().any(|f| f.code == *code && f.message.contains(why.as_str()));
                if !says(&rep) {
                    problem(format!("the inspector must refuse with {code} and {why:?}: {:?}", rep.findings));
                }
                let blind = sniff_blind.contains(&name);
                if !says(&sniff) && (!blind || !sniff.is_accepted()) {
                    problem(format!(
                        "the sniff must {} with {code} and {why:?}: {:?}",
                        if blind { "accept or refuse" } else { "refuse" },
                        sniff.findings
                    ));
                }
                if !listing(&out).is_empty() {
                    problem(format!("output left behind: {:?}", listing(&out)));
                }
            }
        }
        let _ = fs::remove_dir_all(&out);
    }
    for t in &tables {
        for blind in &t.sniff_blind {
            assert!(t.cases.iter().any(|c| c.name == *blind), "no case {blind:?}");
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    assert_eq!(listing(e.dir.path()), before, "something was written outside OUTDIR");
}

/// A tar of `(name, typeflag, data)` members, in order.
fn tar_typed(members: &[(&str, u8, &[u8])]) -> Vec<u8> {
    let mut t = Vec::new();
    for (n, flag, d) in members {
        tar_member(&mut t, n, *flag, d, "");
    }
    tar_end(&mut t);
    t
}

/// A tar of regular-file members, in order.
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let typed: Vec<(&str, u8, &[u8])> = members.iter().map(|(n, d)| (*n, b'0', *d)).collect();
    tar_typed(&typed)
}

/// The tar rules (docs/formats.md §2.5 #19) are one set of functions ([`diskimage::formats::tar`])
/// that the inspector's walk and the extractor's streaming walk both apply: header magic and
/// checksum, member names and types, PAX records, the member limit, nothing after the end of
/// the archive. Each case was a package one walker accepted and the other refused, or refused
/// in other words.
fn agreement_on_tar_rules(e: &Env) -> Table {
    let d1: &[u8] = &e.disk1;
    let o1 = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "");
    let iso: &[u8] = b"install media: a file the OVF references that is not a disk";
    let ok = |name: &'static str, package: Vec<u8>| Agreement { name, package, refusal: None };
    let no = |name: &'static str, package: Vec<u8>, code: &'static str, why: &str| Agreement {
        name,
        package,
        refusal: Some((code, why.to_string())),
    };
    let pax_member = |t: &mut Vec<u8>, flag: u8, data: &[u8]| tar_member(t, "PaxHeader", flag, data, "");
    let mut cases = Vec::new();
    let mut trailing = tar_of(&[("test.ovf", o1.as_bytes()), ("disk1.vmdk", d1)]);
    trailing.extend_from_slice(b"a payload after the end of the archive");
    trailing.resize(trailing.len().next_multiple_of(10240), 0);
    cases.push(no("data-after-the-end", trailing, codes::TAR_TRAILING_DATA, "data follows the end of the archive"));
    cases.push(ok("contiguous-file-member", tar_typed(&[("test.ovf", b'0', o1.as_bytes()), ("disk1.vmdk", b'7', d1)])));
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o1.as_bytes(), "");
    pax_member(&mut t, b'g', &pax("comment", "made by hand"));
    tar_member(&mut t, "disk1.vmdk", b'0', d1, "");
    tar_end(&mut t);
    cases.push(no("global-pax-header", t, codes::TAR_PAX, "the archive has a global PAX header; packages may not use them"));
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o1.as_bytes(), "");
    pax_member(&mut t, b'x', &pax("linkpath", "/etc/passwd"));
    tar_member(&mut t, "disk1.vmdk", b'0', d1, "");
    tar_end(&mut t);
    cases.push(no(
        "pax-link-target",
        t,
        codes::TAR_PAX,
        "a PAX header gives a link target (linkpath); packages may hold regular files only",
    ));
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o1.as_bytes(), "");
    pax_member(&mut t, b'x', b"garbage");
    tar_member(&mut t, "disk1.vmdk", b'0', d1, "");
    tar_end(&mut t);
    cases.push(no("pax-malformed", t, codes::TAR_PAX, "a PAX header is malformed"));
    // A GNU long-name record that names no member: the extractor's tar crate refused it, the
    // inspector did not look (one reader now; the rule is its).
    let mut t = Vec::new();
    tar_member(&mut t, "test.ovf", b'0', o1.as_bytes(), "");
    tar_member(&mut t, "disk1.vmdk", b'0', d1, "");
    tar_member(&mut t, "././@LongLink", b'L', b"a-name-for-nothing.vmdk\0", "");
    tar_end(&mut t);
    cases.push(no("name-record-without-its-member", t, codes::TAR_HEADER, "the archive ends after a name record without its member"));
    cases.push(ok("member-name-with-dot-slashes", tar_of(&[("././test.ovf", o1.as_bytes()), ("././disk1.vmdk", d1)])));
    cases.push(no(
        "member-name-traversal",
        tar_of(&[("test.ovf", o1.as_bytes()), ("../disk1.vmdk", d1)]),
        codes::TAR_MEMBER_NAME,
        "member \"../disk1.vmdk\" has a name that climbs out of the archive (..)",
    ));
    cases.push(no(
        "member-name-empty-component",
        tar_of(&[("test.ovf", o1.as_bytes()), ("a//disk1.vmdk", d1)]),
        codes::TAR_MEMBER_NAME,
        "member \"a//disk1.vmdk\" has an empty or \".\" name component",
    ));
    cases.push(no(
        "member-twice",
        tar_of(&[("test.ovf", o1.as_bytes()), ("disk1.vmdk", d1), ("disk1.vmdk", d1)]),
        codes::TAR_DUPLICATE,
        "the archive holds \"disk1.vmdk\" twice",
    ));
    cases.push(no(
        "symbolic-link",
        tar_typed(&[("test.ovf", b'0', o1.as_bytes()), ("disk1.vmdk", b'2', b"")]),
        codes::TAR_MEMBER_TYPE,
        "member \"disk1.vmdk\" is a symbolic link; packages may hold regular files only",
    ));
    // The disk's header as a pre-POSIX (v7) tar writes it: no "ustar" magic, a valid checksum.
    let mut v7 = tar_of(&[("test.ovf", o1.as_bytes()), ("disk1.vmdk", d1)]);
    let h = 512 + o1.len().next_multiple_of(512);
    v7[h + 257..h + 265].fill(0);
    v7[h + 148..h + 156].fill(b' ');
    let sum: u32 = v7[h..h + 512].iter().map(|&b| u32::from(b)).sum();
    v7[h + 148..h + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    cases.push(no("header-without-ustar-magic", v7, codes::TAR_HEADER, "a tar member header is damaged (bad magic or checksum)"));
    // More members than either walker takes: the OVF, the disk and 64 referenced files.
    let names: Vec<String> = (0..64).map(|i| format!("f{i}.txt")).collect();
    let refs: String = names.iter().enumerate().map(|(i, n)| format!(r#"<File ovf:id="x{i}" ovf:href="{n}"/>"#)).collect();
    let o = o1.replace("</References>", &format!("{refs}</References>"));
    let mut members: Vec<(&str, &[u8])> = vec![("test.ovf", o.as_bytes())];
    members.extend(names.iter().map(|n| (n.as_str(), iso)));
    members.push(("disk1.vmdk", d1));
    cases.push(no("too-many-members", tar_of(&members), codes::TAR_TOO_MANY, "the archive has more than 64 members"));
    Table {
        kind: Kind::Ova,
        cases,
        sniff_blind: vec![
            // The second disk1.vmdk, the end of the archive and the 66th member lie beyond the
            // head the browser reads.
            "member-twice",
            "data-after-the-end",
            "too-many-members",
            "name-record-without-its-member",
        ],
    }
}

/// The package rules beyond URIs, subformats and manifest lines, one case per rule: which
/// members an OVA may hold (the descriptor, one manifest, one certificate, the files the OVF
/// references, nothing else), what the manifest must cover, how often a `File` or `Disk` may be
/// declared, what a disk's capacity and an `href` must be, and the descriptor's bounds. Each
/// was a package one side accepted and the other refused, or refused in other words.
fn agreement_on_members_declarations_and_limits(e: &Env) -> Table {
    let d1: &[u8] = &e.disk1;
    let o1 = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "");
    let mf1 = manifest_for(&o1, &[("disk1.vmdk", d1)]);
    let iso: &[u8] = b"install media: a file the OVF references that is not a disk";
    let file = |id: &str, href: &str| format!(r#"<File ovf:id="{id}" ovf:href="{href}"/>"#);
    let mib = |n: u64| format!(r#"ovf:capacity="{n}" ovf:capacityAllocationUnits="byte * 2^20""#);
    let disk = |id: &str, file_ref: &str, capacity: &str| {
        format!(r#"<Disk ovf:diskId="{id}" ovf:fileRef="{file_ref}" {capacity} ovf:format="{SO_URI}"/>"#)
    };
    let cap1 = mib(CAP1 >> 20);
    let with = |refs: &[String], disks: &[String]| ovf_envelope("", &refs.concat(), &disks.concat());
    // The OVF of `o1` with other capacity attributes.
    let with_capacity = |capacity: &str| with(&[file("file0", "disk1.vmdk")], &[disk("vmdisk0", "file0", capacity)]);
    // disk1.vmdk and tools.iso (a referenced non-disk file), the ISO's File element given.
    let with_iso = |iso_file: &str| with(&[file("file0", "disk1.vmdk"), iso_file.to_string()], &[disk("vmdisk0", "file0", &cap1)]);
    let o_iso = with_iso(&file("file1", "tools.iso"));
    let ok = |name: &'static str, package: Vec<u8>| Agreement { name, package, refusal: None };
    let no = |name: &'static str, package: Vec<u8>, code: &'static str, why: &str| Agreement {
        name,
        package,
        refusal: Some((code, why.to_string())),
    };
    let href_unsafe =
        |href: &str, why: &str| format!("the OVF File \"file0\" has ovf:href {href:?}, which is not a safe member name: {why}");
    let reserved = |id: &str, href: &str| {
        format!("the OVF File {id:?} refers to {href:?}; an OVA's .ovf, .mf and .cert members are its descriptor, manifest and certificate, never its files")
    };
    let mut cases = vec![
        // Which members an OVA may hold.
        ok("referenced-non-disk-file", tar_of(&[("test.ovf", o_iso.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])),
        ok(
            "manifest-and-certificate-are-not-referenced",
            tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf1.as_bytes()), ("test.cert", &cert(&mf1)), ("disk1.vmdk", d1)]),
        ),
        no(
            "unreferenced-member",
            tar_of(&[("test.ovf", o1.as_bytes()), ("extra.txt", b"hello"), ("disk1.vmdk", d1)]),
            codes::OVA_UNREFERENCED,
            "the OVA member \"extra.txt\" is not referenced by the OVF",
        ),
        no(
            "unreferenced-member-last",
            tar_of(&[("test.ovf", o1.as_bytes()), ("disk1.vmdk", d1), ("extra.txt", b"hello")]),
            codes::OVA_UNREFERENCED,
            "the OVA member \"extra.txt\" is not referenced by the OVF",
        ),
        no(
            "second-descriptor",
            tar_of(&[("test.ovf", o1.as_bytes()), ("other.ovf", o1.as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVA_OVF_FIRST,
            "the OVA holds a second descriptor, \"other.ovf\"",
        ),
        no(
            "referenced-second-descriptor",
            {
                let o = with_iso(&file("file1", "other.ovf"));
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("other.ovf", o1.as_bytes())])
            },
            codes::OVF_HREF,
            &reserved("file1", "other.ovf"),
        ),
        no(
            "disk-is-the-descriptor",
            {
                let o = with(&[file("file0", "test.ovf")], &[disk("vmdisk0", "file0", &cap1)]);
                tar_of(&[("test.ovf", o.as_bytes())])
            },
            codes::OVF_HREF,
            &reserved("file0", "test.ovf"),
        ),
        no(
            "file-is-the-manifest",
            {
                let o = with_iso(&file("file1", "test.mf"));
                let mf = manifest_for(&o, &[("disk1.vmdk", d1)]);
                tar_of(&[("test.ovf", o.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            &reserved("file1", "test.mf"),
        ),
        // What the manifest must cover.
        no(
            "manifest-omits-the-disk",
            {
                let mf = manifest_for(&o1, &[]);
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVA_MANIFEST,
            "the manifest does not list \"disk1.vmdk\"",
        ),
        no(
            "manifest-omits-the-descriptor",
            {
                let mf = format!("SHA256(disk1.vmdk)= {}\n", sha256_hex(d1));
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVA_MANIFEST,
            "the manifest does not list \"test.ovf\"",
        ),
        no(
            "manifest-omits-a-referenced-file",
            {
                let mf = manifest_for(&o_iso, &[("disk1.vmdk", d1)]);
                tar_of(&[("test.ovf", o_iso.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
            },
            codes::OVA_MANIFEST,
            "the manifest does not list \"tools.iso\"",
        ),
        no(
            "manifest-lists-the-certificate",
            {
                let c: &[u8] = b"a certificate";
                let mf = manifest_for(&o1, &[("disk1.vmdk", d1), ("test.cert", c)]);
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf.as_bytes()), ("test.cert", c), ("disk1.vmdk", d1)])
            },
            codes::OVA_MANIFEST,
            "the manifest lists \"test.cert\", which is neither the descriptor nor a file the OVF references",
        ),
        no(
            "manifest-lists-an-absent-member",
            {
                let mf = manifest_for(&o1, &[("disk1.vmdk", d1), ("ghost.vmdk", d1)]);
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVA_MANIFEST,
            "the manifest lists \"ghost.vmdk\", which is neither the descriptor nor a file the OVF references",
        ),
        no(
            "two-manifests",
            tar_of(&[("test.ovf", o1.as_bytes()), ("a.mf", mf1.as_bytes()), ("b.mf", mf1.as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVA_MANIFEST,
            "the OVA has two manifests, \"a.mf\" and \"b.mf\"; at most one is allowed",
        ),
        no(
            "manifest-not-utf8",
            {
                let mut mf = mf1.clone().into_bytes();
                mf.extend_from_slice(b"\xff\n");
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", &mf), ("disk1.vmdk", d1)])
            },
            codes::OVA_MANIFEST,
            "the manifest \"test.mf\" is not UTF-8 text",
        ),
        no(
            "manifest-too-large",
            {
                let mf = format!("{mf1}{}", "\n".repeat(70_000));
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVA_MANIFEST,
            &format!("the manifest \"test.mf\" is {} bytes, more than the 65536 allowed", mf1.len() + 70_000),
        ),
        no(
            "digest-mismatch",
            {
                let mf = manifest_for(&o1, &[("disk1.vmdk", b"another disk")]);
                tar_of(&[("test.ovf", o1.as_bytes()), ("test.mf", mf.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVA_DIGEST,
            "the digest of \"disk1.vmdk\" does not match the manifest",
        ),
        // Certificates.
        no(
            "two-certificates",
            tar_of(&[
                ("test.ovf", o1.as_bytes()),
                ("test.mf", mf1.as_bytes()),
                ("a.cert", &cert(&mf1)),
                ("b.cert", &cert(&mf1)),
                ("disk1.vmdk", d1),
            ]),
            codes::OVA_CERTIFICATE,
            "the OVA has two certificates, \"a.cert\" and \"b.cert\"; at most one is allowed",
        ),
        no(
            "certificate-before-manifest",
            tar_of(&[("test.ovf", o1.as_bytes()), ("test.cert", &cert(&mf1)), ("test.mf", mf1.as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVA_CERTIFICATE,
            "the certificate \"test.cert\" comes before the manifest \"test.mf\"; an OVA puts the manifest first",
        ),
        no(
            "certificate-too-large",
            tar_of(&[
                ("test.ovf", o1.as_bytes()),
                ("test.mf", mf1.as_bytes()),
                ("test.cert", &vec![b'A'; (64 << 10) + 1]),
                ("disk1.vmdk", d1),
            ]),
            codes::OVA_CERTIFICATE,
            "the certificate \"test.cert\" is 65537 bytes, more than the 65536 allowed",
        ),
        // A File or Disk declared twice.
        no(
            "file-id-twice",
            {
                let o = with_iso(&file("file0", "tools.iso"));
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
            },
            codes::OVF_INVALID,
            "the OVF declares File \"file0\" twice",
        ),
        no(
            "file-href-twice",
            {
                let o = with_iso(&file("file1", "disk1.vmdk"));
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_INVALID,
            "the OVF Files \"file0\" and \"file1\" both refer to \"disk1.vmdk\"",
        ),
        no(
            "disk-id-twice",
            {
                let o = with(
                    &[file("file0", "disk1.vmdk"), file("file1", "tools.iso")],
                    &[disk("vmdisk0", "file0", &cap1), disk("vmdisk0", "file1", &cap1)],
                );
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
            },
            codes::OVF_INVALID,
            "the OVF declares Disk \"vmdisk0\" twice",
        ),
        no(
            "two-disks-one-file",
            {
                let o = with(&[file("file0", "disk1.vmdk")], &[disk("vmdisk0", "file0", &cap1), disk("vmdisk1", "file0", &cap1)]);
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_INVALID,
            "the OVF Disks \"vmdisk0\" and \"vmdisk1\" both use \"disk1.vmdk\"",
        ),
        // A disk's capacity and its units.
        no(
            "capacity-missing",
            tar_of(&[("test.ovf", with_capacity("").as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVF_CAPACITY,
            "OVF disk \"vmdisk0\" has no ovf:capacity",
        ),
        no(
            "capacity-not-a-number",
            tar_of(&[("test.ovf", with_capacity(r#"ovf:capacity="12G""#).as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVF_CAPACITY,
            "OVF disk \"vmdisk0\" has ovf:capacity \"12G\", which is not a whole number",
        ),
        no(
            "capacity-units-unknown",
            tar_of(&[
                ("test.ovf", with_capacity(r#"ovf:capacity="12" ovf:capacityAllocationUnits="furlongs""#).as_bytes()),
                ("disk1.vmdk", d1),
            ]),
            codes::OVF_CAPACITY,
            "OVF disk \"vmdisk0\" has ovf:capacityAllocationUnits \"furlongs\", which is not a unit of bytes",
        ),
        no(
            "capacity-overflow",
            tar_of(&[("test.ovf", with_capacity(&mib(1 << 50)).as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVF_CAPACITY,
            "OVF disk \"vmdisk0\" has a capacity of 2^64 bytes or more",
        ),
        ok(
            "capacity-units-spelled-differently",
            tar_of(&[
                ("test.ovf", with_capacity(r#"ovf:capacity="12" ovf:capacityAllocationUnits="Byte*2^20""#).as_bytes()),
                ("disk1.vmdk", d1),
            ]),
        ),
        ok(
            "capacity-units-times-1024",
            tar_of(&[
                ("test.ovf", with_capacity(r#"ovf:capacity="12288" ovf:capacityAllocationUnits="byte * 1024""#).as_bytes()),
                ("disk1.vmdk", d1),
            ]),
        ),
        no(
            "capacity-units-spelled-differently-wrong-capacity",
            tar_of(&[
                ("test.ovf", with_capacity(r#"ovf:capacity="24" ovf:capacityAllocationUnits="Byte * 2^20""#).as_bytes()),
                ("disk1.vmdk", d1),
            ]),
            codes::OVF_CAPACITY,
            "disk vmdisk0 (disk1.vmdk): the OVF says 25165824 bytes but the VMDK holds 12582912",
        ),
        no(
            "capacity-mismatch",
            tar_of(&[("test.ovf", with_capacity(&mib(24)).as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVF_CAPACITY,
            "disk vmdisk0 (disk1.vmdk): the OVF says 25165824 bytes but the VMDK holds 12582912",
        ),
        no(
            "raw-capacity-mismatch",
            {
                let o = ovf(&[("disk1.img", BYTE_URI, CAP2)], "");
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.img", &raw_payload(CAP2 - 512))])
            },
            codes::OVF_CAPACITY,
            "disk vmdisk0 (disk1.img): the OVF says 3145728 bytes but the raw member holds 3145216",
        ),
        // hrefs.
        no(
            "href-drive-letter",
            {
                let o = ovf(&[("C:disk1.vmdk", SO_URI, CAP1)], "");
                tar_of(&[("test.ovf", o.as_bytes()), ("C:disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            "the OVF File \"file0\" has ovf:href \"C:disk1.vmdk\", which is a URL or a drive path (it holds ':')",
        ),
        no(
            "href-url",
            {
                let o = ovf(&[("file:disk1.vmdk", SO_URI, CAP1)], "");
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            "the OVF File \"file0\" has ovf:href \"file:disk1.vmdk\", which is a URL or a drive path (it holds ':')",
        ),
        no(
            "href-traversal",
            {
                let o = ovf(&[("../disk1.vmdk", SO_URI, CAP1)], "");
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            &href_unsafe("../disk1.vmdk", "member \"../disk1.vmdk\" has a name that climbs out of the archive (..)"),
        ),
        no(
            "href-empty-component",
            {
                let o = ovf(&[("dir//disk1.vmdk", SO_URI, CAP1)], "");
                tar_of(&[("test.ovf", o.as_bytes()), ("dir//disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            &href_unsafe("dir//disk1.vmdk", "member \"dir//disk1.vmdk\" has an empty or \".\" name component"),
        ),
        ok("href-dot-slash", {
            let o = ovf(&[("./disk1.vmdk", SO_URI, CAP1)], "");
            tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
        }),
        ok("href-with-two-dots-in-a-name", {
            let o = ovf(&[("disk..1.vmdk", SO_URI, CAP1)], "");
            tar_of(&[("test.ovf", o.as_bytes()), ("disk..1.vmdk", d1)])
        }),
        no(
            "href-missing",
            {
                let o = ovf(&[("disk9.vmdk", SO_URI, CAP1)], "");
                tar_of(&[("test.ovf", o.as_bytes())])
            },
            codes::OVF_HREF,
            "the OVF refers to \"disk9.vmdk\", which is not in the OVA",
        ),
        // The other File and Disk rules.
        no(
            "file-without-href",
            tar_of(&[("test.ovf", with_iso(r#"<File ovf:id="file9"/>"#).as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVF_INVALID,
            "the OVF File \"file9\" has no ovf:href",
        ),
        no(
            "file-compressed",
            {
                let o = with_iso(r#"<File ovf:id="file1" ovf:href="tools.iso" ovf:compression="gzip"/>"#);
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
            },
            codes::OVF_INVALID,
            "the OVF File \"file1\" (\"tools.iso\") is compressed (ovf:compression \"gzip\"); compressed files are not supported",
        ),
        ok("file-compression-identity", {
            let o = with_iso(r#"<File ovf:id="file1" ovf:href="tools.iso" ovf:compression="identity"/>"#);
            tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
        }),
        no(
            "file-chunked",
            {
                let o = with_iso(r#"<File ovf:id="file1" ovf:href="tools.iso" ovf:chunkSize="1024"/>"#);
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
            },
            codes::OVF_INVALID,
            "the OVF File \"file1\" (\"tools.iso\") is split into chunks (ovf:chunkSize); chunked files are not supported",
        ),
        no(
            "disk-without-file",
            {
                let o = with(&[file("file0", "disk1.vmdk")], &[format!(r#"<Disk ovf:diskId="vmdisk0" {cap1} ovf:format="{SO_URI}"/>"#)]);
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            "OVF disk \"vmdisk0\" has no ovf:fileRef (empty disks are not supported)",
        ),
        no(
            "disk-with-an-unknown-file",
            {
                let o = with(&[file("file0", "disk1.vmdk")], &[disk("vmdisk0", "file9", &cap1)]);
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_HREF,
            "OVF disk \"vmdisk0\" refers to file \"file9\", which the OVF's References do not declare",
        ),
        no(
            "no-disks",
            {
                let o = with(&[file("file0", "disk1.vmdk")], &[]);
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_DISK_FORMAT,
            "the OVF declares no disks",
        ),
        ok("disk-element-outside-the-disk-section", {
            let o = o1.replace("<Name>Test VM</Name>", "<Name>Test VM</Name><vmw:Disk ovf:diskId=\"not-a-disk\"/>");
            tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
        }),
        // The descriptor itself.
        no(
            "root-not-envelope",
            {
                let o = o1.replace("<Envelope ", "<Package ").replace("</Envelope>", "</Package>");
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_INVALID,
            "the OVF descriptor's root element is <Package>, not <Envelope>",
        ),
        no(
            "descriptor-not-utf8",
            {
                let mut o = o1.clone().into_bytes();
                o.extend_from_slice(b"<!-- \xe9t\xe9 -->");
                tar_of(&[("test.ovf", &o), ("disk1.vmdk", d1)])
            },
            codes::OVF_INVALID,
            "the OVF descriptor is not UTF-8 text",
        ),
        no(
            "descriptor-not-xml",
            tar_of(&[("test.ovf", o1.replace("</Envelope>", "").as_bytes()), ("disk1.vmdk", d1)]),
            codes::OVF_INVALID,
            "the OVF descriptor is not well-formed XML",
        ),
        no(
            "descriptor-with-a-dtd",
            {
                let o = ovf(&[("disk1.vmdk", SO_URI, CAP1)], "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>");
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_INVALID,
            "the OVF descriptor contains a DTD or entity declaration",
        ),
        no(
            "descriptor-too-many-nodes",
            {
                let o = o1.replace("<Name>Test VM</Name>", &format!("<Name>Test VM</Name>{}", "<a/>".repeat(12_000)));
                tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1)])
            },
            codes::OVF_INVALID,
            "the OVF descriptor has more than 10000 XML nodes",
        ),
    ];
    let big = format!("{o1}<!--{}-->", "x".repeat(300 << 10));
    cases.push(no(
        "descriptor-too-large",
        tar_of(&[("test.ovf", big.as_bytes()), ("disk1.vmdk", d1)]),
        codes::OVF_INVALID,
        &format!("the OVF descriptor \"test.ovf\" is {} bytes, more than the 262144 allowed", big.len()),
    ));
    Table {
        kind: Kind::Ova,
        cases,
        sniff_blind: vec![
            // Beyond the head: the members after the disk, the disk's content, the end of
            // the archive.
            "unreferenced-member-last",
            "digest-mismatch",
            "capacity-mismatch",
            "capacity-units-spelled-differently-wrong-capacity",
            "href-missing",
        ],
    }
}

/// A `File`'s `ovf:size` is its member's byte length: when present it must be a whole number
/// and equal the member's size in the tar, on both sides, in the same words (the member's
/// header gives its size, so the browser's sniff sees it for the members in its head). Absent,
/// nothing is checked (VirtualBox writes none).
fn agreement_on_ovf_file_sizes(e: &Env) -> Table {
    let d1: &[u8] = &e.disk1;
    let iso: &[u8] = b"install media: a file the OVF references that is not a disk";
    let disk = format!(
        r#"<Disk ovf:diskId="vmdisk0" ovf:fileRef="file0" ovf:capacity="{}" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="{SO_URI}"/>"#,
        CAP1 >> 20
    );
    // disk1.vmdk then tools.iso, with these `ovf:size` attributes (None: no attribute).
    let package = |disk_size: Option<&str>, iso_size: Option<&str>| {
        let size = |s: Option<&str>| s.map(|s| format!(r#" ovf:size="{s}""#)).unwrap_or_default();
        let refs = format!(
            r#"<File ovf:id="file0" ovf:href="disk1.vmdk"{}/><File ovf:id="file1" ovf:href="tools.iso"{}/>"#,
            size(disk_size),
            size(iso_size)
        );
        let o = ovf_envelope("", &refs, &disk);
        tar_of(&[("test.ovf", o.as_bytes()), ("disk1.vmdk", d1), ("tools.iso", iso)])
    };
    let (n_disk, n_iso) = (d1.len().to_string(), iso.len().to_string());
    let ok = |name: &'static str, package: Vec<u8>| Agreement { name, package, refusal: None };
    let no = |name: &'static str, package: Vec<u8>, why: String| Agreement { name, package, refusal: Some((codes::OVF_INVALID, why)) };
    let mismatch = |id: &str, href: &str, said: u64, holds: usize| {
        format!("the OVF File {id:?} ({href:?}) has ovf:size {said} but its member holds {holds} bytes")
    };
    let not_number = |id: &str, href: &str, said: &str| {
        format!("the OVF File {id:?} ({href:?}) has ovf:size {said:?}, which is not a whole number of bytes")
    };
    let cases = vec![
        ok("file-sizes-absent", package(None, None)),
        ok("file-sizes-exact", package(Some(&n_disk), Some(&n_iso))),
        ok("file-size-of-the-disk-only", package(Some(&n_disk), None)),
        no(
            "disk-file-size-too-small",
            package(Some(&(d1.len() - 1).to_string()), None),
            mismatch("file0", "disk1.vmdk", d1.len() as u64 - 1, d1.len()),
        ),
        no(
            "disk-file-size-too-large",
            package(Some(&(d1.len() + 512).to_string()), Some(&n_iso)),
            mismatch("file0", "disk1.vmdk", d1.len() as u64 + 512, d1.len()),
        ),
        no("non-disk-file-size-wrong", package(Some(&n_disk), Some("0")), mismatch("file1", "tools.iso", 0, iso.len())),
        no("file-size-with-units", package(Some("12 MB"), None), not_number("file0", "disk1.vmdk", "12 MB")),
        no("file-size-negative", package(None, Some("-1")), not_number("file1", "tools.iso", "-1")),
        no("file-size-empty", package(Some(""), None), not_number("file0", "disk1.vmdk", "")),
        no("file-size-beyond-2-64", package(Some("18446744073709551616"), None), not_number("file0", "disk1.vmdk", "18446744073709551616")),
    ];
    Table {
        kind: Kind::Ova,
        cases,
        sniff_blind: vec![
            // tools.iso's header lies after the disk, beyond the head the browser reads.
            "non-disk-file-size-wrong",
        ],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.tar");
    fs::write(&p, data).unwrap();
    run("gzip", &["-c", "-6", p.to_str().unwrap()])
}

fn kernel() -> Vec<u8> {
    let mut k = vec![0u8; 8192];
    k[0x1FE] = 0x55;
    k[0x1FF] = 0xAA;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

fn uec(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut t = Vec::new();
    for (n, d) in members {
        tar_member(&mut t, n, b'0', d, "");
    }
    tar_end(&mut t);
    gzip(&t)
}

#[test]
fn uec_tarballs() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = vec![0u8; 4 << 20];
    img[1080] = 0x53;
    img[1081] = 0xEF;
    img[2 << 20..(2 << 20) + 5000].fill(0x11);
    let mut initrd = b"070701".to_vec();
    initrd.extend_from_slice(&[b'0'; 200]);
    let good = uec(&[
        ("foo.img", img.clone()),
        ("foo-vmlinuz-virtual", kernel()),
        ("foo-initrd-virtual", initrd.clone()),
        ("README.files", b"hello".to_vec()),
    ]);
    let out = dir.path().join("good");
    let r = extract_uec(&&good[..], &out, UecLimits::default(), &mut NoProgress).unwrap();
    assert_eq!(r.parts.len(), 3);
    assert_eq!(r.skipped_members, vec!["README.files".to_string()]);
    let ami = r.parts.iter().find(|p| p.role == UecRole::Ami).unwrap();
    assert_eq!(fs::read(&ami.path).unwrap(), img);
    assert_eq!(fs::read(out.join("aki.bin")).unwrap(), kernel());
    assert_eq!(fs::read(out.join("ari.bin")).unwrap(), initrd);

    let before = listing(dir.path());
    let mut qimg = img.clone();
    qimg[..4].copy_from_slice(b"QFI\xfb");
    let cases: Vec<(&str, Vec<u8>, UecLimits, &str)> = vec![
        ("bad-kernel", uec(&[("foo.img", img.clone()), ("foo-vmlinuz", vec![1u8; 4096])]), UecLimits::default(), "not a kernel"),
        ("bad-initrd", uec(&[("foo.img", img.clone()), ("foo-initrd", vec![1u8; 4096])]), UecLimits::default(), "not an initrd"),
        ("ami-is-qcow2", uec(&[("foo.img", qimg)]), UecLimits::default(), "not a raw image"),
        ("no-ami", uec(&[("foo-vmlinuz", kernel())]), UecLimits::default(), "no machine image"),
        ("two-amis", uec(&[("a.img", img.clone()), ("b.img", img.clone())]), UecLimits::default(), "two"),
        ("traversal", uec(&[("../foo.img", img.clone())]), UecLimits::default(), "climbs out of the archive"),
        (
            "bomb-ratio",
            uec(&[("foo.img", vec![0u8; 64 << 20])]),
            UecLimits { max_output: 1 << 40, max_ratio: 100, ratio_grace: 1 << 20 },
            "decompression bomb",
        ),
        (
            "bomb-size",
            uec(&[("foo.img", img.clone())]),
            UecLimits { max_output: 1 << 20, max_ratio: 1 << 20, ratio_grace: 0 },
            "inflates to more than 1048576 bytes",
        ),
    ];
    for (name, pkg, limits, msg) in cases {
        let out = dir.path().join(format!("out-{name}"));
        let err = extract_uec(&&pkg[..], &out, limits, &mut NoProgress).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(err.to_string().contains(msg), "{name}: {err}");
        assert!(matches!(err.kind(), ErrorKind::Package | ErrorKind::Limit), "{name}: {err}");
        assert_eq!(listing(&out), Vec::<String>::new(), "{name}: output left behind");
        fs::remove_dir(&out).unwrap();
    }
    assert_eq!(listing(dir.path()), before);
}

/// A raw machine image of `len` bytes for a UEC tarball: an ext superblock magic, 8 KiB that
/// do not compress (so no tarball of it nears the inflate ratio caps), zeros elsewhere.
fn uec_image(len: usize) -> Vec<u8> {
    let mut img = vec![0u8; len];
    img[1080] = 0x53;
    img[1081] = 0xEF;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in &mut img[4096..4096 + 8192] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    img
}

/// UEC tarballs: after the tar's end-of-archive blocks only zeros may follow inside the gzip
/// stream (anything else is a payload another tar reader might see as more members). The
/// extractor inflates the rest of the stream (bounded) and refuses it; the inspector applies
/// the same rule in the same words, and the browser's sniff too when the rest lies within the
/// output it inflates from the head.
fn agreement_on_uec_trailing_data() -> Table {
    let tarball = |img_len: usize, after: &[u8]| {
        let mut t = Vec::new();
        tar_member(&mut t, "foo.img", b'0', &uec_image(img_len), "");
        tar_member(&mut t, "foo-vmlinuz-virtual", b'0', &kernel(), "");
        tar_end(&mut t);
        t.extend_from_slice(after);
        gzip(&t)
    };
    // A whole second archive after the first one's end.
    let mut hidden = Vec::new();
    tar_member(&mut hidden, "evil.img", b'0', b"hidden payload", "");
    tar_end(&mut hidden);
    let mut far = vec![0u8; 2 << 20];
    far.extend_from_slice(b"a payload far after the end of the archive");
    let ok = |name: &'static str, package: Vec<u8>| Agreement { name, package, refusal: None };
    let trailing = |name: &'static str, package: Vec<u8>| Agreement {
        name,
        package,
        refusal: Some((
            codes::TAR_TRAILING_DATA,
            "data follows the end of the archive; another tar reader might see it as more members".to_string(),
        )),
    };
    let small = 128 << 10;
    let large = 4 << 20;
    // A second gzip member: `gzip -dc` and most libraries inflate it as more of the archive.
    let mut two_members = tarball(small, &[]);
    two_members.extend_from_slice(&gzip(&hidden));
    let cases = vec![
        Agreement {
            name: "uec-second-gzip-member",
            package: two_members,
            refusal: Some((codes::GZIP_INVALID, "data follows the end of the gzip stream".to_string())),
        },
        ok("uec-small", tarball(small, &[])),
        ok("uec-large", tarball(large, &[])),
        // GNU tar pads its output to a whole 10 KiB record; zeros are no payload.
        ok("uec-record-padding", tarball(small, &[0u8; 8192])),
        ok("uec-zeros-far-after-the-end", tarball(large, &vec![0u8; 2 << 20])),
        trailing("uec-small-data-after-the-end", tarball(small, b"a payload")),
        trailing("uec-small-archive-after-the-end", tarball(small, &hidden)),
        trailing("uec-large-data-after-the-end", tarball(large, b"a payload")),
        trailing("uec-large-archive-after-the-end", tarball(large, &hidden)),
        trailing("uec-data-far-after-the-end", tarball(small, &far)),
        // ~700:1 over 96 MiB: within the inspector's ratio; the extractor's old default
        // (512:1 past 64 MiB) refused it at import.
        ok("uec-ratio-700-over-96-mib", {
            let mut img = uec_image(96 << 20);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for b in &mut img[1 << 20..(1 << 20) + (40 << 10)] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let mut t = Vec::new();
            tar_member(&mut t, "foo.img", b'0', &img, "");
            tar_end(&mut t);
            gzip(&t)
        }),
    ];
    Table {
        kind: Kind::Uec,
        cases,
        sniff_blind: vec![
            // The end of the archive lies beyond the output the sniff inflates.
            "uec-second-gzip-member",
            "uec-large-data-after-the-end",
            "uec-large-archive-after-the-end",
            "uec-data-far-after-the-end",
        ],
    }
}

#[test]
fn cli_convert_and_extract() {
    let e = env();
    let exe = env!("CARGO_BIN_EXE_diskimage");
    let q = e.dir.path().join("cli.qcow2");
    let out = Command::new(exe)
        .args(["convert", e.raw1.to_str().unwrap(), q.to_str().unwrap(), "--to", "qcow2", "--compress", "zstd"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("MiB/s") && text.contains("read ") && text.contains("wrote "), "{text}");
    run("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", e.raw1.to_str().unwrap(), q.to_str().unwrap()]);
    // refusing to overwrite is a usage error (exit 2); a rejected input exits 1
    let again = Command::new(exe).args(["convert", e.raw1.to_str().unwrap(), q.to_str().unwrap(), "--to", "raw"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    let wrong = Command::new(exe)
        .args(["convert", e.raw1.to_str().unwrap(), e.dir.path().join("x.raw").to_str().unwrap(), "--to", "raw", "--from", "vdi"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    // extract
    let ova = e.dir.path().join("good.ova");
    let mut f = File::create(&ova).unwrap();
    f.write_all(&good_ova(&e)).unwrap();
    drop(f);
    let outdir = e.dir.path().join("extracted");
    let text = cli_extract(&ova, &outdir);
    assert!(
        text.contains("\"memory_mib\": 1024")
            && text.contains("MiB/s")
            && text.contains("disk vmdisk1 (disk2.vmdk, vmdk) -> ")
            && text.contains("certificate: none"),
        "{text}"
    );
    assert!(outdir.join("disk1.qcow2").exists() && outdir.join("disk2.qcow2").exists());
}

/// Runs `diskimage extract OVA OUTDIR`, asserts it succeeded, and returns what it printed.
fn cli_extract(ova: &std::path::Path, outdir: &std::path::Path) -> String {
    let x =
        Command::new(env!("CARGO_BIN_EXE_diskimage")).args(["extract", ova.to_str().unwrap(), outdir.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&x.stdout).into_owned();
    assert!(x.status.success(), "{text}{}", String::from_utf8_lossy(&x.stderr));
    text
}

/// qemu-img ends a streamOptimized VMDK whose tables precede the grains with its last grain,
/// without an end-of-stream marker, when that grain fills its sectors (incompressible data):
/// such a disk extracts whole; the same file cut at a grain boundary (one grain missing, so the
/// end of the input looks just as clean) is refused, not zero-filled.
#[test]
fn a_vmdk_ending_with_its_last_grain_extracts_and_one_cut_at_a_grain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cap: u64 = 4 << 20;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..cap)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let raw = dir.path().join("noise.raw");
    fs::write(&raw, &data).unwrap();
    let vmdk = dir.path().join("noise.vmdk");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw.to_str().unwrap(), vmdk.to_str().unwrap()],
    );
    let disk = fs::read(&vmdk).unwrap();
    // The grains follow the 64 KiB overhead, each a marker sector and its deflated bytes, padded
    // to whole sectors; the last ends the file.
    let mut pos = 128 * 512;
    let mut last = pos;
    while pos < disk.len() {
        let size = u32::from_le_bytes(disk[pos + 8..pos + 12].try_into().unwrap()) as usize;
        assert!(size > 0, "a metadata marker or the end-of-stream marker at {pos}: not the layout this test is about");
        last = pos;
        pos += (12 + size).next_multiple_of(512);
    }
    assert_eq!(pos, disk.len(), "the file ends with its last grain");
    let package = |disk: &[u8]| {
        let mut t = Vec::new();
        let o = ovf(&[("noise.vmdk", SO_URI, cap)], "");
        tar_member(&mut t, "test.ovf", b'0', o.as_bytes(), "");
        tar_member(&mut t, "noise.vmdk", b'0', disk, "");
        tar_end(&mut t);
        t
    };
    let out = dir.path().join("out");
    let r = extract_ova(&mut &package(&disk)[..], &out, &opts(), &mut NoProgress).unwrap();
    run("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), r.disks[0].path.to_str().unwrap()]);

    let cut = dir.path().join("cut");
    let err = extract_ova(&mut &package(&disk[..last])[..], &cut, &opts(), &mut NoProgress).unwrap_err().to_string();
    assert!(err.contains("ends inside a VMDK marker"), "{err}");
    assert!(!cut.exists() || listing(&cut).is_empty(), "a refused package leaves nothing: {:?}", listing(&cut));
}
