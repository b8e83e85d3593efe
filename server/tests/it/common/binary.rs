//! The real `hangar` binary for tests that stop it as an operator or a crash would (SIGTERM,
//! SIGKILL): start it on a free loopback port with an administrator, wait for it, get a token.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hangar");
pub const ADMIN_PASSWORD: &str = "real-binary-test-password";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Hangar on `data` and `127.0.0.1:port` with the first administrator `admin` (project
/// `default`), its output appended to `log`, and `env` set (HANGAR_TEST_HOLD_AT only if given).
pub fn start(data: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("HANGAR_BOOTSTRAP_ADMIN", "admin")
        .env("HANGAR_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)
        .env("HANGAR_LOG", "info")
        .env_remove("HANGAR_TEST_HOLD_AT")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("the hangar binary")
}

/// Waits (bounded) until `/healthz` answers 200.
pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hangar did not become healthy");
}

/// An API token for `admin` in `default`, made with the CLI on the same data directory.
pub fn admin_token(data: &Path, name: &str) -> String {
    let out = Command::new(BIN).arg("--data-dir").arg(data).args(["token", "create", "admin", "default", name]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().find(|w| w.starts_with("hgr_")).expect("a token").to_owned()
}

pub async fn json(r: reqwest::Response) -> serde_json::Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}
