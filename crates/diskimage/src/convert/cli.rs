//! The `convert` and `extract` subcommands of the `diskimage` CLI.
//!
//! ```text
//! diskimage convert IN OUT --to qcow2|raw [--from FORMAT] [--compress zlib|zstd] [--no-sync]
//! diskimage extract PACKAGE.ova|UEC.tar.gz OUTDIR [--to qcow2|raw] [--no-sync]
//! ```
//!
//! A progress bar is drawn on stderr when it is a terminal; a summary line always ends the run.
//! Exit status: 0 done, 1 the input was refused (rejected, corrupt, unsupported, over a limit),
//! 2 usage or I/O error, 130 interrupted by Ctrl-C or SIGTERM (partial output deleted).

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use signal_hook::consts::{SIGINT, SIGTERM};

use super::error::{Error, ErrorKind};
use super::{convert_file, ova, uec, Compression, ConvertOptions, Progress, SourceFormat, TargetFormat};
use crate::{Format, InspectOptions};

/// Usage text of the two subcommands.
pub const USAGE: &str = "usage:
  diskimage convert IN OUT --to qcow2|raw [--from FORMAT] [--compress zlib|zstd] [--no-sync]
  diskimage extract PACKAGE.ova|UEC.tar.gz OUTDIR [--to qcow2|raw] [--no-sync]

convert: IN is inspected first and refused unless accepted; OUT must not exist.
  FORMAT: raw qcow2 vdi vmdk vhd vhdx (default: detected)
extract: OVA disks (streamOptimized or monolithicSparse VMDK, or raw) become
  OUTDIR/diskN.qcow2; UEC parts OUTDIR/ami.raw, aki.bin, ari.bin.
Exit status: 0 done, 1 input refused, 2 usage or I/O error, 130 interrupted (Ctrl-C;
nothing is left behind).";

/// Runs `convert`/`extract` if `argv[0]` names one of them; `None` for any other command.
pub fn dispatch(argv: &[String]) -> Option<ExitCode> {
    let cmd = argv.first()?.as_str();
    if cmd != "convert" && cmd != "extract" {
        return None;
    }
    let rest = &argv[1..];
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Some(ExitCode::SUCCESS);
    }
    let r = match parse(rest) {
        Ok(a) if cmd == "convert" => run_convert(&a),
        Ok(a) => run_extract(&a),
        Err(e) => {
            eprintln!("diskimage {cmd}: {e}\n{USAGE}");
            return Some(ExitCode::from(2));
        }
    };
    Some(match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diskimage {cmd}: {e}");
            match e.kind() {
                ErrorKind::Io | ErrorKind::Usage => ExitCode::from(2),
                // The shell's code for "ended by Ctrl-C"; nothing was left behind.
                ErrorKind::Cancelled => ExitCode::from(130),
                _ => ExitCode::from(1),
            }
        }
    })
}

struct Args {
    input: PathBuf,
    output: PathBuf,
    from: Option<SourceFormat>,
    opts: ConvertOptions,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut pos = Vec::new();
    let mut from = None;
    let mut opts = ConvertOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--to" => {
                opts.to = match it.next().map(String::as_str) {
                    Some("qcow2") => TargetFormat::Qcow2,
                    Some("raw") => TargetFormat::Raw,
                    v => return Err(format!("--to needs qcow2 or raw, not {v:?}")),
                }
            }
            "--from" => {
                let v = it.next().ok_or("--from needs a FORMAT")?;
                from = Some(SourceFormat::parse(v).ok_or_else(|| format!("unknown format {v:?}"))?);
            }
            "--compress" => {
                opts.compression = match it.next().map(String::as_str) {
                    Some("zlib") => Compression::Zlib,
                    Some("zstd") => Compression::Zstd,
                    Some("none") => Compression::None,
                    v => return Err(format!("--compress needs zlib or zstd, not {v:?}")),
                }
            }
            "--no-sync" => opts.sync = false,
            s if s.starts_with("--") => return Err(format!("unknown option {s:?}")),
            s => pos.push(PathBuf::from(s)),
        }
    }
    let [input, output]: [PathBuf; 2] = pos.try_into().map_err(|_| "expected exactly two paths".to_string())?;
    Ok(Args { input, output, from, opts })
}

