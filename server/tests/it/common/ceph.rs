//! The real single-node Ceph (RADOS Gateway, S3) the tests store into.
//!
//! scripts/test.sh starts one cluster and exports `S3_ENDPOINT`, `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`; a test binary run alone starts its own on port 17680 and removes it
//! when the test process exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

#[derive(Clone, Debug)]
pub struct Cluster {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

pub fn cluster() -> Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            if let (Some(endpoint), Some(access_key), Some(secret_key)) =
                (var("S3_ENDPOINT"), var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
            {
                return Cluster { endpoint, access_key, secret_key };
            }
            let state = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ceph-server-tests");
            let out = Command::new("bash")
                .arg(scripts().join("ceph-up.sh"))
                .arg(&state)
                .arg("17680")
                .env("CEPH_OBJECTSTORE", "memstore")
                .env("CEPH_STORE_MB", "1024")
                .env("CEPH_UP_TIMEOUT", "60")
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/ceph-up.sh");
            assert!(out.status.success(), "scripts/ceph-up.sh failed: {}", out.status);
            let text = String::from_utf8(out.stdout).unwrap();
            let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).unwrap().to_owned();
            // Stop and remove the cluster once this process is gone.
            let watchdog = format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; exec bash '{}' '{}' --purge",
                std::process::id(),
                scripts().join("ceph-down.sh").display(),
                state.display()
            );
            let _ = Command::new("setsid").args(["-f", "sh", "-c", &watchdog]).stdin(Stdio::null()).status();
            Cluster { endpoint: get("S3_ENDPOINT"), access_key: get("AWS_ACCESS_KEY_ID"), secret_key: get("AWS_SECRET_ACCESS_KEY") }
        })
        .clone()
}
