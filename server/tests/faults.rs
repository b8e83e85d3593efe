//! Fault injection on the real binary (the reliability issue): for each stage of an import
//! (inspecting, converting, hashing, storing, publishing) and for raw → qcow2, VDI → qcow2 and a
//! qcow2 kept as uploaded, the server is held at that stage (the test-only HANGAR_TEST_HOLD_AT),
//! killed with SIGKILL there, and started again: the image must end `active`, byte-identical to
//! what was uploaded (qemu-img compare, formats pinned), with nothing left in any staging area.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_import_stage_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (raw, vdi, qcow2) = disks(work.path());
    // (what is uploaded, its disk_format, the stages its import goes through)
    let cases: [(&str, &Path, &str, &[&str]); 3] = [
        ("raw → qcow2", &raw, "raw", &["inspecting", "converting", "hashing", "storing", "publishing"]),
        ("vdi → qcow2", &vdi, "vdi", &["inspecting", "converting", "hashing", "storing", "publishing"]),
        ("qcow2 kept", &qcow2, "qcow2", &["inspecting", "storing", "publishing"]),
    ];
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for (what, file, disk_format, stages) in cases {
        for stage in stages {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let log = dir.path().join("hangar.log");
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let mut child = start(&data, port, &log, &[("HANGAR_JOB_WORKERS", "1"), ("HANGAR_TEST_HOLD_AT", stage)]);
            wait_healthy(&client, &base).await;
            let token = admin_token(&data, "faults");
            let created = json(
                client
                    .post(format!("{base}/image/v2/images"))
                    .header("x-auth-token", &token)
                    .header("content-type", "application/json")
                    .body(serde_json::json!({ "name": what, "disk_format": disk_format, "container_format": "bare" }).to_string())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let id = created["id"].as_str().unwrap().to_owned();
            let r = client
                .put(format!("{base}/image/v2/images/{id}/stage"))
                .header("x-auth-token", &token)
                .header("content-type", "application/octet-stream")
                .body(std::fs::read(file).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
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
                if jobs.iter().any(|j| j.status == "running" && j.stage == *stage) {
                    break;
                }
                assert!(Instant::now() < deadline, "{what}: the job never reached {stage}: {jobs:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            db.close().await;
            child.kill().unwrap();
            child.wait().unwrap();

            // The next start finishes it.
            let mut child = start(&data, port, &log, &[("HANGAR_JOB_WORKERS", "1")]);
            wait_healthy(&client, &base).await;
            let deadline = Instant::now() + Duration::from_secs(120);
            let image = loop {
                let img = json(client.get(format!("{base}/image/v2/images/{id}")).header("x-auth-token", &token).send().await.unwrap()).await;
                if !matches!(img["status"].as_str(), Some("importing" | "uploading" | "saving" | "queued")) || Instant::now() > deadline {
                    break img;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
            if image["status"] != "active" {
                failures.push(format!("{what}, killed while {stage}: ended {} ({})", image["status"], std::fs::read_to_string(&log).unwrap_or_default()));
                continue;
            }
            let stored = data.join("images").join(format!("{id}.{}", image["disk_format"].as_str().unwrap()));
            let cmp = Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", image["disk_format"].as_str().unwrap()])
                .arg(&raw)
                .arg(&stored)
                .output()
                .unwrap();
            if !cmp.status.success() {
                failures.push(format!("{what}, killed while {stage}: the stored image differs: {}", String::from_utf8_lossy(&cmp.stdout)));
            }
            let left = leftovers(&data);
            if !left.is_empty() {
                failures.push(format!("{what}, killed while {stage}: left behind {left:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
