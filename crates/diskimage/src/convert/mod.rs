//! Native streaming conversion (feature `convert`, native only).
//!
//! * Readers: raw, qcow2 (v2/v3; zlib and zstd clusters), VDI (dynamic/static), VMDK
//!   monolithicSparse and streamOptimized, VHD (fixed/dynamic), VHDX (fixed/dynamic).
//! * Writers: qcow2 v3 (64 KiB clusters, zero clusters skipped, exact refcounts, header last,
//!   optional zlib/zstd compression on all cores) and sparse raw.
//! * Packages: [`ova`] (OVF appliance: streamOptimized VMDK and raw disks converted as they
//!   stream, each sniffed as its declared format; monolithicSparse VMDK disks spooled to a
//!   temporary file in the output directory, inspected, then converted as files) and [`uec`]
//!   (UEC tarball) extraction.
//!
//! Entry points: [`convert_file`] (inspects, then converts), [`inspect_for_conversion`] +
//! [`convert_accepted`] (the same in two steps), [`convert_stream`] (an upload as it arrives),
//! [`ova::extract_ova`], [`uec::extract_uec`], and the CLI in [`cli`].
//!
//! Architecture invariants: a conversion reads exactly one input, front to back where the
//! format allows, and never opens a file named inside it. Files are converted only with an
//! [`Accepted`] proof from [`crate::inspect`] (bound to that file); stream conversions publish
//! their output only if the sniff checks accept the head and tail they saw. Outputs are created
//! O_EXCL under a temporary name, published by a link, and deleted on any failure; the qcow2
//! header is written last. Memory is bounded by named constants (≤ ~30 MiB measured), not by
//! image size.
//!
//! Data path: file inputs are copied file to file in the kernel (`splice` through a 1 MiB pipe,
//! else `copy_file_range`) after a per-cluster probe for zeros; streams are read into page-aligned 4 MiB buffers that change
//! hands (no copy) with a writer thread; compression runs on a worker pool.

mod error;
mod gate;
mod io;
mod out;
mod pkg;
mod qcow2r;
mod qcow2w;
mod rawr;
mod sink;
mod vdir;
mod vhdr;
mod vmdkr;

pub mod cli;
pub mod ova;
pub mod uec;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

pub use error::{Error, ErrorKind, Result};
pub use gate::Accepted;
pub use io::{Cancellable, NoProgress, Progress};
pub use qcow2w::MAX_VIRTUAL_SIZE;

use io::{FileIn, Input, Meter, StreamIn};
use sink::{RawSink, Sink};

/// Input formats the converter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// Raw disk bytes.
    Raw,
    /// qcow2 v2/v3.
    Qcow2,
    /// VirtualBox VDI.
    Vdi,
    /// VMDK monolithicSparse or streamOptimized.
    Vmdk,
    /// VHD fixed or dynamic.
    Vhd,
    /// VHDX fixed or dynamic.
    Vhdx,
}

impl SourceFormat {
    /// The lowercase name (`raw`, `qcow2`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Raw => "raw",
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Vdi => "vdi",
            SourceFormat::Vmdk => "vmdk",
            SourceFormat::Vhd => "vhd",
            SourceFormat::Vhdx => "vhdx",
        }
    }
    /// Parses a lowercase name; `vpc` is accepted for VHD (qemu's name).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "raw" | "img" => SourceFormat::Raw,
            "qcow2" => SourceFormat::Qcow2,
            "vdi" => SourceFormat::Vdi,
            "vmdk" => SourceFormat::Vmdk,
            "vhd" | "vpc" => SourceFormat::Vhd,
            "vhdx" => SourceFormat::Vhdx,
            _ => return None,
        })
    }
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetFormat {
    /// qcow2 v3, 64 KiB clusters.
    Qcow2,
    /// Sparse raw (zero ranges are holes).
    Raw,
}

