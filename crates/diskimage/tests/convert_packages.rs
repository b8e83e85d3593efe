//! OVA and UEC extraction: good packages extract, every malicious variant of formats.md
//! §2.5 #19–21 is refused with a clear error and leaves nothing behind. Tar files are built by
//! hand here (so the hostile ones can be built at all); qemu-img makes the VMDK disks.
#![cfg(feature = "convert")]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::convert::ova::extract_ova;
use diskimage::convert::uec::{extract_uec, UecLimits, UecRole};
use diskimage::convert::{Compression, ConvertOptions, ErrorKind, NoProgress, TargetFormat};

const SO_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is required for these tests and could not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

fn sha256_hex(path_or_bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    fs::write(&p, path_or_bytes).unwrap();
    let out = String::from_utf8(run("sha256sum", &[p.to_str().unwrap()])).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

fn ovf(disks: &[(&str, &str, u64)], extra: &str) -> String {
    let mut refs = String::new();
    let mut dsks = String::new();
    for (i, (href, fmt, cap)) in disks.iter().enumerate() {
        refs += &format!("<File ovf:id=\"file{i}\" ovf:href=\"{href}\"/>");
        dsks += &format!(
            "<Disk ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" ovf:capacity=\"{}\" \
             ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:format=\"{fmt}\"/>",
            cap >> 20
        );
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{extra}
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>{refs}</References>
  <DiskSection><Info>disks</Info>{dsks}</DiskSection>
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
    disk1: Vec<u8>,
    disk2: Vec<u8>,
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
    let mk = |raw: &Path, name: &str| {
        let out = dir.path().join(name);
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                raw.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        fs::read(out).unwrap()
    };
    let disk1 = mk(&raw1, "disk1.vmdk");
    let disk2 = mk(&raw2, "disk2.vmdk");
    Env {
        dir,
        disk1,
        disk2,
        raw1,
    }
}

fn good_ova(e: &Env) -> Vec<u8> {
    let o = ovf(
        &[("disk1.vmdk", SO_URI, CAP1), ("disk2.vmdk", SO_URI, CAP2)],
        "",
    );
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
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    fs::write(&p, b).unwrap();
    let out = String::from_utf8(run("sha1sum", &[p.to_str().unwrap()])).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

fn opts() -> ConvertOptions {
    ConvertOptions {
        to: TargetFormat::Qcow2,
        compression: Compression::None,
        sync: false,
    }
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
    assert_eq!(r.ovf.name.as_deref(), Some("Test VM"));
    assert_eq!(r.ovf.os_type.as_deref(), Some("ubuntu64Guest"));
    assert_eq!(r.ovf.os_id, Some(94));
    assert_eq!(r.ovf.cpus, Some(2));
    assert_eq!(r.ovf.memory_mib, Some(1024));
    assert_eq!(r.disks.len(), 2);
    assert_eq!(r.disks[0].virtual_size, CAP1);
    assert_eq!(r.bytes_in, ova.len() as u64);
    for d in &r.disks {
        assert!(d.path.starts_with(&out));
        let chk = Command::new("qemu-img")
            .args(["check", "-f", "qcow2", d.path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            chk.status.success(),
            "{}",
            String::from_utf8_lossy(&chk.stdout)
        );
    }
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            e.raw1.to_str().unwrap(),
            r.disks[0].path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        listing(&out),
        vec!["disk1.qcow2".to_string(), "disk2.qcow2".to_string()]
    );
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
        "unsafe member name",
    );
    add(
        "absolute",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "/tmp/disk1.vmdk", b'0', &e.disk1, "");
        },
        "unsafe member name",
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
        "appears twice",
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
    let dtd = ovf(
        &[("disk1.vmdk", SO_URI, CAP1)],
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>",
    );
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
        "unsafe member name",
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
            let mf = format!(
                "SHA256(test.ovf)= {}\nSHA256(disk1.vmdk)= {}\n",
                sha256_hex(o1.as_bytes()),
                "0".repeat(64)
            );
            tar_member(t, "test.mf", b'0', mf.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "digest mismatch",
    );
    add(
        "md5-manifest",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(
                t,
                "test.mf",
                b'0',
                b"MD5(disk1.vmdk)= 00112233445566778899aabbccddeeff\n",
                "",
            );
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "not accepted",
    );
    add(
        "flat-descriptor-disk",
        &|t| {
            tar_member(t, "test.ovf", b'0', o1.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0',
            b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n", "");
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
    let flat = ovf(
        &[(
            "disk1.vmdk",
            "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicFlat",
            CAP1,
        )],
        "",
    );
    add(
        "non-stream-format",
        &|t| {
            tar_member(t, "test.ovf", b'0', flat.as_bytes(), "");
            tar_member(t, "disk1.vmdk", b'0', &e.disk1, "");
        },
        "only streamOptimized",
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
    v
}

#[test]
fn malicious_ovas_are_refused_and_leave_nothing() {
    let e = env();
    let before = listing(e.dir.path());
    for (name, pkg, msg) in malicious_ovas(&e) {
        let out = e.dir.path().join(format!("out-{name}"));
        let err = extract_ova(&mut &pkg[..], &out, &opts(), &mut NoProgress)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Package | ErrorKind::Rejected | ErrorKind::Corrupt
            ),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(msg), "{name}: {err}");
        assert_eq!(
            listing(&out),
            Vec::<String>::new(),
            "{name}: output left behind"
        );
        fs::remove_dir(&out).unwrap();
    }
    assert_eq!(
        listing(e.dir.path()),
        before,
        "something was written outside OUTDIR"
    );
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
    let r = extract_uec(&mut &good[..], &out, UecLimits::default(), &mut NoProgress).unwrap();
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
        (
            "bad-kernel",
            uec(&[("foo.img", img.clone()), ("foo-vmlinuz", vec![1u8; 4096])]),
            UecLimits::default(),
            "not a kernel",
        ),
        (
            "bad-initrd",
            uec(&[("foo.img", img.clone()), ("foo-initrd", vec![1u8; 4096])]),
            UecLimits::default(),
            "not an initrd",
        ),
        (
            "ami-is-qcow2",
            uec(&[("foo.img", qimg)]),
            UecLimits::default(),
            "not a raw image",
        ),
        (
            "no-ami",
            uec(&[("foo-vmlinuz", kernel())]),
            UecLimits::default(),
            "no machine image",
        ),
        (
            "two-amis",
            uec(&[("a.img", img.clone()), ("b.img", img.clone())]),
            UecLimits::default(),
            "two",
        ),
        (
            "traversal",
            uec(&[("../foo.img", img.clone())]),
            UecLimits::default(),
            "unsafe member name",
        ),
        (
            "bomb-ratio",
            uec(&[("foo.img", vec![0u8; 64 << 20])]),
            UecLimits {
                max_output: 1 << 40,
                max_ratio: 100,
                ratio_grace: 1 << 20,
            },
            "decompression bomb",
        ),
        (
            "bomb-size",
            uec(&[("foo.img", img.clone())]),
            UecLimits {
                max_output: 1 << 20,
                max_ratio: 1 << 20,
                ratio_grace: 0,
            },
            "inflates beyond",
        ),
    ];
    for (name, pkg, limits, msg) in cases {
        let out = dir.path().join(format!("out-{name}"));
        let err = extract_uec(&mut &pkg[..], &out, limits, &mut NoProgress)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(err.to_string().contains(msg), "{name}: {err}");
        assert!(
            matches!(err.kind(), ErrorKind::Package | ErrorKind::Limit),
            "{name}: {err}"
        );
        assert_eq!(
            listing(&out),
            Vec::<String>::new(),
            "{name}: output left behind"
        );
        fs::remove_dir(&out).unwrap();
    }
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn cli_convert_and_extract() {
    let e = env();
    let exe = env!("CARGO_BIN_EXE_diskimage");
    let q = e.dir.path().join("cli.qcow2");
    let out = Command::new(exe)
        .args([
            "convert",
            e.raw1.to_str().unwrap(),
            q.to_str().unwrap(),
            "--to",
            "qcow2",
            "--compress",
            "zstd",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("MiB/s") && text.contains("read ") && text.contains("wrote "),
        "{text}"
    );
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            e.raw1.to_str().unwrap(),
            q.to_str().unwrap(),
        ],
    );
    // refusing to overwrite is a usage error (exit 2); a rejected input exits 1
    let again = Command::new(exe)
        .args([
            "convert",
            e.raw1.to_str().unwrap(),
            q.to_str().unwrap(),
            "--to",
            "raw",
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let wrong = Command::new(exe)
        .args([
            "convert",
            e.raw1.to_str().unwrap(),
            e.dir.path().join("x.raw").to_str().unwrap(),
            "--to",
            "raw",
            "--from",
            "vdi",
        ])
        .output()
        .unwrap();
    assert_eq!(
        wrong.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // extract
    let ova = e.dir.path().join("good.ova");
    let mut f = File::create(&ova).unwrap();
    f.write_all(&good_ova(&e)).unwrap();
    drop(f);
    let outdir = e.dir.path().join("extracted");
    let x = Command::new(exe)
        .args(["extract", ova.to_str().unwrap(), outdir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&x.stdout);
    assert!(
        x.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&x.stderr)
    );
    assert!(
        text.contains("\"memory_mib\": 1024") && text.contains("MiB/s"),
        "{text}"
    );
    assert!(outdir.join("disk1.qcow2").exists() && outdir.join("disk2.qcow2").exists());
}
