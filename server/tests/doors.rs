//! One core, two doors (the service-layer issue): each use-case moved into `crates/imageops` is
//! driven through the dashboard's server functions and through the Glance API with the same
//! inputs, and must leave the same stored state. Where the doors used to disagree, the Glance
//! behaviour is pinned here for both.

mod common;

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
    app.send(
        Request::builder()
            .method(method)
            .uri(format!("/image{uri}"))
            .header(header::HOST, HOST)
            .header("x-auth-token", tok)
            .header(header::CONTENT_TYPE, ctype)
            .body(body)
            .unwrap(),
    )
    .await
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
