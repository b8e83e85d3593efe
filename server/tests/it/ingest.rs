//! The ingest pipeline on real images made by qemu-img (the oracle; always with -f).

use crate::common;
use domain::{ImageStatus, JobKind, JobStatus};

use std::path::{Path, PathBuf};
use std::process::Command;

use records::{Db, NewImage};
use server::ingest::{ingest, ingest_with, IngestError, JobControl, ReceivedData, Rules, Stage};
use std::sync::Arc;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img is required (apt-get install qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// A raw disk with some non-zero data in the first MiB and at the end.
fn raw_payload(dir: &Path) -> PathBuf {
    let p = dir.join("payload.raw");
    let mut bytes = vec![0u8; 8 << 20];
    for (i, b) in bytes.iter_mut().take(1 << 20).enumerate() {
        *b = u8::try_from(i % 251).unwrap();
    }
    let n = bytes.len();
    bytes[n - 4096..].fill(0xAB);
    std::fs::write(&p, bytes).unwrap();
    p
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
    /// A queued image declared as `format`: a disk format, or a package (by its container
    /// format, as Glance declares packages).
    async fn image(&self, format: &str) -> String {
        let (disk_format, container_format) = match domain::Package::parse(format) {
            Some(p) => (None, Some(p.container())),
            None => (Some(format.parse().unwrap()), None),
        };
        let new = NewImage { name: "img".into(), disk_format, container_format, owner: Some(self.project.clone()), ..Default::default() };
        self.db.create_image(&new).await.unwrap().id
    }

    /// Copies `src` to an "upload" file the pipeline may consume.
    fn upload(&self, image_id: &str, src: &Path) -> ReceivedData {
        let path = self.dir.path().join(format!("{image_id}.upload"));
        std::fs::copy(src, &path).unwrap();
        ReceivedData {
            image_id: image_id.into(),
            path,
            user_id: self.user.clone(),
            project_id: self.project.clone(),
            file_name: None,
            sha256: None,
            md5: None,
            sha512: None,
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// A file backend named `name` under the data dir (the matrix column is chosen separately).
    fn store(&self, name: &str) -> Arc<dyn storage::Backend> {
        storage::open(&storage::BackendConfig {
            name: name.into(),
            kind: storage::BackendKind::Local,
            path: Some(self.data().join(format!("store-{name}"))),
            ..Default::default()
        })
        .unwrap()
    }
}

#[tokio::test]
async fn a_qcow2_is_kept_as_is_with_its_checksums() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let q = e.data().join("disk.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), q.to_str().unwrap()]);
    let id = e.image("qcow2").await;
    let up = e.upload(&id, &q);
    let upload_path = up.path.clone();
    let imported = ingest(&e.db, e.data(), up).await.unwrap();
    assert!(!imported.converted);
    assert_eq!(imported.disk_format, domain::ImageFormat::Qcow2);
    assert_eq!(imported.sha256, sha256sum(&q));
    assert_eq!(imported.virtual_size, Some(8 << 20));
    assert!(!upload_path.exists(), "the upload was moved into the store");

    let row = e.db.image(&id).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Active);
    let ingest_row = e.db.image_ingest(&id).await.unwrap().unwrap();
    let stored = PathBuf::from(ingest_row.location.unwrap());
    assert_eq!(sha256sum(&stored), sha256sum(&q), "stored bytes are the uploaded bytes");
    let md5 = Command::new("md5sum").arg(&stored).output().unwrap();
    assert_eq!(ingest_row.checksum.unwrap(), String::from_utf8_lossy(&md5.stdout).split_whitespace().next().unwrap());
    assert_eq!(ingest_row.os_hash_value.unwrap().len(), 128);
}

#[tokio::test]
async fn raw_and_vdi_are_converted_to_qcow2_identical_to_the_source() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let vdi = e.data().join("disk.vdi");
    qemu_img(&["convert", "-f", "raw", "-O", "vdi", raw.to_str().unwrap(), vdi.to_str().unwrap()]);
    for (fmt, src) in [("raw", &raw), ("vdi", &vdi)] {
        let id = e.image(fmt).await;
        let imported = ingest(&e.db, e.data(), e.upload(&id, src)).await.unwrap();
        assert!(imported.converted, "{fmt}");
        assert_eq!(imported.disk_format, domain::ImageFormat::Qcow2);
        assert_eq!(imported.sha256, sha256sum(src), "SHA-256 of what was uploaded");
        let stored = e.db.image_ingest(&id).await.unwrap().unwrap().location.unwrap();
        qemu_img(&["check", "-f", "qcow2", &stored]);
        qemu_img(&["compare", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), &stored]);
        let row = e.db.image(&id).await.unwrap().unwrap();
        assert_eq!((row.status.as_str(), row.disk_format.map(domain::DiskFormat::as_str)), ("active", Some("qcow2")));
    }
}

