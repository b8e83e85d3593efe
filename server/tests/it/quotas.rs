//! Quotas hold exactly under concurrency, whichever door the bytes come through (the security
//! issue): parallel creates through the dashboard and the Glance API at `max_images`; parallel
//! Glance stages and tus uploads at `max_bytes`; `max_concurrent_uploads` for Glance bodies as
//! for tus; a conversion that grows an image and a copy to another backend count what they store.
//! Every request here is fired in parallel (`join_all`), not one by one.

use crate::common;
use domain::ImageStatus;

use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{noise, seed_accounts, settled, token, tus_create, Auth, Reply, TestApp, HOST, PASSWORD};
use futures::future::join_all;
use serde_json::json;

const MIB: u64 = 1 << 20;

fn two_backends() -> (tempfile::TempDir, server::Config) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let config = server::Config {
        data_dir: root.join("data"),
        storage: common::local_backends(&root, &["local", "second"]),
        ..server::Config::default()
    };
    (dir, config)
}

async fn glance(app: &TestApp, method: &str, uri: &str, tok: &str, ctype: &str, body: Body, extra: &[(&str, String)]) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("/image{uri}"))
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "application/json")
        .header("x-auth-token", tok)
        .header(header::CONTENT_TYPE, ctype);
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    app.send(b.body(body).unwrap()).await
}

async fn create(app: &TestApp, tok: &str, name: &str, disk_format: &str) -> Reply {
    let body = json!({ "name": name, "disk_format": disk_format, "container_format": "bare" }).to_string();
    glance(app, "POST", "/v2/images", tok, "application/json", Body::from(body), &[]).await
}

