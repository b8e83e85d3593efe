//! Conversion benchmark: Hangar vs `qemu-img convert` on the same inputs, in one run.
//!
//! ```text
//! cargo run --release -p diskimage --bin convert-bench -- [--dir DIR] [--runs N] [--cases abcde]
//! ```
//!
//! Cases (docs/formats.md §4): (a) 4 GiB sparse raw with 1 GiB of data in 1 MiB runs → qcow2,
//! (b) 2 GiB random raw → qcow2, (c) 4 GiB dynamic VDI made from (a) → qcow2, (d) (a)'s qcow2
//! → raw, (e) (b) compressed with zlib (qemu-img `-c -W -m 8`). Both tools run as child
//! processes, alternating, after a `sync`, without fsync of the output (qemu-img's default);
//! the table shows the median wall and CPU (user+system) time of the runs, the ratios
//! Hangar/qemu-img (also of the fastest runs, the least disturbed on a shared machine), and the peak RSS of each (GNU time's maximum RSS, or VmHWM from /proc). Each case's outputs are also checked with `qemu-img compare`.

#[cfg(not(feature = "convert"))]
fn main() {
    eprintln!("convert-bench needs the `convert` feature");
    std::process::exit(2);
}

#[cfg(feature = "convert")]
fn main() {
    std::process::exit(bench::main());
}

#[cfg(feature = "convert")]
mod bench {
    use std::fs::{self, File};
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use diskimage::convert::{convert_file, Compression, ConvertOptions, NoProgress, TargetFormat};

