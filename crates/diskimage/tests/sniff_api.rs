//! The browser's sniffing protocol: head + tail, then exactly the ranges the sniffer asks for.

use diskimage::limits::{SNIFF_HEAD, SNIFF_MAX_FOLLOWUPS, SNIFF_TAIL};
use diskimage::{sniff, ByteRange, Format, SniffOutcome, SparseBytes, Verdict};
use std::process::Command;

fn make(args: &[&str], out: &std::path::Path) -> Vec<u8> {
    let st = Command::new("qemu-img").args(args).arg(out).arg("16M").status().expect("qemu-img is required");
    assert!(st.success());
    std::fs::read(out).expect("read image")
}

fn piece(data: &[u8], r: ByteRange) -> Vec<u8> {
    data[r.offset as usize..r.end() as usize].to_vec()
}

/// Drives the protocol; returns the report and every follow-up range requested.
fn browser(data: &[u8]) -> (diskimage::Report, Vec<ByteRange>) {
    let mut view = SparseBytes::new(data.len() as u64);
    let (h, t) = SparseBytes::initial_ranges(data.len() as u64);
    assert_eq!((h.offset, h.len), (0, SNIFF_HEAD.min(data.len() as u64)));
    assert_eq!(t.len, SNIFF_TAIL.min(data.len() as u64));
    view.insert(h.offset, piece(data, h));
    view.insert(t.offset, piece(data, t));
    let mut asked = Vec::new();
    loop {
        match sniff(&view) {
            SniffOutcome::Done(r) => return (r, asked),
            SniffOutcome::NeedMore(ranges) => {
                assert!(!ranges.is_empty());
                for r in ranges {
                    asked.push(r);
                    view.insert(r.offset, piece(data, r));
                }
                assert!(asked.len() <= SNIFF_MAX_FOLLOWUPS, "too many follow-ups: {asked:?}");
            }
        }
    }
}

#[test]
fn vhdx_needs_two_follow_ups_then_reports_the_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = make(&["create", "-q", "-f", "vhdx"], &dir.path().join("a.vhdx"));
    let (r, asked) = browser(&data);
    assert_eq!(r.format, Format::Vhdx);
    assert_eq!(r.virtual_size, Some(16 << 20));
    assert_eq!(r.verdict, Verdict::Accepted);
    // First the headers and region table (64..256 KiB) in one range, then the metadata region
    // qemu puts at 3 MiB (table and items in one range): two follow-ups in all.
    let first = asked.first().map(|r| (r.offset, r.len));
    assert_eq!(first, Some((64 << 10, 192 << 10)), "{asked:?}");
    assert!(asked.iter().any(|r| r.offset == 3 << 20), "{asked:?}");
    assert_eq!(asked.len(), 2, "{asked:?}");
}

#[test]
fn qcow2_and_fixed_vhd_decide_from_head_and_tail_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = make(&["create", "-q", "-f", "qcow2"], &dir.path().join("a.qcow2"));
    let (r, asked) = browser(&q);
    assert_eq!((r.format, r.virtual_size, asked.len()), (Format::Qcow2, Some(16 << 20), 0));
    let v = make(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed"], &dir.path().join("a.vhd"));
    let (r, asked) = browser(&v);
    assert_eq!((r.format, r.subformat.as_deref(), asked.len()), (Format::Vhd, Some("fixed"), 0));
}

#[test]
fn a_sniffer_that_keeps_asking_gives_up_with_a_partial_report() {
    // A VHDX whose region table points the metadata at ever new places cannot exist, but a view
    // that never receives the bytes it asks for must still end: after the follow-up budget the
    // sniffer answers Done with `sniff-incomplete`.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = make(&["create", "-q", "-f", "vhdx"], &dir.path().join("b.vhdx"));
    let mut view = SparseBytes::new(data.len() as u64);
    let (h, t) = SparseBytes::initial_ranges(data.len() as u64);
    view.insert(h.offset, piece(&data, h));
    view.insert(t.offset, piece(&data, t));
    for i in 0..=SNIFF_MAX_FOLLOWUPS {
        match sniff(&view) {
            SniffOutcome::NeedMore(_) => view.insert((1 << 20) + i as u64 * 4096, vec![0; 16]),
            SniffOutcome::Done(r) => {
                assert_eq!(r.format, Format::Vhdx);
                assert!(r.has(diskimage::codes::SNIFF_INCOMPLETE), "{r:?}");
                return;
            }
        }
    }
    panic!("sniff never finished");
}

#[test]
fn report_round_trips_through_json() {
    let r = diskimage::inspect(&[0u8; 4096][..], &Default::default());
    let j = serde_json::to_string(&r).expect("serialise");
    assert!(j.contains("\"format\":\"raw\"") && j.contains("\"verdict\":\"accepted\""), "{j}");
    let back: diskimage::Report = serde_json::from_str(&j).expect("deserialise");
    assert_eq!(back, r);
    for f in diskimage::ALL_FORMATS {
        assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        assert_eq!(serde_json::to_string(&f).expect("json"), format!("\"{}\"", f.as_str()));
        assert!(!f.label().is_empty());
    }
    assert_eq!(Format::Vhd.glance_disk_format(), Some("vhd"));
    assert_eq!(Format::Ova.glance_disk_format(), None);
    assert_eq!(Format::Ova.glance_container_format(), Some("ova"));
    assert_eq!("vpc".parse::<Format>(), Ok(Format::Vhd));
    assert!("floppy".parse::<Format>().is_err());
}