#[tokio::test]
async fn unsafe_or_mislabelled_images_are_killed_with_a_reason_and_their_bytes_deleted() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let base = e.data().join("base.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), base.to_str().unwrap()]);
    let overlay = e.data().join("overlay.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "qcow2", overlay.to_str().unwrap()]);
    let vdi = e.data().join("disk.vdi");
    qemu_img(&["convert", "-f", "raw", "-O", "vdi", raw.to_str().unwrap(), vdi.to_str().unwrap()]);

    let id = e.image("qcow2").await;
    let up = e.upload(&id, &overlay);
    let path = up.path.clone();
    let err = ingest(&e.db, e.data(), up).await.unwrap_err();
    assert!(matches!(err, IngestError::Refused(_)), "{err}");
    assert!(!path.exists(), "refused bytes are deleted");
    let row = e.db.image_ingest(&id).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Killed);
    assert!(row.status_reason.to_lowercase().contains("backing"), "{}", row.status_reason);

    let id = e.image("qcow2").await;
    ingest(&e.db, e.data(), e.upload(&id, &vdi)).await.unwrap_err();
    let reason = e.db.image_ingest(&id).await.unwrap().unwrap().status_reason;
    assert!(reason.contains("VDI") || reason.contains("vdi"), "the message names the real format: {reason}");
}

#[tokio::test]
async fn an_upload_for_another_projects_image_is_not_ingested() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let id = e.image("raw").await;
    let mut up = e.upload(&id, &raw);
    up.project_id = "someone-else".into();
    let path = up.path.clone();
    assert!(matches!(ingest(&e.db, e.data(), up).await, Err(IngestError::NotAccepted(_))));
    assert!(!path.exists());
    assert_eq!(e.db.image(&id).await.unwrap().unwrap().status, ImageStatus::Queued);
    // And an image that is already active does not take a second upload.
    let imported = ingest(&e.db, e.data(), e.upload(&id, &raw)).await.unwrap();
    assert!(imported.converted);
    assert!(matches!(ingest(&e.db, e.data(), e.upload(&id, &raw)).await, Err(IngestError::NotAccepted(_))));
}

