//! qcow2 v2/v3 reader: active L1/L2 only, zlib and zstd compressed clusters. Refuses backing
//! files, external data files, encryption and extended L2 (it never opens another file).

use super::error::{corrupt, limit, rejected, unsupported, Result};
use super::io::{be_u32, be_u64, checked_len, Input, IoBuf, Meter, IO_CHUNK};
use super::sink::Sink;

/// qemu's cluster_bits range (qcow2 spec: at least 9; QEMU: at most 21, 2 MiB).
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's limit on the L1 table (block/qcow2.h QCOW_MAX_L1_SIZE).
const MAX_L1_BYTES: usize = 32 << 20;
/// Offset bits of L1/L2 entries (bits 9–55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const OFLAG_COMPRESSED: u64 = 1 << 62;
const OFLAG_ZERO: u64 = 1;
/// v3 incompatible feature bits we can read: only "compression type" (bit 3). Dirty (0),
/// corrupt (1), external data file (2), extended L2 (4) and unknown bits are refused.
const INCOMPAT_ALLOWED: u64 = 1 << 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Zlib,
    Zstd,
}

pub(crate) struct Qcow2Reader {
    cluster_bits: u32,
    vsize: u64,
    l1_size: u64,
    l1_off: u64,
    codec: Codec,
}

impl Qcow2Reader {
    pub(crate) fn open(inp: &mut Input, m: &mut Meter) -> Result<Self> {
        let mut h = [0u8; 112];
        inp.read_at(0, &mut h[..72], "the qcow2 header", m)?;
        if &h[0..4] != b"QFI\xfb" {
            return Err(corrupt("not a qcow2 file (bad magic)"));
        }
        let version = be_u32(&h, 4);
        if version != 2 && version != 3 {
            return Err(rejected(format!("unsupported qcow2 version {version}")));
        }
        if be_u64(&h, 8) != 0 || be_u32(&h, 16) != 0 {
            return Err(rejected("the qcow2 image has a backing file"));
        }
        let cluster_bits = be_u32(&h, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(corrupt(format!("qcow2 cluster_bits {cluster_bits} out of range 9..21")));
        }
        let vsize = be_u64(&h, 24);
        if be_u32(&h, 32) != 0 {
            return Err(rejected("the qcow2 image is encrypted"));
        }
        let l1_size = u64::from(be_u32(&h, 36));
        let l1_off = be_u64(&h, 40);
        let mut codec = Codec::Zlib;
        if version == 3 {
            inp.read_at(72, &mut h[72..104], "the qcow2 v3 header", m)?;
            let incompat = be_u64(&h, 72);
            if incompat & !INCOMPAT_ALLOWED != 0 {
                return Err(rejected(format!(
                    "qcow2 incompatible features {incompat:#x} (dirty, corrupt, external data \
                     file, extended L2 or unknown) are refused"
                )));
            }
            if be_u64(&h, 88) & 2 != 0 {
                return Err(rejected("the qcow2 image uses a raw external data file"));
            }
            let header_len = be_u32(&h, 100);
            if header_len > 104 {
                inp.read_at(104, &mut h[104..105], "the qcow2 compression type", m)?;
                match h[104] {
                    0 => {}
                    1 => codec = Codec::Zstd,
                    t => return Err(unsupported(format!("unknown qcow2 compression type {t}"))),
                }
            }
            if (incompat & INCOMPAT_ALLOWED != 0) != (codec == Codec::Zstd) {
                return Err(corrupt("qcow2 compression-type bit and field disagree"));
            }
        }
        let cluster = 1u64 << cluster_bits;
        if !l1_off.is_multiple_of(cluster) {
            return Err(corrupt("qcow2 L1 table is not cluster aligned"));
        }
        let per_l1 = cluster * (cluster / 8);
        if l1_size < vsize.div_ceil(per_l1) {
            return Err(corrupt("qcow2 L1 table is too small for the virtual size"));
        }
        if vsize > super::qcow2w::MAX_VIRTUAL_SIZE {
            return Err(limit(format!("qcow2 virtual size {vsize} is above the limit")));
        }
        Ok(Qcow2Reader { cluster_bits, vsize, l1_size, l1_off, codec })
    }

    pub(crate) fn virtual_size(&self) -> u64 {
        self.vsize
    }

