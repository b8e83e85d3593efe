//! The real single-node Ceph (mon + memstore OSD + radosgw on loopback, `scripts/ceph-up.sh`)
//! that the Ceph tests of `crates/storage` and `server` store into: one helper for both.
//!
//! Which cluster ([`shared`]):
//! - If `S3_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `CEPH_CONF` and `CEPH_RBD_POOL` are set (scripts/test.sh
//!   starts one cluster for the whole run and exports what ceph-up.sh prints), that one.
//! - Otherwise the caller's own, started in a state directory on a port of its choosing and
//!   stopped and removed about a second after the test run ends, however it ends. A test run
//!   is the test process under `cargo test`, and the whole `cargo nextest run` under nextest,
//!   whose tests are processes of their own: the first to need the cluster starts it under a
//!   file lock, the others find it running (ceph-up.sh reuses a healthy cluster), and it stops
//!   when nextest exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// How to reach a cluster's S3 gateway.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// The cluster's `ceph.conf` (for librados and the `ceph`/`rbd` CLIs; auth is none).
    pub conf: PathBuf,
    /// An RBD pool, created and initialised by ceph-up.sh ([`RBD_POOL`] in clusters started here).
    pub rbd_pool: String,
}

/// The RBD pool of the clusters started here (scripts/test.sh asks for the same).
pub const RBD_POOL: &str = "hangar-rbd";

/// The repository's `scripts/` directory.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// The cluster scripts/test.sh exported, or else this test run's own in `state` on `port`
/// (see the module docs). Callers keep the answer (a `OnceLock`): each call may start one.
pub fn shared(state: &Path, port: u16) -> Cluster {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(endpoint), Some(access_key), Some(secret_key), Some(conf), Some(rbd_pool)) =
        (var("S3_ENDPOINT"), var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"), var("CEPH_CONF"), var("CEPH_RBD_POOL"))
    {
        return Cluster { endpoint, access_key, secret_key, conf: conf.into(), rbd_pool };
    }
    let cluster = start(state, port);
    stop_when_the_run_ends(state);
    cluster
}

/// Starts (or finds running) a cluster in `state` on `port` (memstore, 1 GiB), under a lock
/// beside `state`, and parses the KEY=VALUE lines ceph-up.sh prints.
pub fn start(state: &Path, port: u16) -> Cluster {
    start_sized(state, port, 1024)
}

/// [`start`] with a memstore of `store_mb` MiB (the OSD's RAM grows with what is stored).
pub fn start_sized(state: &Path, port: u16, store_mb: u32) -> Cluster {
    let started = Instant::now();
    // `-o`: the daemons ceph-up.sh leaves running must not inherit (and so keep) the lock.
    let out = Command::new("flock")
        .arg("-o")
        .arg(lock_path(state))
        .arg("bash")
        .arg(scripts().join("ceph-up.sh"))
        .arg(state)
        .arg(port.to_string())
        .env("CEPH_OBJECTSTORE", "memstore")
        .env("CEPH_STORE_MB", store_mb.to_string())
        .env("CEPH_UP_TIMEOUT", "60")
        .env("CEPH_RBD_POOL", RBD_POOL)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/ceph-up.sh under flock");
    assert!(out.status.success(), "scripts/ceph-up.sh failed ({}); see its messages above", out.status);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("ceph-up.sh printed no {k}: {text}"))
            .to_owned()
    };
    eprintln!("ceph: cluster on port {port} ready in {:.1}s", started.elapsed().as_secs_f32());
    Cluster {
        endpoint: get("S3_ENDPOINT"),
        access_key: get("AWS_ACCESS_KEY_ID"),
        secret_key: get("AWS_SECRET_ACCESS_KEY"),
        conf: get("CEPH_CONF").into(),
        rbd_pool: get("CEPH_RBD_POOL"),
    }
}

/// A detached process that stops and removes the cluster in `state` once the test run is over:
/// this process, or under cargo-nextest (`NEXTEST_RUN_ID`) the nextest process that runs it.
pub fn stop_when_the_run_ends(state: &Path) {
    let run = if std::env::var_os("NEXTEST_RUN_ID").is_some() { std::os::unix::process::parent_id() } else { std::process::id() };
    let script = format!(
        "while kill -0 {run} 2>/dev/null; do sleep 1; done; exec flock -o '{lock}' bash '{down}' '{state}' --purge",
        lock = lock_path(state).display(),
        down = scripts().join("ceph-down.sh").display(),
        state = state.display()
    );
    // `setsid -f` forks the watchdog into its own session (a ctrl-c to the test's process group
    // does not reach it) and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the ceph watchdog");
    assert!(started.success(), "setsid -f: {started}");
}

fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    if let Some(parent) = state.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    state.with_file_name(name)
}
