//! Benchmark of the RBD backend (issue: "4 GiB sparse raw with 1 GiB of data into RBD versus
//! `rbd import` of the same file, goal ≤ 1.0× its time, and versus the S3 backend"), in one run
//! on one throw-away single-node Ceph (memstore, 127.0.0.1:17880):
//!
//!   cargo run --release -p storage --example rbd_bench [-- DATA_GIB VIRTUAL_GIB ROUNDS]
//!
//! The file is sparse: DATA_GIB of incompressible data in 64 MiB runs spread evenly over
//! VIRTUAL_GIB, holes between. Each round stores it with Hangar's RBD backend, with
//! `rbd import` (Ceph's own tool, which also skips zeros), and with Hangar's S3 backend (the
//! RADOS Gateway of the same cluster), removing each copy before the next. Prints each time, the
//! medians and the ratios.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use storage::{Backend, BackendConfig, BackendKind, PutMode, RbdBackend, S3Backend};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rbd(conf: &Path, args: &[&str]) {
    let out = Command::new("rbd").arg("-c").arg(conf).args(args).output().expect("rbd (ceph-common)");
    assert!(out.status.success(), "rbd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numbers: DATA_GIB VIRTUAL_GIB ROUNDS")).collect();
    let (data_gib, virtual_gib, rounds) =
        (args.first().copied().unwrap_or(1), args.get(1).copied().unwrap_or(4), args.get(2).copied().unwrap_or(3));
    assert!(data_gib <= virtual_gib && data_gib > 0);
    const GIB: u64 = 1 << 30;
    const RUN: u64 = 64 << 20;

    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/rbd-bench");
    std::fs::create_dir_all(&work).unwrap();
    let state = work.join("ceph");
    // The S3 copy is dense (S3 has no holes): room for the whole virtual size.
    let store_mb = u32::try_from(virtual_gib * 1024 + 1536).unwrap();
    let c = testceph::start_sized(&state, 17880, store_mb);
    testceph::stop_when_the_run_ends(&state);

    // The sparse file.
    let src = work.join("disk.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(virtual_gib * GIB).unwrap();
        let runs = data_gib * GIB / RUN;
        let stride = virtual_gib * GIB / runs;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; RUN as usize];
        for i in 0..runs {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            f.write_all_at(&buf, i * stride).unwrap();
        }
        f.sync_all().unwrap();
    }
    println!("file: {virtual_gib} GiB raw with {data_gib} GiB of data in 64 MiB runs; {rounds} rounds");

    let rbd_backend = RbdBackend::open(&BackendConfig {
        name: "rbd".into(),
        kind: BackendKind::Rbd,
        pool: Some(c.rbd_pool.clone()),
        conf: Some(c.conf.clone()),
        timeout_secs: Some(120),
        ..Default::default()
    })
    .unwrap();
    let s3 = S3Backend::open(&BackendConfig {
        name: "s3".into(),
        kind: BackendKind::S3,
        endpoint: Some(c.endpoint.clone()),
        bucket: Some("hangar-bench".into()),
        access_key_id: Some(c.access_key.clone()),
        secret_access_key: Some(c.secret_key.clone()),
        timeout_secs: Some(120),
        ..Default::default()
    })
    .unwrap();
    rbd_backend.check().await.unwrap();
    s3.check().await.unwrap();

    // RBD rounds first, Hangar and `rbd import` taking turns at going first (what one leaves
    // behind, the OSD freeing a removed image, falls on both alike); then the S3 rounds, whose
    // dense 4 GiB writes and the gateway's garbage collection after them would weigh on the
    // RBD rounds if interleaved.
    let (mut ours, mut theirs, mut objects) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let key = format!("bench-{round}");
        let spec = format!("{}/import-{round}", c.rbd_pool);
        for turn in 0..2 {
            if (turn + round) % 2 == 0 {
                let t = Instant::now();
                rbd_backend.put_file(&key, &src, PutMode::Copy, &|_| {}).await.unwrap();
                ours.push(t.elapsed());
                rbd_backend.delete(&key).await.unwrap();
            } else {
                let t = Instant::now();
                rbd(&c.conf, &["import", "--no-progress", src.to_str().unwrap(), &spec]);
                theirs.push(t.elapsed());
                rbd(&c.conf, &["rm", "--no-progress", &spec]);
            }
        }
        println!(
            "round {round}: Hangar rbd {:.2}s, rbd import {:.2}s",
            ours.last().unwrap().as_secs_f64(),
            theirs.last().unwrap().as_secs_f64()
        );
    }
    for round in 0..rounds.min(2) {
        let key = format!("bench-s3-{round}");
        let t = Instant::now();
        s3.put_file(&key, &src, PutMode::Copy, &|_| {}).await.unwrap();
        objects.push(t.elapsed());
        s3.delete(&key).await.unwrap();
        println!("s3 round {round}: Hangar s3 {:.2}s", objects.last().unwrap().as_secs_f64());
    }
    let (a, b, s) = (median(ours), median(theirs), median(objects));
    println!(
        "median: Hangar rbd {:.2}s, rbd import {:.2}s, Hangar s3 {:.2}s; Hangar rbd / rbd import = {:.2}x (goal <= 1.0), Hangar rbd / s3 = {:.2}x",
        a.as_secs_f64(),
        b.as_secs_f64(),
        s.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64(),
        a.as_secs_f64() / s.as_secs_f64()
    );
    std::fs::remove_file(&src).unwrap();
}
