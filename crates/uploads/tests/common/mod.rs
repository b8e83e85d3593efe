//! Shared set-up for the tus tests: a temp data dir with a real SQLite database, real users,
//! projects and roles, the uploads router, and a completion callback that records what it gets.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Arc, Mutex};
use std::time::Duration;

use accounts::Authn;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use records::Db;
use sha2::Digest;
use tower::ServiceExt;
use uploads::{CompletedUpload, OnComplete, UploadConfig, Uploads};

pub const PASSWORD: &str = "correct-horse-battery";

/// The people in every test: `admin`; `member` and `member2` (members of p1); `reader` (reader
/// of p1); `other` (member of p2).
pub struct People {
    pub admin: Authn,
    pub member: Authn,
    pub member2: Authn,
    pub reader: Authn,
    pub other: Authn,
    pub p1: String,
    pub p2: String,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: Db,
    pub config: UploadConfig,
    pub uploads: Arc<Uploads>,
    pub router: axum::Router,
    pub people: People,
    pub done: Arc<Mutex<Vec<CompletedUpload>>>,
    pub done_rx: tokio::sync::mpsc::UnboundedReceiver<CompletedUpload>,
}

pub fn recorder() -> (OnComplete, Arc<Mutex<Vec<CompletedUpload>>>, tokio::sync::mpsc::UnboundedReceiver<CompletedUpload>) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let d = Arc::clone(&done);
    let on_complete: OnComplete = Arc::new(move |c: CompletedUpload| {
        d.lock().unwrap().push(c.clone());
        let _ = tx.send(c);
    });
    (on_complete, done, rx)
}

async fn authn(db: &Db, username: &str, project: &str) -> Authn {
    let user = db.user_by_name(username).await.unwrap().unwrap();
    let (principal, scopes) =
        accounts::principal_for_session(db, &user.id, user.session_epoch, Some(project)).await.unwrap().expect("a valid session");
    Authn { principal: Some(principal), scopes, remote_addr: "127.0.0.1".into(), via_token: false }
}

pub async fn seed(db: &Db) -> People {
    let p1 = db.create_project("p1", "").await.unwrap();
    let p2 = db.create_project("p2", "").await.unwrap();
    accounts::create_user(db, "admin", PASSWORD, true).await.unwrap();
    for (name, project, role) in
        [("reader", &p1, "reader"), ("member", &p1, "member"), ("member2", &p1, "member"), ("other", &p2, "member")]
    {
        let u = accounts::create_user(db, name, PASSWORD, false).await.unwrap();
        db.grant_role(&u.id, &project.id, role).await.unwrap();
    }
    People {
        admin: authn(db, "admin", &p1.id).await,
        member: authn(db, "member", &p1.id).await,
        member2: authn(db, "member2", &p1.id).await,
        reader: authn(db, "reader", &p1.id).await,
        other: authn(db, "other", &p2.id).await,
        p1: p1.id,
        p2: p2.id,
    }
}

impl Env {
    pub async fn new() -> Env {
        Self::with(|_| {}).await
    }

    /// A fresh environment; `tweak` adjusts the configuration.
    pub async fn with(tweak: impl FnOnce(&mut UploadConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("hangar.db")).await.unwrap();
        let people = seed(&db).await;
        let mut config = UploadConfig::new(dir.path());
        tweak(&mut config);
        let (on_complete, done, done_rx) = recorder();
        let uploads = Uploads::open(db.clone(), config.clone(), on_complete).await.unwrap();
        let router = uploads::router(Arc::clone(&uploads));
        Env { dir, db, config, uploads, router, people, done, done_rx }
    }