    struct Case {
        id: char,
        what: &'static str,
        input: &'static str,
        qfmt: &'static str,
        to: TargetFormat,
        comp: Compression,
        qemu_extra: &'static [&'static str],
    }

    const CASES: [Case; 5] = [
        Case {
            id: 'a',
            what: "4 GiB sparse raw (1 GiB data) -> qcow2",
            input: "sparse4g.raw",
            qfmt: "raw",
            to: TargetFormat::Qcow2,
            comp: Compression::None,
            qemu_extra: &[],
        },
        Case {
            id: 'b',
            what: "2 GiB random raw -> qcow2",
            input: "rand2g.raw",
            qfmt: "raw",
            to: TargetFormat::Qcow2,
            comp: Compression::None,
            qemu_extra: &[],
        },
        Case {
            id: 'c',
            what: "4 GiB dynamic VDI of (a) -> qcow2",
            input: "sparse4g.vdi",
            qfmt: "vdi",
            to: TargetFormat::Qcow2,
            comp: Compression::None,
            qemu_extra: &[],
        },
        Case {
            id: 'd',
            what: "(a)'s qcow2 -> raw",
            input: "sparse4g.qcow2",
            qfmt: "qcow2",
            to: TargetFormat::Raw,
            comp: Compression::None,
            qemu_extra: &[],
        },
        Case {
            id: 'e',
            what: "(b) -> qcow2 zlib (qemu -c -W -m 8)",
            input: "rand2g.raw",
            qfmt: "raw",
            to: TargetFormat::Qcow2,
            comp: Compression::Zlib,
            qemu_extra: &["-c", "-W", "-m", "8"],
        },
    ];

    pub fn main() -> i32 {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().map(String::as_str) == Some("--child") {
            return child(&args[1..]);
        }
        let mut dir = PathBuf::from("/tmp/hangar-convert-bench");
        let mut runs = 3usize;
        let mut cases = "abcde".to_string();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match (a.as_str(), it.next()) {
                ("--dir", Some(v)) => dir = PathBuf::from(v),
                ("--runs", Some(v)) => runs = v.parse().unwrap_or(3).max(1),
                ("--cases", Some(v)) => cases = v.clone(),
                _ => {
                    eprintln!("usage: convert-bench [--dir DIR] [--runs N] [--cases abcde]");
                    return 2;
                }
            }
        }
        if let Err(e) = fixtures(&dir) {
            eprintln!("convert-bench: making fixtures: {e}");
            return 2;
        }
        println!(
            "{:<4} {:<40} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>7} {:>10} {:>10}  wall runs (hangar | qemu-img)",
            "case", "", "hangar s", "qemu s", "ratio", "best", "h cpu s", "q cpu s", "cpu", "hangar MiB", "qemu MiB"
        );
        let mut failed = false;
        for c in CASES.iter().filter(|c| cases.contains(c.id)) {
            let input = dir.join(c.input);
            let ext = if c.to == TargetFormat::Raw { "raw" } else { "qcow2" };
            let (oh, oq) = (dir.join(format!("out-hangar.{ext}")), dir.join(format!("out-qemu.{ext}")));
            let (mut th, mut tq, mut ch, mut cq, mut mh, mut mq) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0u64, 0u64);
            for r in 0..runs {
                // Alternate who goes first so page-cache and write-back effects even out.
                for who in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let out = if who == 0 { &oh } else { &oq };
                    let _ = fs::remove_file(out);
                    let _ = Command::new("sync").status();
                    let run = if who == 0 { run_hangar(c, &input, out) } else { run_qemu(c, &input, out) };
                    if who == 0 {
                        th.push(run.wall);
                        ch.push(run.cpu);
                        mh = mh.max(run.rss_kib);
                    } else {
                        tq.push(run.wall);
                        cq.push(run.cpu);
                        mq = mq.max(run.rss_kib);
                    }
                }
            }
            let ok = verify(c, &input, &oh);
            failed |= !ok;
            let (mh_s, mq_s) = (median(&mut th), median(&mut tq));
            let (ch_s, cq_s) = (median(&mut ch), median(&mut cq));
            // On a shared machine the fastest run is the least disturbed one: show it too.
            let (bh, bq) = (th[0], tq[0]);
            println!(
                "({})  {:<40} {:>9.3} {:>9.3} {:>6.2}x {:>6.2}x {:>8.2} {:>8.2} {:>6.2}x {:>10.1} {:>10.1}  {} | {}{}",
                c.id,
                c.what,
                mh_s,
                mq_s,
                mh_s / mq_s,
                bh / bq,
                ch_s,
                cq_s,
                ch_s / cq_s,
                mh as f64 / 1024.0,
                mq as f64 / 1024.0,
                fmt_runs(&th),
                fmt_runs(&tq),
                if ok { "" } else { "  OUTPUT MISMATCH" }
            );
            let _ = fs::remove_file(&oh);
            let _ = fs::remove_file(&oq);
        }
        i32::from(failed)
    }

    fn fmt_runs(v: &[f64]) -> String {
        v.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(" ")
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    /// One measured run: wall seconds, CPU seconds (user + system; NaN when unknown), peak RSS
    /// in KiB.
    struct Run {
        wall: f64,
        cpu: f64,
        rss_kib: u64,
    }

    /// Hangar in a child process (so its peak RSS is its own): this binary with `--child`.
    fn run_hangar(c: &Case, input: &Path, out: &Path) -> Run {
        let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let comp = match c.comp {
            Compression::None => "none",
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        };
        let to = if c.to == TargetFormat::Raw { "raw" } else { "qcow2" };
        let args = [exe.as_str(), "--child", input.to_str().unwrap_or(""), out.to_str().unwrap_or(""), to, comp];
        measure(&args, c.id)
    }

    fn run_qemu(c: &Case, input: &Path, out: &Path) -> Run {
        let to = if c.to == TargetFormat::Raw { "raw" } else { "qcow2" };
        let mut args: Vec<&str> = vec!["qemu-img", "convert"];
        args.extend_from_slice(c.qemu_extra);
        args.extend_from_slice(&["-f", c.qfmt, "-O", to, input.to_str().unwrap_or(""), out.to_str().unwrap_or("")]);
        measure(&args, c.id)
    }

    /// Runs `argv` under GNU time when it is installed (wall, user+sys, max RSS); otherwise
    /// times it here and polls VmHWM from /proc while it runs (VmHWM only grows, so the last
    /// sample is its peak within a few milliseconds).
    fn measure(argv: &[&str], id: char) -> Run {
        let time = Path::new("/usr/bin/time");
        let report = std::env::temp_dir().join(format!("convert-bench-time-{}", std::process::id()));
        let mut cmd = if time.exists() {
            let mut c = Command::new(time);
            c.args(["-f", "%e %U %S %M", "-o"]).arg(&report).args(argv);
            c
        } else {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        };
        let start = Instant::now();
        let mut child = match cmd.stdout(Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("case {id}: cannot run {}: {e}", argv[0]);
                return Run { wall: f64::NAN, cpu: f64::NAN, rss_kib: 0 };
            }
        };
        let status = format!("/proc/{}/status", child.id());
        let mut hwm = 0;
        loop {
            if let Ok(s) = fs::read_to_string(&status) {
                hwm = hwm.max(vm_hwm(&s));
            }
            match child.try_wait() {
                Ok(Some(st)) => {
                    if !st.success() {
                        eprintln!("case {id}: {} failed", argv[0]);
                    }
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => break,
            }
        }
        let wall = start.elapsed().as_secs_f64();
        if time.exists() {
            let text = fs::read_to_string(&report).unwrap_or_default();
            let _ = fs::remove_file(&report);
            let f: Vec<f64> = text.lines().last().unwrap_or("").split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if let [w, u, s, m] = f[..] {
                let _ = w;
                return Run { wall, cpu: u + s, rss_kib: m as u64 };
            }
        }
        Run { wall, cpu: f64::NAN, rss_kib: hwm }
    }

    fn vm_hwm(status: &str) -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The Hangar side of a run (`--child IN OUT raw|qcow2 none|zlib|zstd`).
    fn child(a: &[String]) -> i32 {
        let [input, out, to, comp] = a else { return 2 };
        let opts = ConvertOptions {
            to: if to == "raw" { TargetFormat::Raw } else { TargetFormat::Qcow2 },
            compression: match comp.as_str() {
                "zlib" => Compression::Zlib,
                "zstd" => Compression::Zstd,
                _ => Compression::None,
            },
            sync: false,
        };
        if let Err(e) = convert_file(Path::new(input), Path::new(out), None, &opts, &mut NoProgress) {
            eprintln!("convert: {e}");
            return 1;
        }
        0
    }

    fn verify(c: &Case, input: &Path, out: &Path) -> bool {
        let to = if c.to == TargetFormat::Raw { "raw" } else { "qcow2" };
        Command::new("qemu-img")
            .args(["compare", "-q", "-f", c.qfmt, "-F", to, input.to_str().unwrap_or(""), out.to_str().unwrap_or("")])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn fill(buf: &mut [u8], seed: &mut u64) {
        for c in buf.chunks_mut(8) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            c.copy_from_slice(&seed.to_le_bytes()[..c.len()]);
        }
    }

    fn fixtures(dir: &Path) -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; 1 << 20];
        let a = dir.join("sparse4g.raw");
        if !a.exists() {
            eprintln!("making {}", a.display());
            let f = File::create(&a)?;
            f.set_len(4 << 30)?;
            for i in 0..1024u64 {
                fill(&mut buf, &mut seed);
                f.write_all_at(&buf, i * (4 << 20))?;
            }
        }
        let b = dir.join("rand2g.raw");
        if !b.exists() {
            eprintln!("making {}", b.display());
            let f = File::create(&b)?;
            for i in 0..2048u64 {
                fill(&mut buf, &mut seed);
                f.write_all_at(&buf, i << 20)?;
            }
        }
        for (name, fmt) in [("sparse4g.vdi", "vdi"), ("sparse4g.qcow2", "qcow2")] {
            let p = dir.join(name);
            if !p.exists() {
                eprintln!("making {}", p.display());
                let ok = Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", fmt, a.to_str().unwrap_or(""), p.to_str().unwrap_or("")])
                    .status()?
                    .success();
                if !ok {
                    return Err(std::io::Error::other(format!("qemu-img could not make {name}")));
                }
            }
        }
        Ok(())
    }
}