#[tokio::test]
async fn the_matrix_decides_convert_keep_or_refuse_per_backend_kind() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let q = e.data().join("disk.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), q.to_str().unwrap()]);

    // The RBD column's default: qcow2 is converted to (sparse) raw, identical to the source.
    let ceph = Rules::load(&e.db, "rbd").await.unwrap();
    let id = e.image("qcow2").await;
    let done = ingest_with(&e.db, e.data(), e.upload(&id, &q), &ceph, &e.store("ceph"), Arc::new(JobControl::default())).await.unwrap();
    assert!(done.converted);
    assert_eq!((done.uploaded_format.as_str(), done.disk_format.as_str()), ("qcow2", "raw"));
    let stored = e.db.image_ingest(&id).await.unwrap().unwrap().location.unwrap();
    assert!(stored.ends_with(".raw"), "{stored}");
    qemu_img(&["compare", "-f", "raw", "-F", "raw", raw.to_str().unwrap(), &stored]);
    let locs = e.db.image_locations(&id).await.unwrap();
    assert_eq!(locs.len(), 1);
    assert_eq!((locs[0].backend.as_str(), locs[0].disk_format.as_str(), locs[0].status.as_str()), ("ceph", "raw", "active"));
    assert_eq!(u64::try_from(locs[0].size).unwrap(), done.size);

    // An admin refuses raw on local storage: the upload is killed with the matrix's reason.
    e.db.set_policy_cell(
        domain::StorageKind::Local,
        domain::ImageFormat::Raw,
        domain::MatrixAction::Refuse,
        None,
        "Raw uploads waste our SAN.",
        "admin",
    )
    .await
    .unwrap();
    let local = Rules::load(&e.db, "local").await.unwrap();
    let id = e.image("raw").await;
    let up = e.upload(&id, &raw);
    let path = up.path.clone();
    let err = ingest_with(&e.db, e.data(), up, &local, &e.store("local"), Arc::new(JobControl::default())).await.unwrap_err();
    assert!(matches!(err, IngestError::Refused(_)), "{err}");
    let row = e.db.image_ingest(&id).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Killed);
    assert!(row.status_reason.contains("Raw uploads waste our SAN."), "{}", row.status_reason);
    assert!(!path.exists());
    assert!(e.db.image_locations(&id).await.unwrap().is_empty());

    // An AMI is a raw filesystem, but its own row (native) applies, not raw's.
    let id = e.image("ami").await;
    let done = ingest_with(&e.db, e.data(), e.upload(&id, &raw), &local, &e.store("local"), Arc::new(JobControl::default())).await.unwrap();
    assert!(!done.converted);
    assert_eq!(done.disk_format, domain::ImageFormat::Ami);
}

#[tokio::test]
async fn a_cancelled_import_keeps_nothing() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let local = Rules::load(&e.db, "local").await.unwrap();
    let id = e.image("raw").await;
    let up = e.upload(&id, &raw);
    let path = up.path.clone();
    let ctl = Arc::new(JobControl::default());
    ctl.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = ingest_with(&e.db, e.data(), up, &local, &e.store("local"), ctl).await.unwrap_err();
    assert!(matches!(err, IngestError::Cancelled), "{err}");
    let row = e.db.image_ingest(&id).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Killed);
    assert!(row.status_reason.contains("cancelled"), "{}", row.status_reason);
    assert!(!path.exists());
    let left: Vec<_> = std::fs::read_dir(e.data().join("staging")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "no half-written output: {left:?}");
}

/// Cancelling a job stops its conversion mid-way (a 40 GiB conversion must not run on for
/// minutes after the user cancelled), and the partial output is deleted.
#[tokio::test]
async fn a_job_cancelled_during_its_conversion_stops_it_midway() {
    use std::sync::atomic::Ordering;
    let e = env().await;
    // 128 MiB of incompressible data, so the conversion writes every byte.
    let raw = e.data().join("big.raw");
    std::fs::write(&raw, common::noise(128 << 20, 1)).unwrap();
    let vdi = e.data().join("big.vdi");
    qemu_img(&["convert", "-f", "raw", "-O", "vdi", raw.to_str().unwrap(), vdi.to_str().unwrap()]);
    let size = std::fs::metadata(&vdi).unwrap().len();
    let local = Rules::load(&e.db, "local").await.unwrap();
    let id = e.image("vdi").await;
    let up = e.upload(&id, &vdi);
    let path = up.path.clone();
    let ctl = Arc::new(JobControl::default());
    // The job's cancel button, pressed once the conversion has reported its first bytes.
    let watcher = {
        let ctl = ctl.clone();
        std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let converting = || ctl.stage() == Stage::Converting && ctl.done.load(Ordering::Relaxed) > 0;
            while !converting() && t0.elapsed() < std::time::Duration::from_secs(60) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            ctl.cancel.store(true, Ordering::Relaxed);
        })
    };
    let err = ingest_with(&e.db, e.data(), up, &local, &e.store("local"), ctl.clone()).await.unwrap_err();
    watcher.join().unwrap();
    assert!(matches!(err, IngestError::Cancelled), "{err}");
    // Progress counts input bytes while converting (then hashing adds the upload's size): a
    // conversion that ran to its end would have reported all of it.
    let done = ctl.done.load(Ordering::Relaxed);
    assert!(done > 0 && done < size / 2, "the conversion read {done} of {size} bytes before stopping");
    assert_eq!(ctl.stage(), Stage::Converting, "the job's stage says where it stopped");
    let row = e.db.image_ingest(&id).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Killed);
    assert!(row.status_reason.contains("cancelled"), "{}", row.status_reason);
    assert!(!path.exists());
    let left: Vec<_> =
        std::fs::read_dir(e.data().join("staging")).map(|d| d.flatten().map(|f| f.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "no half-written output: {left:?}");
    let images: Vec<_> =
        std::fs::read_dir(e.data().join("images")).map(|d| d.flatten().map(|f| f.file_name()).collect()).unwrap_or_default();
    assert!(images.is_empty(), "no converted image kept: {images:?}");
}