    /// Drops the service and builds a new one on the same database and directory, as a server
    /// restart does (the in-memory state is gone).
    pub async fn restart(&mut self) {
        let (on_complete, done, done_rx) = recorder();
        // Keep what the old instance delivered, so "exactly once" covers both lives.
        done.lock().unwrap().extend(self.done.lock().unwrap().drain(..));
        let db = Db::open_sqlite(&self.dir.path().join("hangar.db")).await.unwrap();
        self.uploads = Uploads::open(db.clone(), self.config.clone(), on_complete).await.unwrap();
        self.router = uploads::router(Arc::clone(&self.uploads));
        self.db = db;
        self.done = done;
        self.done_rx = done_rx;
    }

    pub async fn send(&self, who: Option<&Authn>, mut req: Request<Body>) -> Reply {
        if let Some(a) = who {
            req.extensions_mut().insert(a.clone());
        }
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// POST /uploads with Upload-Length (and optional extra headers).
    pub async fn create(&self, who: &Authn, length: u64, extra: &[(&str, &str)]) -> Reply {
        let mut b = tus(Method::POST, "/uploads").header("upload-length", length.to_string());
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(Some(who), b.body(Body::empty()).unwrap()).await
    }

    /// POST /uploads with `Upload-Concat: final;<urls>`.
    pub async fn create_final(&self, who: &Authn, urls: &[&str]) -> Reply {
        let concat = format!("final;{}", urls.join(" "));
        self.send(Some(who), tus(Method::POST, "/uploads").header("upload-concat", concat).body(Body::empty()).unwrap()).await
    }

    /// Creates an upload and returns its path (`/uploads/<id>`).
    pub async fn created(&self, who: &Authn, length: u64) -> String {
        let r = self.create(who, length, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.header("location")
    }

    pub async fn head(&self, who: &Authn, url: &str) -> Reply {
        self.send(Some(who), tus(Method::HEAD, url).body(Body::empty()).unwrap()).await
    }

    pub async fn patch(&self, who: &Authn, url: &str, offset: u64, data: &[u8]) -> Reply {
        self.patch_with(who, url, offset, data, &[]).await
    }

    pub async fn patch_with(&self, who: &Authn, url: &str, offset: u64, data: &[u8], extra: &[(&str, &str)]) -> Reply {
        let mut b = tus(Method::PATCH, url)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .header("content-length", data.len().to_string());
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(Some(who), b.body(Body::from(data.to_vec())).unwrap()).await
    }

    pub async fn delete(&self, who: &Authn, url: &str) -> Reply {
        self.send(Some(who), tus(Method::DELETE, url).body(Body::empty()).unwrap()).await
    }

    /// Waits for the next completion callback (bounded: the test fails rather than hangs).
    pub async fn next_completion(&mut self) -> CompletedUpload {
        tokio::time::timeout(Duration::from_secs(30), self.done_rx.recv())
            .await
            .expect("a completion within 30 s")
            .expect("the callback channel is open")
    }

    pub fn completions(&self) -> Vec<CompletedUpload> {
        self.done.lock().unwrap().clone()
    }

    /// Files in the upload directory.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&self.config.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

pub fn tus(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri).header("tus-resumable", "1.0.0")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in a {} reply: {:?} {}", self.status, self.headers, self.body))
            .to_str()
            .unwrap()
            .to_owned()
    }

    pub fn offset(&self) -> u64 {
        self.header("upload-offset").parse().unwrap()
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    digests::hex(&sha2::Sha256::digest(data))
}

pub fn sha256_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data))
}

/// Asserts a completion carries the right file, length and all three hashes of `data`.
pub fn assert_completed(c: &CompletedUpload, data: &[u8]) {
    assert_eq!(c.length, data.len() as u64);
    assert_eq!(c.sha256.as_deref(), Some(sha256_hex(data).as_str()), "sha256");
    assert_eq!(c.md5.as_deref(), Some(digests::hex(&md5::Md5::digest(data)).as_str()), "md5");
    assert_eq!(c.sha512.as_deref(), Some(digests::hex(&sha2::Sha512::digest(data)).as_str()), "sha512");
    assert_eq!(std::fs::read(&c.path).unwrap(), data, "the file has the uploaded bytes");
}
