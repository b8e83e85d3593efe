//! Packages through the doors: an OVA or a UEC tarball is declared by its container format, with
//! the disk format naming the disk inside (Glance's convention, `imageops::declared`), and
//! becomes images whether it arrives by Glance's `PUT /file` or by a tus upload.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::Value;

use crate::common::{self, seed_accounts, settled, token, tus_upload, Auth, TestApp};
use crate::ingest::{ova, uec_tarball};

/// A `queued` image declared with `disk_format` and `container_format`, through the Glance API.
async fn create(app: &TestApp, tok: &str, name: &str, disk_format: &str, container_format: &str) -> String {
    let body = serde_json::json!({"name": name, "disk_format": disk_format, "container_format": container_format});
    let r = app.glance(tok, "POST", "/v2/images", "application/json", Body::from(body.to_string())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// A `queued` image declared with `disk_format` and `container_format`, as the dashboard's
/// Upload page creates it (the `create_image` server function).
async fn dashboard_create(app: &TestApp, tok: &str, name: &str, disk_format: &str, container_format: &str, size: usize) -> String {
    let fields = [
        ("name", name.to_owned()),
        ("description", String::new()),
        ("disk_format", disk_format.to_owned()),
        ("container_format", container_format.to_owned()),
        ("visibility", "private".to_owned()),
        ("min_disk", "0".to_owned()),
        ("min_ram", "0".to_owned()),
        ("architecture", String::new()),
        ("os_distro", String::new()),
        ("os_version", String::new()),
        ("protected", "false".to_owned()),
        ("tags", String::new()),
        ("size", size.to_string()),
    ];
    let form = fields.iter().map(|(k, v)| format!("form[{k}]={v}")).collect::<Vec<_>>().join("&");
    let r = app.call("create_image", &form, &Auth::Token(tok.to_owned())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json().as_str().unwrap().to_owned()
}

async fn put_file(app: &TestApp, tok: &str, id: &str, bytes: Vec<u8>) -> common::Reply {
    app.glance(tok, "PUT", &format!("/v2/images/{id}/file"), "application/octet-stream", Body::from(bytes)).await
}

async fn images(app: &TestApp, tok: &str) -> Vec<Value> {
    let r = app.glance(tok, "GET", "/v2/images?limit=100", "application/json", Body::empty()).await;
    r.json()["images"].as_array().unwrap().clone()
}

/// Where Hangar stored image `id` (a local path with the default backend).
async fn stored(app: &TestApp, id: &str) -> String {
    app.state.db.image_ingest(id).await.unwrap().unwrap().location.unwrap()
}

/// `qemu-img compare` of a raw payload with a stored qcow2 (the oracle).
fn same_disk(raw: &std::path::Path, qcow2: &str) {
    let out = std::process::Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(raw).arg(qcow2).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Nothing is left in staging once an import ended.
fn staging_is_empty(app: &TestApp) {
    let staging = app.state.config.data_dir.join("staging");
    let left: Vec<_> = std::fs::read_dir(staging).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in staging: {left:?}");
}

/// `openstack image create --container-format ova --disk-format vmdk --file web.ova`, and the
/// same declaration with the file sent by tus: both end with the first disk as this image
/// (qcow2, `bare` once unpacked, as Glance's OVF processing leaves it, the OVF's facts kept, its
/// memory as min_ram) and the second disk as an image of its own, linked, active, visible to the
/// client; both disks' bytes are the payloads' (qemu-img as the oracle) and staging is empty.
#[tokio::test]
async fn an_ova_declared_as_glance_does_becomes_images_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let dir = tempfile::tempdir().unwrap();
    let (pkg, raw1, raw2) = ova(dir.path());
    let bytes = std::fs::read(&pkg).unwrap();
    for door in ["glance", "tus", "dashboard"] {
        let id = if door == "dashboard" {
            // The Upload page's create_image, then its tus upload.
            dashboard_create(&app, &tok, &format!("appliance-{door}"), "vmdk", "ova", bytes.len()).await
        } else {
            create(&app, &tok, &format!("appliance-{door}"), "vmdk", "ova").await
        };
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
        assert_eq!(img["ovf_disk_id"], "root", "{door}: {img}");
        assert_eq!(img["ovf_name"], "Web VM", "{door}: {img}");
        assert_eq!(img["ovf_os_type"], "ubuntu64Guest", "{door}: {img}");
        assert_eq!(img["ovf_certificate"], "web.cert: present, signature not verified", "{door}: {img}");
        assert_eq!(img["min_ram"], 2048, "{door}: the OVF's memory becomes min_ram");
        same_disk(&raw1, &stored(&app, &id).await);
        let all = images(&app, &tok).await;
        let second = all.iter().find(|i| i["ova_parent"] == id.as_str()).unwrap_or_else(|| panic!("{door}: no second disk in {all:?}"));
        assert_eq!((second["status"].as_str(), second["disk_format"].as_str()), (Some("active"), Some("qcow2")), "{door}");
        assert_eq!(second["name"], format!("appliance-{door} (disk 2)"), "{door}");
        assert_eq!(second["owner"], p1.as_str(), "{door}");
        // The raw disk was converted like the VMDK one, bytes intact.
        let second_id = second["id"].as_str().unwrap();
        same_disk(&raw2, &stored(&app, second_id).await);
        staging_is_empty(&app);
        // The dashboard links the two both ways: the upload card's list and each image page.
        let auth = Auth::Token(tok.clone());
        let card = app.call("image_progress", &format!("image_id={id}"), &auth).await.json();
        let family = |v: &Value| -> Vec<(String, String, bool)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| (r["id"].as_str().unwrap().to_owned(), r["role"].as_str().unwrap().to_owned(), r["is_self"].as_bool().unwrap()))
                .collect()
        };
        assert_eq!(
            family(&card["package"]),
            [(id.clone(), "first disk".to_owned(), true), (second_id.to_owned(), "disk data".to_owned(), false)],
            "{door}"
        );
        let page = app.call("image_detail", &format!("image_id={second_id}"), &auth).await.json();
        assert_eq!(
            family(&page["package"]),
            [(id.clone(), "first disk".to_owned(), false), (second_id.to_owned(), "disk data".to_owned(), true)],
            "{door}"
        );
    }
}

/// A package whose first disk the backend will not take leaves nothing in staging (its other
/// unpacked disks included), and the image is killed with the backend's reason.
#[tokio::test]
async fn a_package_the_backend_refuses_leaves_nothing_in_staging() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = ova(dir.path());
    // The store's directory becomes a file after the backend was opened: every put fails.
    let store = app.state.config.data_dir.join("images");
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::write(&store, b"not a directory").unwrap();
    let id = create(&app, &tok, "refused-appliance", "vmdk", "ova").await;
    // Glance answers a store that cannot write with 503 (StorageWriteDenied), not as a refusal
    // of the data (415).
    let r = put_file(&app, &tok, &id, std::fs::read(&pkg).unwrap()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.body.contains("could not store"), "{}", r.body);
    let img = settled(&app, &tok, &id).await;
    assert_eq!(img["status"], "killed", "{img}");
    let row = app.state.db.image_ingest(&id).await.unwrap().unwrap();
    assert!(row.status_reason.contains("could not store"), "{}", row.status_reason);
    assert!(images(&app, &tok).await.iter().all(|i| i["ova_parent"].is_null()), "no second disk became an image");
    staging_is_empty(&app);
}