    pub(crate) fn pump(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        let cluster = 1u64 << self.cluster_bits;
        let cl = cluster as usize;
        let l2_entries = cluster / 8;
        let per_l1 = cluster * l2_entries;
        // Only the entries that cover the virtual size matter (the table may be longer).
        let l1_used = self.vsize.div_ceil(per_l1);
        let l1_len = checked_len(l1_used * 8, MAX_L1_BYTES, "the qcow2 L1 table")?;
        let _ = self.l1_size;
        let mut l1 = vec![0u8; l1_len];
        inp.read_at(self.l1_off, &mut l1, "the qcow2 L1 table", m)?;
        let mut l2 = vec![0u8; cl];
        let mut buf = IoBuf::new(IO_CHUNK.max(cl));
        let mut cbuf = vec![0u8; cl];
        let mut ctmp = Vec::new();
        for i in 0..l1_used {
            let gbase = i * per_l1;
            let gend = (gbase + per_l1).min(self.vsize);
            let l2_off = be_u64(&l1, i as usize * 8) & OFFSET_MASK;
            if l2_off == 0 {
                sink.zeros(gend - gbase, m)?;
                continue;
            }
            if !l2_off.is_multiple_of(cluster) {
                return Err(corrupt(format!("qcow2 L2 table at {l2_off} is not cluster aligned")));
            }
            inp.read_at(l2_off, &mut l2, "a qcow2 L2 table", m)?;
            let n = (gend - gbase).div_ceil(cluster) as usize;
            let mut j = 0;
            while j < n {
                let e = be_u64(&l2, j * 8);
                let g = gbase + j as u64 * cluster;
                let glen = cluster.min(gend - g);
                if e & OFLAG_COMPRESSED != 0 {
                    self.read_compressed(inp, e, &mut cbuf, &mut ctmp, m)?;
                    sink.data(&cbuf[..glen as usize], m)?;
                    j += 1;
                    continue;
                }
                let host = e & OFFSET_MASK;
                if e & OFLAG_ZERO != 0 || host == 0 {
                    // Merge a run of zero/unallocated clusters into one call.
                    let mut k = j + 1;
                    while k < n {
                        let f = be_u64(&l2, k * 8);
                        if f & OFLAG_COMPRESSED == 0 && (f & OFLAG_ZERO != 0 || f & OFFSET_MASK == 0) {
                            k += 1;
                        } else {
                            break;
                        }
                    }
                    let end = (gbase + k as u64 * cluster).min(gend);
                    sink.zeros(end - g, m)?;
                    j = k;
                    continue;
                }
                if !host.is_multiple_of(cluster) {
                    return Err(corrupt(format!("qcow2 data cluster at {host} is not aligned")));
                }
                // Merge host-contiguous clusters into one large read.
                let mut k = j + 1;
                let max = buf.len() / cl;
                while k < n && k - j < max {
                    let f = be_u64(&l2, k * 8);
                    if f & (OFLAG_COMPRESSED | OFLAG_ZERO) == 0 && f & OFFSET_MASK == host + (k - j) as u64 * cluster {
                        k += 1;
                    } else {
                        break;
                    }
                }
                let end = (gbase + k as u64 * cluster).min(gend);
                let len = (end - g) as usize;
                inp.pass(sink, host, len, &mut buf, "qcow2 data clusters", m)?;
                j = k;
            }
        }
        Ok(())
    }

    fn read_compressed(&self, inp: &mut Input, e: u64, out: &mut [u8], tmp: &mut Vec<u8>, m: &mut Meter) -> Result<()> {
        let x = 62 - (self.cluster_bits - 8);
        let off = e & ((1u64 << x) - 1);
        let sectors = ((e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
        let csize = sectors * 512 - (off & 511);
        // At most cluster + 512 bytes by construction of the field; never trust more.
        tmp.resize(csize as usize, 0);
        let n = inp.read_clamped(off, tmp, "a qcow2 compressed cluster", m)?;
        let src = &tmp[..n];
        let ok = match self.codec {
            Codec::Zlib => {
                let mut d = flate2::Decompress::new(false);
                matches!(
                    d.decompress(src, out, flate2::FlushDecompress::Finish),
                    Ok(flate2::Status::StreamEnd | flate2::Status::BufError | flate2::Status::Ok)
                ) && d.total_out() == out.len() as u64
            }
            Codec::Zstd => zstd_fill(src, out),
        };
        if !ok {
            return Err(corrupt(format!("qcow2 compressed cluster at {off} does not decompress")));
        }
        Ok(())
    }
}

/// Decompresses zstd frames from `src` until `out` is full (qemu stops there too: the bytes
/// after the frame are padding or the next cluster's data).
pub(crate) fn zstd_fill(src: &[u8], out: &mut [u8]) -> bool {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let Ok(mut d) = Decoder::new() else {
        return false;
    };
    let mut input = InBuffer::around(src);
    let mut output = OutBuffer::around(out);
    loop {
        let before = (input.pos(), output.pos());
        if d.run(&mut input, &mut output).is_err() {
            return false;
        }
        if output.pos() == output.capacity() {
            return true;
        }
        if (input.pos(), output.pos()) == before {
            return false;
        }
    }
}