/// A one-line progress bar on stderr (only when stderr is a terminal). It also carries Ctrl-C
/// (SIGINT) and SIGTERM to the conversion, which then stops at its next progress step and
/// deletes its partial output instead of dying and leaving a `.NAME.partial-*` file behind. A
/// second Ctrl-C ends the process at once.
struct Bar {
    total: u64,
    start: Instant,
    tty: bool,
    drawn: bool,
    interrupted: Arc<AtomicBool>,
}

impl Bar {
    fn new(total: u64) -> Self {
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registration fails only for forbidden signals; these two never are.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone());
            let _ = signal_hook::flag::register(sig, interrupted.clone());
        }
        Bar { total, start: Instant::now(), tty: std::io::stderr().is_terminal(), drawn: false, interrupted }
    }
    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

impl Progress for Bar {
    fn update(&mut self, bytes_in: u64, bytes_out: u64) {
        if !self.tty {
            return;
        }
        let frac = if self.total == 0 { 1.0 } else { (bytes_in as f64 / self.total as f64).min(1.0) };
        let width = 30;
        let full = (frac * width as f64) as usize;
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r\x1b[2K[{}{}] {:5.1}%  in {}  out {}  {:.0} MiB/s",
            "#".repeat(full),
            ".".repeat(width - full),
            frac * 100.0,
            human(bytes_in),
            human(bytes_out),
            bytes_in as f64 / secs / (1 << 20) as f64
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }
    fn cancelled(&mut self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

fn summary(bytes_in: u64, bytes_out: u64, secs: f64) {
    println!(
        "read {bytes_in} bytes, wrote {bytes_out} bytes in {secs:.2} s ({:.1} MiB/s)",
        bytes_in as f64 / secs.max(1e-9) / (1 << 20) as f64
    );
}

fn input_size(p: &Path) -> Result<u64, Error> {
    std::fs::metadata(p).map(|m| m.len()).map_err(|e| Error::io(format!("{}", p.display()), e))
}

fn run_convert(a: &Args) -> Result<(), Error> {
    let mut bar = Bar::new(input_size(&a.input)?);
    let r = convert_file(&a.input, &a.output, a.from, &a.opts, &mut bar);
    bar.clear();
    let s = r?;
    println!(
        "converted {} ({}) -> {} ({}), virtual size {} bytes",
        a.input.display(),
        s.from.as_str(),
        a.output.display(),
        match a.opts.to {
            TargetFormat::Qcow2 => "qcow2",
            TargetFormat::Raw => "raw",
        },
        s.virtual_size
    );
    summary(s.bytes_in, s.bytes_out, s.seconds);
    Ok(())
}

fn run_extract(a: &Args) -> Result<(), Error> {
    let mut file = File::open(&a.input).map_err(|e| Error::io(format!("opening {}", a.input.display()), e))?;
    // The package itself goes through the inspector first (its OVA/UEC checks), then the
    // extractor applies the member policy again while streaming.
    let report = crate::inspect(&file, &InspectOptions::default());
    let mut bar = Bar::new(input_size(&a.input)?);
    let started = Instant::now();
    match report.format {
        Format::Ova => {
            if !report.is_accepted() {
                return Err(refused(&report));
            }
            let r = ova::extract_ova(&mut file, &a.output, &a.opts, &mut bar);
            bar.clear();
            let r = r?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            for d in &r.disks {
                println!(
                    "disk {} ({}, {}) -> {}, virtual size {} bytes",
                    d.disk_id,
                    d.member,
                    d.source_format.as_str(),
                    d.path.display(),
                    d.virtual_size
                );
            }
            match &r.unverified_certificate {
                Some(c) => println!("certificate {c}: present, NOT verified (no trust store); the package counts as unsigned"),
                None => println!("certificate: none"),
            }
            summary(r.bytes_in, r.bytes_out, started.elapsed().as_secs_f64());
        }
        Format::Uec => {
            if !report.is_accepted() {
                return Err(refused(&report));
            }
            let r = uec::extract_uec(&file, &a.output, uec::UecLimits::default(), &mut bar);
            bar.clear();
            let r = r?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            summary(r.bytes_in, r.bytes_out, started.elapsed().as_secs_f64());
        }
        f => {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("{} is a {} file, not an OVA or UEC package; use `convert`", a.input.display(), f.as_str()),
            ))
        }
    }
    Ok(())
}

fn refused(r: &crate::Report) -> Error {
    let reasons: Vec<String> = r.errors().map(|f| format!("{} ({})", f.message, f.code)).collect();
    super::error::rejected(format!("the inspector rejected the package: {}", reasons.join("; ")))
}
