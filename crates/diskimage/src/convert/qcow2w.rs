//! Streaming qcow2 v3 writer (docs/formats.md §6): one sequential pass, append-only except the L1
//! table and the header, which are written last so an interrupted write never has valid magic.
//!
//! Layout: cluster 0 header, clusters 1.. the L1 table, then per 512 MiB guest range its
//! non-zero data clusters followed by its L2 table, then refcount blocks and the refcount table.

use std::fs::File;
use std::os::unix::fs::FileExt;

use flate2::{Compress, Compression as FlateLevel, FlushCompress, Status};

use super::error::{corrupt, limit, Error, Result};
use super::io::{is_zero, FileIn, IoBuf, Meter};
use super::sink::{source_handle, Sink, WriteBehind};
use super::Compression;

/// 64 KiB clusters (qemu's default; one L2 table maps 512 MiB).
pub(crate) const CLUSTER_BITS: u32 = 16;
pub(crate) const CLUSTER: u64 = 1 << CLUSTER_BITS;
const CLUSTER_US: usize = 1 << CLUSTER_BITS;
/// L2 entries per table (a table is one cluster of u64).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts (refcount_order 4): 32,768 entries per refcount block, 2 GiB of host file.
const REFCOUNT_ORDER: u32 = 4;
const REFS_PER_BLOCK: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);
/// Bit 63 of L1/L2 entries: "refcount is exactly one" (QCOW_OFLAG_COPIED).
const OFLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: compressed cluster.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// For compressed descriptors, x = 62 - (cluster_bits - 8) (qcow2 spec, "Cluster mapping").
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
/// Largest virtual size we write. Far above any VM image we serve, and it bounds the L1 table
/// at 32,768 entries (256 KiB; qemu's own L1 limit is 32 MiB).
pub const MAX_VIRTUAL_SIZE: u64 = 16 << 40;
/// Clusters compressed per batch (2 MiB). With at most 2 batches per worker in flight, each
/// holding its input and output, the compressing writer stays far below its 64 MiB budget.
const BATCH_CLUSTERS: usize = 32;
/// Batches in flight per worker: one being compressed, one queued.
const INFLIGHT_PER_WORKER: usize = 2;
/// Early abort for zlib: a cluster is stored as is when four 4 KiB samples (at 0, 16, 32 and
/// 48 KiB) each shrink by less than this many bytes under a fast deflate. Such a cluster is
/// (nearly always) incompressible, and qemu would store it as is too after spending a full
/// level-6 deflate on it; a cluster with any compressible quarter is compressed normally.
const PROBE_MIN_SAVING: usize = 64;
const PROBE_LEN: usize = 4096;
/// Compression workers at most (the box has 2 cores; more would only cost memory).
const MAX_WORKERS: usize = 8;
/// zlib level qemu uses for compressed clusters (Z_DEFAULT_COMPRESSION).
const ZLIB_LEVEL: u32 = 6;
/// qemu writes compressed clusters as raw deflate with a 4 KiB window (`deflateInit2(-12)`).
const ZLIB_WINDOW_BITS: u8 = 12;
/// zstd level qemu uses (ZSTD_CLEVEL_DEFAULT).
const ZSTD_LEVEL: i32 = 3;

pub(crate) struct Qcow2Sink<'f> {
    f: &'f File,
    vsize: u64,
    codec: Compression,
    l1: Vec<u64>,
    l1_clusters: u64,
    /// Next free host byte. Cluster aligned except inside a run of packed compressed data.
    next: u64,
    l2: Vec<u64>,
    cur_l2: u64,
    l2_used: bool,
    /// Guest bytes consumed.
    pos: u64,
    /// A partial cluster being assembled (len < CLUSTER).
    partial: Vec<u8>,
    /// Exact refcounts per host cluster (compressed mode only: chunks share clusters).
    refs: Vec<u16>,
    /// Compression batch being filled: cluster payloads and their guest cluster indices.
    batch: Vec<u8>,
    batch_idx: Vec<u64>,
    out: Vec<u8>,
    pool: Option<Pool>,
    wb: WriteBehind,
    src: Option<std::sync::Arc<File>>,
}

/// A batch for a worker: sequence number, cluster payloads, guest cluster indices.
type Job = (u64, Vec<u8>, Vec<u64>);

/// A compressed batch coming back from a worker.
struct Done {
    seq: u64,
    batch: Vec<u8>,
    idx: Vec<u64>,
    results: Vec<Option<Vec<u8>>>,
}

