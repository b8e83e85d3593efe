//! The RBD backend against a real single-node Ceph (scripts/ceph-up.sh, with an RBD pool), with
//! Ceph's own `rbd` CLI as the oracle: what a compute node would see and do.
//!
//! Which cluster: as in `tests/ceph.rs` (the one scripts/test.sh exports, else this run's own on
//! 127.0.0.1:17480 in `<target>/tmp/ceph-storage-tests`). The fault test pauses the OSD, which
//! would stall every other user of the cluster, so it runs its own (127.0.0.1:17780) and stops it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{collect, pattern, signal, write_file, FaultCluster};
use storage::{Backend, BackendConfig, BackendKind, PutMode, RbdBackend, StoreError, RBD_PARTIAL_PREFIX};
use testceph::Cluster;

const SHARED_PORT: u16 = 17480;
const FAULT_PORT: u16 = 17780;
const MIB: u64 = 1 << 20;

fn state_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn shared_cluster() -> Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| testceph::shared(&state_dir("ceph-storage-tests"), SHARED_PORT)).clone()
}

fn backend(c: &Cluster, timeout_secs: u64) -> RbdBackend {
    RbdBackend::open(&BackendConfig {
        name: "rbd-test".into(),
        kind: BackendKind::Rbd,
        pool: Some(c.rbd_pool.clone()),
        conf: Some(c.conf.clone()),
        timeout_secs: Some(timeout_secs),
        ..Default::default()
    })
    .unwrap()
}

