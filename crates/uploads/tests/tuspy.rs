//! A real tus client against a real socket: tuspy (PyPI, installed into /work/main/.venv by
//! `scripts/setup.sh test`) uploads a file in chunks with checksums, is interrupted, and a new
//! client resumes from the URL it stored. Fails (does not skip) when the venv is missing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use accounts::Authn;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use common::*;

/// Stands in for the server's authentication middleware: `X-Test-User: member` is the member.
async fn test_auth(State(users): State<Arc<Vec<(String, Authn)>>>, mut req: Request, next: Next) -> Response {
    let who = req.headers().get("x-test-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some((_, authn)) = users.iter().find(|(name, _)| Some(name) == who.as_ref()) {
        req.extensions_mut().insert(authn.clone());
    }
    next.run(req).await
}

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `scripts/setup.sh test` (it installs tuspy from scripts/py-requirements.txt)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_interrupts_and_resumes() {
    let python = python();
    let mut env = Env::new().await;
    let users = Arc::new(vec![("member".to_owned(), env.people.member.clone())]);
    let app = env.router.clone().layer(middleware::from_fn_with_state(users, test_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("image.raw");
    let chunk = 1 << 20;
    let bytes = data(5 * chunk + 12_345, 42);
    std::fs::write(&file, &bytes).unwrap();
    let store = work.path().join("urls.json");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tuspy_client.py");
    let endpoint = format!("http://{addr}/uploads");
    let args: Vec<String> = vec![
        script.display().to_string(),
        endpoint,
        file.display().to_string(),
        store.display().to_string(),
        chunk.to_string(),
        "2".into(),
        "X-Test-User:member".into(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(python).args(args).output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "tuspy failed: {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["interrupted_at"], 2 * chunk as u64);
    assert_eq!(report["resumed_from"], 2 * chunk as u64, "the new client resumed where the server stood");
    assert_eq!(report["final_offset"], bytes.len() as u64);

    let done = env.next_completion().await;
    assert!(report["url"].as_str().unwrap().ends_with(&done.id));
    assert_eq!(done.metadata["filename"], "image.raw");
    assert_eq!(done.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
    assert_completed(&done, &bytes);
    assert_eq!(env.completions().len(), 1);
    server.abort();
}
