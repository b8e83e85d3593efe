//! A full disk degrades Hangar, it does not take it down (the reliability issue): on a small
//! tmpfs filled to the last byte, token and session authentication, listings and downloads keep
//! working, `/readyz` says `low_space`, every write path answers 507 (never 500), and nothing
//! half-written becomes active. Mounting the tmpfs needs root, as the test command runs.

use crate::common;
use domain::ImageStatus;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use common::{seed_accounts, token, Auth, HOST, PASSWORD};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output().unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (the test command runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes until the file system refuses another byte.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0xEEu8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0xEEu8; 512];
    while f.write_all(&small).is_ok() {}
    while f.write_all(&small[..1]).is_ok() {}
    let _ = f.sync_all();
}

/// A Glance API request with a token.
fn glance_request(tok: &str, method: &str, uri: &str, ctype: &str, body: Body, extra: Vec<(&'static str, String)>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("/image{uri}"))
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "application/json")
        .header("x-auth-token", tok)
        .header(header::CONTENT_TYPE, ctype);
    for (k, v) in extra {
        b = b.header(k, v);
    }
    b.body(body).unwrap()
}

#[tokio::test]
async fn a_full_disk_degrades_reads_and_auth_work_writes_are_507() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, "48m");
    let config = server::Config { data_dir: mnt.join("data"), ..server::Config::default() };
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let cookie = app.sign_in("member", PASSWORD).await;
    let db = app.state.db.clone();

    // One active image to read back, uploaded while there was room.
    let glance = |method: &str, uri: String, ctype: &str, body: Body, extra: Vec<(&'static str, String)>| {
        glance_request(&tok, method, &uri, ctype, body, extra)
    };
    let create = |name: &str| {
        glance(
            "POST",
            "/v2/images".into(),
            "application/json",
            Body::from(format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"}}"#)),
            vec![],
        )
    };
    let r = app.send(create("before")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let before = r.json()["id"].as_str().unwrap().to_owned();
    let data = vec![0x42u8; 1 << 20];
    let r =
        app.send(glance("PUT", format!("/v2/images/{before}/file"), "application/octet-stream", Body::from(data.clone()), vec![])).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // Images waiting for data, for the write paths below.
    let mut waiting = Vec::new();
    for i in 0..3 {
        let r = app.send(create(&format!("after-{i}"))).await;
        waiting.push(r.json()["id"].as_str().unwrap().to_owned());
    }

    fill(&mnt);

    // Reads and authentication keep working, many times over (token use is not a write).
    for _ in 0..3 {
        let r = app.send(glance("GET", "/v2/images".into(), "application/octet-stream", Body::empty(), vec![])).await;
        assert_eq!(r.status, StatusCode::OK, "token listing on a full disk: {}", r.body);
    }
    let r = app.send(glance("GET", format!("/v2/images/{before}/file"), "application/octet-stream", Body::empty(), vec![])).await;
    assert_eq!(r.status, StatusCode::OK, "download on a full disk: {}", r.body);
    assert!(!r.body.is_empty());
    let page = app.get("/images", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "a signed-in page on a full disk");
    assert!(page.body.contains("before"), "the list shows the image");
    assert_eq!(app.call("whoami", "", &Auth::Cookie(cookie.clone())).await.json()["username"], "member");
    let ready = app.get("/readyz", None).await;
    assert_eq!((ready.status, ready.json()["status"].clone()), (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!("low_space")));
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);

    // Every write path: 507 with what is free, never a 500.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let tus = Request::post("/uploads")
        .header(header::HOST, HOST)
        .header("x-auth-token", tok.as_str())
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "4096")
        .header("upload-metadata", format!("image_id {}", b64(&waiting[0])))
        .body(Body::empty())
        .unwrap();
    let put_declared = glance(
        "PUT",
        format!("/v2/images/{}/file", waiting[1]),
        "application/octet-stream",
        Body::from(vec![1u8; 4096]),
        vec![("x-openstack-image-size", "4096".into())],
    );
    // No declared size: refused when a write fails.
    let stream = futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![2u8; 64 * 1024]))));
    let stage_streamed =
        glance("PUT", format!("/v2/images/{}/stage", waiting[2]), "application/octet-stream", Body::from_stream(stream), vec![]);
    for (what, req) in [("tus creation", tus), ("Glance PUT /file", put_declared), ("Glance PUT /stage, streamed", stage_streamed)] {
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {}", r.body);
        assert!(r.body.contains("free") || r.body.contains("full"), "{what}: {}", r.body);
    }
    // The dashboard's writes (server functions) degrade the same way: 507, not 500.
    let form = "form[name]=dash&form[disk_format]=qcow2&form[container_format]=bare&form[visibility]=private\
        &form[description]=&form[min_disk]=0&form[min_ram]=0&form[architecture]=&form[os_distro]=&form[os_version]=\
        &form[protected]=false&form[tags]=&form[size]=1024";
    let edit = format!("image_id={before}&name=renamed&visibility=private&min_disk=0&min_ram=0&tags=&properties=");
    for (what, r) in [
        ("create_image", app.call("create_image", form, &Auth::Cookie(cookie.clone())).await),
        ("update_image", app.call("update_image", &edit, &Auth::Cookie(cookie.clone())).await),
    ] {
        assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{what} on a full disk: {}", r.body);
        assert_eq!(r.json()["code"], "insufficient-storage", "{what}: {}", r.body);
        assert!(r.body.contains("disk is full"), "{what}: {}", r.body);
    }
    assert_eq!(db.image(&before).await.unwrap().unwrap().name, "before", "nothing was changed");
    for id in &waiting {
        let img = db.image(id).await.unwrap().unwrap();
        assert_eq!(img.status, ImageStatus::Queued, "nothing half-written became active: {id}");
        assert!(db.quota_holds(id).await.unwrap().is_empty());
    }

    // Room again: the same image takes its data.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let r = app.send(glance("PUT", format!("/v2/images/{}/file", waiting[1]), "application/octet-stream", Body::from(data), vec![])).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

