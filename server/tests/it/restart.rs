//! A routine restart of the real binary loses nothing (the reliability issue): SIGTERM while
//! three conversions run; the process exits within its shutdown bound, and after a start all
//! three images are active.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::{admin_token, free_port, json, sigterm, start, wait_healthy};

/// Three workers, so three conversions run at once; a stop bound of 20 s.
const ENV: &[(&str, &str)] = &[("HANGAR_SHUTDOWN_TIMEOUT", "20"), ("HANGAR_JOB_WORKERS", "3")];

/// 64 MiB of incompressible data as a dynamic VDI (made by qemu-img, formats pinned).
fn vdi(dir: &Path, n: u64) -> Vec<u8> {
    let raw = dir.join(format!("disk{n}.raw"));
    std::fs::write(&raw, common::noise(64 << 20, n + 1)).unwrap();
    let out = dir.join(format!("disk{n}.vdi"));
    let done = Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "vdi"]).arg(&raw).arg(&out).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    std::fs::read(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_three_conversions_run_loses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("hangar.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = start(&data, port, &log, ENV);
    wait_healthy(&client, &base).await;
    let token = admin_token(&data, "restart-test");

    // Three VDIs staged, then imported: three conversions at once (three workers).
    let mut ids = Vec::new();
    for n in 0..3 {
        let created: serde_json::Value = client
            .post(format!("{base}/image/v2/images"))
            .header("x-auth-token", &token)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": format!("vdi-{n}"), "disk_format": "vdi", "container_format": "bare" }).to_string())
            .send()
            .await
            .map(json)
            .unwrap()
            .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let r = client
            .put(format!("{base}/image/v2/images/{id}/stage"))
            .header("x-auth-token", &token)
            .header("content-type", "application/octet-stream")
            .body(vdi(dir.path(), n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
        ids.push(id);
    }
    for id in &ids {
        let r = client
            .post(format!("{base}/image/v2/images/{id}/import"))
            .header("x-auth-token", &token)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "method": { "name": "glance-direct" } }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    }
    // Wait until all three are converting, then stop the server as an init system would.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut converting = 0;
        for id in &ids {
            let tasks: serde_json::Value =
                json(client.get(format!("{base}/image/v2/images/{id}/tasks")).header("x-auth-token", &token).send().await.unwrap()).await;
            let running = tasks["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["status"] == "processing"));
            converting += usize::from(running);
        }
        if converting == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the three imports did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    sigterm(&child);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(25), "still running {:?} after SIGTERM", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = t0.elapsed();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit status {status:?}\n{logged}");
    assert!(took < Duration::from_secs(20), "the stop took {took:?}");
    assert!(logged.contains("queued and run again at the next start"), "the log says what was requeued:\n{logged}");

    // The next start finishes all three.
    let mut child = start(&data, port, &log, ENV);
    wait_healthy(&client, &base).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    for id in &ids {
        loop {
            let img: serde_json::Value =
                json(client.get(format!("{base}/image/v2/images/{id}")).header("x-auth-token", &token).send().await.unwrap()).await;
            if img["status"] == "active" {
                assert_eq!(img["disk_format"], "qcow2");
                break;
            }
            assert_ne!(img["status"], "killed", "{img}\n{}", std::fs::read_to_string(&log).unwrap());
            assert!(Instant::now() < deadline, "{id} did not become active: {img}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    sigterm(&child);
    let _ = child.wait();
    let staged: Vec<_> = std::fs::read_dir(data.join("staging")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(staged.is_empty(), "nothing left in staging: {staged:?}");
}