/// qcow2 cluster compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Plain clusters (fastest; zero clusters are still skipped).
    #[default]
    None,
    /// Raw deflate, 4 KiB window (readable by every qemu).
    Zlib,
    /// zstd (qcow2 compression_type=zstd, qemu ≥ 5.1).
    Zstd,
}

/// What to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Output format.
    pub to: TargetFormat,
    /// Compression (qcow2 only).
    pub compression: Compression,
    /// fsync the output before publishing it (on for production; qemu-img's default is off).
    pub sync: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { to: TargetFormat::Qcow2, compression: Compression::None, sync: true }
    }
}

/// What a conversion did.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The input format.
    pub from: SourceFormat,
    /// Virtual disk size of the output in bytes.
    pub virtual_size: u64,
    /// Input bytes read.
    pub bytes_in: u64,
    /// Output bytes written (data and metadata; holes are not counted).
    pub bytes_out: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Converts the file at `input` into a new file `output` (which must not exist).
///
/// The input is inspected first; a rejected file, or one whose detected format differs from
/// `from`, is refused. The output appears under its name only when complete.
pub fn convert_file(
    input: &Path,
    output: &Path,
    from: Option<SourceFormat>,
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let file = File::open(input).map_err(|e| Error::io(format!("opening {}", input.display()), e))?;
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned());
    let accepted = gate::inspect_file(&file, from, name)?;
    convert_accepted(&file, &accepted, output, opts, progress)
}

