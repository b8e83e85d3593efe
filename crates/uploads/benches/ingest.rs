//! Ingest benchmark (not a timed test): run with `cargo bench -p uploads --bench ingest`.
//!
//! In one run, on this machine's disk:
//! 1. a 2 GiB random file is written through the tus API over loopback (64 MiB PATCHes, with and
//!    without `Upload-Checksum: sha256`), to a server that keeps SHA-256, MD5 and SHA-512 of the
//!    whole upload running (the default) and to one that keeps SHA-256 only, and compared with
//!    `dd bs=8M conv=fdatasync` of the same bytes (target: at least 0.8× dd's throughput);
//! 2. a fresh server process takes 4 parallel 2 GiB uploads and its peak RSS (VmHWM) is read
//!    (target: at most 150 MiB).
//!
//! The server runs as a child process (this binary with `--serve DIR`) so that its RSS is its
//! own. Files go to `BENCH_TMP` (default `<workspace>/target/bench-tmp`), removed at the end;
//! at most about 10 GiB are on disk at once. `BENCH_SIZE` (bytes) and `BENCH_ROUNDS` (default 3)
//! override the file size and the number of dd/tus rounds (interleaved; medians are compared,
//! since this shared machine's disk speed swings from run to run), `BENCH_PATCH_MIB` the PATCH
//! size (default: the server's per-request limit, 64 MiB).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest;

/// I/O size for making and hashing files here.
const CHUNK: usize = 8 << 20;
/// PATCH size unless `BENCH_PATCH_MIB` says otherwise: the server's default per-request limit
/// (`DEFAULT_MAX_REQUEST_BODY`), what a tus client that sends as much per request as the server
/// accepts uses.
const DEFAULT_PATCH: usize = uploads::DEFAULT_MAX_REQUEST_BODY as usize;
const DEFAULT_SIZE: u64 = 2 << 30;
const PARALLEL: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let dir = PathBuf::from(args.get(i + 1).expect("--serve DIR"));
        let hashes = match args.get(i + 2).map(String::as_str) {
            Some("sha256") => uploads::UploadHashes::Sha256,
            _ => uploads::UploadHashes::All,
        };
        serve(&dir, hashes);
        return;
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let size: u64 = std::env::var("BENCH_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SIZE);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let tmp = std::env::var_os("BENCH_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let result = std::panic::catch_unwind(|| run(&tmp, size, rounds));
    let _ = std::fs::remove_dir_all(&tmp);
    if result.is_err() {
        std::process::exit(1);
    }
}

