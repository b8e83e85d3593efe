//! Fuzz the server entry point: full inspection of an in-memory file.
#![no_main]
use diskimage::{inspect, InspectOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = inspect(data, &InspectOptions::default());
    // A verdict always comes with a reason.
    assert!(r.is_accepted() || r.errors().next().is_some());
});
