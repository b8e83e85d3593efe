//! Packages through the doors: an OVA or a UEC tarball is declared by its container format, with
//! the disk format naming the disk inside (Glance's convention, `imageops::declared`), and
//! becomes images whether it arrives by Glance's `PUT /file` or by a tus upload.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;

use crate::common::{self, seed_accounts, token, TestApp, HOST};
use crate::ingest::{ova, uec_tarball};

/// A `queued` image declared with `disk_format` and `container_format`, through the Glance API.
async fn create(app: &TestApp, tok: &str, name: &str, disk_format: &str, container_format: &str) -> String {
    let body = serde_json::json!({"name": name, "disk_format": disk_format, "container_format": container_format});
    let r = app.glance(tok, "POST", "/v2/images", "application/json", Body::from(body.to_string())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn put_file(app: &TestApp, tok: &str, id: &str, bytes: Vec<u8>) -> common::Reply {
    app.glance(tok, "PUT", &format!("/v2/images/{id}/file"), "application/octet-stream", Body::from(bytes)).await
}

/// Sends `bytes` to image `id` as one tus upload (creation, then one PATCH).
async fn tus_upload(app: &TestApp, tok: &str, id: &str, bytes: Vec<u8>) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let created = app
        .send(
            Request::post("/uploads")
                .header(header::HOST, HOST)
                .header("x-auth-token", tok)
                .header("tus-resumable", "1.0.0")
                .header("upload-length", bytes.len().to_string())
                .header("upload-metadata", format!("image_id {},filename {}", b64(id), b64("package")))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let url = created.headers["location"].to_str().unwrap().to_owned();
    let patched = app
        .send(
            Request::patch(url.as_str())
                .header(header::HOST, HOST)
                .header("x-auth-token", tok)
                .header("tus-resumable", "1.0.0")
                .header(header::CONTENT_TYPE, "application/offset+octet-stream")
                .header("upload-offset", "0")
                .body(Body::from(bytes))
                .unwrap(),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT, "{}", patched.body);
}

/// Image `id` as the Glance API shows it once its import has ended: its status is final and its
/// import task (which records a package's other disks after the first is active) is done.
async fn settled(app: &TestApp, tok: &str, id: &str) -> Value {
    for _ in 0..600 {
        let img = app.glance(tok, "GET", &format!("/v2/images/{id}"), "application/json", Body::empty()).await.json();
        let tasks = app.glance(tok, "GET", &format!("/v2/images/{id}/tasks"), "application/json", Body::empty()).await.json();
        let running =
            tasks["tasks"].as_array().is_some_and(|t| t.iter().any(|t| matches!(t["status"].as_str(), Some("pending" | "processing"))));
        if !running && !matches!(img["status"].as_str(), Some("queued" | "uploading" | "saving" | "importing")) {
            return img;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("image {id} did not settle");
}

async fn images(app: &TestApp, tok: &str) -> Vec<Value> {
    let r = app.glance(tok, "GET", "/v2/images?limit=100", "application/json", Body::empty()).await;
    r.json()["images"].as_array().unwrap().clone()
}

/// `openstack image create --container-format ova --disk-format vmdk --file web.ova`, and the
/// same declaration with the file sent by tus: both end with the first disk as this image
/// (qcow2, `bare` once unpacked, as Glance's OVF processing leaves it, the OVF's facts kept)
/// and the second disk as an image of its own, linked, active, visible to the client.
#[tokio::test]
async fn an_ova_declared_as_glance_does_becomes_images_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = ova(dir.path());
    let bytes = std::fs::read(&pkg).unwrap();
    for door in ["glance", "tus"] {
        let id = create(&app, &tok, &format!("appliance-{door}"), "vmdk", "ova").await;
        if door == "glance" {
            let r = put_file(&app, &tok, &id, bytes.clone()).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        } else {
            tus_upload(&app, &tok, &id, bytes.clone()).await;
        }
        let img = settled(&app, &tok, &id).await;
        assert_eq!(img["status"], "active", "{door}: {img}");
        assert_eq!((img["disk_format"].as_str(), img["container_format"].as_str()), (Some("qcow2"), Some("bare")), "{door}");
        assert_eq!(img["ovf_disk_format"], "vmdk", "{door}: {img}");
        assert_eq!(img["ovf_name"], "Web VM", "{door}: {img}");
        let all = images(&app, &tok).await;
        let second = all.iter().find(|i| i["ova_parent"] == id.as_str()).unwrap_or_else(|| panic!("{door}: no second disk in {all:?}"));
        assert_eq!((second["status"].as_str(), second["disk_format"].as_str()), (Some("active"), Some("qcow2")), "{door}");
    }
}

/// A package declared wrongly is refused with a declaration that exists: an OVA whose disk is
/// VMDK declared `raw`, an OVA declared as a plain VMDK, a UEC tarball declared as a plain AMI; a
/// declaration no package can satisfy (a UEC tarball of a qcow2) is refused at creation.
#[tokio::test]
async fn a_package_declared_wrongly_is_refused_with_a_declaration_that_exists() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = ova(dir.path());
    let (tarball, ..) = uec_tarball(dir.path());
    let (ova_bytes, uec_bytes) = (std::fs::read(&pkg).unwrap(), std::fs::read(&tarball).unwrap());
    let cases = [
        ("raw", "ova", &ova_bytes, "declare disk_format vmdk with container_format ova"),
        ("vmdk", "bare", &ova_bytes, "declare container_format ova"),
        ("ami", "ami", &uec_bytes, "declare container_format uec with disk_format ami"),
    ];
    for (disk, container, bytes, says) in cases {
        let id = create(&app, &tok, "wrong", disk, container).await;
        let r = put_file(&app, &tok, &id, bytes.clone()).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{disk}/{container}: {}", r.body);
        assert!(r.body.contains(says), "{disk}/{container}: {}", r.body);
        assert_eq!(settled(&app, &tok, &id).await["status"], "killed", "{disk}/{container}");
    }
    assert_eq!(images(&app, &tok).await.iter().filter(|i| i["status"] == "active").count(), 0, "nothing was imported");
    let body = serde_json::json!({"name": "never", "disk_format": "qcow2", "container_format": "uec"});
    let r = app.glance(&tok, "POST", "/v2/images", "application/json", Body::from(body.to_string())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("container_format uec holds a disk of one of these formats: ami"), "{}", r.body);
}

/// A UEC tarball through the Glance API (`container_format uec`, Hangar's value, with
/// `disk_format ami`) yields an AMI linked by `kernel_id` and `ramdisk_id` to an AKI and an ARI,
/// all active and visible to the client.
#[tokio::test]
async fn a_uec_tarball_through_the_glance_api_yields_a_linked_ami_aki_and_ari() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let dir = tempfile::tempdir().unwrap();
    let (tarball, ..) = uec_tarball(dir.path());
    let id = create(&app, &tok, "uec", "ami", "uec").await;
    let r = put_file(&app, &tok, &id, std::fs::read(&tarball).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let ami = settled(&app, &tok, &id).await;
    assert_eq!(
        (ami["status"].as_str(), ami["disk_format"].as_str(), ami["container_format"].as_str()),
        (Some("active"), Some("ami"), Some("ami"))
    );
    for (link, format) in [("kernel_id", "aki"), ("ramdisk_id", "ari")] {
        let linked = ami[link].as_str().unwrap_or_else(|| panic!("no {link} in {ami}"));
        let part = settled(&app, &tok, linked).await;
        assert_eq!((part["status"].as_str(), part["disk_format"].as_str()), (Some("active"), Some(format)), "{link}: {part}");
    }
}

/// The other Glance doors take packages too: an OVA staged and imported with `glance-direct`
/// (`glance image-create-via-import --import-method glance-direct`), and a UEC tarball fetched
/// with `web-download`, each ending as its linked images.
#[tokio::test]
async fn packages_arrive_by_stage_and_import_and_by_web_download() {
    let dir = tempfile::tempdir().unwrap();
    let (tarball, ..) = uec_tarball(dir.path());
    let port = crate::glance::origin(std::fs::read(&tarball).unwrap()).await;
    let allowed = format!("127.0.0.1:{port}");
    let app = crate::glance::spawn_web_download(&[allowed.as_str()]).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let import = |id: &str, method: Value| {
        let body = serde_json::json!({ "method": method }).to_string();
        let (app, tok, uri) = (&app, tok.clone(), format!("/v2/images/{id}/import"));
        async move { app.glance(&tok, "POST", &uri, "application/json", Body::from(body)).await }
    };

    // Staged, then imported.
    let (pkg, _, _) = ova(dir.path());
    let id = create(&app, &tok, "staged-appliance", "vmdk", "ova").await;
    let r = app
        .glance(&tok, "PUT", &format!("/v2/images/{id}/stage"), "application/octet-stream", Body::from(std::fs::read(&pkg).unwrap()))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = import(&id, serde_json::json!({"name": "glance-direct"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let img = settled(&app, &tok, &id).await;
    assert_eq!((img["status"].as_str(), img["disk_format"].as_str()), (Some("active"), Some("qcow2")), "{img}");
    assert_eq!(img["ovf_name"], "Web VM", "{img}");
    let all = images(&app, &tok).await;
    let second = all.iter().find(|i| i["ova_parent"] == id.as_str()).unwrap_or_else(|| panic!("no second disk in {all:?}"));
    assert_eq!(second["status"], "active", "{second}");

    // Fetched from a web server.
    let id = create(&app, &tok, "downloaded-uec", "ami", "uec").await;
    let r = import(&id, serde_json::json!({"name": "web-download", "uri": format!("http://{allowed}/disk.qcow2")})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let ami = settled(&app, &tok, &id).await;
    assert_eq!((ami["status"].as_str(), ami["disk_format"].as_str()), (Some("active"), Some("ami")), "{ami}");
    for (link, format) in [("kernel_id", "aki"), ("ramdisk_id", "ari")] {
        let linked = ami[link].as_str().unwrap_or_else(|| panic!("no {link} in {ami}"));
        let part = settled(&app, &tok, linked).await;
        assert_eq!((part["status"].as_str(), part["disk_format"].as_str()), (Some("active"), Some(format)), "{link}: {part}");
        assert_eq!(part["uec_parent"], id.as_str(), "{part}");
    }
}