/// The space reserved for an upload includes what its import will write (the reliability
/// issue): an upload that fits but whose conversion would not is refused with 507 before any
/// byte is sent, through tus and the Glance API alike, while the same size kept as uploaded is
/// accepted; and a conversion whose inspected virtual size does not fit is refused before it
/// starts, with the numbers, leaving nothing behind.
#[tokio::test]
async fn the_space_check_counts_the_conversion_output() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, "64m");
    let data_dir = mnt.join("data");
    let config = server::Config { data_dir: data_dir.clone(), ..server::Config::default() };
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let db = app.state.db.clone();
    let glance = |method: &str, uri: String, ctype: &str, body: Body, extra: Vec<(&'static str, String)>| {
        glance_request(&tok, method, &uri, ctype, body, extra)
    };
    let create = |disk_format: &str| {
        glance(
            "POST",
            "/v2/images".into(),
            "application/json",
            Body::from(format!(r#"{{"name":"{disk_format}","disk_format":"{disk_format}","container_format":"bare"}}"#)),
            vec![],
        )
    };
    let id = |r: common::Reply| r.json()["id"].as_str().unwrap().to_owned();
    let raw = id(app.send(create("raw")).await);
    let qcow2 = id(app.send(create("qcow2")).await);
    let raw_put = id(app.send(create("raw")).await);

    // 36 MiB fits in 64 MiB; 36 MiB plus its qcow2 conversion (the local store converts raw)
    // does not.
    let length = (36u64 << 20).to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let tus = |image: &str| {
        Request::post("/uploads")
            .header(header::HOST, HOST)
            .header("x-auth-token", tok.as_str())
            .header("tus-resumable", "1.0.0")
            .header("upload-length", length.as_str())
            .header("upload-metadata", format!("image_id {}", b64(image)))
            .body(Body::empty())
            .unwrap()
    };
    let r = app.send(tus(&raw)).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "raw to convert: {}", r.body);
    assert!(r.body.contains("free for uploads"), "{}", r.body);
    assert!(r.body.contains("to convert it"), "{}", r.body);
    let r = app.send(tus(&qcow2)).await;
    assert_eq!(r.status, StatusCode::CREATED, "qcow2 kept as uploaded fits: {}", r.body);
    let r = app
        .send(glance(
            "PUT",
            format!("/v2/images/{raw_put}/file"),
            "application/octet-stream",
            Body::from(vec![0u8; 16]),
            vec![("x-openstack-image-size", length.clone())],
        ))
        .await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "Glance PUT of a raw to convert: {}", r.body);
    assert_eq!(db.image(&raw_put).await.unwrap().unwrap().status, ImageStatus::Queued, "the image still waits for its data");

    // A qcow2 of 200 KiB whose disk is 1 GiB, on a store that converts qcow2 to raw: the upload
    // fits, the 1 GiB output does not, and inspection knows it before converting.
    db.set_policy_cell(
        domain::StorageKind::Local,
        domain::ImageFormat::Qcow2,
        domain::MatrixAction::Convert,
        Some(domain::DiskFormat::Raw),
        "Raw for this test.",
        "test",
    )
    .await
    .unwrap();
    let small = mnt.join("small.qcow2");
    let out = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&small).arg("1G").output().unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&small).unwrap();
    std::fs::remove_file(&small).unwrap();
    let sparse = id(app.send(create("qcow2")).await);
    let r = app.send(glance("PUT", format!("/v2/images/{sparse}/file"), "application/octet-stream", Body::from(bytes), vec![])).await;
    assert!(r.status.is_client_error(), "the import is refused: {} {}", r.status, r.body);
    let img = db.image_detail(&sparse).await.unwrap().unwrap();
    assert_eq!(img.status, ImageStatus::Killed);
    assert!(img.status_reason.contains("needs up to 1073741824 bytes"), "{}", img.status_reason);
    let staging: Vec<_> = std::fs::read_dir(data_dir.join("staging")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(staging.is_empty(), "nothing left in staging: {staging:?}");
}
