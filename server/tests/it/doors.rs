//! One core, two doors (the service-layer issue): each use-case moved into `crates/imageops` is
//! driven through the dashboard's server functions and through the Glance API with the same
//! inputs, and must leave the same stored state. Where the doors used to disagree, the Glance
//! behaviour is pinned here for both.

use crate::common;
use domain::{ImageStatus, JobKind, MemberStatus};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{seed_accounts, token, Auth, TestApp, HOST, PASSWORD};

/// Which door a use-case is called through.
#[derive(Clone, Copy, Debug)]
enum Door {
    Dashboard,
    Glance,
}

async fn glance(app: &TestApp, tok: &str, method: &str, uri: &str, ctype: &str, body: Body) -> common::Reply {
    app.glance(tok, method, uri, ctype, body).await
}

/// A `queued` image named `name` in the token's project, through the Glance API.
async fn create(app: &TestApp, tok: &str, name: &str, extra: &str) -> String {
    let body = format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"{extra}}}"#);
    let r = glance(app, tok, "POST", "/v2/images", "application/json", Body::from(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn delete(app: &TestApp, door: Door, tok: &str, cookie: &str, id: &str, name: &str) -> StatusCode {
    match door {
        Door::Glance => glance(app, tok, "DELETE", &format!("/v2/images/{id}"), "application/json", Body::empty()).await.status,
        Door::Dashboard => {
            let r = app.call("delete_image", &format!("image_id={id}&confirm={name}"), &Auth::Cookie(cookie.to_owned())).await;
            r.status
        }
    }
}

/// Deleting an image with staged data (`PUT …/stage`, not yet imported): both doors remove the
/// record, the staged bytes and their quota hold, and write one audit entry; a protected image
/// is refused by both with 403 and stays whole; an image of another project is 404 for both.
#[tokio::test]
async fn delete_is_the_same_use_case_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let other = token(&app, "other", &p2).await;
    let cookie = app.sign_in("member", PASSWORD).await;
    let db = app.state.db.clone();
    let incoming = app.state.config.data_dir.join("uploads-glance");
    let mut states = Vec::new();
    for door in [Door::Dashboard, Door::Glance] {
        let name = format!("staged-{door:?}").to_lowercase();
        let id = create(&app, &tok, &name, "").await;
        let r =
            glance(&app, &tok, "PUT", &format!("/v2/images/{id}/stage"), "application/octet-stream", Body::from(vec![9u8; 65536])).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert!(incoming.join(format!("{id}.staged")).exists());
        assert!(!db.quota_holds(&id).await.unwrap().is_empty(), "staged data holds quota");

        // Another project's member cannot see it, through either door.
        let other_cookie = app.sign_in("other", PASSWORD).await;
        assert_eq!(delete(&app, door, &other, &other_cookie, &id, &name).await, StatusCode::NOT_FOUND, "{door:?}");

        assert_eq!(delete(&app, door, &tok, &cookie, &id, &name).await, status_ok(door), "{door:?}");
        let staged_left = incoming.join(format!("{id}.staged")).exists() || incoming.join(format!("{id}.staged.json")).exists();
        let record_left = db.image(&id).await.unwrap().is_some();
        let holds_left = db.quota_holds(&id).await.unwrap().len();
        let audited = db
            .list_audit(&records::AuditFilter { action: "image.delete".into(), limit: 100, ..Default::default() })
            .await
            .unwrap()
            .iter()
            .filter(|a| a.target_id == id)
            .count();
        states.push((door, staged_left, record_left, holds_left, audited));

        // Protected: refused by both, nothing removed.
        let pname = format!("protected-{door:?}").to_lowercase();
        let pid = create(&app, &tok, &pname, r#","protected":true"#).await;
        assert_eq!(delete(&app, door, &tok, &cookie, &pid, &pname).await, StatusCode::FORBIDDEN, "{door:?}");
        assert!(db.image(&pid).await.unwrap().is_some(), "{door:?}: a protected image stays");
    }
    for (door, staged_left, record_left, holds_left, audited) in states {
        assert_eq!((staged_left, record_left, holds_left, audited), (false, false, 0, 1), "{door:?}: staged, record, holds, audit entries");
    }
}

/// The status each door answers a successful delete with (the dashboard's server function: 200
/// with a redirect for forms; Glance: 204).
fn status_ok(door: Door) -> StatusCode {
    match door {
        Door::Dashboard => StatusCode::OK,
        Door::Glance => StatusCode::NO_CONTENT,
    }
}

/// The dashboard's create form as its server function receives it.
fn create_form(name: &str, visibility: &str, tags: &str, description: &str) -> String {
    let enc = |s: &str| {
        s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>()
    };
    format!(
        "form[name]={}&form[disk_format]=qcow2&form[container_format]=bare&form[visibility]={visibility}\
         &form[description]={}&form[min_disk]=2&form[min_ram]=512&form[architecture]=x86_64&form[os_distro]=&form[os_version]=\
         &form[protected]=false&form[tags]={}&form[size]=1024",
        enc(name),
        enc(description),
        enc(tags)
    )
}

/// Creating an image through either door stores the same record for the same inputs, and the
/// same inputs are refused the same way: a member asking for a public image (403, the denial
/// audited), a tag over 255 characters (400; the dashboard used to cut it), a description
/// longer than the dashboard's old 1,024-character cut (kept whole by both), and the project's
/// image-count quota (413).
#[tokio::test]
async fn create_is_the_same_use_case_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let db = app.state.db.clone();
    let long = "d".repeat(2000);

    // The same image through both doors.
    let r = app.call("create_image", &create_form("twin", "private", "a, b,a", &long), &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let from_dashboard: String = serde_json::from_str(&r.body).unwrap();
    let body = serde_json::json!({
        "name": "twin", "disk_format": "qcow2", "container_format": "bare", "visibility": "private",
        "min_disk": 2, "min_ram": 512, "tags": ["a", "b", "a"], "description": long, "architecture": "x86_64",
    });
    let r = glance(&app, &tok, "POST", "/v2/images", "application/json", Body::from(body.to_string())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let from_glance = r.json()["id"].as_str().unwrap().to_owned();
    let stored = |d: records::ImageDetail| {
        (
            d.name.clone(),
            d.disk_format,
            d.container_format,
            d.visibility,
            d.min_disk,
            d.min_ram,
            d.tag_list(),
            d.property_map(),
            d.status,
            d.owner.clone(),
        )
    };
    let a = stored(db.image_detail(&from_dashboard).await.unwrap().unwrap());
    let b = stored(db.image_detail(&from_glance).await.unwrap().unwrap());
    assert_eq!(a, b, "the same request stores the same image through both doors");
    assert_eq!(a.7.get("description").map(String::len), Some(2000), "the description is kept whole");

    // The same refusals.
    let too_long_tag = "t".repeat(256);
    let cases: [(&str, String, serde_json::Value, StatusCode); 2] = [
        (
            "public by a member",
            create_form("pub", "public", "", ""),
            serde_json::json!({"name": "pub", "disk_format": "qcow2", "container_format": "bare", "visibility": "public"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "a tag of 256 characters",
            create_form("tag", "private", &too_long_tag, ""),
            serde_json::json!({"name": "tag", "disk_format": "qcow2", "container_format": "bare", "tags": [too_long_tag]}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, form, json, status) in cases {
        let d = app.call("create_image", &form, &cookie).await;
        let g = glance(&app, &tok, "POST", "/v2/images", "application/json", Body::from(json.to_string())).await;
        assert_eq!((d.status, g.status), (status, status), "{what}: dashboard {} / glance {}", d.body, g.body);
    }
    let denied = db
        .list_audit(&records::AuditFilter { action: "image.publicize".into(), outcome: "denied".into(), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(denied.len(), 2, "each door's refused publicize is audited: {denied:?}");

    // The image-count quota: both doors stop at the same count.
    let used = db.quota_usage(&p1).await.unwrap().images;
    db.set_quota(
        &p1,
        records::QuotaRow { max_images: Some(i64::try_from(used).unwrap() + 1), max_bytes: None, max_concurrent_uploads: None },
    )
    .await
    .unwrap();
    let d = app.call("create_image", &create_form("last", "private", "", ""), &cookie).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    let d = app.call("create_image", &create_form("over", "private", "", ""), &cookie).await;
    let g = glance(
        &app,
        &tok,
        "POST",
        "/v2/images",
        "application/json",
        Body::from(r#"{"name":"over","disk_format":"qcow2","container_format":"bare"}"#),
    )
    .await;
    assert_eq!((d.status, g.status), (StatusCode::PAYLOAD_TOO_LARGE, StatusCode::PAYLOAD_TOO_LARGE), "{} / {}", d.body, g.body);
}

/// Deactivating and reactivating: the same answers through both doors — a change is audited
/// once, asking again changes nothing and succeeds, and an image that is not active (here
/// `queued`) is refused with 403 (the dashboard used to answer 409).
#[tokio::test]
async fn status_changes_are_the_same_use_case_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let db = app.state.db.clone();
    let act = |door: Door, id: String, action: &'static str| {
        let (app, tok, cookie) = (&app, tok.clone(), cookie.clone());
        async move {
            match door {
                Door::Glance => {
                    glance(app, &tok, "POST", &format!("/v2/images/{id}/actions/{action}"), "application/json", Body::empty()).await
                }
                Door::Dashboard => app.call("set_image_status", &format!("image_id={id}&action={action}"), &cookie).await,
            }
        }
    };
    for door in [Door::Dashboard, Door::Glance] {
        let queued = create(&app, &tok, "queued", "").await;
        let r = act(door, queued.clone(), "deactivate").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{door:?}, a queued image: {}", r.body);

        let id = create(&app, &tok, "active", "").await;
        let r =
            glance(&app, &tok, "PUT", &format!("/v2/images/{id}/file"), "application/octet-stream", Body::from(vec![5u8; 1 << 20])).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        assert_eq!(db.image(&id).await.unwrap().unwrap().status, ImageStatus::Active);
        for (action, status) in
            [("deactivate", ImageStatus::Deactivated), ("deactivate", ImageStatus::Deactivated), ("reactivate", ImageStatus::Active)]
        {
            let r = act(door, id.clone(), action).await;
            assert!(r.status.is_success(), "{door:?} {action}: {} {}", r.status, r.body);
            assert_eq!(db.image(&id).await.unwrap().unwrap().status, status, "{door:?} {action}");
        }
        let audited = |action: &'static str| {
            let (db, id) = (db.clone(), id.clone());
            async move {
                db.list_audit(&records::AuditFilter { action: action.into(), limit: 100, ..Default::default() })
                    .await
                    .unwrap()
                    .iter()
                    .filter(|a| a.target_id == id)
                    .count()
            }
        };
        assert_eq!((audited("image.deactivate").await, audited("image.reactivate").await), (1, 1), "{door:?}: one entry per change");
    }
}

/// Changing an image's metadata: the dashboard's edit form and a Glance JSON-patch asking for
/// the same change store the same fields, and the same changes are refused the same way — a
/// reserved or read-only property name (403; the two doors used to differ in which names they
/// reserved), making it public as a member (403), a tag over 255 characters (400).
#[tokio::test]
async fn update_is_the_same_use_case_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let db = app.state.db.clone();
    let enc = |s: &str| {
        s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>()
    };
    let dashboard = |id: &str, visibility: &str, tags: &str, props: &str| {
        format!(
            "image_id={id}&name=renamed&visibility={visibility}&min_disk=3&min_ram=256&protected=on&tags={}&properties={}",
            enc(tags),
            enc(props)
        )
    };
    let a = create(&app, &tok, "a", "").await;
    let b = create(&app, &tok, "b", "").await;
    let r = app.call("update_image", &dashboard(&a, "shared", "x, y", "os_distro=debian\nnote=kept"), &cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = patch(
        &app,
        &tok,
        &b,
        serde_json::json!([
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "replace", "path": "/visibility", "value": "shared"},
            {"op": "replace", "path": "/min_disk", "value": 3},
            {"op": "replace", "path": "/min_ram", "value": 256},
            {"op": "replace", "path": "/protected", "value": true},
            {"op": "replace", "path": "/tags", "value": ["x", "y"]},
            {"op": "add", "path": "/os_distro", "value": "debian"},
            {"op": "add", "path": "/note", "value": "kept"},
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let stored =
        |d: records::ImageDetail| (d.name.clone(), d.visibility, d.min_disk, d.min_ram, d.protected, d.tag_list(), d.property_map());
    assert_eq!(stored(db.image_detail(&a).await.unwrap().unwrap()), stored(db.image_detail(&b).await.unwrap().unwrap()));

    let long_tag = "t".repeat(256);
    let cases: [(&str, String, serde_json::Value, StatusCode); 4] = [
        (
            "os_glance_ prefix",
            dashboard(&a, "shared", "", "os_glance_x=1"),
            serde_json::json!([{"op": "add", "path": "/os_glance_x", "value": "1"}]),
            StatusCode::FORBIDDEN,
        ),
        (
            "read-only checksum",
            dashboard(&a, "shared", "", "checksum=abc"),
            serde_json::json!([{"op": "add", "path": "/checksum", "value": "abc"}]),
            StatusCode::FORBIDDEN,
        ),
        (
            "public by a member",
            dashboard(&a, "public", "", ""),
            serde_json::json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
            StatusCode::FORBIDDEN,
        ),
        (
            "a tag of 256 characters",
            dashboard(&a, "shared", &long_tag, ""),
            serde_json::json!([{"op": "replace", "path": "/tags", "value": [long_tag]}]),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, form, ops, status) in cases {
        let d = app.call("update_image", &form, &cookie).await;
        let g = patch(&app, &tok, &b, ops).await;
        assert_eq!((d.status, g.status), (status, status), "{what}: dashboard {} / glance {}", d.body, g.body);
    }
    assert_eq!(
        stored(db.image_detail(&a).await.unwrap().unwrap()),
        stored(db.image_detail(&b).await.unwrap().unwrap()),
        "refusals change nothing"
    );
}

/// A Glance JSON-patch (v2.1 media type) of image `id`.
async fn patch(app: &TestApp, tok: &str, id: &str, ops: serde_json::Value) -> common::Reply {
    app.send(
        Request::builder()
            .method("PATCH")
            .uri(format!("/image/v2/images/{id}"))
            .header(header::HOST, HOST)
            .header("x-auth-token", tok)
            .header(header::CONTENT_TYPE, "application/openstack-images-v2.1-json-patch")
            .body(Body::from(ops.to_string()))
            .unwrap(),
    )
    .await
}

/// Sharing: the same rules through both doors — a private image has no members (403; the
/// dashboard used to share it anyway), a second share is 409, the member project's answer is
/// stored and audited the same way (`image.share.accepted`; the dashboard used its own action
/// names), and unsharing twice is 404 the second time.
#[tokio::test]
async fn sharing_is_the_same_use_case_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let other_tok = token(&app, "other", &p2).await;
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let other_cookie = Auth::Cookie(app.sign_in("other", PASSWORD).await);
    let db = app.state.db.clone();
    let share = |door: Door, id: String| {
        let (app, tok, cookie) = (&app, tok.clone(), cookie.clone());
        let p2 = p2.clone();
        async move {
            match door {
                Door::Dashboard => app.call("share_image", &format!("image_id={id}&project=p2"), &cookie).await.status,
                Door::Glance => {
                    let body = format!(r#"{{"member":"{p2}"}}"#);
                    glance(app, &tok, "POST", &format!("/v2/images/{id}/members"), "application/json", Body::from(body)).await.status
                }
            }
        }
    };
    // A caller who may not share an image learns nothing about project names through it.
    let reader = Auth::Cookie(app.sign_in("reader", PASSWORD).await);
    let probe = create(&app, &tok, "probe", r#","visibility":"shared""#).await;
    for project in ["p2", "no-such-project"] {
        let r = app.call("share_image", &format!("image_id={probe}&project={project}"), &reader).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "a reader sharing with {project}: {}", r.body);
    }
    for door in [Door::Dashboard, Door::Glance] {
        let private = create(&app, &tok, "private", r#","visibility":"private""#).await;
        assert_eq!(share(door, private.clone()).await, StatusCode::FORBIDDEN, "{door:?}: a private image has no members");
        assert!(db.image_members(&private).await.unwrap().is_empty());

        let id = create(&app, &tok, "shared", r#","visibility":"shared""#).await;
        assert_eq!(share(door, id.clone()).await, StatusCode::OK, "{door:?}");
        assert_eq!(share(door, id.clone()).await, StatusCode::CONFLICT, "{door:?}: shared twice");

        let answered = match door {
            Door::Dashboard => app.call("answer_share", &format!("image_id={id}&accept=true"), &other_cookie).await.status,
            Door::Glance => {
                glance(
                    &app,
                    &other_tok,
                    "PUT",
                    &format!("/v2/images/{id}/members/{p2}"),
                    "application/json",
                    Body::from(r#"{"status":"accepted"}"#),
                )
                .await
                .status
            }
        };
        assert_eq!(answered, StatusCode::OK, "{door:?}");
        assert_eq!(db.image_member(&id, &p2).await.unwrap().unwrap().status, MemberStatus::Accepted, "{door:?}");
        let audited = db
            .list_audit(&records::AuditFilter { action: "image.share.accepted".into(), limit: 100, ..Default::default() })
            .await
            .unwrap()
            .iter()
            .filter(|a| a.target_id == id)
            .count();
        assert_eq!(audited, 1, "{door:?}: the answer is audited under one name");

        let unshare = |id: String| {
            let (app, tok, cookie, p2) = (&app, tok.clone(), cookie.clone(), p2.clone());
            async move {
                match door {
                    Door::Dashboard => app.call("unshare_image", &format!("image_id={id}&project_id={p2}"), &cookie).await.status,
                    Door::Glance => {
                        glance(app, &tok, "DELETE", &format!("/v2/images/{id}/members/{p2}"), "application/json", Body::empty())
                            .await
                            .status
                    }
                }
            }
        };
        assert!(unshare(id.clone()).await.is_success(), "{door:?}");
        assert_eq!(unshare(id.clone()).await, StatusCode::NOT_FOUND, "{door:?}: not a member any more");
    }
}

/// Copying to another backend: the same answers through both doors — an unknown backend is 409
/// and an image that is not active 409 — and copy requests racing through both doors at once
/// queue exactly one copy job (the insert decides; the others are told a copy is under way, or
/// that the image is there already).
#[tokio::test]
async fn copy_is_the_same_use_case_through_both_doors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let config = server::Config {
        data_dir: root.join("data"),
        storage: common::local_backends(&root, &["local", "second"]),
        job_workers: 1,
        ..server::Config::default()
    };
    let app = common::spawn_app_with(dir, config).await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let db = app.state.db.clone();
    let copy = |door: Door, id: String, backend: &'static str| {
        let (app, tok, cookie) = (&app, tok.clone(), cookie.clone());
        async move {
            match door {
                Door::Dashboard => app.call("copy_image", &format!("image_id={id}&backend={backend}"), &cookie).await,
                Door::Glance => {
                    let body = format!(r#"{{"method":{{"name":"copy-image"}},"stores":["{backend}"]}}"#);
                    glance(app, &tok, "POST", &format!("/v2/images/{id}/import"), "application/json", Body::from(body)).await
                }
            }
        }
    };
    let queued = create(&app, &tok, "queued", "").await;
    let id = create(&app, &tok, "active", "").await;
    let r = glance(&app, &tok, "PUT", &format!("/v2/images/{id}/file"), "application/octet-stream", Body::from(vec![3u8; 1 << 20])).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    for door in [Door::Dashboard, Door::Glance] {
        assert_eq!(copy(door, id.clone(), "nowhere").await.status, StatusCode::CONFLICT, "{door:?}: an unknown backend");
        assert_eq!(copy(door, queued.clone(), "second").await.status, StatusCode::CONFLICT, "{door:?}: an image that is not active");
    }
    let racing = futures::future::join_all(
        [Door::Dashboard, Door::Glance, Door::Dashboard, Door::Glance].into_iter().map(|door| copy(door, id.clone(), "second")),
    )
    .await;
    let ok = racing.iter().filter(|r| r.status.is_success()).count();
    let told = racing.iter().filter(|r| matches!(r.status, StatusCode::CONFLICT | StatusCode::BAD_REQUEST)).count();
    assert_eq!((ok, told), (1, 3), "{:?}", racing.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>());
    let copies = db.jobs_for_image(&id).await.unwrap().into_iter().filter(|j| j.kind == JobKind::Copy).count();
    assert_eq!(copies, 1, "one copy job");
}

/// Which way an image's data is sent: a tus upload or Glance's `PUT /file`.
#[derive(Clone, Copy, Debug)]
enum DataDoor {
    Tus,
    GlancePut,
}

/// Starts sending image `id` its data through `door` (naming `store`, if any): the tus upload's
/// creation, or a whole 64 KiB raw body.
async fn send_data(app: &TestApp, door: DataDoor, tok: &str, id: &str, store: Option<&str>) -> common::Reply {
    match door {
        DataDoor::Tus => common::tus_create(app, tok, id, 65536, &store.map(|s| vec![("store", s)]).unwrap_or_default()).await,
        DataDoor::GlancePut => {
            let mut req = Request::put(format!("/image/v2/images/{id}/file"))
                .header(header::HOST, HOST)
                .header("x-auth-token", tok)
                .header(header::CONTENT_TYPE, "application/octet-stream");
            if let Some(s) = store {
                req = req.header("x-image-meta-store", s);
            }
            app.send(req.body(Body::from(vec![7u8; 65536])).unwrap()).await
        }
    }
}

/// Sending an image its data is admitted by one rule for every door
/// (`imageops::Images::admit_data`): a tus upload's creation and a Glance `PUT /file` refuse the
/// same requests with the same status (a reader, another project, an unknown store, an image
/// already imported, one whose import is running, one with staged data), and neither leaves
/// anything behind: the image keeps its status and no upload is stored.
#[tokio::test]
async fn data_is_admitted_by_one_rule_through_both_doors() {
    let app = common::spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let (tok, reader, other) = (token(&app, "member", &p1).await, token(&app, "reader", &p1).await, token(&app, "other", &p2).await);
    let db = app.state.db.clone();

    let waiting = create(&app, &tok, "waiting", "").await;
    let killed = create(&app, &tok, "killed", "").await;
    assert!(db.transition_image(&killed, &[ImageStatus::Queued], ImageStatus::Killed, "test").await.unwrap());
    let busy = create(&app, &tok, "busy", "").await;
    let job = records::NewJob::import(busy.clone(), "nowhere");
    let job = db.create_job(&job).await.unwrap();
    // Test set-up: the job runs on "another worker", so no worker here claims and ends it.
    sqlx::query("UPDATE jobs SET status = 'running' WHERE id = ?").bind(&job.id).execute(db.pool()).await.unwrap();
    let staged = create(&app, &tok, "staged", "").await;
    let r = glance(&app, &tok, "PUT", &format!("/v2/images/{staged}/stage"), "application/octet-stream", Body::from(vec![9u8; 4096])).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    // (what, token, image, store, expected status, words the answer contains)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, StatusCode, &'a str);
    let cases: [Case; 6] = [
        ("a reader of the project", &reader, &waiting, None, StatusCode::FORBIDDEN, ""),
        ("another project", &other, &waiting, None, StatusCode::NOT_FOUND, ""),
        ("an unknown store", &tok, &waiting, Some("nowhere"), StatusCode::BAD_REQUEST, "Unknown store"),
        ("an image already imported (killed)", &tok, &killed, None, StatusCode::CONFLICT, "imported once"),
        ("an import running", &tok, &busy, None, StatusCode::CONFLICT, "already queued or running"),
        ("staged data", &tok, &staged, None, StatusCode::CONFLICT, ""),
    ];
    let uploads_dir = app.state.config.data_dir.join("uploads");
    let stored_uploads = || std::fs::read_dir(&uploads_dir).map(|d| d.count()).unwrap_or(0);
    for (what, who, id, store, want, says) in cases {
        let before = db.image(id).await.unwrap().unwrap().status;
        for door in [DataDoor::Tus, DataDoor::GlancePut] {
            let r = send_data(&app, door, who, id, store).await;
            assert_eq!(r.status, want, "{what} through {door:?}: {}", r.body);
            assert!(r.body.contains(says), "{what} through {door:?}: {}", r.body);
            assert_eq!(db.image(id).await.unwrap().unwrap().status, before, "{what} through {door:?} left the status");
        }
    }
    assert_eq!(stored_uploads(), 0, "no refused upload was stored");
    assert_eq!(db.jobs_for_image(&waiting).await.unwrap().len(), 0, "no refused request queued an import");

    // The same image is admitted by both doors while it waits (the tus upload is created; the
    // Glance body is imported), and by neither once its data arrived.
    assert_eq!(send_data(&app, DataDoor::Tus, &tok, &waiting, None).await.status, StatusCode::CREATED);
    let put = create(&app, &tok, "put", "").await;
    let r = send_data(&app, DataDoor::GlancePut, &tok, &put, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(db.image(&put).await.unwrap().unwrap().status, ImageStatus::Active);
    for door in [DataDoor::Tus, DataDoor::GlancePut] {
        let r = send_data(&app, door, &tok, &put, None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{door:?}: {}", r.body);
        assert!(r.body.contains("from active"), "{door:?}: {}", r.body);
    }
}
