//! `diskimage` command line: inspect or sniff a disk image file.
//!
//! ```text
//! diskimage inspect FILE [--declared FORMAT] [--max-virtual-size BYTES] [--json]
//! diskimage sniff   FILE [--declared FORMAT] [--max-virtual-size BYTES] [--json]
//! ```
//!
//! Exit status: 0 accepted, 1 rejected, 2 usage or I/O error.

use diskimage::{codes, Format, InspectOptions, Report, Severity, SizedFile, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  diskimage inspect FILE [--declared FORMAT] [--max-virtual-size BYTES] [--json]
  diskimage sniff   FILE [--declared FORMAT] [--max-virtual-size BYTES] [--json]

inspect runs every check on the whole file (what the server does);
sniff uses only the bytes a browser reads (64 KiB head, 1.5 KiB tail, a few follow-ups).
FORMAT: raw qcow2 qed luks vdi vhd vhdx vmdk iso ova uec aki ari
Exit status: 0 accepted, 1 rejected, 2 usage or I/O error.";

struct Args {
    command: String,
    file: PathBuf,
    opts: InspectOptions,
    json: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let command = it.next().ok_or("missing command")?.clone();
    if command != "inspect" && command != "sniff" {
        return Err(format!("unknown command {command:?}"));
    }
    let mut file = None;
    let mut opts = InspectOptions::default();
    let mut json = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--declared" => {
                let v = it.next().ok_or("--declared needs a FORMAT")?;
                opts.declared = Some(v.parse::<Format>().map_err(|e| e.to_string())?);
            }
            "--max-virtual-size" => {
                let v = it.next().ok_or("--max-virtual-size needs a number of bytes")?;
                opts.max_virtual_size = v.parse().map_err(|_| format!("invalid size {v:?}"))?;
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s:?}")),
            s => {
                if file.replace(PathBuf::from(s)).is_some() {
                    return Err("only one FILE may be given".into());
                }
            }
        }
    }
    let file = file.ok_or("missing FILE")?;
    opts.file_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(Args { command, file, opts, json })
}

fn print_human(path: &std::path::Path, r: &Report) {
    println!("file:         {}", path.display());
    println!("format:       {} ({})", r.format, r.format.label());
    println!("subformat:    {}", r.subformat.as_deref().unwrap_or("-"));
    match r.virtual_size {
        Some(v) => println!("virtual size: {v} bytes"),
        None => println!("virtual size: unknown"),
    }
    println!("verdict:      {}", if r.verdict == Verdict::Accepted { "accepted" } else { "rejected" });
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        println!("  [{sev}] {}: {}", f.code, f.message);
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `convert` and `extract` live in the native-only convert module.
    #[cfg(feature = "convert")]
    if let Some(code) = diskimage::convert::cli::dispatch(&argv) {
        return code;
    }
    if argv.first().is_some_and(|a| a == "--help" || a == "-h" || a == "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("diskimage: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let file = match SizedFile::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("diskimage: cannot open {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let report = if args.command == "sniff" { diskimage::sniff_reader(&file, &args.opts) } else { diskimage::inspect(&file, &args.opts) };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("diskimage: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_human(&args.file, &report);
    }
    if report.has(codes::READ_ERROR) {
        return ExitCode::from(2);
    }
    match report.verdict {
        Verdict::Accepted => ExitCode::SUCCESS,
        Verdict::Rejected => ExitCode::from(1),
    }
}
