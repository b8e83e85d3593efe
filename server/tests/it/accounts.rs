//! Accounts, policy and security through the real router: the authorization table over every
//! server function, session fixation, CSRF, sign-in throttling, disabled users, tokens, the CLI.

use crate::common;
use domain::{ImageStatus, JobKind, LocationStatus, Visibility};

use std::collections::BTreeMap;

use axum::http::StatusCode;
use common::{seed_accounts, spawn_app, token, Auth, PASSWORD};
use records::NewImage;

const CALLERS: [&str; 5] = ["anonymous", "reader", "member", "other", "admin"];

/// One row of the table: a server function, the form it is called with, and the status each
/// caller (in [`CALLERS`] order) must get. 401/403 are refusals; anything else means the policy
/// let the call through (a 404 for a made-up id, a 409 for a duplicate, 200 for success).
struct Row {
    endpoint: &'static str,
    form: String,
    expect: [u16; 5],
}

fn row(endpoint: &'static str, form: impl Into<String>, expect: [u16; 5]) -> Row {
    Row { endpoint, form: form.into(), expect }
}

/// Every server function the app registers must have a row here: a new endpoint without one
/// fails this test, so nobody can add an endpoint without deciding who may call it.
#[tokio::test]
async fn every_server_function_authorizes_each_kind_of_caller() {
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let db = &app.state.db;
    let image = |name: &str, vis: &str| NewImage {
        name: name.into(),
        visibility: Some(vis.parse().unwrap()),
        owner: Some(p1.clone()),
        ..Default::default()
    };
    let to_share = db.create_image(&image("to-share", "shared")).await.unwrap();
    let to_unshare = db.create_image(&image("to-unshare", "shared")).await.unwrap();
    db.add_image_member(&to_unshare.id, &p2).await.unwrap();
    let to_answer = db.create_image(&image("to-answer", "shared")).await.unwrap();
    db.add_image_member(&to_answer.id, &p2).await.unwrap();
    let target = accounts::create_user(db, "target", PASSWORD, false).await.unwrap();
    let to_cancel = db.create_image(&image("to-cancel", "private")).await.unwrap();
    let to_edit = db.create_image(&image("to-edit", "private")).await.unwrap();
    let to_toggle = db.create_image(&image("to-toggle", "private")).await.unwrap();
    assert!(db.transition_image(&to_toggle.id, &[ImageStatus::Queued], ImageStatus::Active, "").await.unwrap());
    let to_delete = db.create_image(&image("to-delete", "private")).await.unwrap();
    let job = db.create_job(&records::NewJob::copy(to_edit.id.clone(), "local")).await.unwrap();
    let image_form = "form[name]=fresh&form[disk_format]=qcow2&form[container_format]=bare&form[visibility]=private\
        &form[description]=&form[min_disk]=0&form[min_ram]=0&form[architecture]=&form[os_distro]=&form[os_version]=\
        &form[protected]=false&form[tags]=&form[size]=1024";

    // The dashboard's callers: signed-in sessions. API tokens get a table of their own below.
    let auths = [
        Auth::Anonymous,
        Auth::Cookie(app.sign_in("reader", PASSWORD).await),
        Auth::Cookie(app.sign_in("member", PASSWORD).await),
        Auth::Cookie(app.sign_in("other", PASSWORD).await),
        Auth::Cookie(app.sign_in("admin", PASSWORD).await),
    ];
    let tokens = [
        Auth::Anonymous,
        Auth::Token(token(&app, "reader", &p1).await),
        Auth::Token(token(&app, "member", &p1).await),
        Auth::Token(token(&app, "other", &p2).await),
        Auth::Token(token(&app, "admin", &p1).await),
    ];
    let admin_only = |ok: u16| [401, 403, 403, 403, ok];
    let signed_in = |ok: u16| [401, ok, ok, ok, ok];
    let bogus = "00000000-0000-0000-0000-000000000000";

    let table = vec![
        row("whoami", "", [200; 5]),
        row("sign_in", "username=nobody&password=wrong-password", [401; 5]),
        row("switch_project", format!("project_id={p1}"), [401, 200, 200, 403, 200]),
        row("welcome_dismissed", "", [200; 5]),
        row("dismiss_welcome", "", [200; 5]),
        row("server_status", "", [200; 5]),
        row("list_images", "", signed_in(200)),
        row("list_tokens", "", signed_in(200)),
        row("create_token", "name=t", signed_in(200)),
        row("revoke_token", format!("token_id={bogus}"), signed_in(404)),
        row("pending_shares", "", signed_in(200)),
        // Readers cannot create images; "other" creates one in its own project p2.
        row("create_image", image_form, [401, 403, 200, 200, 200]),
        row("image_progress", format!("image_id={}", to_share.id), [401, 200, 200, 404, 200]),
        // The member cancels it; afterwards the admin finds nothing left to cancel (409).
        row("cancel_image", format!("image_id={}", to_cancel.id), [401, 403, 200, 404, 409]),
        // Readers may not share; the member shares it with p2, whose member ("other") can then see
        // it but not change it (403); the admin's attempt is a duplicate (409).
        row("share_image", format!("image_id={}&project=p2", to_share.id), [401, 403, 200, 403, 409]),
        row("unshare_image", format!("image_id={}&project_id={p2}", to_unshare.id), [401, 403, 200, 404, 404]),
        // Only the project it was shared with (p2, "other") answers; p1's member finds nothing.
        row("answer_share", format!("image_id={}&accept=true", to_answer.id), [401, 403, 404, 200, 404]),
        row("admin_list_users", "", admin_only(200)),
        row("admin_create_user", "username=newbie&password=newbie-password", admin_only(200)),
        row("admin_set_user_disabled", format!("user_id={}&disabled=true", target.id), admin_only(200)),
        row("admin_reset_password", format!("user_id={}&password=brand-new-pass", target.id), admin_only(200)),
        row("admin_list_projects", "", admin_only(200)),
        row("admin_create_project", "name=p3", admin_only(200)),
        row("admin_update_project", format!("project_id={p2}&name=p2"), admin_only(200)),
        row("admin_grant_role", format!("username=target&project_id={p2}&role=reader"), admin_only(200)),
        row("admin_revoke_role", format!("user_id={}&project_id={p1}", target.id), admin_only(404)),
        row("admin_set_quota", format!("project_id={p1}&max_images=10&max_bytes=1%20TiB"), admin_only(200)),
        row("admin_list_audit", "", admin_only(200)),
        row("storage_matrix", "", signed_in(200)),
        row("storage_overview", "", signed_in(200)),
        row("image_detail", format!("image_id={}", to_edit.id), [401, 200, 200, 404, 200]),
        row("update_image", format!("image_id={}&name=edited&visibility=private", to_edit.id), [401, 403, 200, 404, 200]),
        // Deactivating twice is a no-op (200), as in Glance.
        row("set_image_status", format!("image_id={}&action=deactivate", to_toggle.id), [401, 403, 200, 404, 200]),
        // The member deletes it; the admin then finds nothing.
        row("delete_image", format!("image_id={}&confirm=to-delete", to_delete.id), [401, 403, 200, 404, 404]),
        row("list_jobs", "", signed_in(200)),
        // No backend of that name: the caller who may copy learns so (409 through both doors,
        // Glance's answer for an unknown store).
        row("copy_image", format!("image_id={}&backend=nowhere", to_edit.id), [401, 403, 409, 404, 409]),
        // The member cancels the queued job; the admin's cancel comes too late (409).
        row("control_job", format!("job_id={}&action=cancel", job.id), [401, 403, 200, 404, 409]),
        row("set_matrix_cell", "kind=rbd&format=vdi&action=refuse&reason=No%20VirtualBox", admin_only(200)),
        // Last: it ends the sessions the rows above use.
        row("sign_out", "", [200; 5]),
    ];
    // What an API token may not do, whoever holds it (a leaked token must not mint tokens that
    // outlive its revocation, nor administer): 403, recorded as denied. Everything else a token
    // may do as its user (the image rows are exercised by the Glance tests and the CLI session).
    let token_refused = [401, 403, 403, 403, 403];
    let token_table = vec![
        row("list_tokens", "", token_refused),
        row("create_token", "name=minted", token_refused),
        row("revoke_token", format!("token_id={bogus}"), token_refused),
        row("admin_list_users", "", token_refused),
        row("admin_create_user", "username=bytoken&password=bytoken-password", token_refused),
        row("admin_set_user_disabled", format!("user_id={}&disabled=true", target.id), token_refused),
        row("admin_reset_password", format!("user_id={}&password=by-token-pass", target.id), token_refused),
        row("admin_list_projects", "", token_refused),
        row("admin_create_project", "name=bytoken", token_refused),
        row("admin_update_project", format!("project_id={p2}&name=p2"), token_refused),
        row("admin_grant_role", format!("username=target&project_id={p2}&role=member"), token_refused),
        row("admin_revoke_role", format!("user_id={}&project_id={p1}", target.id), token_refused),
        row("admin_set_quota", format!("project_id={p1}&max_images=1&max_bytes=1%20TiB"), token_refused),
        row("admin_list_audit", "", token_refused),
        row("set_matrix_cell", "kind=rbd&format=raw&action=refuse&reason=by%20token", token_refused),
        row("whoami", "", [200; 5]),
        row("list_images", "", signed_in(200)),
        row("storage_matrix", "", signed_in(200)),
    ];

    // The rows must cover exactly the registered server functions.
    let registered: BTreeMap<String, String> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, method)| (path.trim_start_matches("/api/").to_owned(), method.to_string()))
        .collect();
    let covered: BTreeMap<String, String> = table.iter().map(|r| (r.endpoint.to_owned(), "POST".to_owned())).collect();
    let missing: Vec<_> = registered.keys().filter(|k| !covered.contains_key(*k)).collect();
    let stale: Vec<_> = covered.keys().filter(|k| !registered.contains_key(*k)).collect();
    assert!(missing.is_empty(), "server functions without an authorization row: {missing:?}");
    assert!(stale.is_empty(), "rows for server functions that do not exist: {stale:?}");
    assert!(registered.values().all(|m| m == "POST"), "{registered:?}");

    let mut failures = Vec::new();
    for (kind, rows, auths) in [("session", &table, &auths), ("token", &token_table, &tokens)] {
        for r in rows {
            for ((caller, auth), want) in CALLERS.iter().zip(auths).zip(r.expect) {
                let reply = app.call(r.endpoint, &r.form, auth).await;
                if reply.status.as_u16() != want {
                    failures.push(format!("{} as {caller} ({kind}): got {} want {want}: {}", r.endpoint, reply.status, reply.body));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    // Nothing the tokens tried happened, and every refusal is in the audit log as denied.
    assert!(app.state.db.project_by_name("bytoken").await.unwrap().is_none());
    assert!(app.state.db.user_by_name("bytoken").await.unwrap().is_none());
    let mut denied = 0;
    for _ in 0..50 {
        let log = app.state.db.list_audit(&records::AuditFilter { limit: 500, ..Default::default() }).await.unwrap();
        denied = log.iter().filter(|e| e.outcome == "denied" && e.detail.starts_with("API token: ")).count();
        if denied >= 4 * 15 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(denied, 4 * 15, "each of the 15 refused functions, for each of the 4 token holders");
}

/// Every page route answers (pages only render; what they show is decided by server functions),
/// and an admin page tells a non-admin plainly that it is not for them.
#[tokio::test]
async fn pages_render_for_everyone_and_admin_pages_refuse_non_admins() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    let member = app.sign_in("member", PASSWORD).await;
    let admin = app.sign_in("admin", PASSWORD).await;
    for path in ["/", "/images", "/upload", "/storage", "/formats", "/signin", "/account", "/admin", "/admin/projects", "/admin/audit"] {
        for cookie in [None, Some(member.as_str()), Some(admin.as_str())] {
            assert_eq!(app.get(path, cookie).await.status, StatusCode::OK, "{path} with {cookie:?}");
        }
    }
    let html = app.get("/admin", Some(&member)).await.body;
    assert!(html.contains("id=\"admin-denied\"") && !html.contains("users-table"));
    let html = app.get("/admin", Some(&admin)).await.body;
    assert!(html.contains("users-table") && html.contains(">member<"));
    assert!(!app.get("/images", Some(&member)).await.body.contains("href=\"/admin\""), "the Admin entry is hidden from non-admins");
    assert!(app.get("/images", Some(&admin)).await.body.contains("href=\"/admin\""));
}

#[tokio::test]
async fn sign_in_rotates_the_session_id_against_fixation() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    // An attacker's pre-sign-in session (here: one made by dismissing the welcome panel).
    let planted = app.call("dismiss_welcome", "", &Auth::Anonymous).await.session_cookie().unwrap();
    let reply = app.call("sign_in", &format!("username=member&password={PASSWORD}"), &Auth::Cookie(planted.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let fresh = reply.session_cookie().expect("a new session id");
    assert_ne!(fresh, planted);
    let who = |c: String| async { app.call("whoami", "", &Auth::Cookie(c)).await.json() };
    assert_eq!(who(fresh).await["username"], "member");
    assert_eq!(who(planted).await, serde_json::Value::Null, "the planted id does not carry the sign-in");
}

#[tokio::test]
async fn cross_site_requests_with_the_session_cookie_are_refused() {
    let app = spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let cookie = app.sign_in("admin", PASSWORD).await;
    let forged = |origin: Option<&'static str>| {
        let mut b = axum::http::Request::post("/api/admin_create_project")
            .header("host", common::HOST)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie.as_str());
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(axum::body::Body::from("name=forged")).unwrap()
    };
    for origin in [None, Some("http://evil.example")] {
        let reply = app.send(forged(origin)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(reply.json()["code"], "cross-site-request");
    }
    assert!(app.state.db.project_by_name("forged").await.unwrap().is_none());
    // The same request from the site itself goes through. A token is exempt from the origin
    // check, but administering accounts needs a session (policy: Action::needs_session).
    assert_eq!(app.call("admin_create_project", "name=real", &Auth::Cookie(cookie)).await.status, StatusCode::OK);
    let t = token(&app, "admin", &p1).await;
    let reply = app.call("admin_create_project", "name=viatoken", &Auth::Token(t)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_ne!(reply.json()["code"], "cross-site-request");
}

#[tokio::test]
async fn password_guessing_is_throttled() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    for _ in 0..accounts::MAX_FAILURES_PER_USER {
        let reply = app.call("sign_in", "username=member&password=wrong-guess", &Auth::Anonymous).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json()["message"], "The username or password is incorrect.");
    }
    let reply = app.call("sign_in", &format!("username=member&password={PASSWORD}"), &Auth::Anonymous).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.body);
    assert!(reply.json()["message"].as_str().unwrap().contains("Too many failed sign-ins"));
    // Failures are audited with where they came from.
    let audit =
        app.state.db.list_audit(&records::AuditFilter { action: "auth.sign_in".into(), limit: 50, ..Default::default() }).await.unwrap();
    assert!(audit.iter().filter(|a| a.outcome == "denied" && a.actor_name == "member").count() >= 5);
}

/// A sign-in body is bounded: a megabyte "username" is refused unread (413), leaving no trace
/// in the throttle or the audit log.
#[tokio::test]
async fn oversized_sign_ins_are_refused_unread() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    let huge = format!("username={}&password=x", "u".repeat(1 << 20));
    let r = app.call("sign_in", &huge, &Auth::Anonymous).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let log = app.state.db.list_audit(&records::AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert!(log.iter().all(|e| e.actor_name.len() < 300 && e.detail.len() < 2000), "no huge audit row");
    // A normal one still works.
    let r = app.call("sign_in", &format!("username=member&password={PASSWORD}"), &Auth::Anonymous).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// The throttle holds when the guesses come all at once: 30 parallel wrong passwords for one
/// account get exactly 5 tries, 40 for different accounts from one address exactly 20.
#[tokio::test]
async fn parallel_password_guessing_gets_exactly_the_limit() {
    let app = spawn_app().await;
    seed_accounts(&app).await;
    let replies =
        futures::future::join_all((0..30).map(|_| app.call("sign_in", "username=member&password=wrong-guess", &Auth::Anonymous))).await;
    let tried = replies.iter().filter(|r| r.status == StatusCode::UNAUTHORIZED).count();
    let throttled = replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((tried, throttled), (accounts::MAX_FAILURES_PER_USER as usize, 25));

    let app = spawn_app().await;
    seed_accounts(&app).await;
    let forms: Vec<String> = (0..40).map(|i| format!("username=guess{i}&password=wrong-guess")).collect();
    let replies = futures::future::join_all(forms.iter().map(|f| app.call("sign_in", f, &Auth::Anonymous))).await;
    let tried = replies.iter().filter(|r| r.status == StatusCode::UNAUTHORIZED).count();
    let throttled = replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((tried, throttled), (accounts::MAX_FAILURES_PER_ADDR as usize, 20));
}

#[tokio::test]
async fn disabling_a_user_ends_their_session_and_their_tokens() {
    let app = spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let member = app.sign_in("member", PASSWORD).await;
    let member_token = token(&app, "member", &p1).await;
    let admin = Auth::Cookie(app.sign_in("admin", PASSWORD).await);
    let member_id = app.state.db.user_by_name("member").await.unwrap().unwrap().id;

    assert_eq!(app.call("whoami", "", &Auth::Cookie(member.clone())).await.json()["username"], "member");
    let reply = app.call("admin_set_user_disabled", &format!("user_id={member_id}&disabled=true"), &admin).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    assert_eq!(app.call("whoami", "", &Auth::Cookie(member.clone())).await.json(), serde_json::Value::Null);
    assert_eq!(app.call("list_images", "", &Auth::Token(member_token)).await.status, StatusCode::UNAUTHORIZED);
    let reply = app.call("sign_in", &format!("username=member&password={PASSWORD}"), &Auth::Anonymous).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.json()["message"].as_str().unwrap().contains("disabled"));

    // Re-enabled, they can sign in again (the old session stays dead).
    app.call("admin_set_user_disabled", &format!("user_id={member_id}&disabled=false"), &admin).await;
    app.sign_in("member", PASSWORD).await;
    assert_eq!(app.call("whoami", "", &Auth::Cookie(member)).await.json(), serde_json::Value::Null);

    let audit = app.state.db.list_audit(&records::AuditFilter { actor: "admin".into(), limit: 50, ..Default::default() }).await.unwrap();
    let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(actions.contains(&"user.disable") && actions.contains(&"user.enable"), "{actions:?}");
}

#[tokio::test]
async fn tokens_are_shown_once_scoped_and_revocable() {
    let app = spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let reader = Auth::Cookie(app.sign_in("reader", PASSWORD).await);
    let reply = app.call("create_token", &format!("name=laptop&project_id={p1}"), &reader).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let created = reply.json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("hgr_"));

    let listed = app.call("list_tokens", "", &reader).await.json();
    assert_eq!(listed[0]["name"], "laptop");
    assert!(!listed.to_string().contains(&secret), "the secret is never listed again");

    // The token acts as the reader, in p1 only: listing works, creating a project does not.
    let via = Auth::Token(secret.clone());
    assert_eq!(app.call("whoami", "", &via).await.json()["project"]["name"], "p1");
    assert_eq!(app.call("admin_create_project", "name=nope", &via).await.status, StatusCode::FORBIDDEN);

    let id = created["token"]["id"].as_str().unwrap();
    assert_eq!(app.call("revoke_token", &format!("token_id={id}"), &reader).await.status, StatusCode::OK);
    assert_eq!(app.call("whoami", "", &via).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_active_project_can_be_switched_only_to_projects_with_a_role() {
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let db = &app.state.db;
    let member_id = db.user_by_name("member").await.unwrap().unwrap().id;
    db.grant_role(&member_id, &p2, "reader").await.unwrap();
    let cookie = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let me = app.call("whoami", "", &cookie).await.json();
    assert_eq!(me["projects"].as_array().unwrap().len(), 2);
    assert_eq!(app.call("switch_project", &format!("project_id={p2}"), &cookie).await.status, StatusCode::OK);
    let me = app.call("whoami", "", &cookie).await.json();
    assert_eq!((me["project"]["name"].as_str(), me["project"]["role"].as_str()), (Some("p2"), Some("reader")));
    let reply = app.call("switch_project", "project_id=not-mine", &cookie).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let _ = p1;
}

#[tokio::test]
async fn a_shared_image_is_offered_then_listed_once_accepted() {
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let img = app
        .state
        .db
        .create_image(&NewImage {
            name: "golden".into(),
            visibility: Some(Visibility::Shared),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let member = Auth::Cookie(app.sign_in("member", PASSWORD).await);
    let other = Auth::Cookie(app.sign_in("other", PASSWORD).await);
    assert_eq!(app.call("list_images", "", &other).await.json()["total"], 0);
    assert_eq!(app.call("share_image", &format!("image_id={}&project=p2", img.id), &member).await.status, StatusCode::OK);
    let pending = app.call("pending_shares", "", &other).await.json();
    assert_eq!((pending[0]["image_name"].as_str(), pending[0]["owner"].as_str()), (Some("golden"), Some("p1")));
    assert!(app
        .get(
            "/images",
            Some(match &other {
                Auth::Cookie(c) => c,
                _ => unreachable!(),
            })
        )
        .await
        .body
        .contains("shared with your project"));
    assert_eq!(app.call("answer_share", &format!("image_id={}&accept=true", img.id), &other).await.status, StatusCode::OK);
    assert_eq!(app.call("list_images", "", &other).await.json()["images"][0]["name"], "golden");
    let _ = p2;
}

/// Quota inputs are validated, stored and audited.
#[tokio::test]
async fn quotas_are_validated_and_audited() {
    let app = spawn_app().await;
    let (p1, _) = seed_accounts(&app).await;
    let admin = Auth::Cookie(app.sign_in("admin", PASSWORD).await);
    let reply = app.call("admin_set_quota", &format!("project_id={p1}&max_images=many"), &admin).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply =
        app.call("admin_set_quota", &format!("project_id={p1}&max_images=5&max_bytes=2%20GiB&max_concurrent_uploads="), &admin).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let q = app.state.db.quota(&p1).await.unwrap();
    assert_eq!((q.max_images, q.max_bytes, q.max_concurrent_uploads), (Some(5), Some(2 << 30), None));
    let projects = app.call("admin_list_projects", "", &admin).await.json();
    let p = projects.as_array().unwrap().iter().find(|p| p["name"] == "p1").unwrap();
    assert_eq!(p["quota"]["max_images"], 5);
    let audit = app.call("admin_list_audit", "action=quota.", &admin).await.json();
    assert_eq!(audit["entries"][0]["detail"], "images 5, bytes 2147483648, concurrent uploads unlimited");
    assert!(audit["older"].is_null(), "one page holds them all: no link to older entries");
}

fn hangar(data_dir: &std::path::Path, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hangar"));
    cmd.arg("--data-dir").arg(data_dir).args(args).env_remove("HANGAR_PASSWORD").stdin(std::process::Stdio::null());
    if let Some(p) = password {
        cmd.env("HANGAR_PASSWORD", p);
    }
    cmd.output().expect("run hangar")
}

/// The documented non-interactive set-up: users, projects, roles and a token from the command line.
#[tokio::test]
async fn the_cli_creates_users_projects_roles_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(ok(hangar(data, &["user", "create", "ops", "--admin"], Some(PASSWORD))), "created user ops (admin)");
    ok(hangar(data, &["user", "create", "dev"], Some(PASSWORD)));
    assert!(ok(hangar(data, &["project", "create", "web", "Web team"], None)).starts_with("created project web"));
    assert_eq!(ok(hangar(data, &["role", "grant", "dev", "web", "member"], None)), "dev is now member in web");
    let secret = ok(hangar(data, &["token", "create", "dev", "web", "ci"], None));
    assert!(secret.starts_with("hgr_"), "{secret}");

    let out = hangar(data, &["user", "create", "dev"], Some(PASSWORD));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already taken"));
    let out = hangar(data, &["role", "grant", "dev", "web", "admin"], None);
    assert_eq!(out.status.code(), Some(2), "admin is not a project role: usage error");
    let out = hangar(data, &["user", "create", "weak"], Some("short"));
    assert_eq!(out.status.code(), Some(1));

    let db = records::Db::open_sqlite(&data.join("hangar.db")).await.unwrap();
    let principal = accounts::principal_for_token(&db, &secret).await.unwrap().unwrap();
    assert_eq!(principal.username, "dev");
    assert_eq!(principal.scope.unwrap().role, policy::Role::Member);
    assert!(db.user_by_name("ops").await.unwrap().unwrap().is_admin);
    let audit = db.list_audit(&records::AuditFilter { actor: "cli".into(), limit: 20, ..Default::default() }).await.unwrap();
    assert_eq!(audit.len(), 5);
}

#[tokio::test]
async fn bootstrap_creates_the_first_admin_and_a_default_project_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = records::Db::open_sqlite(&dir.path().join("hangar.db")).await.unwrap();
    let env = |k: &str| match k {
        "HANGAR_BOOTSTRAP_ADMIN" => Some("root".to_owned()),
        "HANGAR_BOOTSTRAP_PASSWORD" => Some(PASSWORD.to_owned()),
        _ => None,
    };
    server::cli::bootstrap(&db, env).await.unwrap();
    server::cli::bootstrap(&db, env).await.unwrap();
    assert_eq!(db.count_users().await.unwrap(), 1);
    let root = db.user_by_name("root").await.unwrap().unwrap();
    assert!(root.is_admin);
    assert_eq!(db.roles_of_user(&root.id).await.unwrap()[0].project_name, "default");
    let missing_password = |k: &str| (k == "HANGAR_BOOTSTRAP_ADMIN").then(|| "x".to_owned());
    assert!(server::cli::bootstrap(&db, missing_password).await.is_err());
}

/// The routes that are not server functions (downloads, tus, the Glance API, health) make the
/// same decisions for the same callers.
#[tokio::test]
async fn every_route_family_authorizes_each_kind_of_caller() {
    use axum::body::Body;
    use axum::http::{header, Method, Request};

    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let db = &app.state.db;
    let private =
        |name: &str| NewImage { name: name.into(), visibility: Some(Visibility::Private), owner: Some(p1.clone()), ..Default::default() };
    // An active image with bytes on the local backend.
    let stored = db.create_image(&private("stored")).await.unwrap();
    assert!(db.transition_image(&stored.id, &[ImageStatus::Queued], ImageStatus::Active, "").await.unwrap());
    let key = format!("{}.raw", stored.id);
    let dir = app.state.config.data_dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&key), b"0123456789").unwrap();
    db.put_location(&records::LocationRow {
        image_id: stored.id.clone(),
        backend: "local".into(),
        key,
        disk_format: domain::ImageFormat::Raw,
        size: 10,
        checksum: None,
        os_hash_value: None,
        status: LocationStatus::Active,
        created_at: String::new(),
    })
    .await
    .unwrap();
    let doomed = db.create_image(&private("doomed")).await.unwrap();
    let waiting = db.create_image(&private("waiting")).await.unwrap();
    let waiting_meta = {
        use base64::Engine as _;
        format!("image_id {}", base64::engine::general_purpose::STANDARD.encode(&waiting.id))
    };

    let auths = [
        None,
        Some(token(&app, "reader", &p1).await),
        Some(token(&app, "member", &p1).await),
        Some(token(&app, "other", &p2).await),
        Some(token(&app, "admin", &p1).await),
    ];
    let tus = move |r: axum::http::request::Builder| {
        r.header("tus-resumable", "1.0.0").header("upload-length", "10").header("upload-metadata", waiting_meta.as_str())
    };
    type Build = Box<dyn Fn() -> axum::http::request::Builder>;
    let table: Vec<(&str, Build, [u16; 5])> = vec![
        ("GET /healthz", Box::new(|| Request::get("/healthz")), [200; 5]),
        (
            "GET /images/{id}/file",
            Box::new({
                let u = format!("/images/{}/file", stored.id);
                move || Request::get(u.as_str())
            }),
            [401, 200, 200, 404, 200],
        ),
        // An upload names an image it may fill: p2's member cannot see p1's private image (404).
        ("POST /uploads", Box::new(move || tus(Request::post("/uploads"))), [401, 403, 201, 404, 201]),
        ("GET /image/v2/images", Box::new(|| Request::get("/image/v2/images")), [401, 200, 200, 200, 200]),
        (
            "GET /image/v2/images/{id}",
            Box::new({
                let u = format!("/image/v2/images/{}", stored.id);
                move || Request::get(u.as_str())
            }),
            [401, 200, 200, 404, 200],
        ),
        // The member deletes it; the admin then finds nothing.
        (
            "DELETE /image/v2/images/{id}",
            Box::new({
                let u = format!("/image/v2/images/{}", doomed.id);
                move || Request::builder().method(Method::DELETE).uri(u.as_str())
            }),
            [401, 403, 204, 404, 404],
        ),
    ];
    let mut failures = Vec::new();
    for (name, build, expect) in &table {
        for ((caller, auth), want) in CALLERS.iter().zip(&auths).zip(expect) {
            let mut b = build().header(header::HOST, common::HOST);
            b = match auth {
                Some(t) => b.header("x-auth-token", t.as_str()),
                // As from a Hangar page, so the CSRF check passes and authentication decides.
                None => b.header(header::ORIGIN, common::ORIGIN),
            };
            let reply = app.send(b.body(Body::empty()).unwrap()).await;
            if reply.status.as_u16() != *want {
                failures.push(format!("{name} as {caller}: got {} want {want}: {}", reply.status, reply.body));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// A deleted image's id is never taken again (OSSN-0075), by its project or another; and an
/// image whose import is under way is not imported a second time by a tus upload naming it.
#[tokio::test]
async fn deleted_ids_and_second_imports_are_refused() {
    use axum::body::Body;
    use axum::http::{header, Request};
    use base64::Engine as _;
    let app = spawn_app().await;
    let (p1, p2) = seed_accounts(&app).await;
    let (member, other) = (token(&app, "member", &p1).await, token(&app, "other", &p2).await);
    let glance = |method: &str, uri: String, tok: &str, body: String| {
        Request::builder()
            .method(method)
            .uri(format!("/image{uri}"))
            .header(header::HOST, common::HOST)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-auth-token", tok)
            .body(Body::from(body))
            .unwrap()
    };
    let id = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f";
    let create = |tok: &str, id: &str| glance("POST", "/v2/images".into(), tok, format!(r#"{{"id":"{id}","name":"x"}}"#));
    assert_eq!(app.send(create(&member, id)).await.status, StatusCode::CREATED);
    assert_eq!(app.send(glance("DELETE", format!("/v2/images/{id}"), &member, String::new())).await.status, StatusCode::NO_CONTENT);
    for (who, tok) in [("the same project", &member), ("another project", &other)] {
        let r = app.send(create(tok, id)).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{who}: {}", r.body);
    }
    let upper = id.to_ascii_uppercase();
    assert_eq!(app.send(create(&other, &upper)).await.status, StatusCode::CONFLICT, "ids are compared in one spelling");
    assert!(app.state.db.image(id).await.unwrap().is_none());

    // A tus upload admitted before an import job of the same image was queued (as a Glance PUT's
    // would be, racing it) completes, but no second import starts; once the job exists, a new
    // tus upload for the image is refused at creation.
    let image = app
        .state
        .db
        .create_image(&NewImage {
            name: "busy".into(),
            disk_format: Some(domain::DiskFormat::Raw),
            owner: Some(p1.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let new_upload = || {
        app.send(
            Request::post("/uploads")
                .header("x-auth-token", member.as_str())
                .header("tus-resumable", "1.0.0")
                .header("upload-length", "4")
                .header("upload-metadata", format!("image_id {}", b64(&image.id)))
                .body(Body::empty())
                .unwrap(),
        )
    };
    let created = new_upload().await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let job = records::NewJob::import(image.id.clone(), "nowhere");
    let job = app.state.db.create_job(&job).await.unwrap();
    // Test set-up: the job is running on "another worker" (so no worker here claims and ends it).
    sqlx::query("UPDATE jobs SET status = 'running' WHERE id = ?").bind(&job.id).execute(app.state.db.pool()).await.unwrap();
    let refused = new_upload().await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains("already queued or running"), "{}", refused.body);
    let url = created.headers["location"].to_str().unwrap().to_owned();
    let patch = Request::patch(url.as_str())
        .header("x-auth-token", member.as_str())
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(Body::from(vec![1u8; 4]))
        .unwrap();
    assert_eq!(app.send(patch).await.status, StatusCode::NO_CONTENT);
    // Wait for the hand-over (the upload is marked complete after its import was asked for).
    let upload_id = url.rsplit('/').next().unwrap().to_owned();
    for _ in 0..200 {
        match app.state.db.upload_by_id(&upload_id).await.unwrap() {
            Some(row) if row.completed_at.is_none() => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            _ => break,
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let imports = app.state.db.jobs_for_image(&image.id).await.unwrap().into_iter().filter(|j| j.kind == JobKind::Import).count();
    assert_eq!(imports, 1, "one import per image");
}

/// The audit log pages backwards, and offers older entries only when there are some (the link
/// used to lead to an empty page).
#[tokio::test]
async fn the_audit_log_offers_older_entries_only_when_there_are_some() {
    let app = common::spawn_app().await;
    seed_accounts(&app).await;
    let admin = Auth::Cookie(app.sign_in("admin", PASSWORD).await);
    for i in 0..150 {
        let detail = format!("entry {i}");
        let entry = records::NewAudit {
            actor_id: None,
            actor_name: "robot",
            action: "test.page",
            target_type: "",
            target_id: "",
            detail: &detail,
            remote_addr: "127.0.0.1",
            outcome: "ok",
        };
        app.state.db.append_audit(&entry).await.unwrap();
    }
    let first = app.call("admin_list_audit", "action=test.", &admin).await.json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 100);
    assert_eq!(first["entries"][0]["detail"], "entry 149", "newest first");
    let before = first["older"].as_i64().expect("older entries exist");
    let second = app.call("admin_list_audit", &format!("action=test.&before={before}"), &admin).await.json();
    assert_eq!(second["entries"].as_array().unwrap().len(), 50);
    assert_eq!(second["entries"][0]["detail"], "entry 49");
    assert!(second["older"].is_null(), "the last page offers nothing older");
    // The page renders the link only when it leads somewhere.
    let Auth::Cookie(cookie) = &admin else { unreachable!() };
    let html = app.get("/admin/audit?action=test.", Some(cookie)).await.body;
    assert!(html.contains("id=\"audit-older\""));
    let html = app.get(&format!("/admin/audit?action=test.&before={before}"), Some(cookie)).await.body;
    assert!(html.contains("entry 49") && !html.contains("id=\"audit-older\""));
}
