//! Fault injection on the real binary (the reliability issue): for each stage of an import
//! (inspecting, converting, hashing, storing, publishing) and for raw → qcow2, VDI → qcow2, a
//! qcow2 kept as uploaded and qcow2 → raw on a real Ceph, the server is held at that stage (the
//! test-only HANGAR_TEST_HOLD_AT), killed with SIGKILL there, and started again: the image must
//! end `active`, byte-identical to what was uploaded (qemu-img compare, formats pinned), with
//! nothing left in any staging area; a job killed after its output was complete resumes from its
//! checkpoint (no second conversion), and one whose staged output was damaged meanwhile starts
//! over. A last test leaves orphans in the staging areas of a running server and sees them swept.

use crate::common;
use domain::JobStatus;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{admin_token, free_port, json, start, wait_healthy};

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img is required (apt-get install qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A 24 MiB raw disk with data at both ends and a hole between, and the same disk as VDI and
/// qcow2 (made by qemu-img, formats pinned).
fn disks(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    let mut bytes = vec![0u8; 24 << 20];
    bytes[..(8 << 20)].copy_from_slice(&common::noise(8 << 20, 7));
    let n = bytes.len();
    bytes[n - 65536..].fill(0x5A);
    std::fs::write(&raw, bytes).unwrap();
    let vdi = dir.join("disk.vdi");
    let qcow2 = dir.join("disk.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "vdi", raw.to_str().unwrap(), vdi.to_str().unwrap()]);
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", raw.to_str().unwrap(), qcow2.to_str().unwrap()]);
    (raw, vdi, qcow2)
}

fn leftovers(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for area in ["staging", "uploads-glance", "uploads"] {
        if let Ok(d) = std::fs::read_dir(data.join(area)) {
            out.extend(d.flatten().map(|e| format!("{area}/{}", e.file_name().to_string_lossy())));
        }
    }
    out
}

/// A new image named `name` through the Glance API, with `data` staged (`PUT …/stage`).
async fn create_and_stage(client: &reqwest::Client, base: &str, token: &str, name: &str, disk_format: &str, data: Vec<u8>) -> String {
    let created = json(
        client
            .post(format!("{base}/image/v2/images"))
            .header("x-auth-token", token)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": name, "disk_format": disk_format, "container_format": "bare" }).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let r = client
        .put(format!("{base}/image/v2/images/{id}/stage"))
        .header("x-auth-token", token)
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    id
}

/// Where the image goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Local,
    Ceph,
    Rbd,
}

struct Case<'a> {
    what: &'a str,
    file: &'a Path,
    disk_format: &'a str,
    stage: &'a str,
    target: Target,
    /// Whether the next start must resume from a checkpoint (the output was complete).
    resumes: bool,
    /// Damage the staged output between the kill and the restart.
    tamper: bool,
}

/// A configuration with a Ceph backend (a bucket of its own) as the default.
fn ceph_config(dir: &Path) -> PathBuf {
    let c = common::ceph::cluster();
    let path = dir.join("hangar.toml");
    let bucket = format!("hangar-faults-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        &path,
        format!(
            "default_storage = \"ceph\"\n\n[[storage]]\nname = \"local\"\nkind = \"local\"\n\n[[storage]]\nname = \"ceph\"\nkind = \"s3\"\n\
             endpoint = \"{}\"\nbucket = \"{bucket}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\ntimeout_secs = 30\npart_size_mib = 5\n",
            c.endpoint, c.access_key, c.secret_key
        ),
    )
    .unwrap();
    path
}

/// hangar.toml with a local backend and an RBD one (the default) in the test cluster's pool.
fn rbd_config(dir: &Path) -> PathBuf {
    let c = common::ceph::cluster();
    let path = dir.join("hangar.toml");
    std::fs::write(
        &path,
        format!(
            "default_storage = \"rbd\"\n\n[[storage]]\nname = \"local\"\nkind = \"local\"\n\n[[storage]]\nname = \"rbd\"\nkind = \"rbd\"\n\
             pool = \"{}\"\nconf = \"{}\"\ntimeout_secs = 30\n",
            c.rbd_pool,
            c.conf.display()
        ),
    )
    .unwrap();
    path
}

/// Runs one case; returns what went wrong.
async fn run_case(client: &reqwest::Client, raw: &Path, case: &Case<'_>) -> Vec<String> {
    let Case { what, file, disk_format, stage, .. } = *case;
    let mut failures = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("hangar.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = match case.target {
        Target::Local => None,
        Target::Ceph => Some(ceph_config(dir.path())),
        Target::Rbd => Some(rbd_config(dir.path())),
    };
    let config_env = config.as_ref().map(|p| p.display().to_string());
    let env = |hold: Option<&str>| -> Vec<(&'static str, String)> {
        let mut env = vec![("HANGAR_JOB_WORKERS", "1".to_owned())];
        if let Some(c) = &config_env {
            env.push(("HANGAR_CONFIG", c.clone()));
        }
        if let Some(h) = hold {
            env.push(("HANGAR_TEST_HOLD_AT", h.to_owned()));
        }
        env
    };
    let first_env = env(Some(stage));
    let first: Vec<(&str, &str)> = first_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = start(&data, port, &log, &first);
    wait_healthy(client, &base).await;
    let token = admin_token(&data, "faults");
    let id = create_and_stage(client, &base, &token, what, disk_format, std::fs::read(file).unwrap()).await;
    let r = client
        .post(format!("{base}/image/v2/images/{id}/import"))
        .header("x-auth-token", &token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "method": { "name": "glance-direct" } }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Held at the stage (its progress writer records it), then killed there.
    let db = records::Db::open_sqlite(&data.join("hangar.db")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = db.jobs_for_image(&id).await.unwrap();
        if jobs.iter().any(|j| j.status == JobStatus::Running && j.stage == stage) {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: the job never reached {stage}: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await;
    child.kill().unwrap();
    child.wait().unwrap();
    if case.tamper {
        // The staged output, complete when the job was killed, is damaged before the restart:
        // the checkpoint must not be trusted blindly.
        let staged: Vec<PathBuf> = std::fs::read_dir(data.join("staging")).unwrap().flatten().map(|e| e.path()).collect();
        assert_eq!(staged.len(), 1, "{what}: one staged output expected, found {staged:?}");
        let f = std::fs::OpenOptions::new().write(true).open(&staged[0]).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
        f.set_len(len).unwrap();
    }
    let first_run_log = std::fs::read_to_string(&log).unwrap_or_default().len();

    // The next start finishes it.
    let second_env = env(None);
    let second: Vec<(&str, &str)> = second_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = start(&data, port, &log, &second);
    wait_healthy(client, &base).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let image = loop {
        let img = json(client.get(format!("{base}/image/v2/images/{id}")).header("x-auth-token", &token).send().await.unwrap()).await;
        if !matches!(img["status"].as_str(), Some("importing" | "uploading" | "saving" | "queued")) || Instant::now() > deadline {
            break img;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let label = format!("{what}, killed while {stage}{}", if case.tamper { ", output damaged" } else { "" });
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let second_log = log_text.get(first_run_log..).unwrap_or_default();
    if image["status"] != "active" {
        failures.push(format!("{label}: ended {} ({log_text})", image["status"]));
    } else {
        // What the image API serves is what was uploaded.
        let body = client.get(format!("{base}/image/v2/images/{id}/file")).header("x-auth-token", &token).send().await.unwrap();
        assert_eq!(body.status(), 200);
        let stored = dir.path().join("downloaded");
        std::fs::write(&stored, body.bytes().await.unwrap()).unwrap();
        let cmp = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", image["disk_format"].as_str().unwrap()])
            .arg(raw)
            .arg(&stored)
            .output()
            .unwrap();
        if !cmp.status.success() {
            failures.push(format!("{label}: the stored image differs: {}", String::from_utf8_lossy(&cmp.stdout)));
        }
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let resumed = second_log.contains("resuming from its checkpoint");
    if resumed != case.resumes {
        failures.push(format!("{label}: resumed from a checkpoint: {resumed}, expected {}", case.resumes));
    }
    if case.tamper && !second_log.contains("did not verify") {
        failures.push(format!("{label}: the damaged output was not noticed"));
    }
    let left = leftovers(&data);
    if !left.is_empty() {
        failures.push(format!("{label}: left behind {left:?}"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_import_stage_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (raw, vdi, qcow2) = disks(work.path());
    let all = ["inspecting", "converting", "hashing", "storing", "publishing"];
    // A job resumes from the first checkpoint on: the converted (or kept) output is complete
    // once hashing starts.
    let after_output = |stage: &str| matches!(stage, "hashing" | "storing" | "publishing");
    let mut cases = Vec::new();
    for (what, file, disk_format, target) in [
        ("raw → qcow2", &raw, "raw", Target::Local),
        ("vdi → qcow2", &vdi, "vdi", Target::Local),
        ("qcow2 → raw on Ceph", &qcow2, "qcow2", Target::Ceph),
        ("qcow2 → raw on RBD", &qcow2, "qcow2", Target::Rbd),
    ] {
        for stage in all {
            cases.push(Case { what, file, disk_format, stage, target, resumes: after_output(stage), tamper: false });
        }
    }
    for stage in ["inspecting", "storing", "publishing"] {
        cases.push(Case {
            what: "qcow2 kept",
            file: &qcow2,
            disk_format: "qcow2",
            stage,
            target: Target::Local,
            resumes: after_output(stage),
            tamper: false,
        });
    }
    cases.push(Case {
        what: "raw → qcow2",
        file: &raw,
        disk_format: "raw",
        stage: "storing",
        target: Target::Local,
        resumes: false,
        tamper: true,
    });
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for case in &cases {
        failures.extend(run_case(&client, &raw, case).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Files no job, upload or import uses, left in `staging/` and `uploads-glance/` of a running
/// server, are removed once older than `orphan_grace`; the staged data of an image still waiting
/// for its import is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_sweeps_orphans_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("hangar.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = start(&data, port, &log, &[("HANGAR_ORPHAN_GRACE", "2")]);
    wait_healthy(&client, &base).await;
    let token = admin_token(&data, "sweep");
    let id = create_and_stage(&client, &base, &token, "staged", "raw", vec![7u8; 1 << 20]).await;
    std::fs::create_dir_all(data.join("staging")).unwrap();
    let orphans = [
        data.join("staging").join("0b4d5a2e-0000-4000-8000-000000000001.qcow2"),
        data.join("uploads-glance").join("0b4d5a2e-0000-4000-8000-000000000002.1a2b3c4d.upload"),
    ];
    for o in &orphans {
        std::fs::write(o, vec![1u8; 4096]).unwrap();
    }
    let package = data.join("staging").join("0b4d5a2e-0000-4000-8000-000000000003.ova.d");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("disk1.qcow2"), b"x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (orphans.iter().any(|o| o.exists()) || package.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let staged = data.join("uploads-glance").join(format!("{id}.staged"));
    let still: Vec<_> = orphans.iter().chain([&package]).filter(|o| o.exists()).collect();
    let staged_kept = staged.exists();
    common::binary::sigterm(&child);
    let _ = child.wait();
    assert!(still.is_empty(), "orphans older than the grace period were not swept: {still:?}");
    assert!(staged_kept, "the staged data of an image waiting for its import was swept");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reclaimed staging files no job or upload uses"), "the sweep says what it reclaimed: {text}");
}
