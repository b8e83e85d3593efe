//! Helpers shared by the storage integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use futures::StreamExt;
use storage::{ByteStream, StoreError};

/// Deterministic, non-repeating bytes (xorshift64*), so a shifted or truncated read cannot
/// compare equal by accident.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

pub async fn collect(mut s: ByteStream) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A progress callback that records the last value it was given.
pub fn recorder() -> (std::sync::Arc<std::sync::atomic::AtomicU64>, impl Fn(u64) + Send + Sync) {
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let l = last.clone();
    (last, move |n| l.store(n, std::sync::atomic::Ordering::SeqCst))
}

/// Sends `sig` (`STOP`, `CONT`, …) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A fault test's own Ceph with one daemon (`paused`) it stops mid-write: resumes the daemon and
/// stops and removes the cluster when dropped, even when an assertion failed.
pub struct FaultCluster {
    pub state: std::path::PathBuf,
    pub paused: u32,
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        signal(self.paused, "CONT");
        let _ = std::process::Command::new("bash").arg(testceph::scripts().join("ceph-down.sh")).arg(&self.state).arg("--purge").status();
    }
}
