//! The Ceph backend against a real single-node Ceph (scripts/ceph-up.sh: mon + memstore OSD +
//! radosgw on loopback).
//!
//! Which cluster:
//! - If `S3_ENDPOINT`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are set (scripts/test.sh
//!   starts one cluster for the whole run and exports what ceph-up.sh prints), the shared tests
//!   use that cluster, each in its own fresh bucket.
//! - Otherwise the first test to need it starts one in `<target>/tmp/ceph-storage-tests` on
//!   127.0.0.1:17480 (+1 mon, +2..+41 OSD), stopped and removed about a second after the test
//!   run ends (`crates/testceph`). `cargo test -p storage` thus leaves nothing running.
//! - The fault test pauses radosgw, which would stall every other user of the gateway, so it
//!   always runs its own cluster (127.0.0.1:17580, `<target>/tmp/ceph-storage-fault`) and stops
//!   it when it is done.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{collect, pattern, recorder, signal, write_file, FaultCluster};
use storage::{open, Backend, BackendConfig, BackendKind, PutMode, S3Backend, StoreError};
use testceph::Cluster;

const SHARED_PORT: u16 = 17480;
const FAULT_PORT: u16 = 17580;

fn state_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn shared_cluster() -> Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| testceph::shared(&state_dir("ceph-storage-tests"), SHARED_PORT)).clone()
}

fn fresh_bucket() -> String {
    format!("hangar-test-{}", uuid::Uuid::new_v4().simple())
}

fn config(c: &Cluster, bucket: &str, timeout_secs: u64) -> BackendConfig {
    BackendConfig {
        name: "ceph-test".into(),
        kind: BackendKind::S3,
        endpoint: Some(c.endpoint.clone()),
        bucket: Some(bucket.into()),
        access_key_id: Some(c.access_key.clone()),
        secret_access_key: Some(c.secret_key.clone()),
        timeout_secs: Some(timeout_secs),
        part_size_mib: Some(5),
        ..Default::default()
    }
}