/// Converts an already-inspected file (the [`Accepted`] proof comes from
/// [`inspect_for_conversion`] on the same file).
pub fn convert_accepted(
    file: &File,
    accepted: &Accepted,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let start = Instant::now();
    accepted.check_file(file)?;
    let out = out::OutFile::create(output)?;
    let mut m = Meter::new(progress);
    let vsize = convert_accepted_into(file, accepted, out.file(), opts, &mut m)?;
    m.finish();
    out.publish(opts.sync)?;
    Ok(Summary {
        from: accepted.format(),
        virtual_size: vsize,
        bytes_in: m.bytes_in,
        bytes_out: m.bytes_out,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// File conversion into an already-created output file (used by the OVA extractor for the
/// monolithicSparse disks it spools to a file); returns the virtual size.
pub(crate) fn convert_accepted_into(file: &File, accepted: &Accepted, out: &File, opts: &ConvertOptions, m: &mut Meter) -> Result<u64> {
    accepted.check_file(file)?;
    let fin = FileIn::new(file.try_clone().map_err(|e| Error::io("duplicating the input", e))?)?;
    let mut inp = Input::File(&fin);
    run(accepted.format(), &mut inp, Some(&fin), None, out, opts, m)
}

/// Inspects `file` with [`crate::inspect`] for conversion: the verdict must be "accepted" and
/// the format must equal `declared` when given. `file_name` is the upload's name (a VMDK's
/// extent must name its own file).
pub fn inspect_for_conversion(file: &File, declared: Option<SourceFormat>, file_name: Option<&str>) -> Result<Accepted> {
    gate::inspect_file(file, declared, file_name.map(str::to_string))
}

/// Converts a byte stream as it arrives (an upload): raw (needs `raw_len`, the upload's
/// declared length), VDI whose blocks are in file order, and streamOptimized VMDK. Other
/// formats need random access and are refused with a clear error; store them first.
///
/// The readers' structural checks run as the bytes arrive; at the end the inspector's sniff
/// checks run on the stream's head and tail (what the browser checks), and the output is
/// published only if they accept it. A raw stream whose head alone already fails those checks
/// (another format's header) is refused as soon as its first 64 KiB have arrived, before
/// anything is converted. `file_name` is the upload's name (VMDK extent check).
pub fn convert_stream(
    input: &mut dyn Read,
    from: SourceFormat,
    raw_len: Option<u64>,
    file_name: Option<&str>,
    output: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let start = Instant::now();
    let out = out::OutFile::create(output)?;
    let mut m = Meter::new(progress);
    let vsize = convert_stream_into(input, from, raw_len, file_name, out.file(), opts, &mut m)?;
    m.finish();
    out.publish(opts.sync)?;
    Ok(Summary { from, virtual_size: vsize, bytes_in: m.bytes_in, bytes_out: m.bytes_out, seconds: start.elapsed().as_secs_f64() })
}

/// Stream conversion into an already-created output file (used by the OVA extractor for its
/// VMDK and raw disks; a raw disk needs `raw_len`, and the stream must be exactly that long).
pub(crate) fn convert_stream_into(
    input: &mut dyn Read,
    from: SourceFormat,
    raw_len: Option<u64>,
    file_name: Option<&str>,
    out: &File,
    opts: &ConvertOptions,
    m: &mut Meter,
) -> Result<u64> {
    match from {
        SourceFormat::Raw | SourceFormat::Vdi | SourceFormat::Vmdk => {}
        f => {
            return Err(error::unsupported(format!(
                "{} needs random access and cannot be converted while streaming; store it first",
                f.as_str()
            )))
        }
    }
    let mut ht = gate::HeadTail::new(input);
    // A raw stream's length is known, so its head is judged as soon as it is in: a head that
    // already makes the verdict a refusal stops the stream before anything is converted.
    if let (SourceFormat::Raw, Some(n)) = (from, raw_len) {
        ht.check_head_early(from, file_name.map(str::to_string), n);
    }
    let mut inp = Input::Stream(StreamIn::new(&mut ht), Vec::new());
    let r = run(from, &mut inp, None, raw_len, out, opts, m).and_then(|v| {
        // Consume trailing bytes (footers, padding): the tail check and hashes need every byte.
        inp.drain(m)?;
        Ok(v)
    });
    drop(inp);
    // A read failed by the head check surfaces as an I/O error; give its real reason.
    let v = r.map_err(|e| ht.take_refusal().unwrap_or(e))?;
    ht.verdict(from, file_name.map(str::to_string))?;
    if from == SourceFormat::Vmdk {
        // The sniff judged a footer-based VMDK by its footer; the marker walk used the header.
        let (head, tail) = ht.head_and_tail();
        vmdkr::check_stream_footer(head, tail)?;
    }
    Ok(v)
}

fn make_sink<'f>(f: &'f File, vsize: u64, opts: &ConvertOptions) -> Result<Box<dyn Sink + 'f>> {
    Ok(match opts.to {
        TargetFormat::Qcow2 => Box::new(qcow2w::Qcow2Sink::new(f, vsize, opts.compression)?),
        TargetFormat::Raw => {
            if opts.compression != Compression::None {
                return Err(Error::new(ErrorKind::Usage, "compression applies to qcow2 output only"));
            }
            Box::new(RawSink::new(f, vsize)?)
        }
    })
}

/// Runs a conversion; returns the output's virtual size (qcow2 sizes are whole sectors).
fn run(
    from: SourceFormat,
    inp: &mut Input,
    file: Option<&FileIn>,
    raw_len: Option<u64>,
    out: &File,
    opts: &ConvertOptions,
    m: &mut Meter,
) -> Result<u64> {
    let v = run_inner(from, inp, file, raw_len, out, opts, m)?;
    Ok(match opts.to {
        TargetFormat::Qcow2 => v.next_multiple_of(512),
        TargetFormat::Raw => v,
    })
}

/// Opens the reader for `from`, creates the sink and pumps everything; returns the virtual size.
fn run_inner(
    from: SourceFormat,
    inp: &mut Input,
    file: Option<&FileIn>,
    raw_len: Option<u64>,
    out: &File,
    opts: &ConvertOptions,
    m: &mut Meter,
) -> Result<u64> {
    macro_rules! go {
        ($reader:expr) => {{
            let r = $reader;
            let vsize = r.virtual_size();
            let mut sink = make_sink(out, vsize, opts)?;
            r.pump(inp, sink.as_mut(), m)?;
            finish(sink.as_mut(), vsize, m)?;
            Ok(vsize)
        }};
    }
    match from {
        SourceFormat::Raw => {
            let vsize = match (file, raw_len) {
                (Some(f), _) => f.size(),
                (None, Some(n)) => n,
                (None, None) => return Err(Error::new(ErrorKind::Usage, "a raw stream needs its length")),
            };
            if vsize > MAX_VIRTUAL_SIZE {
                return Err(error::limit(format!("raw size {vsize} is above the limit")));
            }
            let mut sink = make_sink(out, vsize, opts)?;
            match file {
                Some(f) => rawr::pump_file(f, sink.as_mut(), m)?,
                None => rawr::pump_stream(inp, vsize, sink.as_mut(), m)?,
            }
            finish(sink.as_mut(), vsize, m)?;
            Ok(vsize)
        }
        SourceFormat::Qcow2 => go!(qcow2r::Qcow2Reader::open(inp, m)?),
        SourceFormat::Vdi => go!(vdir::VdiReader::open(inp, m)?),
        SourceFormat::Vmdk => go!(vmdkr::VmdkReader::open(inp, m)?),
        SourceFormat::Vhd => go!(vhdr::VhdReader::open(inp, m)?),
        SourceFormat::Vhdx => go!(vhdr::VhdxReader::open(inp, m)?),
    }
}

fn finish(sink: &mut dyn Sink, vsize: u64, m: &mut Meter) -> Result<()> {
    let pos = sink.position();
    if pos > vsize {
        return Err(error::corrupt("the input produced more data than its virtual size"));
    }
    sink.finish(m)
}

#[cfg(test)]
mod tests {
    //! The readers must survive hostile bytes on their own (the inspector runs first, but a
    //! reader never relies on it): mutated images of every format are fed straight to the
    //! readers, which may fail but must not panic, hang or write past their limits.
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    fn qemu(args: &[&str]) {
        let st = Command::new("qemu-img").args(args).status().unwrap_or_else(|e| panic!("qemu-img is required for these tests: {e}"));
        assert!(st.success(), "qemu-img {args:?}");
    }

    /// qemu's streamOptimized VMDK turned into the VMware layout: header gdOffset = GD_AT_END,
    /// then footer marker, footer (the original header) and end-of-stream marker at the end.
    fn with_footer(stream: &[u8]) -> Vec<u8> {
        let mut d = stream.to_vec();
        let footer = d[..512].to_vec();
        d[56..64].copy_from_slice(&[0xFF; 8]);
        let mut marker = [0u8; 512];
        marker[0..8].copy_from_slice(&1u64.to_le_bytes());
        marker[12..16].copy_from_slice(&3u32.to_le_bytes());
        d.extend_from_slice(&marker);
        d.extend_from_slice(&footer);
        d.extend_from_slice(&[0u8; 512]);
        d
    }

    /// docs/formats.md §2.5 #13: the VMDK reader describes a footer-based file by the footer the
    /// inspector validated (all of it, as qemu does), refuses a footer the inspector refuses,
    /// and a stream (walked with the header's values) whose footer disagrees with its header.
    #[test]
    fn vmdk_reader_uses_the_validated_footer() {
        use crate::formats::vmdk::FooterProblem as P;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut data = vec![0u8; 3 << 20];
        for (i, b) in data.iter_mut().enumerate().skip(70_000).take(1_000_000) {
            *b = (i % 251) as u8;
        }
        std::fs::write(&base, &data).unwrap();
        let src = dir.path().join("o.vmdk");
        qemu(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", base.to_str().unwrap(), src.to_str().unwrap()]);
        let good = with_footer(&std::fs::read(&src).unwrap());
        let opts = ConvertOptions { to: TargetFormat::Raw, compression: Compression::None, sync: false };
        let out = dir.path().join("out.raw");
        // As a file: the virtual size and the bytes written.
        let file_run = |img: &[u8]| -> (Result<u64>, Vec<u8>) {
            let path = dir.path().join("m.vmdk");
            std::fs::write(&path, img).unwrap();
            let fin = FileIn::new(File::open(&path).unwrap()).unwrap();
            let of = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&out).unwrap();
            let mut np = NoProgress;
            let mut m = Meter::new(&mut np);
            let r = run(SourceFormat::Vmdk, &mut Input::File(&fin), Some(&fin), None, &of, &opts, &mut m);
            (r, std::fs::read(&out).unwrap())
        };
        let stream_run = |img: &[u8]| -> Result<u64> {
            let of = File::create(dir.path().join("s.raw")).unwrap();
            let mut np = NoProgress;
            let mut m = Meter::new(&mut np);
            let mut rd = img;
            convert_stream_into(&mut rd, SourceFormat::Vmdk, None, Some("o.vmdk"), &of, &opts, &mut m)
        };
        let judged = |img: &[u8]| crate::inspect(img, &crate::InspectOptions::default());

        let r = judged(&good);
        assert!(r.is_accepted(), "{r:?}");
        assert_eq!(r.virtual_size, Some(data.len() as u64));
        let (v, bytes) = file_run(&good);
        assert_eq!(v.unwrap(), data.len() as u64);
        assert!(bytes == data, "the footer-based file converts to its data");
        assert_eq!(stream_run(&good).unwrap(), data.len() as u64);

        // The header claims twice the capacity: the inspector (and qemu) go by the footer, and
        // so does the file reader; the marker walk would use the header's, so a stream stops.
        let mut twice = good.clone();
        twice[12..20].copy_from_slice(&((data.len() as u64 / 512) * 2).to_le_bytes());
        let r = judged(&twice);
        assert!(r.is_accepted(), "{r:?}");
        assert_eq!(r.virtual_size, Some(data.len() as u64));
        let (v, bytes) = file_run(&twice);
        assert_eq!(v.unwrap(), data.len() as u64);
        assert!(bytes == data);
        let e = stream_run(&twice).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.message().contains("different capacity"), "{e}");

        // Every footer the inspector refuses, the reader refuses for the same reason.
        let n = good.len();
        let mutations: [(usize, &[u8], P); 9] = [
            (n - 1024, b"XDMV", P::Signature),
            (n - 1024 + 4, &9u32.to_le_bytes(), P::Version),
            (n - 1024 + 28, &2u64.to_le_bytes(), P::Descriptor),
            (n - 1024 + 56, &[0xFF; 8], P::AnotherFooter),
            (n - 1536 + 8, &1u32.to_le_bytes(), P::Marker),
            (n - 1536 + 12, &2u32.to_le_bytes(), P::Marker),
            (n - 1536 + 400, &[1], P::Marker),
            (n - 512, &1u64.to_le_bytes(), P::EndOfStream),
            (n - 1, &[1], P::EndOfStream),
        ];
        for (at, bytes, p) in mutations {
            let mut img = good.clone();
            img[at..at + bytes.len()].copy_from_slice(bytes);
            let r = judged(&img);
            assert!(
                !r.is_accepted() && r.errors().any(|f| f.code == crate::codes::VMDK_FOOTER && f.message == p.message()),
                "{p:?}: {r:?}"
            );
            let e = file_run(&img).0.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{p:?}: {e}");
            assert!(e.message().contains(p.message().trim_end_matches('.')), "{p:?}: {e}");
            assert!(stream_run(&img).is_err(), "{p:?}: a stream is refused too");
        }
        let short = &good[..1024];
        let e = file_run(short).0.unwrap_err();
        assert!(e.message().contains(P::TooShort.message().trim_end_matches('.')), "{e}");
    }

    #[test]
    fn readers_survive_mutated_images() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut data = vec![0u8; 3 << 20];
        for (i, b) in data.iter_mut().enumerate().skip(100_000).take(1_500_000) {
            *b = (i % 251) as u8;
        }
        std::fs::write(&base, &data).unwrap();
        let b = base.to_str().unwrap();
        let cases: &[(&str, &[&str], SourceFormat)] = &[
            ("q.qcow2", &["-O", "qcow2", "-c"], SourceFormat::Qcow2),
            ("q2.qcow2", &["-O", "qcow2", "-o", "compat=0.10"], SourceFormat::Qcow2),
            ("z.qcow2", &["-O", "qcow2", "-c", "-o", "compression_type=zstd"], SourceFormat::Qcow2),
            ("d.vdi", &["-O", "vdi"], SourceFormat::Vdi),
            ("s.vmdk", &["-O", "vmdk"], SourceFormat::Vmdk),
            ("o.vmdk", &["-O", "vmdk", "-o", "subformat=streamOptimized"], SourceFormat::Vmdk),
            ("d.vhd", &["-O", "vpc"], SourceFormat::Vhd),
            ("d.vhdx", &["-O", "vhdx"], SourceFormat::Vhdx),
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (name, args, from) in cases {
            let src = dir.path().join(name);
            let mut a = vec!["convert", "-f", "raw"];
            a.extend_from_slice(args);
            a.extend_from_slice(&[b, src.to_str().unwrap()]);
            qemu(&a);
            let pristine = std::fs::read(&src).unwrap();
            // Metadata lives in the first 4 MiB (VHDX puts it at 1-3 MiB) and the last KiB.
            let meta = pristine.len().min(4 << 20);
            for round in 0..40 {
                let mut img = pristine.clone();
                for _ in 0..(1 + rnd() % 8) {
                    let pos = if rnd() % 5 == 0 {
                        img.len() - 1 - (rnd() as usize % 1024.min(img.len()))
                    } else if rnd() % 2 == 0 {
                        rnd() as usize % 1024.min(meta)
                    } else {
                        rnd() as usize % meta
                    };
                    img[pos] = match rnd() % 4 {
                        0 => 0xFF,
                        1 => 0,
                        _ => rnd() as u8,
                    };
                }
                let path = dir.path().join("m.img");
                std::fs::write(&path, &img).unwrap();
                let f = File::open(&path).unwrap();
                let fin = FileIn::new(f).unwrap();
                let out = dir.path().join("m.out");
                let _ = std::fs::remove_file(&out);
                let of = File::create(&out).unwrap();
                let mut np = NoProgress;
                let mut m = Meter::new(&mut np);
                let mut inp = Input::File(&fin);
                let opts = ConvertOptions { to: TargetFormat::Qcow2, compression: Compression::None, sync: false };
                // Success or a clean error are both fine; a panic fails the test.
                let r = run(*from, &mut inp, Some(&fin), None, &of, &opts, &mut m);
                let written = of.metadata().unwrap().len();
                assert!(written <= 64 << 20, "{name} round {round}: wrote {written} bytes ({r:?})");
                // The same bytes as a stream (where the format streams).
                if matches!(from, SourceFormat::Vdi | SourceFormat::Vmdk) {
                    let of2 = File::create(dir.path().join("m2.out")).unwrap();
                    let mut rd = &img[..];
                    let mut np = NoProgress;
                    let mut m = Meter::new(&mut np);
                    let _ = convert_stream_into(&mut rd, *from, None, Some(name), &of2, &opts, &mut m);
                }
            }
            // The pristine image converts.
            let f = File::open(&src).unwrap();
            let fin = FileIn::new(f).unwrap();
            let of =
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.path().join("ok.out")).unwrap();
            let mut np = NoProgress;
            let mut m = Meter::new(&mut np);
            let opts = ConvertOptions { to: TargetFormat::Raw, compression: Compression::None, sync: false };
            run(*from, &mut Input::File(&fin), Some(&fin), None, &of, &opts, &mut m).unwrap();
            let mut back = vec![0u8; data.len()];
            of.read_exact_at(&mut back, 0).unwrap();
            assert!(back == data, "{name}: pristine conversion differs");
        }
    }
}
