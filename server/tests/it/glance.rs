//! The Glance v2-compatible API (`/image`) through the whole router: versions and schemas, the
//! error shape real clients parse, create/list/show/PATCH/delete with Glance's rules, uploads
//! through the validating pipeline (qemu-img makes the images, always with -f), stage + import,
//! tags, actions, members and the info endpoints. scripts/glance-cli-test.sh drives the same API
//! with the real python-glanceclient and openstackclient.

use crate::common;
use domain::JobKind;

use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{seed_accounts, spawn_app, token, Reply, TestApp, HOST};
use serde_json::{json, Value};

const PATCH_TYPE: &str = "application/openstack-images-v2.1-json-patch";

struct Api<'a> {
    app: &'a TestApp,
}

impl Api<'_> {
    async fn req(&self, method: &str, uri: &str, tok: Option<&str>, ctype: Option<&str>, body: Body, extra: &[(&str, &str)]) -> Reply {
        // openstacksdk's Accept; errors come as nested JSON (glanceclient's `*/*` gets HTML).
        let mut b = Request::builder().method(method).uri(format!("/image{uri}")).header(header::HOST, HOST);
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            b = b.header(header::ACCEPT, "application/json");
        }
        if let Some(t) = tok {
            b = b.header("x-auth-token", t);
        }
        if let Some(c) = ctype {
            b = b.header(header::CONTENT_TYPE, c);
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.app.send(b.body(body).unwrap()).await
    }
    async fn get(&self, uri: &str, tok: &str) -> Reply {
        // glanceclient sends this content type even on GET (docs/glance-api.md §4.1).
        self.req("GET", uri, Some(tok), Some("application/octet-stream"), Body::empty(), &[]).await
    }
    async fn json(&self, method: &str, uri: &str, tok: &str, body: Value) -> Reply {
        self.req(method, uri, Some(tok), Some("application/json"), Body::from(body.to_string()), &[]).await
    }
    async fn patch(&self, id: &str, tok: &str, ops: Value) -> Reply {
        self.req("PATCH", &format!("/v2/images/{id}"), Some(tok), Some(PATCH_TYPE), Body::from(ops.to_string()), &[]).await
    }
    async fn create(&self, tok: &str, body: Value) -> String {
        let r = self.json("POST", "/v2/images", tok, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    }
    async fn put_data(&self, what: &str, id: &str, tok: &str, data: Vec<u8>) -> Reply {
        let size = data.len().to_string();
        self.req(
            "PUT",
            &format!("/v2/images/{id}/{what}"),
            Some(tok),
            Some("application/octet-stream"),
            Body::from(data),
            &[("x-openstack-image-size", &size)],
        )
        .await
    }
    async fn show(&self, id: &str, tok: &str) -> Value {
        let r = self.get(&format!("/v2/images/{id}"), tok).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.json()
    }
    /// Waits (bounded) until the image leaves the transient statuses of an import.
    async fn settled(&self, id: &str, tok: &str) -> Value {
        for _ in 0..300 {
            let img = self.show(id, tok).await;
            if !matches!(img["status"].as_str(), Some("uploading" | "importing" | "saving")) {
                return img;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("image {id} did not settle");
    }
}

/// Every error answer is JSON whose top-level values are objects with a message (glanceclient's
/// parser), with the status as `code`.
fn assert_error(r: &Reply, status: StatusCode, needle: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    let obj = v.as_object().unwrap();
    assert!(obj.values().all(Value::is_object), "{}", r.body);
    let msg = obj.values().filter_map(|o| o["message"].as_str()).collect::<Vec<_>>().join(" ");
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    assert_eq!(v["error"]["code"], status.as_u16());
}

fn qemu_img(dir: &std::path::Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let mut full: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let size = full.pop().unwrap();
    full.push(path.display().to_string());
    full.push(size);
    let out = Command::new("qemu-img").args(&full).output().expect("qemu-img is required (apt-get install qemu-utils)");
    assert!(out.status.success(), "qemu-img {full:?}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(path).unwrap()
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

struct World {
    app: TestApp,
    member: String,
    reader: String,
    other: String,
    admin: String,
    p2: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let member = token(&app, "member", &p1).await;
    let reader = token(&app, "reader", &p1).await;
    let other = token(&app, "other", &p2).await;
    let admin = token(&app, "admin", &p1).await;
    World { app, member, reader, other, admin, p2 }
}

#[tokio::test]
async fn versions_schemas_and_the_error_shape() {
    let w = world().await;
    let api = Api { app: &w.app };
    let r = api.req("GET", "/versions", None, None, Body::empty(), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<String> = r.json()["versions"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.contains(&"v2.12".to_owned()) && ids.contains(&"v2.0".to_owned()), "{ids:?}");
    assert_eq!(r.json()["versions"][0]["status"], "CURRENT");
    // `/image` itself, and `/image/` (routed beside the nest: keystoneauth's discovery may add
    // the slash).
    let r = api.req("GET", "", None, None, Body::empty(), &[]).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(r.json()["versions"][0]["links"][0]["href"], "http://hangar.test/image/v2/");
    let slash = api.req("GET", "/", None, None, Body::empty(), &[]).await;
    assert_eq!(slash.status, StatusCode::MULTIPLE_CHOICES, "{}", slash.body);
    assert_eq!(slash.json(), r.json());

    let r = api.get("/v2/schemas/image", &w.member).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = r.json();
    let disk: Vec<Value> = s["properties"]["disk_format"]["enum"].as_array().unwrap().clone();
    assert!(disk.contains(&Value::Null) && disk.contains(&json!("qcow2")) && disk.contains(&json!("vdi")), "{disk:?}");
    assert!(!disk.contains(&json!("ova")), "ova is a container format");
    assert_eq!(s["additionalProperties"]["type"], "string");
    for name in ["images", "member", "members", "task", "tasks", "metadefs/namespace", "metadefs/resource_type"] {
        assert_eq!(api.get(&format!("/v2/schemas/{name}"), &w.member).await.status, StatusCode::OK, "{name}");
    }

    // No token, a bad token, an unknown route: all in the nested shape.
    let r = api.req("GET", "/v2/images", None, None, Body::empty(), &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "X-Auth-Token");
    let r = api.get("/v2/images", "hgr_not-a-token").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "token");
    assert_error(&api.get("/v2/nothing", &w.member).await, StatusCode::NOT_FOUND, "could not be found");
    assert_error(&api.get("/v2/images/00000000-0000-0000-0000-000000000000", &w.member).await, StatusCode::NOT_FOUND, "No image found");
    // glanceclient sends `Accept: */*` and gets webob's page, as from Glance.
    let r =
        api.req("GET", "/v2/images/00000000-0000-0000-0000-000000000000", Some(&w.member), None, Body::empty(), &[("accept", "*/*")]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(r.body.contains("<title>404 Not Found</title>") && r.body.contains("No image found with ID 00000000-"), "{}", r.body);
}

#[tokio::test]
async fn create_show_patch_and_delete_follow_glance() {
    let w = world().await;
    let api = Api { app: &w.app };
    let r = api
        .json(
            "POST",
            "/v2/images",
            &w.member,
            json!({"name": "deb", "disk_format": "qcow2", "container_format": "bare",
            "tags": ["a", "a", "b"], "min_ram": 512, "visibility": "private", "os_distro": "debian",
            "owner_specified.openstack.md5": ""}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let img = r.json();
    let id = img["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers[header::LOCATION], format!("/v2/images/{id}").as_str());
    assert!(r.headers["openstack-image-import-methods"].to_str().unwrap().contains("glance-direct"));
    assert_eq!(img["status"], "queued");
    assert_eq!(img["tags"], json!(["a", "b"]));
    assert_eq!(img["os_distro"], "debian");
    assert_eq!(img["size"], Value::Null);
    assert_eq!(img["checksum"], Value::Null);
    assert_eq!(img["file"], format!("/v2/images/{id}/file"));
    assert_eq!(img["owner_specified.openstack.md5"], "");

    // Create errors.
    assert_error(&api.json("POST", "/v2/images", &w.reader, json!({"name": "x"})).await, StatusCode::FORBIDDEN, "Readers");
    assert_error(&api.json("POST", "/v2/images", &w.member, json!({"status": "active"})).await, StatusCode::FORBIDDEN, "read-only");
    assert_error(&api.json("POST", "/v2/images", &w.member, json!({"os_glance_x": "1"})).await, StatusCode::FORBIDDEN, "reserved");
    assert_error(
        &api.json("POST", "/v2/images", &w.member, json!({"disk_format": "floppy"})).await,
        StatusCode::BAD_REQUEST,
        "disk_format",
    );
    assert_error(&api.json("POST", "/v2/images", &w.member, json!({"min_disk": -1})).await, StatusCode::BAD_REQUEST, "min_disk");
    assert_error(
        &api.json("POST", "/v2/images", &w.member, json!({"visibility": "public"})).await,
        StatusCode::FORBIDDEN,
        "administrators",
    );
    assert_error(&api.json("POST", "/v2/images", &w.member, json!({"k": 5})).await, StatusCode::BAD_REQUEST, "strings");
    assert_error(&api.json("POST", "/v2/images", &w.member, json!([1])).await, StatusCode::BAD_REQUEST, "object");
    // A chosen id is kept; reusing it is 409; it must be a UUID.
    let chosen = "0b5e4c1a-7d3e-4f1b-9c2d-3e4f5a6b7c8d";
    assert_eq!(api.create(&w.member, json!({"id": chosen, "name": "mine"})).await, chosen);
    assert_error(&api.json("POST", "/v2/images", &w.other, json!({"id": chosen})).await, StatusCode::CONFLICT, "already exists");
    assert_error(&api.json("POST", "/v2/images", &w.member, json!({"id": "not-a-uuid"})).await, StatusCode::BAD_REQUEST, "UUID");

    // PATCH: media type, add-as-replace, Glance's error classes.
    let r = api.req("PATCH", &format!("/v2/images/{id}"), Some(&w.member), Some("application/json"), Body::from("[]"), &[]).await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type");
    assert!(r.headers["accept-patch"].to_str().unwrap().contains("v2.1-json-patch"));
    let r = api
        .patch(
            &id,
            &w.member,
            json!([
                {"op": "add", "path": "/name", "value": "renamed"},
                {"op": "add", "path": "/os_distro", "value": "ubuntu"},
                {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
                {"op": "replace", "path": "/min_disk", "value": 2},
                {"op": "add", "path": "/protected", "value": true},
                {"op": "replace", "path": "/tags", "value": ["x"]}
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let img = r.json();
    assert_eq!(
        (img["name"].as_str(), img["os_distro"].as_str(), img["hw_disk_bus"].as_str()),
        (Some("renamed"), Some("ubuntu"), Some("virtio"))
    );
    assert_eq!((img["min_disk"].as_i64(), img["protected"].as_bool()), (Some(2), Some(true)));
    assert_eq!(img["tags"], json!(["x"]));
    let r = api.patch(&id, &w.member, json!([{"op": "remove", "path": "/hw_disk_bus"}])).await;
    assert!(r.json().get("hw_disk_bus").is_none());
    assert_error(
        &api.patch(&id, &w.member, json!([{"op": "remove", "path": "/hw_disk_bus"}])).await,
        StatusCode::CONFLICT,
        "does not exist",
    );
    assert_error(
        &api.patch(&id, &w.member, json!([{"op": "replace", "path": "/nope", "value": "1"}])).await,
        StatusCode::CONFLICT,
        "does not exist",
    );
    assert_error(&api.patch(&id, &w.member, json!([{"op": "remove", "path": "/name"}])).await, StatusCode::FORBIDDEN, "may not be removed");
    assert_error(
        &api.patch(&id, &w.member, json!([{"op": "replace", "path": "/size", "value": 1}])).await,
        StatusCode::FORBIDDEN,
        "read-only",
    );
    assert_error(
        &api.patch(&id, &w.member, json!([{"op": "test", "path": "/name", "value": "x"}])).await,
        StatusCode::BAD_REQUEST,
        "not supported",
    );
    assert_error(
        &api.patch(&id, &w.member, json!([{"op": "replace", "path": "/visibility", "value": "public"}])).await,
        StatusCode::FORBIDDEN,
        "administrators",
    );
    assert_error(
        &api.patch(&id, &w.reader, json!([{"op": "replace", "path": "/name", "value": "r"}])).await,
        StatusCode::FORBIDDEN,
        "Readers",
    );
    // Another project cannot see a private image at all: 404, not 403.
    assert_error(
        &api.patch(&id, &w.other, json!([{"op": "replace", "path": "/name", "value": "o"}])).await,
        StatusCode::NOT_FOUND,
        "No image",
    );
    assert_error(&api.get(&format!("/v2/images/{id}"), &w.other).await, StatusCode::NOT_FOUND, "No image");
    let r = api.patch(&id, &w.admin, json!([{"op": "replace", "path": "/visibility", "value": "public"}])).await;
    assert_eq!(r.json()["visibility"], "public");
    assert_eq!(api.show(&id, &w.other).await["name"], "renamed", "public images are visible to everyone");

    // Tags.
    let tag = |m: &'static str, t: &'static str| {
        let id = id.clone();
        let tok = w.member.clone();
        let api = Api { app: &w.app };
        async move { api.req(m, &format!("/v2/images/{id}/tags/{t}"), Some(&tok), None, Body::empty(), &[]).await }
    };
    assert_eq!(tag("PUT", "t1").await.status, StatusCode::NO_CONTENT);
    assert_eq!(tag("PUT", "t1").await.status, StatusCode::NO_CONTENT, "idempotent");
    assert_eq!(api.show(&id, &w.member).await["tags"], json!(["x", "t1"]));
    assert_eq!(tag("DELETE", "t1").await.status, StatusCode::NO_CONTENT);
    assert_error(&tag("DELETE", "t1").await, StatusCode::NOT_FOUND, "Tag");

    // Actions on a queued image are refused (Glance: 403); delete honours protection.
    let r = api.req("POST", &format!("/v2/images/{id}/actions/deactivate"), Some(&w.member), None, Body::empty(), &[]).await;
    assert_error(&r, StatusCode::FORBIDDEN, "queued");
    let del_uri = format!("/v2/images/{id}");
    let del = || api.req("DELETE", &del_uri, Some(&w.member), Some("application/octet-stream"), Body::empty(), &[]);
    assert_error(&del().await, StatusCode::FORBIDDEN, "protected");
    api.patch(&id, &w.member, json!([{"op": "replace", "path": "/protected", "value": false}])).await;
    let r = del().await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!r.headers[header::CONTENT_TYPE].to_str().unwrap().contains("json"), "an empty 204 has no JSON type");
    assert_error(&del().await, StatusCode::NOT_FOUND, "No image");
}

#[tokio::test]
async fn listing_filters_sorts_and_pages_like_glance() {
    let w = world().await;
    let api = Api { app: &w.app };
    for (name, fmt, tags) in
        [("c", "qcow2", json!(["t"])), ("a", "raw", json!(["t", "u"])), ("b", "qcow2", json!([])), ("d", "iso", json!(["u"]))]
    {
        api.create(&w.member, json!({"name": name, "disk_format": fmt, "container_format": "bare", "tags": tags, "os_distro": name})).await;
    }
    let hidden = api.create(&w.member, json!({"name": "h", "os_hidden": true})).await;
    let names = |r: &Reply| -> Vec<String> {
        r.json()["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap_or("").to_owned()).collect()
    };

    let r = api.get("/v2/images?sort_key=name&sort_dir=asc", &w.member).await;
    assert_eq!(names(&r), ["a", "b", "c", "d"], "hidden images are left out by default");
    assert_eq!(r.json()["first"], "/v2/images");
    assert_eq!(r.json()["schema"], "/v2/schemas/images");
    assert!(r.json().get("next").is_none());
    assert_eq!(names(&api.get("/v2/images?sort=name:desc", &w.member).await), ["d", "c", "b", "a"]);
    assert_eq!(names(&api.get("/v2/images?sort=disk_format:asc,name:desc", &w.member).await), ["d", "c", "b", "a"]);
    assert_eq!(names(&api.get("/v2/images?os_hidden=True", &w.member).await), ["h"]);
    assert_eq!(api.show(&hidden, &w.member).await["os_hidden"], true);
    assert_eq!(names(&api.get("/v2/images?disk_format=in:raw,iso&sort=name:asc", &w.member).await), ["a", "d"]);
    assert_eq!(names(&api.get("/v2/images?tag=t&tag=u", &w.member).await), ["a"]);
    assert_eq!(names(&api.get("/v2/images?os_distro=c", &w.member).await), ["c"]);
    assert_eq!(names(&api.get("/v2/images?name=b", &w.member).await), ["b"]);
    assert_eq!(names(&api.get("/v2/images?created_at=gte:2000-01-01T00:00:00Z&sort=name:asc&limit=1", &w.member).await), ["a"]);
    assert!(names(&api.get("/v2/images", &w.other).await).is_empty(), "other projects see none of p1's shared images");

    // Paging: follow `next` verbatim, as glanceclient does.
    let mut uri = "/v2/images?limit=3&sort_key=name&sort_dir=asc&visibility=all".to_owned();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = api.get(&uri, &w.member).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        seen.extend(names(&r));
        match r.json()["next"].as_str() {
            Some(next) => {
                assert!(next.contains("limit=3") && next.contains("sort_key=name") && next.contains("marker="), "{next}");
                uri = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d"]);

    for bad in [
        "marker=00000000-0000-0000-0000-000000000000",
        "limit=-1",
        "sort=name&sort_key=size",
        "sort_key=owner",
        "changes-since=2020-01-01T00:00:00Z",
        "visibility=everyone",
        "member_status=maybe",
        "protected=True",
        "os_hidden=maybe",
        "created_at=later:2020-01-01",
        "size_min=big",
    ] {
        let r = api.get(&format!("/v2/images?{bad}"), &w.member).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
}

#[tokio::test]
async fn uploads_run_through_the_validating_pipeline() {
    let w = world().await;
    let api = Api { app: &w.app };
    let tmp = tempfile::tempdir().unwrap();
    let qcow2 = qemu_img(tmp.path(), "d.qcow2", &["create", "-f", "qcow2", "2M"]);

    let id = api.create(&w.member, json!({"name": "q", "disk_format": "qcow2", "container_format": "bare"})).await;
    let r = api.put_data("file", &id, &w.member, qcow2.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let img = api.show(&id, &w.member).await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["checksum"], md5_hex(&qcow2), "stored as uploaded");
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(img["virtual_size"], 2 * 1024 * 1024);
    assert_eq!(img["stores"], "local");

    // Download through the Glance path: whole (Content-MD5) and a range.
    let r = api.get(&format!("/v2/images/{id}/file"), &w.member).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-md5"], md5_hex(&qcow2).as_str());
    assert_eq!(r.headers[header::CONTENT_LENGTH], qcow2.len().to_string().as_str(), "the body is read as lossy UTF-8");
    let r = api.req("GET", &format!("/v2/images/{id}/file"), Some(&w.member), None, Body::empty(), &[("range", "bytes=0-3")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers[header::CONTENT_RANGE], format!("bytes 0-3/{}", qcow2.len()).as_str());
    assert!(r.body.starts_with("QFI"));

    // Wrong status, wrong content type, missing formats, size mismatch.
    assert_error(&api.put_data("file", &id, &w.member, qcow2.clone()).await, StatusCode::CONFLICT, "active");
    let fresh = api.create(&w.member, json!({"name": "n"})).await;
    assert_error(&api.put_data("file", &fresh, &w.member, qcow2.clone()).await, StatusCode::BAD_REQUEST, "must be set");
    let q2 = api.create(&w.member, json!({"name": "q2", "disk_format": "qcow2", "container_format": "bare"})).await;
    let r = api.req("PUT", &format!("/v2/images/{q2}/file"), Some(&w.member), Some("text/plain"), Body::from("x"), &[]).await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "octet-stream");
    let r = api
        .req(
            "PUT",
            &format!("/v2/images/{q2}/file"),
            Some(&w.member),
            Some("application/octet-stream"),
            Body::from(qcow2.clone()),
            &[("x-openstack-image-size", "10")],
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "x-openstack-image-size");
    assert_eq!(api.show(&q2, &w.member).await["status"], "queued", "a failed upload leaves the image queued");
    assert_error(&api.put_data("file", &q2, &w.reader, qcow2.clone()).await, StatusCode::FORBIDDEN, "Readers");

    // A format mismatch and an unsafe image are refused with 415 and the inspector's reason.
    let vdi_id = api.create(&w.member, json!({"name": "liar", "disk_format": "vdi", "container_format": "bare"})).await;
    let r = api.put_data("file", &vdi_id, &w.member, qcow2.clone()).await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "refused");
    assert_eq!(api.show(&vdi_id, &w.member).await["status"], "killed");
    let backing = tmp.path().join("base.qcow2");
    qemu_img(tmp.path(), "base.qcow2", &["create", "-f", "qcow2", "1M"]);
    let child = qemu_img(tmp.path(), "child.qcow2", &["create", "-f", "qcow2", "-F", "qcow2", "-b", backing.to_str().unwrap(), "1M"]);
    let unsafe_id = api.create(&w.member, json!({"name": "child", "disk_format": "qcow2", "container_format": "bare"})).await;
    let r = api.put_data("file", &unsafe_id, &w.member, child).await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "backing");

    // A VDI is converted to qcow2 by the local store's matrix.
    let vdi = qemu_img(tmp.path(), "d.vdi", &["create", "-f", "vdi", "1M"]);
    let v = api.create(&w.member, json!({"name": "vb", "disk_format": "vdi", "container_format": "bare"})).await;
    assert_eq!(api.put_data("file", &v, &w.member, vdi).await.status, StatusCode::NO_CONTENT);
    let img = api.show(&v, &w.member).await;
    assert_eq!((img["status"].as_str(), img["disk_format"].as_str()), (Some("active"), Some("qcow2")));

    // Deactivate/reactivate an active image; a deactivated image's data is 403 for non-admins.
    let (deactivate, reactivate) = (format!("/v2/images/{id}/actions/deactivate"), format!("/v2/images/{id}/actions/reactivate"));
    let act = |a: &'static str| {
        let uri = if a == "deactivate" { &deactivate } else { &reactivate };
        api.req("POST", uri, Some(&w.member), None, Body::empty(), &[])
    };
    assert_eq!(act("deactivate").await.status, StatusCode::NO_CONTENT);
    assert_eq!(act("deactivate").await.status, StatusCode::NO_CONTENT, "a no-op");
    assert_eq!(api.get(&format!("/v2/images/{id}/file"), &w.member).await.status, StatusCode::FORBIDDEN);
    assert_eq!(act("reactivate").await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&format!("/v2/images/{id}/file"), &w.member).await.status, StatusCode::OK);

    // The image's jobs as tasks.
    let r = api.get(&format!("/v2/images/{id}/tasks"), &w.member).await;
    let tasks = r.json()["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["status"], "success");
}

#[tokio::test]
async fn stage_and_import() {
    let w = world().await;
    let api = Api { app: &w.app };
    let tmp = tempfile::tempdir().unwrap();
    let qcow2 = qemu_img(tmp.path(), "s.qcow2", &["create", "-f", "qcow2", "1M"]);
    let id = api.create(&w.member, json!({"name": "s", "disk_format": "qcow2", "container_format": "bare"})).await;
    let import_uri = format!("/v2/images/{id}/import");
    let import = |body: Value| api.json("POST", &import_uri, &w.member, body);
    assert_error(&import(json!({"method": {"name": "glance-direct"}})).await, StatusCode::CONFLICT, "stage");
    assert_eq!(api.put_data("stage", &id, &w.member, qcow2.clone()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.show(&id, &w.member).await["status"], "uploading");
    assert_error(&api.put_data("stage", &id, &w.member, qcow2.clone()).await, StatusCode::CONFLICT, "uploading");
    assert_error(&import(json!({"method": {}})).await, StatusCode::BAD_REQUEST, "method");
    assert_error(
        &import(json!({"method": {"name": "web-download", "uri": "http://example.com/x"}})).await,
        StatusCode::BAD_REQUEST,
        "disabled",
    );
    assert_error(&import(json!({"method": {"name": "glance-direct"}, "stores": ["nowhere"]})).await, StatusCode::CONFLICT, "Unknown store");
    let r = import(json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.body.is_empty() && !r.headers[header::CONTENT_TYPE].to_str().unwrap().contains("json"));
    let img = api.settled(&id, &w.member).await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["checksum"], md5_hex(&qcow2));
    assert_error(&import(json!({"method": {"name": "copy-image"}, "stores": ["local"]})).await, StatusCode::BAD_REQUEST, "already present");
    assert_error(&import(json!({"method": {"name": "copy-image"}, "stores": ["elsewhere"]})).await, StatusCode::CONFLICT, "Unknown store");
    assert_eq!(
        import(json!({"method": {"name": "copy-image"}, "all_stores": true})).await.status,
        StatusCode::ACCEPTED,
        "nothing left to copy"
    );
}

#[tokio::test]
async fn members_and_info() {
    let w = world().await;
    let api = Api { app: &w.app };
    let id = api.create(&w.member, json!({"name": "sh", "visibility": "shared"})).await;
    let private = api.create(&w.member, json!({"name": "pr", "visibility": "private"})).await;
    let members = format!("/v2/images/{id}/members");
    let mine = format!("{members}/{}", w.p2);
    assert_error(
        &api.json("POST", &format!("/v2/images/{private}/members"), &w.member, json!({"member": w.p2})).await,
        StatusCode::FORBIDDEN,
        "shared",
    );
    assert_error(&api.json("POST", &members, &w.reader, json!({"member": w.p2})).await, StatusCode::FORBIDDEN, "Readers");
    let r = api.json("POST", &members, &w.member, json!({"member": w.p2})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.json()["member_id"].as_str(), r.json()["status"].as_str()), (Some(w.p2.as_str()), Some("pending")));
    assert_error(&api.json("POST", &members, &w.member, json!({"member": w.p2})).await, StatusCode::CONFLICT, "already");
    assert_error(&api.json("POST", &members, &w.member, json!({"member": "no-such-project"})).await, StatusCode::BAD_REQUEST, "project");

    // The member sees it (pending) only with member_status; accepts; then it is listed.
    assert!(api.get("/v2/images", &w.other).await.json()["images"].as_array().unwrap().is_empty());
    assert_eq!(api.get("/v2/images?member_status=pending", &w.other).await.json()["images"][0]["id"], id.as_str());
    assert_error(&api.json("PUT", &mine, &w.member, json!({"status": "accepted"})).await, StatusCode::FORBIDDEN, "member project");
    assert_error(&api.json("PUT", &mine, &w.other, json!({"status": "maybe"})).await, StatusCode::BAD_REQUEST, "status");
    let r = api.json("PUT", &mine, &w.other, json!({"status": "accepted"})).await;
    assert_eq!(r.json()["status"], "accepted", "{}", r.body);
    assert_eq!(api.get("/v2/images", &w.other).await.json()["images"][0]["id"], id.as_str());
    assert_eq!(api.get(&members, &w.other).await.json()["members"].as_array().unwrap().len(), 1);
    assert_eq!(api.get(&mine, &w.member).await.json()["status"], "accepted");
    assert_error(&api.req("DELETE", &mine, Some(&w.other), None, Body::empty(), &[]).await, StatusCode::FORBIDDEN, "");
    assert_eq!(api.req("DELETE", &mine, Some(&w.member), None, Body::empty(), &[]).await.status, StatusCode::NO_CONTENT);
    assert_error(&api.get(&format!("/v2/images/{id}"), &w.other).await, StatusCode::NOT_FOUND, "No image");

    // Info endpoints.
    let r = api.get("/v2/info/import", &w.member).await;
    assert_eq!(r.json()["import-methods"]["value"], json!(["glance-direct", "copy-image"]));
    let r = api.get("/v2/info/stores", &w.member).await;
    assert_eq!(r.json()["stores"], json!([{"id": "local", "description": "local storage", "default": "true"}]));
    assert_error(&api.get("/v2/info/stores/detail", &w.member).await, StatusCode::FORBIDDEN, "administrators");
    assert_eq!(api.get("/v2/info/stores/detail", &w.admin).await.json()["stores"][0]["type"], "file");
    w.app
        .state
        .db
        .set_quota(
            &w.app.state.db.project_by_name("p1").await.unwrap().unwrap().id,
            records::QuotaRow { max_images: Some(3), max_bytes: Some(10 << 20), max_concurrent_uploads: None },
        )
        .await
        .unwrap();
    let r = api.get("/v2/info/usage", &w.member).await;
    let u = &r.json()["usage"];
    assert_eq!((u["image_count_total"]["limit"].as_i64(), u["image_count_total"]["usage"].as_i64()), (Some(3), Some(2)));
    assert_eq!(u["image_size_total"]["limit"], 10);
    assert_eq!(u["image_count_uploading"]["limit"], -1);
    // The image quota: a third image fits, a fourth is 413.
    api.create(&w.member, json!({"name": "third"})).await;
    assert_error(&api.json("POST", "/v2/images", &w.member, json!({"name": "fourth"})).await, StatusCode::PAYLOAD_TOO_LARGE, "quota");
}

/// Like `common::spawn_app`, with two local backends: `local` (the default) and `second`.
async fn spawn_two_stores() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = |name: &str| storage::BackendConfig {
        name: name.into(),
        kind: storage::BackendKind::Local,
        path: Some(dir.path().join(name)),
        ..Default::default()
    };
    let config =
        server::Config { data_dir: dir.path().join("data"), storage: vec![store("local"), store("second")], ..server::Config::default() };
    let state = server::AppState::open(config).await.unwrap();
    let sessions = server::session_layer(&state).await.unwrap();
    let router = server::router(state.clone(), sessions);
    TestApp { _dir: dir, state, router }
}

#[tokio::test]
async fn failed_uploads_restore_queued_and_quotas_bound_them() {
    let w = world().await;
    let api = Api { app: &w.app };
    let incoming = w.app.state.config.data_dir.join("uploads-glance");
    let leftovers = || std::fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0);
    let id = api.create(&w.member, json!({"name": "i", "disk_format": "qcow2", "container_format": "bare"})).await;

    // The client goes away mid-body: 400, the image waits for data again, nothing is left.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![0u8; 4096]), Err(std::io::Error::other("connection reset"))];
    let body = Body::from_stream(futures::stream::iter(chunks));
    let r = api.req("PUT", &format!("/v2/images/{id}/file"), Some(&w.member), Some("application/octet-stream"), body, &[]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "interrupted");
    assert_eq!(api.show(&id, &w.member).await["status"], "queued");
    assert_eq!(leftovers(), 0);

    // The byte quota: refused before reading when the size is declared, and while reading when not.
    let p1 = w.app.state.db.project_by_name("p1").await.unwrap().unwrap().id;
    let quota = records::QuotaRow { max_images: None, max_bytes: Some(1000), max_concurrent_uploads: None };
    w.app.state.db.set_quota(&p1, quota).await.unwrap();
    assert_error(&api.put_data("file", &id, &w.member, vec![0u8; 2000]).await, StatusCode::PAYLOAD_TOO_LARGE, "quota");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![0u8; 800]), Ok(vec![0u8; 800])];
    let body = Body::from_stream(futures::stream::iter(chunks));
    let r = api.req("PUT", &format!("/v2/images/{id}/stage"), Some(&w.member), Some("application/octet-stream"), body, &[]).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "quota");
    assert_eq!(api.show(&id, &w.member).await["status"], "queued");
    assert_eq!(leftovers(), 0);
}

#[tokio::test]
async fn stores_and_copy_image_between_backends() {
    let app = spawn_two_stores().await;
    let (p1, _) = seed_accounts(&app).await;
    let member = token(&app, "member", &p1).await;
    let api = Api { app: &app };
    let tmp = tempfile::tempdir().unwrap();
    let qcow2 = qemu_img(tmp.path(), "c.qcow2", &["create", "-f", "qcow2", "1M"]);

    let r = api.get("/v2/info/stores", &member).await;
    assert_eq!(r.json()["stores"].as_array().unwrap().len(), 2);
    let a = api.create(&member, json!({"name": "a", "disk_format": "qcow2", "container_format": "bare"})).await;
    let size = qcow2.len().to_string();
    let put = |id: &str, store: &'static str| {
        let uri = format!("/v2/images/{id}/file");
        let (api, member, data, size) = (&api, member.clone(), qcow2.clone(), size.clone());
        async move {
            api.req(
                "PUT",
                &uri,
                Some(&member),
                Some("application/octet-stream"),
                Body::from(data),
                &[("x-openstack-image-size", &size), ("x-image-meta-store", store)],
            )
            .await
        }
    };
    assert_error(&put(&a, "nowhere").await, StatusCode::BAD_REQUEST, "Unknown store");
    assert_eq!(put(&a, "second").await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.show(&a, &member).await["stores"], "second");

    let r =
        api.json("POST", &format!("/v2/images/{a}/import"), &member, json!({"method": {"name": "copy-image"}, "stores": ["local"]})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    for _ in 0..300 {
        let tasks = api.get(&format!("/v2/images/{a}/tasks"), &member).await.json()["tasks"].as_array().unwrap().clone();
        if tasks.len() == 2 && tasks.iter().all(|t| t["status"] == "success") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stores: Vec<String> = api.show(&a, &member).await["stores"].as_str().unwrap().split(',').map(str::to_owned).collect();
    stores.sort();
    assert_eq!(stores, ["local", "second"]);
    let r =
        api.json("POST", &format!("/v2/images/{a}/import"), &member, json!({"method": {"name": "copy-image"}, "all_stores": true})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "all stores have it: nothing to do");
    // Deleting removes every copy's bytes.
    assert_eq!(api.req("DELETE", &format!("/v2/images/{a}"), Some(&member), None, Body::empty(), &[]).await.status, StatusCode::NO_CONTENT);
    for store in ["local", "second"] {
        let dir = app._dir.path().join(store);
        let n = std::fs::read_dir(&dir)
            .map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))).count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{store} still holds bytes");
    }
}

/// Runs Ceph's `rbd` CLI (the oracle: what a compute node sees) against the test cluster.
fn rbd_cli(c: &common::ceph::Cluster, args: &[&str]) -> Vec<u8> {
    let out = Command::new("rbd").arg("-c").arg(&c.conf).args(args).output().expect("rbd (ceph-common) is required");
    assert!(out.status.success(), "rbd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An RBD store through the Glance API: raw, qcow2 and VDI uploads become raw RBD images with a
/// protected snapshot, byte-identical to the disk (`rbd export`), shown as `direct_url`,
/// downloadable, copied to and from another store; a delete is refused while a clone of the
/// snapshot exists (what a booted VM is) and removes the RBD image once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbd_store_keeps_raw_snapshots_that_compute_nodes_clone() {
    let c = common::ceph::cluster();
    let dir = tempfile::tempdir().unwrap();
    let rbd = storage::BackendConfig {
        name: "rbd".into(),
        kind: storage::BackendKind::Rbd,
        pool: Some(c.rbd_pool.clone()),
        conf: Some(c.conf.clone()),
        timeout_secs: Some(30),
        ..Default::default()
    };
    let local = storage::BackendConfig {
        name: "local".into(),
        kind: storage::BackendKind::Local,
        path: Some(dir.path().join("local")),
        ..Default::default()
    };
    let config = server::Config {
        data_dir: dir.path().join("data"),
        storage: vec![rbd, local],
        show_image_direct_url: true,
        ..server::Config::default()
    };
    let state = server::AppState::open(config).await.unwrap();
    let sessions = server::session_layer(&state).await.unwrap();
    let app = TestApp { router: server::router(state.clone(), sessions), state, _dir: dir };
    let (p1, _) = seed_accounts(&app).await;
    let member = token(&app, "member", &p1).await;
    let api = Api { app: &app };

    // A 24 MiB raw disk with data in two places and holes elsewhere; its qcow2 and VDI.
    let tmp = tempfile::tempdir().unwrap();
    let raw_path = tmp.path().join("disk.raw");
    let mut raw = vec![0u8; 24 << 20];
    raw[(1 << 20)..(1 << 20) + 300_000].copy_from_slice(&common::noise(300_000, 5));
    raw[(17 << 20)..(19 << 20)].copy_from_slice(&common::noise(2 << 20, 6));
    std::fs::write(&raw_path, &raw).unwrap();
    let convert = |fmt: &str| {
        let out = tmp.path().join(format!("disk.{fmt}"));
        let st = Command::new("qemu-img").args(["convert", "-f", "raw", "-O", fmt]).arg(&raw_path).arg(&out).status().unwrap();
        assert!(st.success(), "qemu-img convert to {fmt}");
        std::fs::read(out).unwrap()
    };
    let fsid =
        String::from_utf8(Command::new("ceph").arg("-c").arg(&c.conf).arg("fsid").output().unwrap().stdout).unwrap().trim().to_owned();
    let prefix = format!("rbd://{fsid}/{}/", c.rbd_pool);
    let mut names = Vec::new();
    for (fmt, data) in [("raw", raw.clone()), ("qcow2", convert("qcow2")), ("vdi", convert("vdi"))] {
        let id = api.create(&member, json!({"name": fmt, "disk_format": fmt, "container_format": "bare"})).await;
        let r = api.put_data("file", &id, &member, data).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{fmt}: {}", r.body);
        let img = api.settled(&id, &member).await;
        assert_eq!(
            (img["status"].as_str(), img["disk_format"].as_str(), img["stores"].as_str()),
            (Some("active"), Some("raw"), Some("rbd")),
            "{fmt}: {img}"
        );
        // Where Nova clones from: the RBD image and its snapshot.
        let url = img["direct_url"].as_str().unwrap_or_else(|| panic!("{fmt}: no direct_url: {img}"));
        let name = url.strip_prefix(&prefix).and_then(|r| r.strip_suffix("/snap")).unwrap_or_else(|| panic!("{url} is not under {prefix}"));
        let spec = format!("{}/{name}", c.rbd_pool);
        let export = tmp.path().join(format!("export-{fmt}"));
        rbd_cli(&c, &["export", "--no-progress", &format!("{spec}@snap"), export.to_str().unwrap()]);
        assert!(std::fs::read(&export).unwrap() == raw, "{fmt}: rbd export differs from the disk");
        let snaps: Value = serde_json::from_slice(&rbd_cli(&c, &["snap", "ls", "--format", "json", &spec])).unwrap();
        assert_eq!((snaps[0]["name"].as_str(), snaps[0]["protected"].as_str()), (Some("snap"), Some("true")), "{snaps}");
        // Sparse stays sparse, though the upload sent every zero: two 4 MiB objects hold data.
        let du: Value = serde_json::from_slice(&rbd_cli(&c, &["du", "--format", "json", &spec])).unwrap();
        let used = du["images"].as_array().unwrap().iter().filter_map(|i| i["used_size"].as_u64()).max().unwrap();
        assert!(used <= 8 << 20, "{fmt}: rbd du says {used} bytes used of {}: {du}", raw.len());
        names.push((id, spec));
    }

    // Downloads read the snapshot.
    let (raw_id, raw_spec) = names[0].clone();
    let r = api.get(&format!("/v2/images/{raw_id}/file"), &member).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-md5"], md5_hex(&raw).as_str(), "the download is the disk");
    assert_eq!(r.headers[header::CONTENT_LENGTH], raw.len().to_string().as_str());

    // copy-image to the local store (converted to qcow2 there per the matrix) and back is one
    // image with both copies.
    let r = api
        .json("POST", &format!("/v2/images/{raw_id}/import"), &member, json!({"method": {"name": "copy-image"}, "stores": ["local"]}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let mut stores = String::new();
    for _ in 0..300 {
        stores = api.show(&raw_id, &member).await["stores"].as_str().unwrap_or_default().to_owned();
        if stores.split(',').count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sorted: Vec<&str> = stores.split(',').collect();
    sorted.sort();
    assert_eq!(sorted, ["local", "rbd"]);

    // And the other way: a qcow2 kept as qcow2 on the local store, copied to RBD, arrives as
    // the raw disk (the RBD column converts).
    let q = api.create(&member, json!({"name": "from-local", "disk_format": "qcow2", "container_format": "bare"})).await;
    let qcow2 = convert("qcow2");
    let size = qcow2.len().to_string();
    let r = api
        .req(
            "PUT",
            &format!("/v2/images/{q}/file"),
            Some(&member),
            Some("application/octet-stream"),
            Body::from(qcow2),
            &[("x-openstack-image-size", &size), ("x-image-meta-store", "local")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(api.settled(&q, &member).await["stores"], "local");
    let r =
        api.json("POST", &format!("/v2/images/{q}/import"), &member, json!({"method": {"name": "copy-image"}, "stores": ["rbd"]})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let mut url = None;
    for _ in 0..300 {
        let img = api.show(&q, &member).await;
        if let Some(u) = img["direct_url"].as_str() {
            url = Some(u.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = url.expect("the copy on rbd shows its direct_url");
    let name = url.strip_prefix(&prefix).and_then(|r| r.strip_suffix("/snap")).unwrap().to_owned();
    let export = tmp.path().join("export-copied");
    rbd_cli(&c, &["export", "--no-progress", &format!("{}/{name}@snap", c.rbd_pool), export.to_str().unwrap()]);
    assert!(std::fs::read(&export).unwrap() == raw, "the copy on rbd differs from the disk");
    names.push((q, format!("{}/{name}", c.rbd_pool)));

    // A VM booted from the image: its disk is a clone of the snapshot. The delete is refused,
    // naming it; the image stays whole. Once the VM is gone the delete removes the RBD image.
    let vm = format!("{}/vm-{}", c.rbd_pool, uuid::Uuid::new_v4().simple());
    rbd_cli(&c, &["clone", &format!("{raw_spec}@snap"), &vm]);
    let del = |id: String| {
        let (api, member) = (&api, member.clone());
        async move { api.req("DELETE", &format!("/v2/images/{id}"), Some(&member), None, Body::empty(), &[]).await }
    };
    let r = del(raw_id.clone()).await;
    assert_error(&r, StatusCode::CONFLICT, &vm);
    assert_eq!(api.show(&raw_id, &member).await["status"], "active");
    rbd_cli(&c, &["rm", "--no-progress", &vm]);
    assert_eq!(del(raw_id.clone()).await.status, StatusCode::NO_CONTENT);
    for (id, _) in &names[1..] {
        assert_eq!(del(id.clone()).await.status, StatusCode::NO_CONTENT);
    }
    let left = String::from_utf8(rbd_cli(&c, &["ls", &c.rbd_pool])).unwrap();
    for (_, spec) in &names {
        let name = spec.rsplit('/').next().unwrap();
        assert!(!left.lines().any(|l| l == name), "{name} is still in the pool: {left}");
    }
}

/// Like `common::spawn_app`, with the web-download import allowed from `hosts`.
pub(crate) async fn spawn_web_download(hosts: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = server::Config {
        data_dir: dir.path().join("data"),
        web_download_allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        ..server::Config::default()
    };
    let state = server::AppState::open(config).await.unwrap();
    let sessions = server::session_layer(&state).await.unwrap();
    let router = server::router(state.clone(), sessions);
    TestApp { _dir: dir, state, router }
}

/// A tiny origin on 127.0.0.1: `/disk.qcow2` serves `image`, `/moved` redirects to it, `/slow`
/// sends a first chunk and then nothing (the download stays under way), anything else is 404.
/// Returns its port.
pub(crate) async fn origin(image: Vec<u8>) -> u16 {
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/disk.qcow2",
            get(move || {
                let data = image.clone();
                async move { data }
            }),
        )
        .route("/moved", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/disk.qcow2")]) }))
        .route(
            "/slow",
            get(|| async {
                let first = futures::stream::once(async { Ok::<_, std::io::Error>(vec![0u8; 512]) });
                Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

#[tokio::test]
async fn web_download_is_off_by_default() {
    let w = world().await;
    let api = Api { app: &w.app };
    let r = api.get("/v2/info/import", &w.member).await;
    assert_eq!(r.json()["import-methods"]["value"], json!(["glance-direct", "copy-image"]));
    let r = api.json("POST", "/v2/images", &w.member, json!({"name": "w", "disk_format": "qcow2", "container_format": "bare"})).await;
    assert!(!r.headers["openstack-image-import-methods"].to_str().unwrap().contains("web-download"));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let body = json!({"method": {"name": "web-download", "uri": "http://127.0.0.1:9/x.qcow2"}});
    assert_error(&api.json("POST", &format!("/v2/images/{id}/import"), &w.member, body).await, StatusCode::BAD_REQUEST, "disabled");
    assert_eq!(api.show(&id, &w.member).await["status"], "queued");
}

/// A port on 127.0.0.1 whose server accepts each connection, waits for the request and resets
/// the connection (TCP RST).
async fn resetting_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.readable().await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    port
}

/// A port on 127.0.0.1 that nothing listens on (connections are refused).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// How many import jobs image `id` has (in any status).
async fn import_jobs(app: &TestApp, id: &str) -> usize {
    app.state.db.jobs_for_image(id).await.unwrap().iter().filter(|j| j.kind == JobKind::Import).count()
}

/// Exactly one of `replies` is `ok`; every other one is 409.
fn one_wins(replies: &[Reply], ok: StatusCode) {
    let seen: Vec<(StatusCode, &str)> = replies.iter().map(|r| (r.status, r.body.as_str())).collect();
    assert_eq!(replies.iter().filter(|r| r.status == ok).count(), 1, "{seen:?}");
    for r in replies.iter().filter(|r| r.status != ok) {
        assert_error(r, StatusCode::CONFLICT, "");
    }
}

#[tokio::test]
async fn web_download_fetches_from_allowed_hosts_only() {
    let tmp = tempfile::tempdir().unwrap();
    let qcow2 = qemu_img(tmp.path(), "w.qcow2", &["create", "-f", "qcow2", "1M"]);
    let port = origin(qcow2.clone()).await;
    // The origin is on a port other than 80 and 443: the allow-list names it.
    let allowed = format!("127.0.0.1:{port}");
    let app = spawn_web_download(&[allowed.as_str()]).await;
    let (p1, _) = seed_accounts(&app).await;
    let member = token(&app, "member", &p1).await;
    let api = Api { app: &app };
    let incoming = app.state.config.data_dir.join("uploads-glance");
    let leftovers = || std::fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0);

    let r = api.get("/v2/info/import", &member).await;
    assert_eq!(r.json()["import-methods"]["value"], json!(["glance-direct", "web-download", "copy-image"]));
    let new_image = || api.create(&member, json!({"name": "web", "disk_format": "qcow2", "container_format": "bare"}));
    let import = |id: String, uri: String| {
        let (api, member) = (&api, member.clone());
        async move {
            api.json("POST", &format!("/v2/images/{id}/import"), &member, json!({"method": {"name": "web-download", "uri": uri}})).await
        }
    };

    // An allowed host: 202 at once, then the same pipeline as an upload.
    let id = new_image().await;
    let r = import(id.clone(), format!("http://127.0.0.1:{port}/disk.qcow2")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.body.is_empty());
    let img = api.settled(&id, &member).await;
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["checksum"], md5_hex(&qcow2));
    assert_eq!(img["size"], qcow2.len());
    assert_eq!(img["virtual_size"], 1024 * 1024);
    assert_error(&import(id.clone(), format!("http://127.0.0.1:{port}/disk.qcow2")).await, StatusCode::CONFLICT, "queued");

    // Refused before anything is fetched: another host (even one naming the same server), a
    // scheme other than http(s), credentials in the URI, a port the list does not name, no URI.
    // The image stays queued.
    let q = new_image().await;
    let only_origin = format!("is not allowed; the allowed ports there are {port} (");
    let not_80 = format!("port 80 of 127.0.0.1 is not allowed; the allowed ports there are {port} (");
    for (uri, why) in [
        (format!("http://localhost:{port}/disk.qcow2"), "not in this Hangar's web_download_allowed_hosts"),
        (format!("ftp://127.0.0.1:{port}/disk.qcow2"), "scheme"),
        (format!("http://user:pw@127.0.0.1:{port}/disk.qcow2"), "credentials"),
        // Another port of the allowed host, even port 80: a host:port entry allows that port only.
        (format!("http://127.0.0.1:{}/disk.qcow2", port.wrapping_add(1)), only_origin.as_str()),
        ("http://127.0.0.1/disk.qcow2".to_owned(), not_80.as_str()),
    ] {
        assert_error(&import(q.clone(), uri).await, StatusCode::BAD_REQUEST, why);
    }
    let r = api.json("POST", &format!("/v2/images/{q}/import"), &member, json!({"method": {"name": "web-download"}})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "URI");
    assert_eq!(api.show(&q, &member).await["status"], "queued");

    // The origin answers 404, or redirects: the image is queued again with the reason, and
    // nothing is left behind.
    for (path, why) in [("missing.qcow2", "404"), ("moved", "redirects are not followed")] {
        let r = import(q.clone(), format!("http://127.0.0.1:{port}/{path}")).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let img = api.settled(&q, &member).await;
        assert_eq!(img["status"], "queued", "{path}");
        let reason = app.state.db.image_detail(&q).await.unwrap().unwrap().status_reason;
        assert!(reason.contains(why) && reason.contains("web-download"), "{path}: {reason}");
        assert_eq!(leftovers(), 0, "{path}");
    }

    // The byte quota bounds the download as it bounds an upload: a project already past it
    // is refused at once (as Glance does at import time); one with room left is stopped when
    // the body outgrows it.
    app.state.db.set_quota(&p1, records::QuotaRow { max_images: None, max_bytes: Some(1000), max_concurrent_uploads: None }).await.unwrap();
    let r = import(q.clone(), format!("http://127.0.0.1:{port}/disk.qcow2")).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body.contains("quota"), "{}", r.body);
    assert_eq!(api.show(&q, &member).await["status"], "queued");
    let used = app.state.db.quota_usage(&p1).await.unwrap().bytes();
    app.state
        .db
        .set_quota(
            &p1,
            records::QuotaRow { max_images: None, max_bytes: Some(i64::try_from(used).unwrap() + 1000), max_concurrent_uploads: None },
        )
        .await
        .unwrap();
    assert_eq!(import(q.clone(), format!("http://127.0.0.1:{port}/disk.qcow2")).await.status, StatusCode::ACCEPTED);
    assert_eq!(api.settled(&q, &member).await["status"], "queued");
    let reason = app.state.db.image_detail(&q).await.unwrap().unwrap().status_reason;
    assert!(reason.contains("quota"), "{reason}");
    assert!(app.state.db.quota_holds(&q).await.unwrap().is_empty(), "the failed download gave its hold back");
    assert_eq!(leftovers(), 0);
}

#[tokio::test]
async fn web_download_refuses_other_ports_and_hides_why_a_server_is_unreachable() {
    let open = origin(Vec::new()).await;
    let plain = origin(Vec::new()).await;
    let reset = resetting_port().await;
    // Taken while the others are bound, so it differs from them; nothing listens on it after.
    let closed = closed_port().await;
    let allowed = ["127.0.0.1".to_owned(), format!("127.0.0.1:{closed}"), format!("127.0.0.1:{reset}"), format!("127.0.0.1:{plain}")];
    let app = spawn_web_download(&allowed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (p1, _) = seed_accounts(&app).await;
    let member = token(&app, "member", &p1).await;
    let api = Api { app: &app };
    let incoming = app.state.config.data_dir.join("uploads-glance");
    let leftovers = || std::fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0);
    let new_image = || api.create(&member, json!({"name": "web", "disk_format": "qcow2", "container_format": "bare"}));
    let import = |id: String, uri: String| {
        let (api, member) = (&api, member.clone());
        async move {
            api.json("POST", &format!("/v2/images/{id}/import"), &member, json!({"method": {"name": "web-download", "uri": uri}})).await
        }
    };

    // A port the list does not name is refused at once, even though a server answers there,
    // with the ports that are allowed; nothing starts.
    let q = new_image().await;
    let r = import(q.clone(), format!("http://127.0.0.1:{open}/disk.qcow2")).await;
    let mut ports = [80, 443, closed, reset, plain];
    ports.sort_unstable();
    let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    assert_error(&r, StatusCode::BAD_REQUEST, &format!("port {open} of 127.0.0.1 is not allowed; the allowed ports there are {list} ("));
    assert_eq!(api.show(&q, &member).await["status"], "queued");
    assert_eq!(import_jobs(&app, &q).await, 0);

    // A closed port, a server that resets the connection, a TLS handshake with a plain HTTP
    // server: each ends with the image queued again and one and the same reason, which names
    // neither the port nor the kind of failure.
    let mut reasons = Vec::new();
    for uri in [
        format!("http://127.0.0.1:{closed}/disk.qcow2"),
        format!("http://127.0.0.1:{reset}/disk.qcow2"),
        format!("https://127.0.0.1:{plain}/disk.qcow2"),
    ] {
        let id = new_image().await;
        let r = import(id.clone(), uri.clone()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{uri}: {}", r.body);
        assert_eq!(api.settled(&id, &member).await["status"], "queued", "{uri}");
        let reason = app.state.db.image_detail(&id).await.unwrap().unwrap().status_reason;
        for port in [closed, reset, plain] {
            assert!(!reason.contains(&port.to_string()), "{uri}: {reason}");
        }
        reasons.push(reason);
    }
    assert_eq!(reasons[0], "web-download failed: the server at 127.0.0.1 could not be reached");
    assert_eq!(reasons[1], reasons[0], "a reset port reads as a closed one");
    assert_eq!(reasons[2], reasons[0], "a TLS failure reads as a closed port");
    assert_eq!(leftovers(), 0);

    // HTTP answers are still told apart: a 404 from the origin says so.
    let r = import(q.clone(), format!("http://127.0.0.1:{plain}/missing.qcow2")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(api.settled(&q, &member).await["status"], "queued");
    let reason = app.state.db.image_detail(&q).await.unwrap().unwrap().status_reason;
    assert!(reason.contains("404"), "{reason}");
}

#[tokio::test]
async fn web_download_starts_once() {
    let tmp = tempfile::tempdir().unwrap();
    let qcow2 = qemu_img(tmp.path(), "o.qcow2", &["create", "-f", "qcow2", "1M"]);
    let port = origin(qcow2.clone()).await;
    let allowed = format!("127.0.0.1:{port}");
    let app = spawn_web_download(&[allowed.as_str()]).await;
    let (p1, _) = seed_accounts(&app).await;
    let member = token(&app, "member", &p1).await;
    let api = Api { app: &app };
    let new_image = || api.create(&member, json!({"name": "once", "disk_format": "qcow2", "container_format": "bare"}));
    let import = |id: String, body: Value| {
        let (api, member) = (&api, member.clone());
        async move { api.json("POST", &format!("/v2/images/{id}/import"), &member, body).await }
    };
    let web = |path: &str| json!({"method": {"name": "web-download", "uri": format!("http://127.0.0.1:{port}/{path}")}});

    // Four web-downloads of one image at once: one starts, the others are 409, one import job.
    let id = new_image().await;
    let replies = futures::future::join_all((0..4).map(|_| import(id.clone(), web("disk.qcow2")))).await;
    one_wins(&replies, StatusCode::ACCEPTED);
    let img = api.settled(&id, &member).await;
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["checksum"], md5_hex(&qcow2));
    assert_eq!(import_jobs(&app, &id).await, 1);

    // While a download is under way (the image is importing), every other way in is 409 and
    // starts nothing: another web-download, glance-direct, PUT /file, PUT /stage.
    let slow = new_image().await;
    assert_eq!(import(slow.clone(), web("slow")).await.status, StatusCode::ACCEPTED);
    assert_eq!(api.show(&slow, &member).await["status"], "importing");
    let (a, b, c, d) = tokio::join!(
        import(slow.clone(), web("disk.qcow2")),
        import(slow.clone(), json!({"method": {"name": "glance-direct"}})),
        api.put_data("file", &slow, &member, qcow2.clone()),
        api.put_data("stage", &slow, &member, qcow2.clone()),
    );
    assert_error(&a, StatusCode::CONFLICT, "importing");
    assert_error(&b, StatusCode::CONFLICT, "importing");
    assert_error(&c, StatusCode::CONFLICT, "importing");
    assert_error(&d, StatusCode::CONFLICT, "importing");
    assert_eq!(api.show(&slow, &member).await["status"], "importing");
    assert_eq!(import_jobs(&app, &slow).await, 0);
}

#[tokio::test]
async fn glance_direct_import_starts_once() {
    let w = world().await;
    let api = Api { app: &w.app };
    let tmp = tempfile::tempdir().unwrap();
    let qcow2 = qemu_img(tmp.path(), "g.qcow2", &["create", "-f", "qcow2", "1M"]);
    let id = api.create(&w.member, json!({"name": "g", "disk_format": "qcow2", "container_format": "bare"})).await;
    assert_eq!(api.put_data("stage", &id, &w.member, qcow2.clone()).await.status, StatusCode::NO_CONTENT);
    let import_uri = format!("/v2/images/{id}/import");
    let import = |body: Value| api.json("POST", &import_uri, &w.member, body);
    let direct = json!({"method": {"name": "glance-direct"}});

    // Four imports of the staged data at once: exactly one is accepted, one import job exists.
    let replies = futures::future::join_all((0..4).map(|_| import(direct.clone()))).await;
    one_wins(&replies, StatusCode::ACCEPTED);
    assert_eq!(import_jobs(&w.app, &id).await, 1);
    let img = api.settled(&id, &w.member).await;
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["checksum"], md5_hex(&qcow2));

    // Once active: another import, PUT /file and PUT /stage are 409 and start nothing.
    let (a, b, c) = tokio::join!(
        import(direct.clone()),
        api.put_data("file", &id, &w.member, qcow2.clone()),
        api.put_data("stage", &id, &w.member, qcow2.clone()),
    );
    assert_error(&a, StatusCode::CONFLICT, "active");
    assert_error(&b, StatusCode::CONFLICT, "active");
    assert_error(&c, StatusCode::CONFLICT, "active");
    assert_eq!(import_jobs(&w.app, &id).await, 1);
    assert_eq!(api.show(&id, &w.member).await["status"], "active");
}