fn ceph(c: &Cluster, bucket: &str, timeout_secs: u64) -> S3Backend {
    S3Backend::open(&config(c, bucket, timeout_secs)).unwrap()
}

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_delete_with_multipart_and_ranges() {
    let c = shared_cluster();
    let bucket = fresh_bucket();
    let b = ceph(&c, &bucket, 20);
    // A bucket that does not exist yet: listing it fails, the health check creates it.
    assert!(b.incomplete_uploads().await.is_err(), "bucket {bucket} should not exist yet");
    b.check().await.unwrap();
    assert!(b.incomplete_uploads().await.unwrap().is_empty());
    b.check().await.unwrap(); // and again, now that it exists

    let dir = tempfile::tempdir().unwrap();
    let data = pattern(12 * MIB + 12_345, 7); // three 5 MiB parts, the last one short
    let src = dir.path().join("upload");
    write_file(&src, &data);
    let key = "8d3c1c2e-4a8b-4f0e-9a55-5b1f0e2d9c11.qcow2";
    assert_eq!(b.size(key).await.unwrap(), None);

    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |n| seen.lock().unwrap().push(n);
    let n = b.put_file(key, &src, PutMode::Copy, &progress).await.unwrap();
    assert_eq!(n, data.len() as u64);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen, vec![5 * MIB as u64, 10 * MIB as u64, data.len() as u64], "one call per part, in order");
    assert!(src.exists());
    assert_eq!(b.size(key).await.unwrap(), Some(data.len() as u64));
    assert!(b.incomplete_uploads().await.unwrap().is_empty());

    let all = collect(b.get(key, None).await.unwrap()).await.unwrap();
    assert!(all == data, "full read differs from what was written ({} vs {} bytes)", all.len(), data.len());
    let len = data.len() as u64;
    for r in [0..1, 17..5 * MIB as u64 + 3, 5 * MIB as u64..10 * MIB as u64, len - 100..len, len..len] {
        let got = collect(b.get(key, Some(r.clone())).await.unwrap()).await.unwrap();
        assert!(got == data[r.start as usize..r.end as usize], "range {r:?}: {} bytes", got.len());
    }
    for r in [10..len + 1, len + 5..len + 10, len + 1..len + 1] {
        let e = b.get(key, Some(r.clone())).await.err().expect("a range past the end is refused");
        assert!(matches!(e, StoreError::InvalidRange { size, .. } if size == len), "{r:?}: {e}");
    }

    // Small files go in one PUT; Move removes the source; an empty file is an object too.
    let small = pattern(1000, 8);
    write_file(&src, &small);
    let (last, progress) = recorder();
    assert_eq!(b.put_file("small", &src, PutMode::Move, &progress).await.unwrap(), 1000);
    assert_eq!(last.load(Ordering::SeqCst), 1000);
    assert!(!src.exists());
    assert_eq!(collect(b.get("small", None).await.unwrap()).await.unwrap(), small);
    write_file(&src, b"");
    assert_eq!(b.put_file("empty", &src, PutMode::Copy, &|_| {}).await.unwrap(), 0);
    assert_eq!(b.size("empty").await.unwrap(), Some(0));

    for k in [key, "small", "empty"] {
        b.delete(k).await.unwrap();
        assert_eq!(b.size(k).await.unwrap(), None);
        b.delete(k).await.unwrap(); // idempotent
    }
    assert!(matches!(b.get(key, None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(b.get(key, Some(0..10)).await, Err(StoreError::NotFound { .. })));

    // A writer that dies mid-upload (here: its future is dropped after the first part) leaves
    // an incomplete upload and no object; abort_incomplete_uploads() frees its parts.
    let crashed = "crashed-write";
    write_file(&src, &data);
    let first_part = tokio::sync::Notify::new();
    let notify = |_| first_part.notify_one();
    tokio::select! {
        r = b.put_file(crashed, &src, PutMode::Copy, &notify) => panic!("the write finished first: {r:?}"),
        _ = first_part.notified() => {}
    }
    let pending = b.incomplete_uploads().await.unwrap();
    assert_eq!(pending.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [crashed], "{pending:?}");
    assert_eq!(b.size(crashed).await.unwrap(), None);
    // The servers' periodic sweep keeps an upload this young (it may be a write still running
    // on another server that shares the bucket) and frees it once it is older than asked.
    assert_eq!(b.sweep_abandoned_writes(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(b.incomplete_uploads().await.unwrap().len(), 1);
    assert_eq!(b.sweep_abandoned_writes(Duration::ZERO).await.unwrap(), 1);
    assert!(b.incomplete_uploads().await.unwrap().is_empty());
    assert_eq!(b.size(crashed).await.unwrap(), None);
    // An operator's abort takes every incomplete upload, however young. A fresh signal: the
    // first write may have stored a wake-up after its first part (a later part's progress) that
    // would end this wait before the second write has begun.
    let second_part = tokio::sync::Notify::new();
    let notify_second = |_| second_part.notify_one();
    tokio::select! {
        r = b.put_file(crashed, &src, PutMode::Copy, &notify_second) => panic!("the write finished first: {r:?}"),
        _ = second_part.notified() => {}
    }
    assert_eq!(b.abort_incomplete_uploads().await.unwrap(), 1);
    assert!(b.incomplete_uploads().await.unwrap().is_empty());

    assert_eq!(b.space().await.unwrap(), storage::Space { free: None, total: None });
    assert_eq!(b.local_path(key), None);
    assert!(matches!(b.get("../x", None).await, Err(StoreError::InvalidKey { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_credentials() {
    let c = shared_cluster();
    let bucket = fresh_bucket();
    // Through the registry's entry point, as the server opens it.
    let b = open(&config(&c, &bucket, 10)).unwrap();
    assert_eq!((b.name(), b.kind()), ("ceph-test", BackendKind::S3));
    b.check().await.unwrap();
    let dbg = format!("{b:?}");
    assert!(!dbg.contains(&c.secret_key), "the secret key must not be printed: {dbg}");

    let mut wrong = config(&c, &bucket, 10);
    wrong.secret_access_key = Some("not-the-secret".into());
    let e = open(&wrong).unwrap().check().await.unwrap_err();
    assert!(matches!(e, StoreError::Remote(_)) && e.to_string().contains("403"), "{e}");

    let mut bad = config(&c, "Not_A_Bucket", 10);
    assert!(matches!(open(&bad), Err(StoreError::Config(_))));
    bad.bucket = Some(bucket);
    bad.part_size_mib = Some(1);
    assert!(open(&bad).unwrap_err().to_string().contains("part_size_mib"));

    // Nothing listens here: a clean, bounded failure.
    let mut down = config(&c, "nothing", 2);
    down.endpoint = Some("http://127.0.0.1:9".into());
    let started = Instant::now();
    assert!(open(&down).unwrap().check().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_mid_write_fails_the_write_cleanly() {
    let state = state_dir("ceph-storage-fault");
    let c = testceph::start(&state, FAULT_PORT);
    testceph::stop_when_the_run_ends(&state);
    let pid_file = state.join("run/client.rgw.a.pid");
    let rgw: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let guard = FaultCluster { state: state.clone(), paused: rgw };

    const TIMEOUT: u64 = 3;
    let b = ceph(&c, &fresh_bucket(), TIMEOUT);
    b.check().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(30 * MIB, 9); // six parts
    let src = dir.path().join("upload");
    write_file(&src, &data);
    let key = "1d6b0a0e-3c7f-4b0a-8f57-52b2f3b7d8a0";

    // Pause radosgw (SIGSTOP) as soon as the first part is stored: the write is in flight.
    let paused = AtomicBool::new(false);
    let stopped_at = std::sync::Mutex::new(None);
    let progress = |_done| {
        if !paused.swap(true, Ordering::SeqCst) {
            signal(rgw, "STOP");
            *stopped_at.lock().unwrap() = Some(Instant::now());
        }
    };
    let e = b.put_file(key, &src, PutMode::Copy, &progress).await.unwrap_err();
    let took = stopped_at.lock().unwrap().expect("the first part was stored").elapsed();
    assert!(matches!(e, StoreError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("within 3s"), "{e}");
    // The part bound, then at most the same bound for the first abort attempt.
    assert!(took < Duration::from_secs(2 * TIMEOUT + 2), "put_file took {took:?} after the pause");
    eprintln!("fault: put_file failed {:.1}s after the pause: {e}", took.as_secs_f32());
    // While the gateway is paused, reads time out too.
    assert!(matches!(b.size(key).await, Err(StoreError::Timeout { .. })));

    signal(rgw, "CONT");
    // No half image: no object, and the multipart upload gets aborted (the background retry
    // does it once the gateway answers again).
    assert_eq!(b.size(key).await.unwrap(), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = b.incomplete_uploads().await.unwrap();
        eprintln!("fault: incomplete uploads after the gateway resumed: {pending:?}");
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the failed upload was never aborted: {pending:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(b.size(key).await.unwrap(), None);

    // And the backend works again.
    assert_eq!(b.put_file(key, &src, PutMode::Copy, &|_| {}).await.unwrap(), data.len() as u64);
    let back = collect(b.get(key, None).await.unwrap()).await.unwrap();
    assert!(back == data, "read back {} bytes", back.len());
    b.delete(key).await.unwrap();
    drop(guard);
    assert!(!state.exists(), "the fault cluster is removed");
}
