//! The HTTP surface through `router(state)`, with a real SQLite database in a temporary data dir.

use crate::common;
use domain::{ImageStatus, Visibility};

use axum::http::StatusCode;
use common::{seed_accounts, spawn_app, token, Auth};
use records::NewImage;

#[tokio::test]
async fn healthz_reports_the_database() {
    let app = spawn_app().await;
    let reply = app.get("/healthz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "ok");
    assert_eq!(reply.json()["database"], "ok");

    app.state.db.close().await;
    let reply = app.get("/healthz", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
}

#[tokio::test]
async fn the_data_dir_holds_the_database_file() {
    let app = spawn_app().await;
    assert!(app.state.config.database_path().is_file());
}

#[tokio::test]
async fn list_images_server_function_returns_what_the_caller_may_see() {
    let app = spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let member = Auth::Token(token(&app, "member", &p1).await);
    let reply = app.call("list_images", "", &member).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["total"], 0);
    assert_eq!(reply.json()["images"], serde_json::json!([]));

    app.state
        .db
        .create_image(&NewImage {
            name: "debian-12-genericcloud".into(),
            disk_format: Some(domain::DiskFormat::Qcow2),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let json = app.call("list_images", "", &member).await.json();
    assert_eq!(json["total"], 1);
    assert_eq!(json["images"][0]["name"], "debian-12-genericcloud");
    assert_eq!(json["images"][0]["status"], "queued");

    let reply = app.call("list_images", "", &Auth::Anonymous).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.json()["code"], "unauthorized");
}

#[tokio::test]
async fn the_images_page_is_server_rendered_with_its_data() {
    let app = spawn_app().await;
    let html = app.get("/images", None).await.body;
    assert!(html.contains("Sign in to see your images"), "anonymous visitors are asked to sign in");
    assert!(html.contains("/pkg/hangar.js"), "hydration script referenced");

    let (p1, _) = seed_accounts(&app).await;
    let cookie = app.sign_in("member", common::PASSWORD).await;
    let reply = app.get("/images", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("No images yet"), "empty state rendered on the server");

    for (name, format) in [("ubuntu-24.04", "qcow2"), ("win-2022", "vhd")] {
        app.state
            .db
            .create_image(&NewImage {
                name: name.into(),
                disk_format: Some(format.parse().unwrap()),
                owner: Some(p1.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let html = app.get("/images", Some(&cookie)).await.body;
    assert!(!html.contains("No images yet"));
    assert!(html.contains("id=\"images-table\""));
    assert!(html.contains("ubuntu-24.04") && html.contains("win-2022"));
    assert!(html.contains("2 images"));
    assert!(html.contains("Images of p1"), "the project the list is for is named");
}

#[tokio::test]
async fn unknown_paths_answer_404_with_the_app_page() {
    let app = spawn_app().await;
    let reply = app.get("/definitely/not/here", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.body.contains("Page not found"));
}

/// An image page for an id that names no image (or one the caller may not see) answers 404
/// with the page that says so; an image the caller sees answers 200.
#[tokio::test]
async fn an_unknown_image_page_answers_404() {
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let cookie = app.sign_in("member", common::PASSWORD).await;
    let theirs =
        app.state.db.create_image(&records::NewImage { name: "theirs".into(), owner: Some(p2), ..Default::default() }).await.unwrap();
    let mine = app.state.db.create_image(&records::NewImage { name: "mine".into(), owner: Some(p1), ..Default::default() }).await.unwrap();
    for id in ["0b5e4c6e-1111-4222-8333-944455556666", theirs.id.as_str()] {
        let reply = app.get(&format!("/images/{id}"), Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}");
        assert!(reply.body.contains("Image not found"), "{}", reply.body);
    }
    let reply = app.get(&format!("/images/{}", mine.id), Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("id=\"image-name\""), "{}", reply.body);
}

#[tokio::test]
async fn dismissing_the_welcome_panel_is_remembered_per_session() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    let cookie = app.sign_in("reader", common::PASSWORD).await;
    let reply = app.call("dismiss_welcome", "", &Auth::Cookie(cookie.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(!app.get("/images", Some(&cookie)).await.body.contains("Welcome to Hangar"));

    let other = app.sign_in("member", common::PASSWORD).await;
    assert!(app.get("/images", Some(&other)).await.body.contains("Welcome to Hangar"), "another session still sees it");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    let reply = app.call("sign_in", &format!("username=member&password={}", common::PASSWORD), &Auth::Anonymous).await;
    let raw = reply.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(raw.starts_with("hangar_session="), "{raw}");
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Lax"), "{raw}");
}

/// The image follows its tus upload: `queued` until bytes arrive, `uploading` once the first
/// bytes of a part are durable, then through the import to `active`. An upload naming another
/// project's image does not move that image.
#[tokio::test]
async fn an_image_is_uploading_once_its_first_bytes_arrive() {
    use axum::body::Body;
    use axum::http::Request;
    use base64::Engine as _;
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let db = &app.state.db;
    let mine = db
        .create_image(&NewImage {
            name: "disk".into(),
            disk_format: Some(domain::DiskFormat::Raw),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let theirs = db
        .create_image(&NewImage {
            name: "theirs".into(),
            disk_format: Some(domain::DiskFormat::Raw),
            owner: Some(p2),
            ..Default::default()
        })
        .await
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let status = |id: String| {
        let db = app.state.db.clone();
        async move { db.image(&id).await.unwrap().unwrap().status }
    };

    let create = |image: &str, concat: Option<&str>| {
        let mut r = Request::post("/uploads")
            .header("x-auth-token", tok.as_str())
            .header("tus-resumable", "1.0.0")
            .header("upload-length", (2u64 << 20).to_string())
            .header("upload-metadata", format!("image_id {}", b64(image)));
        if let Some(c) = concat {
            r = r.header("upload-concat", c);
        }
        r.body(Body::empty()).unwrap()
    };
    let patch = |url: &str, offset: u64, bytes: Vec<u8>| {
        Request::patch(url)
            .header("x-auth-token", tok.as_str())
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(Body::from(bytes))
            .unwrap()
    };
    // An upload naming another project's image is refused when it is created (it used to be
    // accepted and its bytes discarded at the end).
    let stranger = app.send(create(&theirs.id, None)).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND, "{}", stranger.body);

    // A part of a parallel upload names the image as the browser's parts do.
    let part = app.send(create(&mine.id, Some("partial"))).await;
    assert_eq!(part.status, StatusCode::CREATED, "{}", part.body);
    let url = part.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(status(mine.id.clone()).await, ImageStatus::Queued, "no bytes yet");
    assert_eq!(app.send(patch(&url, 0, vec![0; 1 << 20])).await.status, StatusCode::NO_CONTENT);
    let mut seen = ImageStatus::Queued;
    for _ in 0..100 {
        seen = status(mine.id.clone()).await;
        if seen == ImageStatus::Uploading {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, ImageStatus::Uploading);
    assert_eq!(status(theirs.id.clone()).await, ImageStatus::Queued, "another project's upload does not move this image");
}

/// A backend removed from the configuration (a restart) while an upload to it was unfinished:
/// at completion the image is killed with the reason and the bytes are deleted; they are never
/// stored on another backend instead.
#[tokio::test]
async fn an_upload_whose_backend_was_removed_is_refused_at_completion() {
    use axum::body::Body;
    use axum::http::Request;
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let local = |name: &str| storage::BackendConfig {
        name: name.into(),
        kind: storage::BackendKind::Local,
        path: Some(root.join(name)),
        ..Default::default()
    };
    let config =
        |stores: Vec<storage::BackendConfig>| server::Config { data_dir: root.join("data"), storage: stores, ..server::Config::default() };
    let first = common::spawn_app_with(tempfile::tempdir().unwrap(), config(vec![local("main"), local("spare")])).await;
    let (p1, _) = seed_accounts(&first).await;
    let tok = token(&first, "member", &p1).await;
    let image = first
        .state
        .db
        .create_image(&NewImage {
            name: "disk".into(),
            disk_format: Some(domain::DiskFormat::Raw),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let created = first
        .send(
            Request::post("/uploads")
                .header("x-auth-token", tok.as_str())
                .header("tus-resumable", "1.0.0")
                .header("upload-length", "8")
                .header("upload-metadata", format!("image_id {},store {}", b64(&image.id), b64("spare")))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let url = created.headers["location"].to_str().unwrap().to_owned();
    let upload_file = root.join("data/uploads").join(url.rsplit('/').next().unwrap());
    let patch = |offset: u64| {
        Request::patch(url.as_str())
            .header("x-auth-token", tok.as_str())
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(Body::from(vec![7u8; 4]))
            .unwrap()
    };
    assert_eq!(first.send(patch(0)).await.status, StatusCode::NO_CONTENT);
    assert!(upload_file.exists(), "the upload's bytes are at {}", upload_file.display());

    // The operator drops "spare"; the upload finishes against the new configuration.
    let second = common::spawn_app_with(tempfile::tempdir().unwrap(), config(vec![local("main")])).await;
    assert_eq!(second.send(patch(4)).await.status, StatusCode::NO_CONTENT);
    let mut row = second.state.db.image(&image.id).await.unwrap().unwrap();
    for _ in 0..250 {
        if row.status != ImageStatus::Queued && row.status != ImageStatus::Uploading {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        row = second.state.db.image(&image.id).await.unwrap().unwrap();
    }
    let reason = second.state.db.image_ingest(&image.id).await.unwrap().unwrap().status_reason;
    assert_eq!(row.status, ImageStatus::Killed, "{reason}");
    assert!(reason.contains("\"spare\"") && reason.contains("choose one of: main"), "{reason}");
    assert!(!upload_file.exists(), "the refused upload's bytes are deleted");
    let stored = std::fs::read_dir(root.join("main")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "nothing was stored on the remaining backend");
}

/// An upload that names a storage backend that does not exist is refused when it is created,
/// with the backends it could have named; it is never stored somewhere else instead.
#[tokio::test]
async fn an_upload_naming_an_unknown_backend_is_refused_at_creation() {
    use axum::body::Body;
    use axum::http::Request;
    use base64::Engine as _;
    let app = spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let create = |meta: String| {
        Request::post("/uploads")
            .header("x-auth-token", tok.as_str())
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "10")
            .header("upload-metadata", meta)
            .body(Body::empty())
            .unwrap()
    };
    let refused = app.send(create(format!("image_id {},store {}", b64("x"), b64("no-such-store")))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("no-such-store") && refused.body.contains("choose one of"), "{}", refused.body);
    let default = app.state.stores.default_backend().name().to_owned();
    let image = app
        .state
        .db
        .create_image(&NewImage {
            name: "x".into(),
            disk_format: Some(domain::DiskFormat::Raw),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ok = app.send(create(format!("image_id {},store {}", b64(&image.id), b64(&default)))).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
}

/// No upload is accepted whose bytes would be thrown away later (the reliability issue): it
/// must name an image the caller may fill and that is waiting for data, checked when it is
/// created; a PATCH after the upload was handed over is told so (not a 500); and a request
/// with no credentials at all is a 401, not a "cross-site" 403.
#[tokio::test]
async fn uploads_that_would_be_discarded_are_refused_up_front() {
    use axum::body::Body;
    use axum::http::Request;
    use base64::Engine as _;
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let tok = token(&app, "member", &p1).await;
    let other = token(&app, "other", &p2).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let create = |tok: Option<&str>, meta: Option<String>| {
        let mut r = Request::post("/uploads").header("tus-resumable", "1.0.0").header("upload-length", "4");
        if let Some(t) = tok {
            r = r.header("x-auth-token", t);
        }
        if let Some(m) = meta {
            r = r.header("upload-metadata", m);
        }
        r.body(Body::empty()).unwrap()
    };
    let db = &app.state.db;
    let image = |name: &str, owner: &str| NewImage {
        name: name.into(),
        disk_format: Some(domain::DiskFormat::Raw),
        visibility: Some(Visibility::Private),
        owner: Some(owner.into()),
        ..Default::default()
    };
    let waiting = db.create_image(&image("waiting", &p1)).await.unwrap();
    let done = db.create_image(&image("done", &p1)).await.unwrap();
    assert!(db.transition_image(&done.id, &[ImageStatus::Queued], ImageStatus::Active, "").await.unwrap());

    let cases = [
        ("no credentials", None, Some(format!("image_id {}", b64(&waiting.id))), StatusCode::UNAUTHORIZED, "Sign in"),
        ("no image named", Some(tok.as_str()), None, StatusCode::BAD_REQUEST, "image_id"),
        (
            "no such image",
            Some(tok.as_str()),
            Some(format!("image_id {}", b64("00000000-0000-0000-0000-000000000000"))),
            StatusCode::NOT_FOUND,
            "no image",
        ),
        (
            "another project's image",
            Some(other.as_str()),
            Some(format!("image_id {}", b64(&waiting.id))),
            StatusCode::NOT_FOUND,
            "no image",
        ),
        (
            "an image already imported",
            Some(tok.as_str()),
            Some(format!("image_id {}", b64(&done.id))),
            StatusCode::CONFLICT,
            "imported once",
        ),
    ];
    for (what, t, meta, want, says) in cases {
        let r = app.send(create(t, meta)).await;
        assert_eq!(r.status, want, "{what}: {}", r.body);
        assert!(r.body.contains(says), "{what}: {}", r.body);
    }
    assert!(std::fs::read_dir(app.state.config.data_dir.join("uploads")).map(|d| d.count()).unwrap_or(0) == 0, "nothing was stored");

    // A good upload completes; a late PATCH (empty, as a confused client sends) gets a 409.
    let r = app.send(create(Some(&tok), Some(format!("image_id {}", b64(&waiting.id))))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let url = r.headers["location"].to_str().unwrap().to_owned();
    let patch = |offset: u64, bytes: Vec<u8>| {
        Request::patch(url.as_str())
            .header("x-auth-token", tok.as_str())
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(Body::from(bytes))
            .unwrap()
    };
    assert_eq!(app.send(patch(0, vec![1, 2, 3, 4])).await.status, StatusCode::NO_CONTENT);
    let id = url.rsplit('/').next().unwrap().to_owned();
    for _ in 0..250 {
        if db.upload_by_id(&id).await.unwrap().is_none_or(|u| u.completed_at.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let late = app.send(patch(4, Vec::new())).await;
    assert!(matches!(late.status, StatusCode::CONFLICT | StatusCode::NOT_FOUND | StatusCode::GONE), "{} {}", late.status, late.body);
}

/// `/readyz` says whether uploads can land: ready with room, 503 `low_space` below the bound
/// (here raised above the disk's size), with every backend's free space.
#[tokio::test]
async fn readyz_reports_low_space() {
    let app = spawn_app().await;
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "ready");
    assert!(v["data_dir"]["free"].as_u64().unwrap() > 0);
    assert_eq!(v["backends"][0]["name"], "local");
    assert_eq!(v["backends"][0]["low"], false);

    let dir = tempfile::tempdir().unwrap();
    let config = server::Config { data_dir: dir.path().join("data"), low_space_bytes: u64::MAX, ..server::Config::default() };
    let full = common::spawn_app_with(dir, config).await;
    let r = full.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["data_dir"]["low"].as_bool(), v["backends"][0]["low"].as_bool()),
        (Some("low_space"), Some(true), Some(true))
    );
    // Liveness is another matter: the server is up.
    assert_eq!(full.get("/healthz", None).await.status, StatusCode::OK);
}
