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
