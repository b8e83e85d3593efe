//! The server's pipeline against a real single-node Ceph (RADOS Gateway, S3): an import stored
//! natively on Ceph, a copy from the local store converted to raw for Ceph per the matrix, ranged
//! reads back, and an import into a Ceph that does not answer (killed, nothing recorded).
//!
//! scripts/test.sh starts one cluster and exports `S3_ENDPOINT`, `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`; run alone, this file starts its own on port 17680 and removes it
//! when the test process exits.

use crate::common;
use domain::{ImageStatus, JobStatus};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::ceph::{cluster, Cluster};

use futures::StreamExt;
use records::{Db, NewImage};
use server::ingest::{ingest, ingest_with, IngestError, JobControl, ReceivedData, Rules};

fn ceph_config(endpoint: &str, c: &Cluster, timeout: u64) -> storage::BackendConfig {
    storage::BackendConfig {
        name: "ceph".into(),
        kind: storage::BackendKind::S3,
        endpoint: Some(endpoint.to_owned()),
        bucket: Some(format!("hangar-server-{}", uuid::Uuid::new_v4().simple())),
        access_key_id: Some(c.access_key.clone()),
        secret_access_key: Some(c.secret_key.clone()),
        timeout_secs: Some(timeout),
        part_size_mib: Some(5),
        ..Default::default()
    }
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// 12 MiB of raw disk (three 5 MiB multipart parts) with data at both ends.
fn raw_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; 12 << 20];
    for (i, b) in bytes.iter_mut().take(3 << 20).enumerate() {
        *b = u8::try_from(i % 253).unwrap();
    }
    let n = bytes.len();
    bytes[n - 8192..].fill(0x5a);
    let p = dir.join("disk.raw");
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