fn patch_size() -> usize {
    std::env::var("BENCH_PATCH_MIB").ok().and_then(|s| s.parse::<usize>().ok()).map_or(DEFAULT_PATCH, |m| m.max(1) << 20)
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn run(tmp: &Path, size: u64, rounds: usize) {
    println!("ingest bench: {} MiB file, {rounds} round(s), {} MiB PATCHes, dir {}", size >> 20, patch_size() >> 20, tmp.display());
    println!("  load average at start: {} ({} CPUs)", load_average(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    let src = tmp.join("source.bin");
    let t = Instant::now();
    write_random(&src, size);
    println!("  generated the source file in {:.1} s", t.elapsed().as_secs_f64());

    // ---- 1: single upload vs dd -------------------------------------------------------------
    // Two servers: the default (SHA-256, MD5 and SHA-512 of the whole upload) and SHA-256 only;
    // clients with a SHA-256 `Upload-Checksum` on every PATCH (as the browser uploader sends)
    // and without (as tuspy and most API clients do).
    let servers = [Server::start(&tmp.join("server-all"), "all"), Server::start(&tmp.join("server-sha256"), "sha256")];
    let cases: [(&str, usize, bool); 3] =
        [("hashes all, no checksums", 0, false), ("hashes all, checksums", 0, true), ("hashes sha256, checksums", 1, true)];
    let mut dds = Vec::new();
    let mut tuses: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut overs: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 1..=rounds {
        let out = tmp.join("dd.out");
        let t = Instant::now();
        let status = Command::new("dd")
            .arg(format!("if={}", src.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=8M", "conv=fdatasync", "status=none"])
            .status()
            .expect("dd runs");
        let dd = t.elapsed();
        assert!(status.success());
        std::fs::remove_file(&out).unwrap();
        println!("  round {round}: dd conv=fdatasync          {:>8.1} MiB/s ({:.2} s)", mib_s(size, dd), dd.as_secs_f64());
        dds.push(dd);

        for (i, &(name, which, checksums)) in cases.iter().enumerate() {
            let server = &servers[which];
            let cpu0 = server.cpu_s();
            let t = Instant::now();
            let id = upload(server.addr, &src, size, checksums);
            let tus = t.elapsed();
            let (done_id, sha) = server.completed();
            let handed_over = t.elapsed();
            let cpu1 = server.cpu_s();
            assert_eq!(done_id, id);
            println!(
                "  round {round}: tus, {name:<25} {:>8.1} MiB/s ({:.2} s; handed over after {:.2} s; server CPU {:.1} s user + {:.1} s system)",
                mib_s(size, tus),
                tus.as_secs_f64(),
                handed_over.as_secs_f64(),
                cpu1.0 - cpu0.0,
                cpu1.1 - cpu0.1
            );
            if round == 1 {
                assert_eq!(sha, sha256_file(&src), "the server's SHA-256 is the file's");
            }
            println!(
                "           ratio to this round's dd: {:.2}x (to the hand-over: {:.2}x)",
                dd.as_secs_f64() / tus.as_secs_f64(),
                dd.as_secs_f64() / handed_over.as_secs_f64()
            );
            tuses[i].push(tus);
            overs[i].push(handed_over);
        }
    }
    let hwm1 = servers[0].vm_hwm_kib();
    for server in servers {
        server.stop();
    }
    // The disk's speed swings between runs on this shared machine, so medians are compared.
    let dd = median(&dds);
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let tus = median(&tuses[i]);
        let over = median(&overs[i]);
        let ratio = dd.as_secs_f64() / tus.as_secs_f64();
        println!(
            "RESULT throughput, {name}: tus {:.1} MiB/s vs dd {:.1} MiB/s (medians of {rounds}) = {ratio:.2}x (target >= 0.80x) {}; \
             hashes done and handed over at {:.1} MiB/s = {:.2}x dd",
            mib_s(size, tus),
            mib_s(size, dd),
            if ratio >= 0.8 { "OK" } else { "BELOW TARGET" },
            mib_s(size, over),
            dd.as_secs_f64() / over.as_secs_f64()
        );
    }
    println!("  server VmHWM during single uploads: {:.1} MiB", hwm1 as f64 / 1024.0);

    // ---- 2: RSS with parallel uploads ---------------------------------------------------------
    let server = Server::start(&tmp.join("server-parallel"), "all");
    let base = server.vm_hwm_kib();
    let t = Instant::now();
    let addr = server.addr;
    let threads: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let src = src.clone();
            std::thread::spawn(move || upload(addr, &src, size, true))
        })
        .collect();
    let ids: Vec<String> = threads.into_iter().map(|t| t.join().expect("upload thread")).collect();
    let elapsed = t.elapsed();
    for _ in 0..PARALLEL {
        let (id, _) = server.completed();
        assert!(ids.contains(&id));
    }
    let hwm = server.vm_hwm_kib();
    server.stop();
    println!(
        "  {PARALLEL} parallel uploads: {:.1} MiB/s together ({:.1} s); server VmHWM at start {:.1} MiB",
        mib_s(size * PARALLEL as u64, elapsed),
        elapsed.as_secs_f64(),
        base as f64 / 1024.0
    );
    println!(
        "RESULT memory: server VmHWM with {PARALLEL} parallel {} MiB uploads = {:.1} MiB (target <= 150 MiB) {}",
        size >> 20,
        hwm as f64 / 1024.0,
        if hwm <= 150 * 1024 { "OK" } else { "ABOVE TARGET" }
    );
    println!("  load average at the end: {}", load_average());
}

/// Pseudo-random bytes (xorshift64*), written in 8 MiB blocks: incompressible for any disk and
/// much faster to make than /dev/urandom.
fn write_random(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// ---- a minimal HTTP/1.1 tus client --------------------------------------------------------------

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn request(conn: &mut BufReader<TcpStream>, head: &str, body: &[u8]) -> Reply {
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let reply = Reply { status, headers };
    let len: usize = reply.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    assert!(reply.status < 300, "HTTP {}: {}", reply.status, String::from_utf8_lossy(&body));
    reply
}

/// Uploads `src` in [`patch_size`] PATCHes, with SHA-256 checksums if `checksums`; the next chunk
/// is read (and hashed) on a helper thread while the current one is sent (as a pipelining
/// client would).
fn upload(addr: std::net::SocketAddr, src: &Path, size: u64, checksums: bool) -> String {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut conn = BufReader::new(stream);
    let created = request(
        &mut conn,
        &format!("POST /uploads HTTP/1.1\r\nHost: bench\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {size}\r\nContent-Length: 0\r\n\r\n"),
        &[],
    );
    let location = created.header("location").expect("Location").to_owned();

    let (tx, rx) = mpsc::sync_channel::<(u64, Arc<Vec<u8>>, String)>(1);
    let path = src.to_owned();
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        let mut offset = 0u64;
        while offset < size {
            let n = (size - offset).min(patch_size() as u64) as usize;
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, offset).unwrap();
            let sum = if checksums {
                format!("Upload-Checksum: sha256 {}\r\n", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&buf)))
            } else {
                String::new()
            };
            tx.send((offset, Arc::new(buf), sum)).unwrap();
            offset += n as u64;
        }
    });
    for (offset, buf, sum) in rx {
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: bench\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: {offset}\r\n{sum}Content-Length: {}\r\n\r\n",
            buf.len()
        );
        let r = request(&mut conn, &head, &buf);
        assert_eq!(r.header("upload-offset").and_then(|v| v.parse::<u64>().ok()), Some(offset + buf.len() as u64));
    }
    reader.join().unwrap();
    location.rsplit('/').next().unwrap().to_owned()
}