async fn create_ok(app: &TestApp, tok: &str, name: &str, disk_format: &str) -> String {
    let r = create(app, tok, name, disk_format).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn put(app: &TestApp, tok: &str, id: &str, what: &str, data: Vec<u8>) -> Reply {
    let size = data.len().to_string();
    glance(
        app,
        "PUT",
        &format!("/v2/images/{id}/{what}"),
        tok,
        "application/octet-stream",
        Body::from(data),
        &[("x-openstack-image-size", size)],
    )
    .await
}

/// Creates a tus upload of `length` bytes for image `id`.
fn set_quota(max_images: Option<i64>, max_bytes: Option<u64>, max_uploads: Option<i64>) -> records::QuotaRow {
    records::QuotaRow { max_images, max_bytes: max_bytes.map(|b| i64::try_from(b).unwrap()), max_concurrent_uploads: max_uploads }
}

#[tokio::test]
async fn parallel_creates_through_both_doors_stop_at_max_images() {
    let (dir, config) = two_backends();
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    app.state.db.set_quota(&p1, set_quota(Some(3), None, None)).await.unwrap();
    let tok = token(&app, "member", &p1).await;
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let form = "form[name]=dash&form[disk_format]=qcow2&form[container_format]=bare&form[visibility]=private\
        &form[description]=&form[min_disk]=0&form[min_ram]=0&form[architecture]=&form[os_distro]=&form[os_version]=\
        &form[protected]=false&form[tags]=&form[size]=1024";
    let names: Vec<String> = (0..6).map(|i| format!("api-{i}")).collect();
    let glance_creates = join_all(names.iter().map(|n| create(&app, &tok, n, "qcow2")));
    let dash_creates = join_all((0..6).map(|_| app.call("create_image", form, &cookie)));
    let (g, d) = tokio::join!(glance_creates, dash_creates);
    let made = g.iter().filter(|r| r.status == StatusCode::CREATED).count() + d.iter().filter(|r| r.status == StatusCode::OK).count();
    let refused = g.iter().chain(d.iter()).filter(|r| r.status == StatusCode::PAYLOAD_TOO_LARGE).count();
    assert_eq!((made, refused), (3, 9), "{:?}", g.iter().chain(d.iter()).map(|r| (r.status, &r.body)).collect::<Vec<_>>());
    assert_eq!(app.state.db.quota_usage(&p1).await.unwrap().images, 3);
}

#[tokio::test]
async fn parallel_puts_stages_and_tus_uploads_stop_at_max_bytes() {
    let (dir, config) = two_backends();
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    // Raw images are kept as raw here, so what is stored is exactly what was sent.
    app.state
        .db
        .set_policy_cell(domain::StorageKind::Local, domain::ImageFormat::Raw, domain::MatrixAction::Native, None, "Kept.", "test")
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(create_ok(&app, &tok, &format!("arriving-{i}"), "raw").await);
    }
    // Room for two of the twelve 1 MiB arrivals below, whichever door they use.
    app.state.db.set_quota(&p1, set_quota(None, Some(2 * MIB + MIB / 2), None)).await.unwrap();
    let stages = join_all(ids[..4].iter().map(|id| put(&app, &tok, id, "stage", noise(MIB as usize, 1))));
    let puts = join_all(ids[4..8].iter().map(|id| put(&app, &tok, id, "file", noise(MIB as usize, 1))));
    let tus = join_all(ids[8..].iter().map(|id| tus_create(&app, &tok, id, MIB, &[])));
    let (stages, puts, tus) = tokio::join!(stages, puts, tus);
    let ok = stages.iter().chain(puts.iter()).filter(|r| r.status == StatusCode::NO_CONTENT).count()
        + tus.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let refused = stages.iter().chain(puts.iter()).chain(tus.iter()).filter(|r| r.status == StatusCode::PAYLOAD_TOO_LARGE).count();
    assert_eq!(
        (ok, refused),
        (2, 10),
        "stages {:?} puts {:?} tus {:?}",
        stages.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>(),
        puts.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>(),
        tus.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // An accepted PUT answers once its import ended (the image is active, its copy stored).
    let usage = app.state.db.quota_usage(&p1).await.unwrap();
    assert_eq!(usage.bytes(), 2 * MIB, "{usage:?}");
    // A refused stage or PUT left its image waiting for data, with nothing held.
    for (id, r) in ids.iter().zip(stages.iter().chain(puts.iter())) {
        if r.status == StatusCode::PAYLOAD_TOO_LARGE {
            assert_eq!(app.state.db.image(id).await.unwrap().unwrap().status, ImageStatus::Queued);
            assert!(app.state.db.quota_holds(id).await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn glance_bodies_take_upload_slots_as_tus_uploads_do() {
    let (dir, config) = two_backends();
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let id = create_ok(&app, &tok, "slot", "raw").await;
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(create_ok(&app, &tok, &format!("tus-{i}"), "raw").await);
    }
    app.state.db.set_quota(&p1, set_quota(None, None, Some(2))).await.unwrap();
    // Two tus uploads in progress fill the project's two slots: a Glance body must wait too.
    for other in &others[..2] {
        assert_eq!(tus_create(&app, &tok, other, MIB, &[]).await.status, StatusCode::CREATED);
    }
    let r = put(&app, &tok, &id, "stage", noise(4096, 2)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body.contains("uploads at a time"), "{}", r.body);
    assert_eq!(app.state.db.image(&id).await.unwrap().unwrap().status, ImageStatus::Queued);
    // With a third slot it goes through; staged data keeps its bytes but frees its slot.
    app.state.db.set_quota(&p1, set_quota(None, None, Some(3))).await.unwrap();
    assert_eq!(put(&app, &tok, &id, "stage", noise(4096, 2)).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.state.db.quota_holds(&id).await.unwrap(), vec![("stage".to_owned(), 4096, false)]);
    assert_eq!(tus_create(&app, &tok, &others[2], MIB, &[]).await.status, StatusCode::CREATED, "the stage's slot was given back");
}

#[tokio::test]
async fn what_is_stored_counts_a_conversion_that_grows_and_every_copy() {
    let (dir, config) = two_backends();
    let work = tempfile::tempdir().unwrap();
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let db = &app.state.db;

    // A qcow2 of 64 MiB virtual size holding 1 MiB of data: small as uploaded, 64 MiB once the
    // matrix converts it to raw.
    let raw = work.path().join("data.raw");
    std::fs::write(&raw, noise(MIB as usize, 3)).unwrap();
    let q = work.path().join("disk.qcow2");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .output()
        .expect("qemu-img is required (apt-get install qemu-utils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("qemu-img").args(["resize", "-f", "qcow2"]).arg(&q).arg("64M").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let qcow2 = std::fs::read(&q).unwrap();
    assert!((qcow2.len() as u64) < 2 * MIB);

    // Within a 16 MiB quota the qcow2 fits as uploaded, but not once converted to raw.
    db.set_quota(&p1, set_quota(None, Some(16 * MIB), None)).await.unwrap();
    db.set_policy_cell(
        domain::StorageKind::Local,
        domain::ImageFormat::Qcow2,
        domain::MatrixAction::Convert,
        Some(domain::DiskFormat::Raw),
        "Raw for the test.",
        "test",
    )
    .await
    .unwrap();
    let grows = create_ok(&app, &tok, "grows", "qcow2").await;
    let r = put(&app, &tok, &grows, "file", qcow2.clone()).await;
    // Glance answers a quota the stored image would exceed with 413 (StorageQuotaFull).
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let img = settled(&app, &tok, &grows).await;
    assert_eq!(img["status"], "killed");
    let reason = db.image_detail(&grows).await.unwrap().unwrap().status_reason;
    assert!(reason.contains("quota") && reason.contains(&(64 * MIB).to_string()), "{reason}");
    assert_eq!(db.quota_usage(&p1).await.unwrap().bytes(), 0, "nothing of the killed image counts");

    // Kept as qcow2 it fits; the stored copy is what counts, and no hold is left behind.
    db.set_policy_cell(domain::StorageKind::Local, domain::ImageFormat::Qcow2, domain::MatrixAction::Native, None, "Kept.", "test")
        .await
        .unwrap();
    let kept = create_ok(&app, &tok, "kept", "qcow2").await;
    assert_eq!(put(&app, &tok, &kept, "file", qcow2.clone()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(settled(&app, &tok, &kept).await["status"], "active");
    assert!(db.quota_holds(&kept).await.unwrap().is_empty());
    let one = db.quota_usage(&p1).await.unwrap();
    assert_eq!(one.stored, qcow2.len() as u64);
    assert_eq!(one.bytes(), one.stored);

    // A copy on a second backend is stored bytes too: it fits once, then the quota refuses it.
    let copy = |id: String| {
        let body = json!({ "method": { "name": "copy-image" }, "stores": ["second"] }).to_string();
        let (app, tok) = (&app, tok.clone());
        async move { glance(app, "POST", &format!("/v2/images/{id}/import"), &tok, "application/json", Body::from(body), &[]).await }
    };
    assert_eq!(copy(kept.clone()).await.status, StatusCode::ACCEPTED);
    for _ in 0..300 {
        if db.image_locations(&kept).await.unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.quota_usage(&p1).await.unwrap().stored, 2 * qcow2.len() as u64, "two copies, counted twice");
    assert!(db.quota_holds(&kept).await.unwrap().is_empty());
    db.set_quota(&p1, set_quota(None, Some(2 * qcow2.len() as u64 + 1000), None)).await.unwrap();
    let third = create_ok(&app, &tok, "third", "qcow2").await;
    assert_eq!(put(&app, &tok, &third, "file", qcow2.clone()).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(db.image(&third).await.unwrap().unwrap().status, ImageStatus::Queued);
}

/// A body that cannot fit on the server's disk is refused with 507 and the free and needed
/// bytes before it is read, and leaves the image waiting for data with nothing held.
#[tokio::test]
async fn a_body_larger_than_the_free_disk_is_507_at_once() {
    let (dir, config) = two_backends();
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let id = create_ok(&app, &tok, "huge", "raw").await;
    // Glance's image size cap (1 TiB) minus one byte: more than this machine's free space.
    let huge = (1u64 << 40) - 1;
    for what in ["stage", "file"] {
        let r = glance(
            &app,
            "PUT",
            &format!("/v2/images/{id}/{what}"),
            &tok,
            "application/octet-stream",
            Body::empty(),
            &[("x-openstack-image-size", huge.to_string())],
        )
        .await;
        assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {}", r.body);
        assert!(r.body.contains("bytes free") && r.body.contains(&huge.to_string()), "{what}: {}", r.body);
        // The local store converts raw to qcow2: the conversion's room is named too.
        assert!(r.body.contains("more to convert it"), "{what}: {}", r.body);
        assert_eq!(app.state.db.image(&id).await.unwrap().unwrap().status, ImageStatus::Queued);
        assert!(app.state.db.quota_holds(&id).await.unwrap().is_empty());
    }
}