/// An OVA made with tar: the descriptor, two raw disks of `disk1` and `disk2` bytes, then a
/// manifest and whatever `extra` members follow (written under `dir`).
fn ova(dir: &std::path::Path, disk1: usize, disk2: usize, extra: &[(&str, &[u8])]) -> Vec<u8> {
    use sha2::Digest;
    let raw = "http://en.wikipedia.org/wiki/Byte";
    let ovf = format!(
        r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:id="f1" ovf:href="disk1.img"/><File ovf:id="f2" ovf:href="disk2.img"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="root" ovf:fileRef="f1" ovf:capacity="{disk1}" ovf:format="{raw}"/>
    <Disk ovf:diskId="data" ovf:fileRef="f2" ovf:capacity="{disk2}" ovf:format="{raw}"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm1"><Info>vm</Info><Name>Sniffed appliance</Name>
    <OperatingSystemSection ovf:id="96"><Info>os</Info><Description>Debian GNU/Linux 12 (64-bit)</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><ResourceType>3</ResourceType><VirtualQuantity>2</VirtualQuantity></Item>
      <Item><ResourceType>4</ResourceType><AllocationUnits>byte * 2^20</AllocationUnits><VirtualQuantity>1024</VirtualQuantity></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#
    );
    let files: Vec<(&str, Vec<u8>)> =
        vec![("app.ovf", ovf.into_bytes()), ("disk1.img", vec![0x11; disk1]), ("disk2.img", vec![0x22; disk2])];
    let mut mf = String::new();
    for (name, bytes) in &files {
        mf.push_str(&format!("SHA256({name})= {:x}\n", sha2::Sha256::digest(bytes)));
    }
    let mut names: Vec<String> = Vec::new();
    for (name, bytes) in files.iter().map(|(n, b)| (*n, b.as_slice())).chain([("app.mf", mf.as_bytes())]).chain(extra.iter().copied()) {
        std::fs::write(dir.join(name), bytes).expect("write member");
        names.push(name.to_owned());
    }
    let out = dir.join("app.ova");
    let st = Command::new("tar").arg("--format=ustar").arg("-cf").arg(&out).arg("-C").arg(dir).args(&names).status().expect("tar");
    assert!(st.success());
    std::fs::read(out).expect("read ova")
}

#[test]
fn an_ova_is_listed_whole_from_a_few_follow_ups() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Disk 2's header, the manifest and the end of the archive all lie past the 64 KiB head.
    let data = ova(dir.path(), 1 << 20, 512 << 10, &[]);
    let (r, asked) = browser(&data);
    assert_eq!((r.format, r.verdict), (Format::Ova, Verdict::Accepted), "{r:?}");
    assert!(!asked.is_empty() && asked.len() <= SNIFF_MAX_FOLLOWUPS, "{asked:?}");
    let p = r.package.expect("package facts");
    assert!(p.complete, "{p:?}");
    let disks: Vec<_> = p.disks.iter().map(|d| (d.id.as_str(), d.member.as_str(), d.format.as_str(), d.capacity, d.size)).collect();
    assert_eq!(
        disks,
        [("root", "disk1.img", "raw", Some(1 << 20), Some(1 << 20)), ("data", "disk2.img", "raw", Some(512 << 10), Some(512 << 10))]
    );
    let roles: Vec<_> = p.members.iter().map(|m| (m.name.as_str(), m.role.as_str())).collect();
    assert_eq!(roles, [("app.ovf", "descriptor"), ("disk1.img", "disk"), ("disk2.img", "disk"), ("app.mf", "manifest")]);
    let mf = p.manifest.expect("the manifest past the head was read");
    assert_eq!((mf.member.as_str(), mf.algorithm.as_str(), mf.entries), ("app.mf", "SHA256", 3));
    assert_eq!(p.name.as_deref(), Some("Sniffed appliance"));
    assert_eq!(p.os.as_deref(), Some("Debian GNU/Linux 12 (64-bit)"));
    assert_eq!((p.cpus, p.memory_mib), (Some(2), Some(1024)));
}

#[test]
fn an_ova_member_past_the_head_that_climbs_out_is_refused_in_the_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = ova(dir.path(), 1 << 20, 4096, &[("evil.txt", b"boo")]);
    // Rename the last member (past the head) to a path that climbs out, fixing its checksum.
    let at = data.windows(8).rposition(|w| w == b"evil.txt").expect("member header");
    data[at..at + 11].copy_from_slice(b"../evil.txt");
    let hdr = &mut data[at..at + 512];
    hdr[148..156].copy_from_slice(b"        ");
    let sum: u32 = hdr.iter().map(|&b| u32::from(b)).sum();
    hdr[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    assert!(at > SNIFF_HEAD as usize);
    let (r, asked) = browser(&data);
    assert!(!asked.is_empty());
    assert_eq!((r.format, r.verdict), (Format::Ova, Verdict::Rejected), "{r:?}");
    assert!(r.findings.iter().any(|f| f.message.contains("../evil.txt")), "{r:?}");
}