/// A routine stop while conversions run loses nothing (the reliability issue): the shutdown
/// stops the running conversion within its bound, queues the job again with the image still
/// `importing` and its upload kept, and the next start finishes it, byte for byte.
#[tokio::test]
async fn a_stop_during_a_conversion_queues_the_job_and_the_next_start_finishes_it() {
    let e = env().await;
    // 256 MiB of incompressible data: the conversion takes long enough to be caught mid-way
    // (progress is written twice a second).
    let raw = e.data().join("big.raw");
    std::fs::write(&raw, common::noise(256 << 20, 2)).unwrap();
    let vdi = e.data().join("big.vdi");
    qemu_img(&["convert", "-f", "raw", "-O", "vdi", raw.to_str().unwrap(), vdi.to_str().unwrap()]);
    let id = e.image("vdi").await;
    let up = e.upload(&id, &vdi);
    let upload_path = up.path.clone();
    let stores = imageops::Stores::open(&[], None, e.data()).unwrap();
    let jobs = server::jobs::start(&e.db, e.data().to_path_buf(), 1, stores).await.unwrap();
    let job = jobs
        .submit(&records::NewJob {
            kind: JobKind::Import,
            image_id: id.clone(),
            backend: "local".into(),
            params: serde_json::to_string(&up).unwrap(),
            bytes_total: 256 << 20,
            created_by: Some(e.user.clone()),
        })
        .await
        .unwrap();
    // Stop once the conversion is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let j = e.db.job(&job.id).await.unwrap().unwrap();
        if j.stage == "converting" && j.bytes_done > 0 {
            break;
        }
        assert!(j.status == JobStatus::Queued || j.status == JobStatus::Running, "the job ended before the stop: {j:?}");
        assert!(std::time::Instant::now() < deadline, "the conversion did not start");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let t0 = std::time::Instant::now();
    let (requeued, still_running) = jobs.shutdown(std::time::Duration::from_secs(20)).await;
    assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the stop took {:?}", t0.elapsed());
    assert_eq!((requeued, still_running), (vec![job.id.clone()], vec![]));
    let j = e.db.job(&job.id).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Queued, "{j:?}");
    assert_eq!(e.db.image(&id).await.unwrap().unwrap().status, ImageStatus::Importing, "the image is not killed");
    assert!(upload_path.exists(), "the upload is kept for the next start");

    // The next start runs it again from the upload.
    let stores = imageops::Stores::open(&[], None, e.data()).unwrap();
    let _jobs = server::jobs::start(&e.db, e.data().to_path_buf(), 1, stores).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let done = loop {
        let j = e.db.job(&job.id).await.unwrap().unwrap();
        if !matches!(j.status.as_str(), "queued" | "running") {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not finish: {j:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, JobStatus::Succeeded, "{}", done.error);
    let img = e.db.image_ingest(&id).await.unwrap().unwrap();
    assert_eq!(img.status, ImageStatus::Active);
    assert!(!upload_path.exists(), "the upload goes once the image is published");
    // Byte for byte the disk that was uploaded (qemu-img as the oracle, formats pinned).
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&raw)
        .arg(img.location.as_deref().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn an_import_job_interrupted_by_a_stop_is_resumed_at_the_next_start() {
    let e = env().await;
    let raw = raw_payload(e.data());
    let id = e.image("raw").await;
    let up = e.upload(&id, &raw);
    // The previous run had claimed the job and moved the image to `importing` when it stopped.
    let job =
        e.db.create_job(&records::NewJob {
            kind: JobKind::Import,
            image_id: id.clone(),
            backend: "local".into(),
            params: serde_json::to_string(&up).unwrap(),
            bytes_total: 8 << 20,
            created_by: Some(e.user.clone()),
        })
        .await
        .unwrap();
    assert_eq!(e.db.claim_job().await.unwrap().unwrap().id, job.id);
    assert!(e.db.transition_image(&id, &[ImageStatus::Queued], ImageStatus::Importing, "").await.unwrap());

    // The stop also left a half-written conversion behind.
    let leftover = e.data().join("staging").join(format!("{id}.qcow2"));
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"half a qcow2").unwrap();

    // "Restart": the workers requeue and redo it.
    let stores = imageops::Stores::open(&[], None, e.data()).unwrap();
    let _jobs = server::jobs::start(&e.db, e.data().to_path_buf(), 1, stores).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let j = e.db.job(&job.id).await.unwrap().unwrap();
        if !matches!(j.status.as_str(), "queued" | "running") {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not finish: {j:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, JobStatus::Succeeded, "{}", done.error);
    assert_eq!(done.attempts, 2, "claimed once before the stop and once after");
    assert!(done.summary.starts_with("raw → qcow2"), "{}", done.summary);
    assert_eq!(done.bytes_done, done.bytes_total);
    assert_eq!(e.db.image(&id).await.unwrap().unwrap().status, ImageStatus::Active);
    assert!(!leftover.exists() || std::fs::read(&leftover).unwrap() != b"half a qcow2", "the leftover was cleared at start");
}

/// An OVA made with qemu-img (streamOptimized VMDKs) and tar: the descriptor first, two disks.
/// An OVA with a streamOptimized VMDK disk, a raw disk (as oVirt exports them) and an
/// (unverifiable) certificate; returns the package and the two disks' raw payloads.
pub(crate) fn ova(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let raw1 = raw_payload(dir);
    let raw2 = dir.join("second.raw");
    std::fs::write(&raw2, vec![0x5au8; 2 << 20]).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        raw1.to_str().unwrap(),
        pkg.join("disk1.vmdk").to_str().unwrap(),
    ]);
    std::fs::copy(&raw2, pkg.join("disk2.img")).unwrap();
    std::fs::write(pkg.join("web.cert"), "SHA256(web.ovf)= 00\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let so = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
    let byte = "http://en.wikipedia.org/wiki/Byte";
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="f1" ovf:href="disk1.vmdk"/><File ovf:id="f2" ovf:href="disk2.img"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="root" ovf:fileRef="f1" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="{so}"/>
    <Disk ovf:diskId="data" ovf:fileRef="f2" ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="{byte}"/>
  </DiskSection>
  <VirtualSystem ovf:id="web-vm">
    <Info>vm</Info><Name>Web VM</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#
    );
    std::fs::write(pkg.join("web.ovf"), ovf).unwrap();
    let out = dir.join("web.ova");
    let status = Command::new("tar")
        .args([
            "--format=ustar",
            "-cf",
            out.to_str().unwrap(),
            "-C",
            pkg.to_str().unwrap(),
            "web.ovf",
            "web.cert",
            "disk1.vmdk",
            "disk2.img",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    (out, raw1, raw2)
}

/// A UEC tarball made in `dir`: an ext4-looking machine image, a bzImage kernel and a newc
/// initrd. Returns the tarball and the three parts' bytes.
pub(crate) fn uec_tarball(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>, Vec<u8>) {
    let pkg = dir.join("uec");
    std::fs::create_dir_all(&pkg).unwrap();
    let mut img = vec![0u8; 4 << 20];
    img[1080] = 0x53; // ext2/3/4 superblock magic
    img[1081] = 0xEF;
    img[2 << 20..(2 << 20) + 5000].fill(0x11);
    std::fs::write(pkg.join("foo.img"), &img).unwrap();
    let mut kernel = vec![0u8; 8192]; // a bzImage header
    kernel[0x1FE] = 0x55;
    kernel[0x1FF] = 0xAA;
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(pkg.join("foo-vmlinuz-virtual"), &kernel).unwrap();
    let mut initrd = b"070701".to_vec(); // a newc cpio archive
    initrd.extend_from_slice(&[b'0'; 200]);
    std::fs::write(pkg.join("foo-initrd-virtual"), &initrd).unwrap();
    let tarball = dir.join("foo.tar.gz");
    let status = Command::new("tar")
        .args([
            "--format=ustar",
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            pkg.to_str().unwrap(),
            "foo.img",
            "foo-vmlinuz-virtual",
            "foo-initrd-virtual",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    (tarball, img, kernel, initrd)
}

/// While an upload arrives, MD5 and SHA-512 of its bytes are computed only for an image stored
/// as uploaded; converted, unpacked or refused ones get them from what is stored (or not at all).
#[tokio::test]
async fn uploads_hash_md5_and_sha512_only_for_images_stored_as_uploaded() {
    use server::ingest::upload_hashes;
    use uploads::UploadHashes::{All, Sha256};
    let e = env().await;
    let cases = [
        ("raw", "local", Sha256),
        ("vdi", "local", Sha256),
        ("vmdk", "nfs", Sha256),
        ("qcow2", "local", All),
        ("iso", "local", All),
        ("ami", "local", All),
        ("ova", "local", Sha256),
        ("raw", "rbd", All),
        ("qcow2", "s3", Sha256),
    ];
    for (fmt, kind, want) in cases {
        let id = e.image(fmt).await;
        assert_eq!(upload_hashes(&e.db, &id, kind).await, want, "{fmt} on {kind}");
    }
    // Nothing to go by: all three.
    assert_eq!(upload_hashes(&e.db, "no-such-image", "local").await, All);
    let undeclared =
        e.db.create_image(&NewImage { name: "x".into(), owner: Some(e.project.clone()), ..Default::default() }).await.unwrap().id;
    assert_eq!(upload_hashes(&e.db, &undeclared, "local").await, All);
}

/// At start-up, Glance bodies a stop cut off and staged data nothing waits for are removed;
/// what a queued import will read, and staged data of an image still `uploading`, stay.
#[tokio::test]
async fn the_start_up_sweep_reclaims_orphaned_glance_uploads_only() {
    let e = env().await;
    let dir = e.data().join("uploads-glance");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, n: usize| {
        let p = dir.join(name);
        std::fs::write(&p, vec![7u8; n]).unwrap();
        p
    };
    // A PUT body a stop cut off, and a web-download likewise: nothing will import them.
    let cut = write("a1b2.00c0ffee.upload", 1000);
    let download = write("a1b2.00c0ffef.download", 500);
    // A PUT body handed to an import job that is still queued.
    let queued = e.image("raw").await;
    let handed = write(&format!("{queued}.0badcafe.upload"), 300);
    let mut up = e.upload(&queued, &raw_payload(e.data()));
    up.path = handed.clone();
    e.db.create_job(&records::NewJob { params: serde_json::to_string(&up).unwrap(), ..records::NewJob::import(queued.clone(), "local") })
        .await
        .unwrap();
    // Staged data of an image still waiting for its import, and of one that is not.
    let staged = e.image("raw").await;
    assert!(e.db.transition_image(&staged, &[ImageStatus::Queued], ImageStatus::Uploading, "").await.unwrap());
    let kept = [write(&format!("{staged}.staged"), 200), write(&format!("{staged}.staged.json"), 10)];
    let stale = e.image("raw").await;
    let stale_files = [write(&format!("{stale}.staged"), 100), write(&format!("{stale}.staged.json"), 10)];

    let swept = server::jobs::sweep_incoming(&e.db, &dir).await.unwrap();
    assert_eq!(swept, server::jobs::Swept { files: 4, bytes: 1000 + 500 + 100 + 10 });
    for gone in [&cut, &download, &stale_files[0], &stale_files[1]] {
        assert!(!gone.exists(), "{} was not reclaimed", gone.display());
    }
    for stays in [&handed, &kept[0], &kept[1]] {
        assert!(stays.exists(), "{} was removed", stays.display());
    }
}
