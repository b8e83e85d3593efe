//! Shared set-up for the server's integration tests: a fresh data dir, the real router, helpers
//! to call server functions the way a browser or an API client does.
#![allow(dead_code)] // not every helper is used by the modules of this binary

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use server::{router, session_layer, AppState, Config};
use tower::ServiceExt;

pub mod binary;
pub mod ceph;

/// `len` bytes that neither compression nor qcow2 shrinks (xorshift64 from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for c in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    out
}

/// Local backends named `names`, each in its own folder under `root`.
pub fn local_backends(root: &std::path::Path, names: &[&str]) -> Vec<storage::BackendConfig> {
    names
        .iter()
        .map(|name| storage::BackendConfig {
            name: (*name).into(),
            kind: storage::BackendKind::Local,
            path: Some(root.join(name)),
            ..Default::default()
        })
        .collect()
}

pub const HOST: &str = "hangar.test";
pub const ORIGIN: &str = "http://hangar.test";

pub struct TestApp {
    pub _dir: tempfile::TempDir,
    pub state: AppState,
    pub router: axum::Router,
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    spawn_app_with(dir, config).await
}

/// A Hangar on `config` (whose paths the caller put under `dir`, kept alive with the app).
pub async fn spawn_app_with(dir: tempfile::TempDir, config: Config) -> TestApp {
    let state = AppState::open(config).await.unwrap();
    let sessions = session_layer(&state).await.unwrap();
    let router = router(state.clone(), sessions);
    TestApp { _dir: dir, state, router }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `name=value` pair of the session cookie this reply sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("hangar_session="))
            .map(|c| c.split(';').next().unwrap_or_default().to_owned())
    }
}

impl TestApp {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    pub async fn get(&self, uri: &str, cookie: Option<&str>) -> Reply {
        let mut b = Request::get(uri).header(header::HOST, HOST);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    /// A Glance API request (`uri` under `/image`) with an API token, as the OpenStack clients send.
    pub async fn glance(&self, tok: &str, method: &str, uri: &str, ctype: &str, body: Body) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("/image{uri}"))
            .header(header::HOST, HOST)
            .header("x-auth-token", tok)
            .header(header::CONTENT_TYPE, ctype);
        self.send(req.body(body).unwrap()).await
    }

    /// Calls a server function as the hydrated app does (same-origin fetch, JSON answer).
    pub async fn call(&self, endpoint: &str, form: &str, auth: &Auth) -> Reply {
        let mut b = Request::post(format!("/api/{endpoint}"))
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        match auth {
            Auth::Anonymous => b = b.header(header::ORIGIN, ORIGIN),
            Auth::Cookie(c) => b = b.header(header::ORIGIN, ORIGIN).header(header::COOKIE, c.as_str()),
            Auth::Token(t) => b = b.header("x-auth-token", t.as_str()),
        }
        self.send(b.body(Body::from(form.to_owned())).unwrap()).await
    }

    /// Signs in through the server function and returns the session cookie.
    pub async fn sign_in(&self, username: &str, password: &str) -> String {
        let form = format!("username={username}&password={password}");
        let reply = self.call("sign_in", &form, &Auth::Anonymous).await;
        assert_eq!(reply.status, StatusCode::OK, "sign in as {username}: {}", reply.body);
        reply.session_cookie().expect("a session cookie")
    }
}

#[derive(Clone, Debug)]
pub enum Auth {
    Anonymous,
    Cookie(String),
    Token(String),
}

pub const PASSWORD: &str = "correct-horse-battery";

/// Users for policy tests: `admin` (cloud admin), `reader` and `member` of project `p1`,
/// `other` (member of `p2`). Returns the project ids.
pub async fn seed_accounts(app: &TestApp) -> (String, String) {
    let db = &app.state.db;
    let p1 = db.create_project("p1", "").await.unwrap();
    let p2 = db.create_project("p2", "").await.unwrap();
    accounts::create_user(db, "admin", PASSWORD, true).await.unwrap();
    for (name, project, role) in [("reader", &p1, "reader"), ("member", &p1, "member"), ("other", &p2, "member")] {
        let u = accounts::create_user(db, name, PASSWORD, false).await.unwrap();
        db.grant_role(&u.id, &project.id, role).await.unwrap();
    }
    (p1.id, p2.id)
}

/// An API token for `username` scoped to `project_id`.
pub async fn token(app: &TestApp, username: &str, project_id: &str) -> String {
    let db = &app.state.db;
    let user = db.user_by_name(username).await.unwrap().unwrap();
    accounts::issue_token(db, &user, project_id, "test").await.unwrap().secret
}

/// Creates a tus upload of `length` bytes for image `id` (the `image_id` metadata, plus
/// `extra` pairs such as `store`), as any tus client does.
pub async fn tus_create(app: &TestApp, tok: &str, id: &str, length: u64, extra: &[(&str, &str)]) -> Reply {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut meta = format!("image_id {}", b64(id));
    for (k, v) in extra {
        meta.push_str(&format!(",{k} {}", b64(v)));
    }
    let req = Request::post("/uploads")
        .header(header::HOST, HOST)
        .header("x-auth-token", tok)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .header("upload-metadata", meta)
        .body(Body::empty())
        .unwrap();
    app.send(req).await
}

/// Sends `bytes` to image `id` as one tus upload: the creation, then one PATCH.
pub async fn tus_upload(app: &TestApp, tok: &str, id: &str, bytes: Vec<u8>) {
    let created = tus_create(app, tok, id, bytes.len() as u64, &[("filename", "upload")]).await;
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
/// import task (which records a package's other disks after the first is active) is done. The
/// tasks are read first: an image read after its task was seen done shows that task's work.
pub async fn settled(app: &TestApp, tok: &str, id: &str) -> serde_json::Value {
    for _ in 0..600 {
        let tasks = app.glance(tok, "GET", &format!("/v2/images/{id}/tasks"), "application/json", Body::empty()).await.json();
        let img = app.glance(tok, "GET", &format!("/v2/images/{id}"), "application/json", Body::empty()).await.json();
        let running =
            tasks["tasks"].as_array().is_some_and(|t| t.iter().any(|t| matches!(t["status"].as_str(), Some("pending" | "processing"))));
        if !running && !matches!(img["status"].as_str(), Some("queued" | "uploading" | "saving" | "importing")) {
            return img;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("image {id} did not settle");
}