async fn read_all(store: &Arc<dyn storage::Backend>, key: &str, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let mut s = store.get(key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

struct Env {
    dir: tempfile::TempDir,
    db: Db,
    project: String,
    user: String,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("hangar.db")).await.unwrap();
    let project = db.create_project("p", "").await.unwrap().id;
    let user = db.create_user("u", "", "", "h", false).await.unwrap().id;
    Env { dir, db, project, user }
}

impl Env {
    async fn upload(&self, disk_format: &str, src: &Path) -> ReceivedData {
        let new = NewImage {
            name: "img".into(),
            disk_format: Some(disk_format.parse().unwrap()),
            owner: Some(self.project.clone()),
            ..Default::default()
        };
        let id = self.db.create_image(&new).await.unwrap().id;
        let path = self.dir.path().join(format!("{id}.upload"));
        std::fs::copy(src, &path).unwrap();
        ReceivedData {
            image_id: id,
            path,
            user_id: self.user.clone(),
            project_id: self.project.clone(),
            file_name: None,
            sha256: None,
            md5: None,
            sha512: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_is_stored_natively_on_ceph_and_read_back_by_range() {
    let c = cluster();
    let e = env().await;
    let (raw, bytes) = raw_disk(e.dir.path());
    let ceph = storage::open(&ceph_config(&c.endpoint, &c, 30)).unwrap();
    let rules = Rules::load(&e.db, "s3").await.unwrap();
    let up = e.upload("raw", &raw).await;
    let id = up.image_id.clone();
    let done = ingest_with(&e.db, e.dir.path(), up, &rules, &ceph, Arc::new(JobControl::default())).await.unwrap();
    assert!(!done.converted, "raw is native on Ceph");
    let loc = e.db.image_locations(&id).await.unwrap().pop().unwrap();
    assert_eq!((loc.backend.as_str(), loc.disk_format.as_str(), loc.key.as_str()), ("ceph", "raw", format!("{id}.raw").as_str()));
    assert_eq!(ceph.size(&loc.key).await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(read_all(&ceph, &loc.key, None).await, bytes);
    assert_eq!(read_all(&ceph, &loc.key, Some(1000..6_000_000)).await, bytes[1000..6_000_000]);
    assert_eq!(e.db.image(&id).await.unwrap().unwrap().status, ImageStatus::Active);
    assert!(e.db.image_ingest(&id).await.unwrap().unwrap().location.unwrap().starts_with("ceph:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_qcow2_is_copied_to_ceph_as_raw_by_a_job() {
    let c = cluster();
    let e = env().await;
    let (raw, bytes) = raw_disk(e.dir.path());
    let q = e.dir.path().join("disk.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), q.to_str().unwrap()]);
    // Imported on the local store (kept as qcow2) ...
    let up = e.upload("qcow2", &q).await;
    let id = up.image_id.clone();
    ingest(&e.db, e.dir.path(), up).await.unwrap();
    // ... then copied to Ceph by a job: the Ceph column converts qcow2 to raw.
    let data_dir = e.dir.path().to_path_buf();
    let local = storage::BackendConfig { name: "local".into(), path: Some(data_dir.join("images")), ..Default::default() };
    let stores = imageops::Stores::open(&[local, ceph_config(&c.endpoint, &c, 30)], Some("local"), &data_dir).unwrap();
    let jobs = server::jobs::start(&e.db, data_dir.clone(), 1, stores.clone()).await.unwrap();
    let job = jobs.submit(&records::NewJob::copy(id.clone(), "ceph")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let job = loop {
        let j = e.db.job(&job.id).await.unwrap().unwrap();
        if !matches!(j.status.as_str(), "queued" | "running") {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "copy did not finish: {j:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(job.status, JobStatus::Succeeded, "{}", job.error);
    assert!(job.summary.contains("qcow2") && job.summary.contains("raw"), "{}", job.summary);
    let locs = e.db.image_locations(&id).await.unwrap();
    assert_eq!(locs.len(), 2, "{locs:?}");
    let on_ceph = locs.iter().find(|l| l.backend == "ceph").unwrap();
    assert_eq!(on_ceph.disk_format, domain::ImageFormat::Raw);
    let ceph = stores.get("ceph").unwrap();
    assert_eq!(read_all(ceph, &on_ceph.key, None).await, bytes, "the raw copy holds the disk's bytes");
    let md5 = Command::new("md5sum").arg(&raw).output().unwrap();
    assert_eq!(on_ceph.checksum.as_deref().unwrap(), String::from_utf8_lossy(&md5.stdout).split_whitespace().next().unwrap());
    assert!(std::fs::read_dir(data_dir.join("staging")).map(|d| d.count()).unwrap_or(0) == 0, "no staged files left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_ceph_that_does_not_answer_is_killed_and_leaves_nothing() {
    let c = cluster();
    let e = env().await;
    let (raw, _) = raw_disk(e.dir.path());
    // A gateway that accepts nothing: the discard port.
    let ceph = storage::open(&ceph_config("http://127.0.0.1:9", &c, 2)).unwrap();
    let rules = Rules::load(&e.db, "s3").await.unwrap();
    let up = e.upload("raw", &raw).await;
    let (id, path) = (up.image_id.clone(), up.path.clone());
    let started = std::time::Instant::now();
    let err = ingest_with(&e.db, e.dir.path(), up, &rules, &ceph, Arc::new(JobControl::default())).await.unwrap_err();
    assert!(matches!(err, IngestError::Failed { source: Some(_), .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "bounded: {:?}", started.elapsed());
    let row = e.db.image_ingest(&id).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Killed);
    assert!(row.status_reason.contains("ceph storage could not store this image"), "{}", row.status_reason);
    assert!(e.db.image_locations(&id).await.unwrap().is_empty(), "no location recorded");
    assert!(!path.exists(), "the upload is discarded");
}

/// A server that died mid-write leaves the parts of its multipart upload in the bucket; the
/// servers' sweep frees them once they are older than the age given (a day in production),
/// never a young one that may be another server's write in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_frees_the_parts_of_writes_abandoned_mid_way() {
    use std::time::Duration;
    let c = cluster();
    let e = env().await;
    let data_dir = e.dir.path().to_path_buf();
    let local = storage::BackendConfig { name: "local".into(), path: Some(data_dir.join("images")), ..Default::default() };
    let stores = imageops::Stores::open(&[local, ceph_config(&c.endpoint, &c, 30)], Some("local"), &data_dir).unwrap();
    let ceph = stores.get("ceph").unwrap().clone();
    // 12 MiB in 5 MiB parts: the write is dropped once its first part is stored.
    let src = data_dir.join("big.raw");
    std::fs::write(&src, vec![0x5Au8; 12 << 20]).unwrap();
    let first_part = tokio::sync::Notify::new();
    let notify = |_| first_part.notify_one();
    tokio::select! {
        r = ceph.put_file("died-mid-write", &src, storage::PutMode::Copy, &notify) => panic!("the write finished first: {r:?}"),
        _ = first_part.notified() => {}
    }
    assert_eq!(stores.sweep_abandoned_writes(Duration::from_secs(3600)).await, 0, "a young write is kept");
    assert_eq!(ceph.size("died-mid-write").await.unwrap(), None);
    assert_eq!(stores.sweep_abandoned_writes(Duration::ZERO).await, 1, "an old enough one is freed");
    assert_eq!(stores.sweep_abandoned_writes(Duration::ZERO).await, 0, "and only once");
}