/// A package an administrator keeps whole (the OVA row `native`) is stored as the package: the
/// image keeps its declaration (container_format ova, the disk format of the disk inside), its
/// stored copy is the `.ova` byte for byte, and no disk is unpacked into images of their own.
#[tokio::test]
async fn a_package_kept_whole_keeps_its_declaration() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    app.state
        .db
        .set_policy_cell(
            domain::StorageKind::Local,
            domain::ImageFormat::Ova,
            domain::MatrixAction::Native,
            None,
            "Kept as appliances.",
            "test",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = ova(dir.path());
    let bytes = std::fs::read(&pkg).unwrap();
    let id = create(&app, &tok, "appliance", "vmdk", "ova").await;
    let r = put_file(&app, &tok, &id, bytes.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let img = settled(&app, &tok, &id).await;
    assert_eq!(
        (img["status"].as_str(), img["disk_format"].as_str(), img["container_format"].as_str()),
        (Some("active"), Some("vmdk"), Some("ova")),
        "{img}"
    );
    assert_eq!(std::fs::read(stored(&app, &id).await).unwrap(), bytes, "the package is stored as uploaded");
    let row = app.state.db.image(&id).await.unwrap().unwrap();
    assert_eq!((row.disk_format, row.container_format), (Some(domain::DiskFormat::Vmdk), Some(domain::ContainerFormat::Ova)));
    let locations = app.state.db.image_locations(&id).await.unwrap();
    assert_eq!(locations.iter().map(|l| l.disk_format.as_str()).collect::<Vec<_>>(), ["ova"], "the stored copy is the package");
    assert!(images(&app, &tok).await.iter().all(|i| i["ova_parent"].is_null()), "nothing was unpacked");
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
    // A UEC tarball whose compressed stream is damaged half-way: the data's fault, so refused
    // (415) like a wrong declaration, not answered as a failure of Hangar's (503).
    let mut damaged = uec_bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid..mid + 64].fill(0xff);
    let cases = [
        ("raw", "ova", &ova_bytes, "declare disk_format vmdk with container_format ova"),
        ("vmdk", "bare", &ova_bytes, "declare container_format ova"),
        ("ami", "ami", &uec_bytes, "declare container_format uec with disk_format ami"),
        ("ami", "uec", &damaged, "refused"),
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
    let (tarball, img, kernel, initrd) = uec_tarball(dir.path());
    let id = create(&app, &tok, "uec", "ami", "uec").await;
    let r = put_file(&app, &tok, &id, std::fs::read(&tarball).unwrap()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let ami = settled(&app, &tok, &id).await;
    assert_eq!(
        (ami["status"].as_str(), ami["disk_format"].as_str(), ami["container_format"].as_str()),
        (Some("active"), Some("ami"), Some("ami"))
    );
    assert!(std::fs::read(stored(&app, &id).await).unwrap() == img, "the AMI is stored as its raw bytes");
    for (link, format, bytes) in [("kernel_id", "aki", &kernel), ("ramdisk_id", "ari", &initrd)] {
        let linked = ami[link].as_str().unwrap_or_else(|| panic!("no {link} in {ami}"));
        let part = settled(&app, &tok, linked).await;
        assert_eq!(
            (part["status"].as_str(), part["disk_format"].as_str(), part["container_format"].as_str()),
            (Some("active"), Some(format), Some(format)),
            "{link}: {part}"
        );
        assert_eq!(part["uec_parent"], id.as_str(), "{part}");
        assert!(std::fs::read(stored(&app, linked).await).unwrap() == *bytes, "{format} stored byte for byte");
    }
    staging_is_empty(&app);
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

/// Every image a package makes counts against the project's image quota, checked by the insert
/// that records it, so two packages imported at once cannot overshoot it; a disk the quota
/// keeps out is named, with the reason, on the package's first image.
#[tokio::test]
async fn a_packages_images_count_against_the_quota_even_imported_at_once() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let quota = records::QuotaRow { max_images: Some(3), ..Default::default() };
    app.state.db.set_quota(&p1, quota).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pkg, _, _) = ova(dir.path());
    let bytes = std::fs::read(&pkg).unwrap();
    // Two appliances of two disks each: four images wanted, three allowed.
    let a = create(&app, &tok, "first", "vmdk", "ova").await;
    let b = create(&app, &tok, "second", "vmdk", "ova").await;
    tokio::join!(tus_upload(&app, &tok, &a, bytes.clone()), tus_upload(&app, &tok, &b, bytes.clone()));
    let (a, b) = (settled(&app, &tok, &a).await, settled(&app, &tok, &b).await);
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("active"), Some("active")));
    let all = images(&app, &tok).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let noted: Vec<&Value> = [&a, &b].into_iter().filter(|i| !i["package_disks_not_kept"].is_null()).collect();
    assert_eq!(noted.len(), 1, "exactly one package lost its second disk: {a} {b}");
    let note = noted[0]["package_disks_not_kept"].as_str().unwrap();
    assert!(note.starts_with("data: ") && note.contains("quota of 3 images"), "{note}");
    // The dashboard's upload card says so too, and lists the one image the package became.
    let id = noted[0]["id"].as_str().unwrap();
    let p = app.call("image_progress", &format!("image_id={id}"), &Auth::Token(tok.clone())).await.json();
    assert_eq!(p["package_not_kept"], note, "{p}");
    assert_eq!(p["package"].as_array().map(Vec::len), Some(1), "{p}");
}