// ---- the server child --------------------------------------------------------------------------

struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &Path, hashes: &str) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(dir)
            .arg(hashes)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(60)).expect("the server starts");
        let addr = first.strip_prefix("LISTEN ").expect("LISTEN line").parse().unwrap();
        Server { child, addr, lines }
    }

    /// The next completion the server reported: (id, sha256).
    fn completed(&self) -> (String, String) {
        let line = self.lines.recv_timeout(Duration::from_secs(600)).expect("a completion");
        let mut it = line.split(' ');
        assert_eq!(it.next(), Some("COMPLETE"), "{line}");
        (it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
    }

    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// CPU seconds (user, system) the server has used so far.
    fn cpu_s(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
        let tick = 100.0; // USER_HZ on Linux
        (f.get(11).copied().unwrap_or(0.0) / tick, f.get(12).copied().unwrap_or(0.0) / tick)
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The server side: the uploads router on 127.0.0.1:0 where every request is a project member,
/// and a consumer that reports each completion and deletes the file. Exits when stdin closes.
fn serve(dir: &Path, hashes: uploads::UploadHashes) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = records::Db::open_sqlite(&dir.join("hangar.db")).await.unwrap();
        let project = db.create_project("bench", "").await.unwrap();
        let user = accounts::create_user(&db, "bench", "bench-password", false).await.unwrap();
        db.grant_role(&user.id, &project.id, "member").await.unwrap();
        let (principal, scopes) =
            accounts::principal_for_session(&db, &user.id, user.session_epoch, Some(&project.id)).await.unwrap().unwrap();
        let authn = accounts::Authn { principal: Some(principal), scopes, remote_addr: "127.0.0.1".into(), via_token: true };

        let on_complete: uploads::OnComplete = Arc::new(|done: uploads::CompletedUpload| {
            // Report first: freeing 2 GiB of blocks takes a while and is not the upload's time.
            println!("COMPLETE {} {}", done.id, done.sha256.clone().unwrap_or_default());
            let _ = std::fs::remove_file(&done.path);
        });
        let config = uploads::UploadConfig { hashes, ..uploads::UploadConfig::new(dir) };
        let uploads = uploads::Uploads::open(db, config, on_complete).await.unwrap();
        let app = uploads::router(uploads).layer(axum::middleware::from_fn(
            move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                req.extensions_mut().insert(authn.clone());
                next.run(req)
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTEN {}", listener.local_addr().unwrap());
        let stop = async {
            // The parent closes our stdin to stop us.
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            })
            .await;
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await.unwrap();
    });
}