/// Persistent compression workers fed through bounded channels; results are written in order.
struct Pool {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    rx: std::sync::mpsc::Receiver<Done>,
    handles: Vec<std::thread::JoinHandle<()>>,
    next_seq: u64,
    write_seq: u64,
    parked: Vec<Done>,
    limit: usize,
}

impl Pool {
    fn new(codec: Compression) -> Result<Self> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(workers);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
        let mut handles = Vec::new();
        for i in 0..workers {
            let rx = rx.clone();
            let done_tx = done_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, batch, idx)) = job else { return };
                    let results = compress_many(codec, &batch);
                    if done_tx.send(Done { seq, batch, idx, results }).is_err() {
                        return;
                    }
                })
                .map_err(|e| Error::io("starting a compression worker", e))?;
            handles.push(h);
        }
        Ok(Pool { tx: Some(tx), rx: done_rx, handles, next_seq: 0, write_seq: 0, parked: Vec::new(), limit: workers * INFLIGHT_PER_WORKER })
    }

    fn in_flight(&self) -> usize {
        (self.next_seq - self.write_seq) as usize
    }

    /// The next result in sequence order, waiting for it if `wait`.
    fn next_done(&mut self, wait: bool) -> Result<Option<Done>> {
        loop {
            if let Some(i) = self.parked.iter().position(|d| d.seq == self.write_seq) {
                self.write_seq += 1;
                return Ok(Some(self.parked.swap_remove(i)));
            }
            if self.in_flight() == 0 {
                return Ok(None);
            }
            let d = if wait {
                self.rx.recv().ok()
            } else {
                match self.rx.try_recv() {
                    Ok(d) => Some(d),
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(None),
                    Err(_) => None,
                }
            };
            match d {
                Some(d) => self.parked.push(d),
                None => return Err(Error::new(super::error::ErrorKind::Io, "a compression worker failed")),
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl<'f> Qcow2Sink<'f> {
    pub(crate) fn new(f: &'f File, vsize: u64, codec: Compression) -> Result<Self> {
        let vsize = vsize.checked_add(511).map(|v| v & !511).unwrap_or(u64::MAX);
        if vsize > MAX_VIRTUAL_SIZE {
            return Err(limit(format!("virtual size {vsize} exceeds the limit of {MAX_VIRTUAL_SIZE} bytes")));
        }
        let l1_size = vsize.div_ceil(CLUSTER * L2_ENTRIES);
        // An empty disk has no L1 clusters at all (a reserved but unused one would be a leak).
        let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
        let compressing = codec != Compression::None;
        let mut refs = Vec::new();
        if compressing {
            refs.resize(1 + l1_clusters as usize, 1);
        }
        Ok(Qcow2Sink {
            f,
            vsize,
            codec,
            l1: vec![0; l1_size as usize],
            l1_clusters,
            next: (1 + l1_clusters) * CLUSTER,
            l2: vec![0; L2_ENTRIES as usize],
            cur_l2: 0,
            l2_used: false,
            pos: 0,
            partial: Vec::with_capacity(CLUSTER_US),
            refs,
            batch: if compressing { Vec::with_capacity(BATCH_CLUSTERS * CLUSTER_US) } else { Vec::new() },
            batch_idx: Vec::new(),
            out: Vec::new(),
            pool: if compressing { Some(Pool::new(codec)?) } else { None },
            wb: WriteBehind::new(f)?,
            src: None,
        })
    }

    fn check_room(&self, add: u64) -> Result<()> {
        match self.pos.checked_add(add) {
            Some(e) if e <= self.vsize => Ok(()),
            _ => Err(corrupt("the input holds more data than its virtual size")),
        }
    }

    /// Makes `l2_index` the current L2 table, appending the previous one if it maps anything.
    fn switch_l2(&mut self, l2_index: u64, m: &mut Meter) -> Result<()> {
        if l2_index == self.cur_l2 {
            return Ok(());
        }
        self.flush_l2(m)?;
        self.cur_l2 = l2_index;
        Ok(())
    }

    fn flush_l2(&mut self, m: &mut Meter) -> Result<()> {
        if !self.l2_used {
            return Ok(());
        }
        self.next = self.next.next_multiple_of(CLUSTER);
        let off = self.next;
        let mut bytes = Vec::with_capacity(CLUSTER_US);
        for e in &self.l2 {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        self.write(&bytes, off, m)?;
        self.add_refs(off, CLUSTER);
        self.next += CLUSTER;
        self.l1[self.cur_l2 as usize] = off | OFLAG_COPIED;
        self.l2.iter_mut().for_each(|e| *e = 0);
        self.l2_used = false;
        Ok(())
    }

    fn write(&self, buf: &[u8], off: u64, m: &mut Meter) -> Result<()> {
        self.f.write_all_at(buf, off).map_err(|e| Error::io("writing the qcow2 output", e))?;
        m.wrote(buf.len() as u64)?;
        Ok(())
    }

    /// Compressed mode: +1 on every host cluster that `[off, off+len)` touches.
    fn add_refs(&mut self, off: u64, len: u64) {
        if self.codec == Compression::None || len == 0 {
            return;
        }
        let first = (off / CLUSTER) as usize;
        let last = ((off + len - 1) / CLUSTER) as usize;
        if self.refs.len() <= last {
            self.refs.resize(last + 1, 0);
        }
        for r in &mut self.refs[first..=last] {
            // A host cluster holds at most a few thousand compressed chunks (each is at least
            // a dozen bytes), far below u16::MAX; saturate rather than wrap regardless.
            *r = r.saturating_add(1);
        }
    }

    /// Full clusters at guest cluster index `g0`, in `buf` (len a multiple of CLUSTER).
    fn clusters(&mut self, buf: &[u8], g0: u64, m: &mut Meter) -> Result<()> {
        if self.codec != Compression::None {
            for (k, c) in buf.chunks_exact(CLUSTER_US).enumerate() {
                if is_zero(c) {
                    continue;
                }
                let g = g0 + k as u64;
                if self.batch_idx.len() == BATCH_CLUSTERS || self.batch_idx.first().is_some_and(|&b| b / L2_ENTRIES != g / L2_ENTRIES) {
                    self.flush_batch(m)?;
                }
                self.batch.extend_from_slice(c);
                self.batch_idx.push(g);
            }
            return Ok(());
        }
        // Uncompressed: runs of non-zero clusters inside one L2 range become one write.
        for (s, e, host) in self.place(buf, g0, m)? {
            self.write(&buf[s..e], host, m)?;
        }
        Ok(())
    }

    /// Assigns host clusters to the non-zero clusters of `buf` (uncompressed mode) and returns
    /// the writes to do, as (start, end, host offset); runs inside one L2 range are merged.
    fn place(&mut self, buf: &[u8], g0: u64, m: &mut Meter) -> Result<Vec<(usize, usize, u64)>> {
        let data: Vec<bool> = buf.chunks_exact(CLUSTER_US).map(|c| !is_zero(c)).collect();
        self.place_flags(&data, g0, m)
    }

    /// As [`Self::place`], from per-cluster "holds data" flags.
    fn place_flags(&mut self, data: &[bool], g0: u64, m: &mut Meter) -> Result<Vec<(usize, usize, u64)>> {
        let mut writes = Vec::new();
        let n = data.len();
        let mut k = 0;
        while k < n {
            if !data[k] {
                k += 1;
                continue;
            }
            let g = g0 + k as u64;
            self.switch_l2(g / L2_ENTRIES, m)?;
            let range_end = (g / L2_ENTRIES + 1) * L2_ENTRIES;
            let mut e = k + 1;
            while e < n && g0 + (e as u64) < range_end && data[e] {
                e += 1;
            }
            let host = self.next;
            writes.push((k * CLUSTER_US, e * CLUSTER_US, host));
            for i in 0..(e - k) as u64 {
                self.l2[((g + i) % L2_ENTRIES) as usize] = (host + i * CLUSTER) | OFLAG_COPIED;
            }
            self.l2_used = true;
            self.next += (e - k) as u64 * CLUSTER;
            k = e;
        }
        Ok(writes)
    }

    /// Sends the batch being filled to the workers, then writes whatever results are ready
    /// (waiting when too many batches are in flight).
    fn flush_batch(&mut self, m: &mut Meter) -> Result<()> {
        if self.batch_idx.is_empty() {
            return Ok(());
        }
        let Some(pool) = self.pool.as_mut() else {
            return Ok(());
        };
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_CLUSTERS * CLUSTER_US));
        let idx = std::mem::take(&mut self.batch_idx);
        let seq = pool.next_seq;
        pool.next_seq += 1;
        let sent = pool.tx.as_ref().map(|tx| tx.send((seq, batch, idx)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(Error::new(super::error::ErrorKind::Io, "the compression workers stopped"));
        }
        loop {
            let Some(pool) = self.pool.as_mut() else {
                return Ok(());
            };
            let wait = pool.in_flight() >= pool.limit;
            match pool.next_done(wait)? {
                Some(d) => self.write_done(d, m)?,
                None => return Ok(()),
            }
        }
    }

    /// Waits for every batch and writes it.
    fn drain_pool(&mut self, m: &mut Meter) -> Result<()> {
        self.flush_batch(m)?;
        loop {
            let Some(pool) = self.pool.as_mut() else {
                return Ok(());
            };
            match pool.next_done(true)? {
                Some(d) => self.write_done(d, m)?,
                None => return Ok(()),
            }
        }
    }

    /// Appends a compressed batch: the compressed chunks packed byte-adjacent, then the
    /// clusters that did not shrink, cluster aligned, after them.
    fn write_done(&mut self, d: Done, m: &mut Meter) -> Result<()> {
        let Done { batch, idx, results, .. } = d;
        if results.len() != idx.len() {
            return Err(Error::new(super::error::ErrorKind::Io, "a compression worker failed"));
        }
        let Some(&first_g) = idx.first() else {
            return Ok(());
        };
        self.switch_l2(first_g / L2_ENTRIES, m)?;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let start = self.next;
        for (i, r) in results.iter().enumerate() {
            if let Some(c) = r {
                let off = self.next;
                let len = c.len() as u64;
                let extra = ((off + len - 1) >> 9) - (off >> 9);
                let entry = OFLAG_COMPRESSED | (extra << CSIZE_SHIFT) | off;
                self.l2[(idx[i] % L2_ENTRIES) as usize] = entry;
                self.add_refs(off, len);
                out.extend_from_slice(c);
                self.next += len;
            }
        }
        if !out.is_empty() {
            self.write(&out, start, m)?;
        }
        out.clear();
        self.next = self.next.next_multiple_of(CLUSTER);
        let start = self.next;
        for (i, r) in results.iter().enumerate() {
            if r.is_none() {
                let off = self.next;
                self.l2[(idx[i] % L2_ENTRIES) as usize] = off | OFLAG_COPIED;
                self.add_refs(off, CLUSTER);
                out.extend_from_slice(&batch[i * CLUSTER_US..(i + 1) * CLUSTER_US]);
                self.next += CLUSTER;
            }
        }
        if !out.is_empty() {
            self.write(&out, start, m)?;
        }
        self.out = out;
        self.l2_used = true;
        Ok(())
    }
}

/// True when a fast deflate of four 4 KiB samples saves almost nothing on each of them.
fn looks_incompressible(z: &mut Compress, c: &[u8], scratch: &mut [u8]) -> bool {
    for k in 0..4 {
        let s = &c[k * CLUSTER_US / 4..k * CLUSTER_US / 4 + PROBE_LEN];
        z.reset();
        match z.compress(s, scratch, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if (z.total_out() as usize) + PROBE_MIN_SAVING <= PROBE_LEN => return false,
            _ => {}
        }
    }
    true
}

/// Compresses each cluster of `part`; `None` where the result would not be smaller.
fn compress_many(codec: Compression, part: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(part.len() / CLUSTER_US);
    match codec {
        Compression::None => {}
        Compression::Zlib => {
            let mut z = Compress::new_with_window_bits(FlateLevel::new(ZLIB_LEVEL), false, ZLIB_WINDOW_BITS);
            let mut probe = Compress::new_with_window_bits(FlateLevel::fast(), false, ZLIB_WINDOW_BITS);
            // Output room above deflate's worst case: zlib-rs must never run out of space
            // mid-block (its quick strategy panics on a too-small buffer); the size
            // comparisons below decide what is kept.
            let mut scratch = vec![0u8; 2 * PROBE_LEN];
            let mut buf = vec![0u8; CLUSTER_US + 4096];
            for c in part.chunks_exact(CLUSTER_US) {
                if looks_incompressible(&mut probe, c, &mut scratch) {
                    out.push(None);
                    continue;
                }
                z.reset();
                let r = match z.compress(c, &mut buf, FlushCompress::Finish) {
                    Ok(Status::StreamEnd) if (z.total_out() as usize) < CLUSTER_US => Some(buf[..z.total_out() as usize].to_vec()),
                    _ => None,
                };
                out.push(r);
            }
        }
        Compression::Zstd => {
            let mut cx = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            let mut buf = Vec::with_capacity(CLUSTER_US - 1);
            for c in part.chunks_exact(CLUSTER_US) {
                buf.clear();
                let r = match cx.as_mut().map(|z| z.compress_to_buffer(c, &mut buf)) {
                    Some(Ok(n)) if n < CLUSTER_US => Some(buf[..n].to_vec()),
                    _ => None,
                };
                out.push(r);
            }
        }
    }
    out
}

impl Sink for Qcow2Sink<'_> {
    fn data(&mut self, mut buf: &[u8], m: &mut Meter) -> Result<()> {
        self.check_room(buf.len() as u64)?;
        if !self.partial.is_empty() {
            let take = (CLUSTER_US - self.partial.len()).min(buf.len());
            self.partial.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            self.pos += take as u64;
            if self.partial.len() == CLUSTER_US {
                let p = std::mem::take(&mut self.partial);
                let g = (self.pos - CLUSTER) / CLUSTER;
                self.clusters(&p, g, m)?;
                self.partial = p;
                self.partial.clear();
            }
        }
        let whole = buf.len() / CLUSTER_US * CLUSTER_US;
        if whole > 0 {
            self.clusters(&buf[..whole], self.pos / CLUSTER, m)?;
            self.pos += whole as u64;
        }
        let rest = &buf[whole..];
        if !rest.is_empty() {
            self.partial.extend_from_slice(rest);
            self.pos += rest.len() as u64;
        }
        Ok(())
    }

    fn data_owned(&mut self, buf: &mut IoBuf, len: usize, m: &mut Meter) -> Result<()> {
        let whole = len / CLUSTER_US * CLUSTER_US;
        if self.codec != Compression::None || !self.partial.is_empty() || whole == 0 {
            return self.data(&buf[..len], m);
        }
        self.check_room(len as u64)?;
        let g0 = self.pos / CLUSTER;
        let writes = self.place(&buf[..whole], g0, m)?;
        self.pos += whole as u64;
        // The tail (less than a cluster) is copied before the buffer changes hands.
        self.partial.extend_from_slice(&buf[whole..len]);
        self.pos += (len - whole) as u64;
        m.wrote(writes.iter().map(|w| (w.1 - w.0) as u64).sum())?;
        self.wb.submit(buf, writes)
    }

    fn data_from_file(&mut self, src: &FileIn, off: u64, len: usize, buf: &mut IoBuf, m: &mut Meter) -> Result<()> {
        let whole = len / CLUSTER_US * CLUSTER_US;
        if self.codec != Compression::None || !self.partial.is_empty() || whole == 0 {
            src.read_at(off, &mut buf[..len], "image data")?;
            m.read(len as u64)?;
            return self.data_owned(buf, len, m);
        }
        self.check_room(len as u64)?;
        src.check_range(off, len as u64, "image data")?;
        let arc = source_handle(&mut self.src, src)?;
        // A cluster whose first sector holds data is data; only clusters that start with zeros
        // are read whole to decide.
        let mut data = Vec::with_capacity(whole / CLUSTER_US);
        let mut probe = [0u8; 512];
        for k in 0..whole / CLUSTER_US {
            let so = off + (k * CLUSTER_US) as u64;
            src.read_at(so, &mut probe, "image data")?;
            let d = if is_zero(&probe) {
                let c = &mut buf[..CLUSTER_US];
                src.read_at(so, c, "image data")?;
                !is_zero(c)
            } else {
                true
            };
            data.push(d);
        }
        let g0 = self.pos / CLUSTER;
        let places = self.place_flags(&data, g0, m)?;
        self.pos += whole as u64;
        let copies: Vec<(u64, u64, usize)> = places.iter().map(|&(s, e, host)| (off + s as u64, host, e - s)).collect();
        m.wrote(copies.iter().map(|c| c.2 as u64).sum())?;
        let rest = len - whole;
        if rest > 0 {
            let t = &mut buf[..rest];
            src.read_at(off + whole as u64, t, "image data")?;
            self.partial.extend_from_slice(t);
            self.pos += rest as u64;
        }
        m.read(len as u64)?;
        self.wb.submit_copy(&arc, copies)
    }

    fn zeros(&mut self, mut len: u64, m: &mut Meter) -> Result<()> {
        self.check_room(len)?;
        if !self.partial.is_empty() {
            let take = ((CLUSTER_US - self.partial.len()) as u64).min(len);
            let zeros = [0u8; 4096];
            let mut left = take as usize;
            while left > 0 {
                let k = left.min(zeros.len());
                self.data(&zeros[..k], m)?;
                left -= k;
            }
            len -= take;
        }
        if len == 0 {
            return Ok(());
        }
        // Aligned now: whole zero clusters are simply skipped (their L2 entries stay 0).
        let whole = len / CLUSTER * CLUSTER;
        self.pos += whole;
        let rest = (len - whole) as usize;
        self.partial.resize(rest, 0);
        self.pos += rest as u64;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn finish(&mut self, m: &mut Meter) -> Result<()> {
        // Pad to the virtual size; the last partial cluster is zero-filled.
        if self.pos < self.vsize {
            self.zeros(self.vsize - self.pos, m)?;
        }
        if !self.partial.is_empty() {
            let mut p = std::mem::take(&mut self.partial);
            p.resize(CLUSTER_US, 0);
            let g = self.pos / CLUSTER;
            self.clusters(&p, g, m)?;
        }
        self.drain_pool(m)?;
        self.flush_l2(m)?;
        // Every data write must be on disk before the metadata that makes it visible.
        self.wb.finish()?;
        let n = self.next.div_ceil(CLUSTER);
        // Refcount structures count themselves: iterate to a fixed point (docs/formats.md §6.5).
        let (mut r, mut t) = (1u64, 1u64);
        loop {
            let r2 = (n + r + t).div_ceil(REFS_PER_BLOCK);
            let t2 = (r2 * 8).div_ceil(CLUSTER).max(1);
            if r2 == r && t2 == t {
                break;
            }
            r = r2;
            t = t2;
        }
        let total = n + r + t;
        if self.codec != Compression::None {
            self.refs.resize(total as usize, 1);
            for x in &mut self.refs[n as usize..] {
                *x = 1;
            }
        }
        // Refcount blocks, generated block by block.
        let mut block = Vec::with_capacity(CLUSTER_US);
        for b in 0..r {
            block.clear();
            for c in b * REFS_PER_BLOCK..(b + 1) * REFS_PER_BLOCK {
                let v: u16 = if c >= total {
                    0
                } else if self.codec == Compression::None {
                    1
                } else {
                    self.refs.get(c as usize).copied().unwrap_or(0)
                };
                block.extend_from_slice(&v.to_be_bytes());
            }
            self.write(&block, (n + b) * CLUSTER, m)?;
        }
        let mut table = vec![0u8; (t * CLUSTER) as usize];
        for b in 0..r {
            let i = b as usize * 8;
            table[i..i + 8].copy_from_slice(&((n + b) * CLUSTER).to_be_bytes());
        }
        let rt_off = (n + r) * CLUSTER;
        self.write(&table, rt_off, m)?;
        // The L1 table, then the header: only now does the file become a qcow2.
        let mut l1 = vec![0u8; (self.l1_clusters * CLUSTER) as usize];
        for (i, e) in self.l1.iter().enumerate() {
            l1[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        self.write(&l1, CLUSTER, m)?;
        self.f.set_len(total * CLUSTER).map_err(|e| Error::io("setting the qcow2 output length", e))?;
        let h = header(self.vsize, self.l1.len() as u32, rt_off, t as u32, self.codec);
        self.write(&h, 0, m)?;
        Ok(())
    }
}

/// The 112-byte v3 header plus the end-of-extensions marker (docs/formats.md §6.2).
fn header(vsize: u64, l1_size: u32, rt_off: u64, rt_clusters: u32, codec: Compression) -> Vec<u8> {
    let mut h = vec![0u8; 120];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&vsize.to_be_bytes());
    h[36..40].copy_from_slice(&l1_size.to_be_bytes());
    h[40..48].copy_from_slice(&CLUSTER.to_be_bytes());
    h[48..56].copy_from_slice(&rt_off.to_be_bytes());
    h[56..60].copy_from_slice(&rt_clusters.to_be_bytes());
    let incompat: u64 = if codec == Compression::Zstd { 1 << 3 } else { 0 };
    h[72..80].copy_from_slice(&incompat.to_be_bytes());
    h[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    h[100..104].copy_from_slice(&112u32.to_be_bytes());
    h[104] = if codec == Compression::Zstd { 1 } else { 0 };
    h
}
