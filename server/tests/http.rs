//! The HTTP surface through `router(state)`, with a real SQLite database in a temporary data dir.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use records::NewImage;
use server::{router, session_layer, AppState, Config};
use tower::ServiceExt;

struct TestApp {
    _dir: tempfile::TempDir,
    state: AppState,
    router: axum::Router,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let state = AppState::open(config).await.unwrap();
    let sessions = session_layer(&state).await.unwrap();
    let router = router(state.clone(), sessions);
    TestApp { _dir: dir, state, router }
}

async fn send(app: &TestApp, req: Request<Body>) -> (StatusCode, String) {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn call(endpoint: &str) -> Request<Body> {
    Request::post(format!("/api/{endpoint}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn healthz_reports_the_database() {
    let app = spawn_app().await;
    let (status, body) = send(&app, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["database"], "ok");

    app.state.db.close().await;
    let (status, body) = send(&app, get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn the_data_dir_holds_the_database_file() {
    let app = spawn_app().await;
    assert!(app.state.config.database_path().is_file());
}

#[tokio::test]
async fn list_images_server_function_returns_the_catalogue() {
    let app = spawn_app().await;
    let (status, body) = send(&app, call("list_images")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"], 0);
    assert_eq!(json["images"], serde_json::json!([]));

    app.state
        .db
        .create_image(&NewImage { name: "debian-12-genericcloud".into(), disk_format: Some("qcow2".into()), ..Default::default() })
        .await
        .unwrap();
    let (_, body) = send(&app, call("list_images")).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"], 1);
    assert_eq!(json["images"][0]["name"], "debian-12-genericcloud");
    assert_eq!(json["images"][0]["status"], "queued");
}

#[tokio::test]
async fn the_images_page_is_server_rendered_with_its_data() {
    let app = spawn_app().await;
    let (status, html) = send(&app, get("/images")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No images yet"), "empty state rendered on the server");
    assert!(html.contains("/pkg/hangar.js"), "hydration script referenced");

    for (name, format) in [("ubuntu-24.04", "qcow2"), ("win-2022", "vhd")] {
        app.state
            .db
            .create_image(&NewImage { name: name.into(), disk_format: Some(format.into()), ..Default::default() })
            .await
            .unwrap();
    }
    let (status, html) = send(&app, get("/images")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("No images yet"));
    assert!(html.contains("id=\"images-table\""));
    assert!(html.contains("ubuntu-24.04") && html.contains("win-2022"));
    assert!(html.contains("2 images"));
}

#[tokio::test]
async fn unknown_paths_answer_404_with_the_app_page() {
    let app = spawn_app().await;
    let (status, html) = send(&app, get("/definitely/not/here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Page not found"));
}

#[tokio::test]
async fn dismissing_the_welcome_panel_is_remembered_per_session() {
    let app = spawn_app().await;
    let res = app.router.clone().oneshot(call("dismiss_welcome")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers().get(header::SET_COOKIE).expect("session cookie").to_str().unwrap().to_owned();
    assert!(cookie.starts_with("hangar_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();

    let req = Request::get("/images").header(header::COOKIE, &pair).body(Body::empty()).unwrap();
    let (_, html) = send(&app, req).await;
    assert!(!html.contains("Welcome to Hangar"));

    let (_, html) = send(&app, get("/images")).await;
    assert!(html.contains("Welcome to Hangar"), "a browser without the session still sees it");
}