/// Runs `rbd` (or `ceph`) against the cluster; panics with its stderr on failure.
fn cli(c: &Cluster, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).arg("-c").arg(&c.conf).args(args).output().unwrap();
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn images(c: &Cluster) -> Vec<String> {
    let v = json(&cli(c, "rbd", &["ls", "--format", "json", &c.rbd_pool]));
    v.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect()
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A sparse raw disk of `size` bytes: data in a few places, a hole elsewhere, and one range of
/// zeros that was written (not a hole) — which must not be sent either.
fn sparse_disk(path: &Path, size: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut logical = vec![0u8; size as usize];
    for (at, len, seed) in [(0, MIB + 3, 1), (20 * MIB + 512, 3 * MIB / 2, 2), (size - 100, 100, 3)] {
        let d = pattern(len as usize, seed);
        f.write_all_at(&d, at).unwrap();
        logical[at as usize..(at + len) as usize].copy_from_slice(&d);
    }
    f.write_all_at(&vec![0u8; 4 * MIB as usize], 40 * MIB).unwrap();
    logical
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_raw_is_stored_as_a_protected_snapshot_that_compute_nodes_clone() {
    let c = shared_cluster();
    let b = backend(&c, 20);
    b.check().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let src = dir.path().join("disk.raw");
    let logical = sparse_disk(&src, size);
    let key = key();
    assert_eq!(b.size(&key).await.unwrap(), None);

    let seen = std::sync::Mutex::new(Vec::new());
    let stored = b.put_file(&key, &src, PutMode::Copy, &|n| seen.lock().unwrap().push(n)).await.unwrap();
    assert_eq!(stored, size);
    assert_eq!(seen.lock().unwrap().last(), Some(&size), "progress ends at the size");
    assert!(src.exists(), "the source is left alone");

    // Ceph's view: the image under the key, its snapshot protected, nothing partial left.
    let names = images(&c);
    assert!(names.contains(&key), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(&format!("{RBD_PARTIAL_PREFIX}{key}"))), "{names:?}");
    let snaps = json(&cli(&c, "rbd", &["snap", "ls", "--format", "json", &format!("{}/{key}", c.rbd_pool)]));
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert_eq!(snaps[0]["name"], "snap");
    assert_eq!(snaps[0]["protected"], "true", "{snaps}");
    let info = json(&cli(&c, "rbd", &["info", "--format", "json", &format!("{}/{key}", c.rbd_pool)]));
    assert_eq!(info["size"], size);
    assert_eq!(info["order"], 22);
    let features: Vec<&str> = info["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for f in ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"] {
        assert!(features.contains(&f), "{features:?}");
    }

    // The bytes, exported by Ceph's own tool from the snapshot, are the file's.
    let export = dir.path().join("export.raw");
    cli(&c, "rbd", &["export", &format!("{}/{key}@snap", c.rbd_pool), export.to_str().unwrap()]);
    assert!(std::fs::read(&export).unwrap() == logical, "rbd export differs from the source");

    // Sparse stays sparse: three 4 MiB objects hold data; the hole and the written zeros do not.
    let du = json(&cli(&c, "rbd", &["du", "--format", "json", &format!("{}/{key}", c.rbd_pool)]));
    let used: u64 = du["images"].as_array().unwrap().iter().map(|i| i["used_size"].as_u64().unwrap()).max().unwrap();
    assert!(used > 0 && used <= 12 * MIB, "rbd du: {used} bytes used of {size}: {du}");
    eprintln!("rbd: {size} byte image, {used} bytes used");

    // Reads, whole and ranged, through the backend.
    assert_eq!(b.size(&key).await.unwrap(), Some(size));
    assert!(collect(b.get(&key, None).await.unwrap()).await.unwrap() == logical);
    let r = 20 * MIB..22 * MIB + 7;
    assert!(collect(b.get(&key, Some(r.clone())).await.unwrap()).await.unwrap() == logical[r.start as usize..r.end as usize]);
    assert!(matches!(b.get(&key, Some(0..size + 1)).await, Err(StoreError::InvalidRange { .. })));
    assert!(matches!(b.get(&uuid::Uuid::new_v4().to_string(), None).await, Err(StoreError::NotFound { .. })));

    // The location a compute service clones from.
    let fsid = cli(&c, "ceph", &["fsid"]).trim().to_owned();
    let url = b.direct_url(&key).await.unwrap().unwrap();
    assert_eq!(url, format!("rbd://{fsid}/{}/{key}/snap", c.rbd_pool));

    // What Nova does: clone the snapshot. Deleting the image is refused while the clone exists,
    // and names it; after the clone is gone the image and its snapshot go.
    let vm = format!("vm-{}", uuid::Uuid::new_v4().simple());
    cli(&c, "rbd", &["clone", &format!("{}/{key}@snap", c.rbd_pool), &format!("{}/{vm}", c.rbd_pool)]);
    let e = b.delete(&key).await.unwrap_err();
    assert!(matches!(&e, StoreError::InUse { clones, .. } if clones == &[format!("{}/{vm}", c.rbd_pool)]), "{e}");
    assert!(e.to_string().contains(&vm), "{e}");
    assert_eq!(b.size(&key).await.unwrap(), Some(size), "a refused delete keeps the image");
    cli(&c, "rbd", &["rm", "--no-progress", &format!("{}/{vm}", c.rbd_pool)]);
    b.delete(&key).await.unwrap();
    assert_eq!(b.size(&key).await.unwrap(), None);
    assert!(!images(&c).contains(&key));
    b.delete(&key).await.unwrap(); // deleting a missing image succeeds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_write_replaces_and_the_sweep_removes_only_abandoned_partial_images() {
    let c = shared_cluster();
    let b = backend(&c, 20);
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (d1, d2) = (pattern(3 * MIB as usize + 5, 11), pattern(2 * MIB as usize, 12));
    write_file(&one, &d1);
    write_file(&two, &d2);
    let key = key();
    b.put_file(&key, &one, PutMode::Copy, &|_| {}).await.unwrap();
    b.put_file(&key, &two, PutMode::Move, &|_| {}).await.unwrap();
    assert!(collect(b.get(&key, None).await.unwrap()).await.unwrap() == d2);
    assert_eq!(b.size(&key).await.unwrap(), Some(d2.len() as u64));
    let left: Vec<String> = images(&c).into_iter().filter(|n| n.starts_with(&format!("{RBD_PARTIAL_PREFIX}{key}"))).collect();
    assert!(left.is_empty(), "the replaced image and the partial are gone: {left:?}");

    // A partial image a dead process left (with its snapshot protected, the worst case) is
    // removed by the sweep once it is old enough, and not before.
    let partial = format!("{RBD_PARTIAL_PREFIX}{key}-deadbeef0000");
    let spec = format!("{}/{partial}", c.rbd_pool);
    cli(&c, "rbd", &["create", "--size", "8M", &spec]);
    cli(&c, "rbd", &["snap", "create", &format!("{spec}@snap")]);
    cli(&c, "rbd", &["snap", "protect", &format!("{spec}@snap")]);
    assert_eq!(b.sweep_abandoned_writes(Duration::from_secs(3600)).await.unwrap(), 0);
    assert!(images(&c).contains(&partial));
    // A partial a writer holds open (a write in progress, however old) is left alone.
    let cluster = rbd::Cluster::connect(&rbd::ConnectOptions { conf: Some(c.conf.clone()), ..Default::default() }).unwrap();
    let pool = cluster.pool(&c.rbd_pool).unwrap();
    let writing = pool.open(&partial).unwrap();
    b.sweep_abandoned_writes(Duration::ZERO).await.unwrap();
    assert!(images(&c).contains(&partial), "a watched partial image was swept");
    drop(writing);
    assert!(b.sweep_abandoned_writes(Duration::ZERO).await.unwrap() >= 1);
    let names = images(&c);
    assert!(!names.contains(&partial) && names.contains(&key), "{names:?}");
    b.delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gives_up_stops_and_leaves_nothing() {
    let c = shared_cluster();
    let b = backend(&c, 20);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.raw");
    write_file(&src, &pattern(160 * MIB as usize, 31));
    let key = key();
    // The caller stops waiting soon after the write began (a client that went away).
    let progress = |_| {};
    let put = b.put_file(&key, &src, PutMode::Copy, &progress);
    assert!(tokio::time::timeout(Duration::from_millis(300), put).await.is_err(), "the write finished before it could be abandoned");
    // Nothing under the key, and the partial goes away by itself (the write notices at its next
    // chunk and removes it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mine: Vec<String> = images(&c).into_iter().filter(|n| n.contains(&key)).collect();
        if mine.is_empty() {
            break;
        }
        assert!(!mine.contains(&key), "an abandoned write was published: {mine:?}");
        assert!(Instant::now() < deadline, "the abandoned write left {mine:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!images(&c).iter().any(|n| n.contains(&key)), "something of the abandoned write appeared later");
    assert_eq!(b.size(&key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pool_or_cluster_is_a_clear_error() {
    let c = shared_cluster();
    let mut cfg = BackendConfig {
        name: "rbd-missing".into(),
        kind: BackendKind::Rbd,
        pool: Some("no-such-pool".into()),
        conf: Some(c.conf.clone()),
        timeout_secs: Some(10),
        ..Default::default()
    };
    let e = RbdBackend::open(&cfg).unwrap().check().await.unwrap_err().to_string();
    assert!(e.contains("no such pool") && e.contains("rbd pool init no-such-pool"), "{e}");

    // A cluster nobody answers for: connecting gives up within the bound.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    std::fs::write(
        &conf,
        "[global]\nmon_host = 127.0.0.1:9\nauth_cluster_required = none\nauth_service_required = none\nauth_client_required = none\n",
    )
    .unwrap();
    cfg.conf = Some(conf);
    cfg.timeout_secs = Some(2);
    let started = Instant::now();
    let e = RbdBackend::open(&cfg).unwrap().check().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(e, StoreError::Timeout { .. } | StoreError::Rbd { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_that_stops_mid_write_fails_the_write_and_leaves_no_image() {
    let state = state_dir("ceph-rbd-fault");
    let c = testceph::start(&state, FAULT_PORT);
    testceph::stop_when_the_run_ends(&state);
    let osd: u32 = std::fs::read_to_string(state.join("run/osd.0.pid")).unwrap().trim().parse().unwrap();
    let guard = FaultCluster { state: state.clone(), paused: osd };

    const TIMEOUT: u64 = 3;
    let b = backend(&c, TIMEOUT);
    b.check().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(192 * MIB as usize, 21);
    let src = dir.path().join("dense.raw");
    write_file(&src, &data);
    let key = key();

    // Pause the OSD (SIGSTOP) at the first progress report: the write is under way.
    let paused = AtomicBool::new(false);
    let stopped_at = std::sync::Mutex::new(None);
    let progress = |_done| {
        if !paused.swap(true, Ordering::SeqCst) {
            signal(osd, "STOP");
            *stopped_at.lock().unwrap() = Some(Instant::now());
        }
    };
    let e = b.put_file(&key, &src, PutMode::Copy, &progress).await.unwrap_err();
    let took = stopped_at.lock().unwrap().expect("the write reported progress").elapsed();
    eprintln!("fault: rbd put_file failed {:.1}s after the pause: {e}", took.as_secs_f32());
    assert!(matches!(e, StoreError::Timeout { .. }), "{e}");
    // The op bound, then at most the same bound for the cleanup attempt, with slack for librados.
    assert!(took < Duration::from_secs(4 * TIMEOUT + 5), "put_file took {took:?} after the pause");

    signal(osd, "CONT");
    // No image under the key; what the failed cleanup left is partial, and the sweep removes it.
    assert_eq!(b.size(&key).await.unwrap(), None);
    // (The failed write's own cleanup may still be finishing in the background, racing the
    // sweep: the sweep is repeated until the pool is empty.)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let swept = b.sweep_abandoned_writes(Duration::ZERO).await;
        let names = images(&c);
        eprintln!("fault: sweep {swept:?}, images left {names:?}");
        if names.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {names:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // And the backend works again.
    assert_eq!(b.put_file(&key, &src, PutMode::Copy, &|_| {}).await.unwrap(), data.len() as u64);
    assert!(collect(b.get(&key, None).await.unwrap()).await.unwrap() == data);
    b.delete(&key).await.unwrap();
    drop(guard);
    assert!(!state.exists(), "the fault cluster is removed");
}
