//! Server time of the Images list and detail pages with 10,000 image records: whole requests
//! through Hangar's router (authentication, policy, queries, server-side rendering of the HTML),
//! in process, so the network is not measured.
//!
//! `cargo run --release -p server --example page_bench [runs]`
//!
//! Prints p50/p95/max per case and p95 ÷ target (the catalogue issue's targets: 50 ms for a list
//! page, 20 ms for a detail page); exits with status 1 when a p95 misses its target.

use std::process::ExitCode;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use records::bench::{build, loadavg, Lcg, Stats, DETAIL_TARGET, IMAGES, LIST_TARGET, PROJECTS};
use server::{router, session_layer, AppState, Config};
use tower::ServiceExt;

async fn get(app: &axum::Router, uri: &str, token: &str) -> (StatusCode, String) {
    let req = Request::get(uri).header(header::HOST, "bench.test").header("x-auth-token", token).body(Body::empty()).expect("request");
    let res = app.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn case(
    app: &axum::Router,
    name: &'static str,
    target: std::time::Duration,
    runs: usize,
    uris: &[String],
    token: &str,
    must: &str,
) -> Stats {
    // One untimed request per URI warms caches the way a running server's are.
    for uri in uris.iter().take(3) {
        let _ = get(app, uri, token).await;
    }
    let mut s = Stats { name, target, runs: Vec::with_capacity(runs) };
    for i in 0..runs {
        let uri = &uris[i % uris.len()];
        let t = Instant::now();
        let (status, body) = get(app, uri, token).await;
        s.runs.push(t.elapsed());
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(body.contains(must), "{uri} lacks {must:?}");
    }
    s
}

#[tokio::main]
async fn main() -> ExitCode {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config { data_dir: dir.path().join("data"), log: "error".into(), ..Config::default() };
    let state = AppState::open(config).await.expect("open");
    let db = state.db.clone();
    let t = Instant::now();
    let (projects, ids) = build(&db, &mut Lcg(42)).await;
    println!("built {IMAGES} images in {PROJECTS} projects in {:.1} s; load {}", t.elapsed().as_secs_f64(), loadavg());

    let user = accounts::create_user(&db, "bench", "bench-password", false).await.expect("user");
    db.grant_role(&user.id, &projects[0], "member").await.expect("role");
    let token = accounts::issue_token(&db, &user, &projects[0], "bench").await.expect("token").secret;
    let admin = accounts::create_user(&db, "boss", "bench-password", true).await.expect("admin");
    let admin_token = accounts::issue_token(&db, &admin, &projects[0], "bench").await.expect("token").secret;
    let sessions = session_layer(&state).await.expect("sessions");
    let app = router(state.clone(), sessions);

    // Markers of page 5 of the member's default listing (found before timing).
    let page = records::ImageQuery { limit: Some(100), ..Default::default() };
    let visible = db.query_images(&page, records::Visible::Project(&projects[0])).await.expect("list");
    let marker = visible.images.get(99).map(|i| i.id.clone()).expect("a fifth page");
    let own: Vec<String> = visible.images.iter().take(20).map(|i| format!("/images/{}", i.id)).collect();
    let any: Vec<String> = ids.iter().step_by(500).map(|id| format!("/images/{id}")).collect();

    let all = vec![
        case(&app, "list page: project default", LIST_TARGET, runs, &["/images".to_owned()], &token, "images-table").await,
        case(&app, "list page: page 5 via marker", LIST_TARGET, runs, &[format!("/images?marker={marker}")], &token, "images-table").await,
        case(
            &app,
            "list page: search+filters, sort name",
            LIST_TARGET,
            runs,
            &[
                "/images?q=ubuntu&disk_format=qcow2&size_min=1%20GiB&sort=name&dir=asc".to_owned(),
                "/images?q=server&status=active&sort=size".to_owned(),
                "/images?tag=lts&visibility=all".to_owned(),
            ],
            &token,
            "image-filters",
        )
        .await,
        case(&app, "list page: admin (all projects)", LIST_TARGET, runs, &["/images".to_owned()], &admin_token, "images-table").await,
        case(&app, "detail page: own images", DETAIL_TARGET, runs, &own, &token, "image-facts").await,
        case(&app, "detail page: admin, any image", DETAIL_TARGET, runs, &any, &admin_token, "image-facts").await,
    ];
    let mut ok = true;
    for s in &all {
        ok &= s.report();
        println!("{:<34} p95 / target = {:.2}", "", s.percentile(95).as_secs_f64() / s.target.as_secs_f64());
    }
    println!("load after: {}", loadavg());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
