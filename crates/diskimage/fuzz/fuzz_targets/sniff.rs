//! Fuzz the browser entry point: head + tail, then every follow-up the sniffer asks for.
#![no_main]
use diskimage::{sniff, SniffOutcome, SparseBytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let mut view = SparseBytes::new(size);
    let (h, t) = SparseBytes::initial_ranges(size);
    for r in [h, t] {
        view.insert(r.offset, data[r.offset as usize..r.end() as usize].to_vec());
    }
    for _ in 0..16 {
        match sniff(&view) {
            SniffOutcome::Done(_) => return,
            SniffOutcome::NeedMore(ranges) => {
                for r in ranges {
                    assert!(r.end() <= size, "asked for bytes past the end");
                    view.insert(r.offset, data[r.offset as usize..r.end() as usize].to_vec());
                }
            }
        }
    }
    panic!("sniff did not finish");
});
