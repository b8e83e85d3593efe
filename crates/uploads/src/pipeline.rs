//! Moving bytes: request bodies gathered into blocks, written at an offset by a blocking writer
//! thread, hashed by one thread per algorithm. Memory is bounded by the queue lengths, never by
//! the size of a request or an upload.

use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use digests::{Algorithm, Hasher};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::tus::Checksum;

/// Bytes per block: one `pwrite` and one hash update per MiB keeps syscalls and channel traffic
/// negligible while a handful of blocks in flight stay a few MiB per request.
pub const BLOCK_SIZE: usize = 1 << 20;
/// Blocks queued towards the writer and towards each hash thread. With the block being filled
/// and one in each consumer, one request holds at most about 2 × QUEUE + 5 MiB.
pub const QUEUE: usize = 4;
/// Free blocks kept for reuse across requests (16 MiB): reusing them keeps the allocator from
/// spreading 1 MiB buffers over per-thread arenas, which would grow the RSS with no bound on use.
const POOL_MAX_FREE: usize = 16;

/// Recycled block buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(BLOCK_SIZE));
        buf.clear();
        buf
    }

    fn put(&self, buf: Vec<u8>) {
        if buf.capacity() != BLOCK_SIZE {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < POOL_MAX_FREE {
                free.push(buf);
            }
        }
    }
}

/// One block of upload bytes, shared by the writer and the hash threads; its buffer goes back to
/// the pool when the last of them drops it.
pub struct Block {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl Block {
    pub fn new(buf: Vec<u8>, pool: Arc<BufferPool>) -> Arc<Self> {
        Arc::new(Block { buf, pool })
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// The running hashes of an upload written in order from byte 0: SHA-256 always, MD5 and
/// SHA-512 when configured ([`crate::UploadHashes`]).
#[derive(Clone, Debug)]
pub struct Hashes {
    sha256: Hasher,
    md5: Option<Hasher>,
    sha512: Option<Hasher>,
}

/// Hex digests of a complete upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: Option<String>,
    pub sha512: Option<String>,
}

impl Hashes {
    pub fn new(all: bool) -> Self {
        Hashes {
            sha256: Hasher::new(Algorithm::Sha256),
            md5: all.then(|| Hasher::new(Algorithm::Md5)),
            sha512: all.then(|| Hasher::new(Algorithm::Sha512)),
        }
    }

    /// The hex digests; None if a hasher failed on the way (the caller hashes the file again).
    pub fn digests(self) -> Option<Digests> {
        Some(Digests { sha256: self.sha256.finish_hex()?, md5: optional_hex(self.md5)?, sha512: optional_hex(self.sha512)? })
    }
}

/// Some(None) for a digest not computed, None for one that failed.
fn optional_hex(h: Option<Hasher>) -> Option<Option<String>> {
    match h {
        None => Some(None),
        Some(h) => h.finish_hex().map(Some),
    }
}

/// Whether the bytes of one request are kept (decided after its checksum and its fdatasync).
/// Dropping the setter without deciding means "discarded", so no hash thread waits forever.
#[derive(Default)]
struct VerdictCell {
    keep: Mutex<Option<bool>>,
    decided: Condvar,
}

pub struct Verdict(Arc<VerdictCell>);

impl Verdict {
    fn new() -> (Verdict, Arc<VerdictCell>) {
        let cell = Arc::new(VerdictCell::default());
        (Verdict(Arc::clone(&cell)), cell)
    }

    fn set(&self, keep: bool) {
        let mut k = self.0.keep.lock().unwrap_or_else(|e| e.into_inner());
        k.get_or_insert(keep);
        self.0.decided.notify_all();
    }

    /// The request's bytes are kept: the hashes move on over them.
    pub fn keep(self) {
        self.set(true);
    }
}

impl Drop for Verdict {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl VerdictCell {
    fn wait(&self) -> bool {
        let mut k = self.keep.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(keep) = *k {
                return keep;
            }
            k = self.decided.wait(k).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The running hashes of an upload: at hand, or being computed by the upload's hash threads.
///
/// Hashing never holds up the request path: a request is answered once its bytes are durable
/// and its own checksum verified. Each hash thread is handed up to [`QUEUE`] blocks; when it
/// is further behind than that (MD5 and SHA-512 run at about a third of SHA-256's speed), the
/// request stops queueing blocks for it and tells it which range of the file to read instead,
/// from the page cache the writer just filled. So memory stays bounded by the queues, the
/// request goes at the speed of the network and the disk, and the hashes catch up after the
/// last byte (completion waits for them). The threads run at a lower CPU priority
/// ([`HASH_NICE`]) so that, on a busy machine, receiving bytes comes first.
pub enum RunningHashes {
    Ready(Box<Hashes>),
    Pending(Box<Lanes>),
}

impl std::fmt::Debug for RunningHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunningHashes::Ready(_) => "Ready",
            RunningHashes::Pending(_) => "Pending",
        })
    }
}

impl RunningHashes {
    /// Hashes of nothing yet; `all` adds MD5 and SHA-512 to SHA-256.
    pub fn fresh(all: bool) -> Self {
        RunningHashes::Ready(Box::new(Hashes::new(all)))
    }

    /// Waits for the hash threads to catch up (blocking); None if one of them failed.
    pub fn resolve(self) -> Option<Hashes> {
        match self {
            RunningHashes::Ready(h) => Some(*h),
            RunningHashes::Pending(lanes) => lanes.join(),
        }
    }
}

/// Nice value of the hash threads (the request path runs at the process's own, usually 0).
pub const HASH_NICE: i32 = 10;

/// What a hash thread is told, in upload order.
enum Msg {
    /// A request starts: remember the state, to return to it if the request is discarded.
    Begin(Arc<VerdictCell>),
    /// Bytes of the request.
    Block(Arc<Block>),
    /// Bytes of the request that were written but not queued: read them from the file.
    Range(u64, u64),
    /// The request ends: wait for its verdict.
    End,
}

/// One hash thread (one algorithm) of an upload, alive until the upload's hashes are resolved.
struct Lane {
    tx: std::sync::mpsc::Sender<Msg>,
    /// Blocks sent and not yet hashed.
    queued: Arc<AtomicUsize>,
    /// The part of the current request not queued (file offset, length).
    behind: Option<(u64, u64)>,
    thread: JoinHandle<Option<Hasher>>,
}

impl Lane {
    fn spawn(name: &str, start: Hasher, file: Option<Arc<File>>) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = Arc::clone(&queued);
        let thread = std::thread::Builder::new().name(format!("upload-{name}")).spawn(move || {
            lower_priority();
            run_lane(start, rx, &q, file.as_deref())
        })?;
        Ok(Lane { tx, queued, behind: None, thread })
    }

    fn begin(&mut self, verdict: &Arc<VerdictCell>) {
        self.behind = None;
        // A send fails only if the thread is gone (it failed); joining reports that.
        let _ = self.tx.send(Msg::Begin(Arc::clone(verdict)));
    }

    /// Queues `block` (written at `pos`), or records it as a range to read when the thread is
    /// [`QUEUE`] blocks behind (or cannot read the file: then it always gets the block).
    fn feed(&mut self, block: &Arc<Block>, pos: u64, can_read: bool) {
        let len = block.len() as u64;
        if let Some((_, n)) = &mut self.behind {
            *n += len;
            return;
        }
        if can_read && self.queued.load(Ordering::Acquire) >= QUEUE {
            self.behind = Some((pos, len));
            return;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(Msg::Block(Arc::clone(block)));
    }

    /// Tests: behave as if the thread were [`QUEUE`] blocks behind.
    #[cfg(test)]
    fn force_behind(&mut self) {
        self.queued.fetch_add(QUEUE, Ordering::AcqRel);
    }

    fn end(&mut self) {
        if let Some((off, len)) = self.behind.take() {
            let _ = self.tx.send(Msg::Range(off, len));
        }
        let _ = self.tx.send(Msg::End);
    }

    fn join(self) -> Option<Hasher> {
        drop(self.tx);
        self.thread.join().ok().flatten()
    }
}

/// Best effort: hashing may wait for the CPU, receiving should not.
fn lower_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASH_NICE);
}

/// A hash thread's loop. Returns the state after the last kept request, or None if bytes that
/// were kept could not be read back (the caller then hashes the whole file once).
fn run_lane(mut state: Hasher, rx: std::sync::mpsc::Receiver<Msg>, queued: &AtomicUsize, file: Option<&File>) -> Option<Hasher> {
    let mut before: Option<Hasher> = None;
    let mut verdict: Option<Arc<VerdictCell>> = None;
    let mut unreadable = false;
    let mut buf: Vec<u8> = Vec::new();
    for msg in rx {
        match msg {
            Msg::Begin(v) => {
                before = Some(state.clone());
                verdict = Some(v);
                unreadable = false;
            }
            Msg::Block(block) => {
                queued.fetch_sub(1, Ordering::AcqRel);
                if !unreadable {
                    state.update(&block[..]);
                }
            }
            Msg::Range(off, len) => {
                if !unreadable {
                    unreadable = file.is_none_or(|f| read_range(f, off, len, &mut buf, |b| state.update(b)).is_err());
                }
            }
            Msg::End => {
                // Dropping the verdict without a decision means "discarded".
                let keep = verdict.take().is_some_and(|v| v.wait());
                let prior = before.take();
                if !keep {
                    state = prior?;
                } else if unreadable {
                    return None;
                }
            }
        }
    }
    Some(state)
}

/// Reads `len` bytes of `file` at `off` in blocks, handing each to `f`. A short file is an
/// error (the bytes were truncated away: the request was discarded meanwhile).
fn read_range(file: &File, mut off: u64, len: u64, buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    buf.resize(BLOCK_SIZE, 0);
    let end = off + len;
    while off < end {
        let n = (end - off).min(BLOCK_SIZE as u64) as usize;
        file.read_exact_at(&mut buf[..n], off)?;
        f(&buf[..n]);
        off += n as u64;
    }
    Ok(())
}

/// The hash threads of an upload, one per algorithm: SHA-512 and MD5 each cost more than the
/// disk's bandwidth on one core, so they must not run one after the other.
pub struct Lanes {
    /// The upload's file, for the ranges the threads read back; None: every block is queued.
    file: Option<Arc<File>>,
    sha256: Lane,
    md5: Option<Lane>,
    sha512: Option<Lane>,
}

impl Lanes {
    fn start(h: Hashes, file: Option<Arc<File>>) -> io::Result<Self> {
        Ok(Lanes {
            sha256: Lane::spawn("sha256", h.sha256, file.clone())?,
            md5: h.md5.map(|m| Lane::spawn("md5", m, file.clone())).transpose()?,
            sha512: h.sha512.map(|m| Lane::spawn("sha512", m, file.clone())).transpose()?,
            file,
        })
    }

    fn each(&mut self, mut f: impl FnMut(&mut Lane)) {
        f(&mut self.sha256);
        if let Some(l) = &mut self.md5 {
            f(l);
        }
        if let Some(l) = &mut self.sha512 {
            f(l);
        }
    }

    fn begin(&mut self, verdict: &Arc<VerdictCell>) {
        self.each(|l| l.begin(verdict));
    }

    fn feed(&mut self, block: &Arc<Block>, pos: u64) {
        let can_read = self.file.is_some();
        self.each(|l| l.feed(block, pos, can_read));
    }

    fn end(&mut self) {
        self.each(|l| l.end());
    }

    /// Waits for every thread to finish what it was given; None if one failed.
    fn join(self) -> Option<Hashes> {
        let sha256 = self.sha256.join();
        let md5 = self.md5.map(Lane::join);
        let sha512 = self.sha512.map(Lane::join);
        Some(Hashes {
            sha256: sha256?,
            md5: match md5 {
                None => None,
                Some(h) => Some(h?),
            },
            sha512: match sha512 {
                None => None,
                Some(h) => Some(h?),
            },
        })
    }
}

impl Lanes {
    /// Starts a request on the upload's hash threads (starting them if the hashes are at hand).
    fn for_request(from: RunningHashes, verdict: &Arc<VerdictCell>, file: Option<Arc<File>>) -> io::Result<Self> {
        let mut lanes = match from {
            RunningHashes::Ready(h) => Lanes::start(*h, file)?,
            RunningHashes::Pending(l) => *l,
        };
        lanes.begin(verdict);
        Ok(lanes)
    }

    /// No more blocks in this request: the threads finish it once its verdict is in.
    fn close(mut self) -> Self {
        self.end();
        self
    }
}

/// Hashes whole files on three threads (completion without running hashes, joining parts);
/// `feed_blocks` gets a function taking each block in order.
fn hash_all(all: bool, feed_blocks: impl FnOnce(&mut dyn FnMut(&Arc<Block>)) -> io::Result<()>) -> io::Result<Digests> {
    let (verdict, cell) = Verdict::new();
    let mut feed = Lanes::for_request(RunningHashes::fresh(all), &cell, None)?;
    let mut pos = 0u64;
    let fed = feed_blocks(&mut |block| {
        feed.feed(block, pos);
        pos += block.len() as u64;
    });
    let lanes = feed.close();
    verdict.keep();
    let digests = lanes.join().and_then(Hashes::digests).ok_or_else(|| io::Error::other("a hash thread failed"));
    fed?;
    digests
}

/// The checksum of one request's bytes (the tus checksum extension), with what was expected.
pub enum ChunkCheck {
    Sha1(Sha1, [u8; 20]),
    Sha256(Sha256, [u8; 32]),
}

impl ChunkCheck {
    pub fn new(expected: &Checksum) -> Self {
        match expected {
            Checksum::Sha1(d) => ChunkCheck::Sha1(Sha1::new(), *d),
            Checksum::Sha256(d) => ChunkCheck::Sha256(Sha256::new(), *d),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            ChunkCheck::Sha1(h, _) => h.update(bytes),
            ChunkCheck::Sha256(h, _) => h.update(bytes),
        }
    }

    fn matches(self) -> bool {
        match self {
            ChunkCheck::Sha1(h, want) => h.finalize()[..] == want[..],
            ChunkCheck::Sha256(h, want) => h.finalize()[..] == want[..],
        }
    }
}

/// What the writer did with one request's blocks.
pub struct WriteReport {
    /// Bytes written from the start offset, in full blocks as received (all of them unless
    /// `error` is set).
    pub written: u64,
    /// The first write error; the caller discards the request's bytes.
    pub error: Option<io::Error>,
    /// Whether the request's checksum matched (None: none was sent).
    pub checksum_ok: Option<bool>,
    /// The hash threads that took the written bytes, and the verdict they wait for: call
    /// [`Verdict::keep`] once the bytes are durable; dropping it discards them from the hashes.
    pub hashes: Option<(Lanes, Verdict)>,
}

/// Asks the kernel to start writing a range back now rather than when the dirty-page thresholds
/// are hit, so that the fdatasync at the end of the request finds little left to do. Advisory:
/// errors are ignored.
fn start_writeback(file: &File, offset: u64, len: usize) {
    if let Some(len) = NonZeroU64::new(len as u64) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// The request checksum on its own thread, so that hashing a block overlaps with writing it.
struct CheckThread {
    tx: SyncSender<Arc<Block>>,
    thread: JoinHandle<bool>,
}

impl CheckThread {
    fn start(mut check: ChunkCheck) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Arc<Block>>(QUEUE);
        let thread = std::thread::Builder::new().name("upload-checksum".into()).spawn(move || {
            for block in rx {
                check.update(&block);
            }
            check.matches()
        })?;
        Ok(CheckThread { tx, thread })
    }

    fn finish(self) -> bool {
        drop(self.tx);
        // A panicked checksum thread counts as a mismatch: the bytes are not kept.
        self.thread.join().unwrap_or(false)
    }
}

/// Writes blocks from `next` to `file` (opened for reading too: hash threads that fall behind
/// read their bytes back) from `start` on, feeding the request checksum and the running hashes. Runs on a blocking thread; stops at the first write error.
pub fn write_blocks(
    file: &Arc<File>,
    start: u64,
    mut next: impl FnMut() -> Option<Arc<Block>>,
    check: Option<ChunkCheck>,
    hashes: Option<RunningHashes>,
) -> WriteReport {
    let (verdict, cell) = Verdict::new();
    let started = check
        .map(CheckThread::start)
        .transpose()
        .and_then(|c| Ok((c, hashes.map(|h| Lanes::for_request(h, &cell, Some(Arc::clone(file)))).transpose()?)));
    let (check, mut feed) = match started {
        Ok(t) => t,
        Err(e) => return WriteReport { written: 0, error: Some(e), checksum_ok: None, hashes: None },
    };
    let mut pos = start;
    let mut error = None;
    while let Some(block) = next() {
        if let Some(c) = &check {
            let _ = c.tx.send(Arc::clone(&block));
        }
        if let Err(e) = file.write_all_at(&block, pos) {
            error = Some(e);
            break;
        }
        start_writeback(file, pos, block.len());
        if let Some(f) = &mut feed {
            f.feed(&block, pos);
        }
        pos += block.len() as u64;
    }
    WriteReport { written: pos - start, error, checksum_ok: check.map(CheckThread::finish), hashes: feed.map(|f| (f.close(), verdict)) }
}

/// Reads `source` to its end in blocks, handing each to `sink`; stops at the first error.
fn read_blocks(source: &mut File, pool: &Arc<BufferPool>, mut sink: impl FnMut(Arc<Block>) -> io::Result<()>) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut buf = pool.take();
        buf.resize(BLOCK_SIZE, 0);
        let mut filled = 0;
        while filled < BLOCK_SIZE {
            match source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        buf.truncate(filled);
        total += filled as u64;
        sink(Block::new(buf, Arc::clone(pool)))?;
    }
}

/// Hashes a whole file (an upload whose running hashes were lost to a restart).
pub fn hash_file(path: &Path, pool: &Arc<BufferPool>, all: bool) -> io::Result<Digests> {
    let mut file = File::open(path)?;
    hash_all(all, |feed| {
        read_blocks(&mut file, pool, |block| {
            feed(&block);
            Ok(())
        })
        .map(drop)
    })
}

/// Writes the parts one after the other into a new `dest` (replacing any earlier attempt),
/// hashing as it copies, and makes it durable. Returns the length and the digests.
pub fn concatenate(parts: &[std::path::PathBuf], dest: &Path, pool: &Arc<BufferPool>, all: bool) -> io::Result<(u64, Digests)> {
    let out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(dest)?;
    let mut pos = 0u64;
    let digests = hash_all(all, |feed| {
        for part in parts {
            let mut source = File::open(part)?;
            read_blocks(&mut source, pool, |block| {
                out.write_all_at(&block, pos)?;
                start_writeback(&out, pos, block.len());
                feed(&block);
                pos += block.len() as u64;
                Ok(())
            })?;
        }
        Ok(())
    })?;
    out.sync_all()?;
    Ok((pos, digests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use digests::hex;
    use md5::Md5;
    use sha2::Sha512;

    #[test]
    fn written_blocks_hash_like_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = Arc::new(File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap());
        let pool = Arc::new(BufferPool::default());
        let data: Vec<u8> = (0..(BLOCK_SIZE * 2 + 17)).map(|i| (i * 31 % 251) as u8).collect();
        let mut blocks = data.chunks(BLOCK_SIZE).map(|c| Block::new(c.to_vec(), Arc::clone(&pool)));
        let want = Sha256::digest(&data);
        let check = ChunkCheck::new(&Checksum::Sha256(want.into()));
        let report = write_blocks(&file, 0, || blocks.next(), Some(check), Some(RunningHashes::fresh(true)));
        assert!(report.error.is_none());
        assert_eq!(report.written, data.len() as u64);
        assert_eq!(report.checksum_ok, Some(true));
        let (lanes, verdict) = report.hashes.unwrap();
        verdict.keep();
        let d = lanes.join().unwrap().digests().unwrap();
        assert_eq!(d.sha256, hex(&want));
        assert_eq!(d.md5, Some(hex(&Md5::digest(&data))));
        assert_eq!(d.sha512, Some(hex(&Sha512::digest(&data))));
        assert_eq!(hash_file(&path, &pool, true).unwrap(), d);
        let only = hash_file(&path, &pool, false).unwrap();
        assert_eq!((only.sha256, only.md5, only.sha512), (d.sha256.clone(), None, None));
        let joined = dir.path().join("j");
        let (n, d2) = concatenate(&[path.clone(), path], &joined, &pool, true).unwrap();
        assert_eq!(n, 2 * data.len() as u64);
        assert_eq!(d2.sha256, hex(&Sha256::digest([&data[..], &data[..]].concat())));
    }

    /// A discarded request leaves the hashes where they were, and the next request's threads
    /// continue from there.
    #[test]
    fn discarded_requests_do_not_reach_the_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("f")).unwrap());
        let pool = Arc::new(BufferPool::default());
        let write = |at: u64, bytes: &[u8], from: RunningHashes, keep: bool| {
            let mut once = Some(Block::new(bytes.to_vec(), Arc::clone(&pool)));
            let report = write_blocks(&file, at, || once.take(), None, Some(from));
            let (lanes, verdict) = report.hashes.unwrap();
            if keep {
                verdict.keep();
            }
            RunningHashes::Pending(Box::new(lanes))
        };
        let h = write(0, b"hello ", RunningHashes::fresh(true), true);
        let h = write(6, b"junk", h, false);
        let h = write(6, b"world", h, true);
        let d = h.resolve().unwrap().digests().unwrap();
        assert_eq!(d.sha256, hex(&Sha256::digest(b"hello world")));
        assert_eq!(d.md5, Some(hex(&Md5::digest(b"hello world"))));
    }

    /// Hash threads that are behind read the request's bytes back from the file, and the
    /// result is the same as hashing the blocks; a discarded request whose bytes were
    /// truncated away before they were read back leaves the hashes where they were.
    #[test]
    fn lanes_that_fall_behind_read_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = Arc::new(File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap());
        let pool = Arc::new(BufferPool::default());
        let data: Vec<u8> = (0..(BLOCK_SIZE * 3 + 5)).map(|i| (i * 7 % 253) as u8).collect();
        file.write_all_at(&data, 0).unwrap();
        let mut lanes = Lanes::start(Hashes::new(true), Some(Arc::clone(&file))).unwrap();
        // Request 1, kept: every lane is "full", so nothing is queued and all is read back.
        let (verdict, cell) = Verdict::new();
        lanes.begin(&cell);
        lanes.each(|l| l.force_behind());
        let mut pos = 0;
        for c in data.chunks(BLOCK_SIZE) {
            lanes.feed(&Block::new(c.to_vec(), Arc::clone(&pool)), pos);
            pos += c.len() as u64;
        }
        lanes.end();
        verdict.keep();
        // Request 2, discarded after its bytes were truncated away (the reads fail).
        let (verdict, cell) = Verdict::new();
        lanes.begin(&cell);
        lanes.each(|l| l.force_behind());
        lanes.feed(&Block::new(vec![9; 100], Arc::clone(&pool)), pos);
        lanes.end();
        drop(verdict);
        let d = lanes.join().unwrap().digests().unwrap();
        assert_eq!(d.sha256, hex(&Sha256::digest(&data)));
        assert_eq!(d.md5, Some(hex(&Md5::digest(&data))));
        assert_eq!(d.sha512, Some(hex(&Sha512::digest(&data))));

        // A kept request whose bytes cannot be read back fails the lanes (completion then
        // hashes the whole file instead of trusting a wrong digest).
        let mut lanes = Lanes::start(Hashes::new(false), Some(Arc::clone(&file))).unwrap();
        let (verdict, cell) = Verdict::new();
        lanes.begin(&cell);
        lanes.each(|l| l.force_behind());
        lanes.feed(&Block::new(vec![1; 10], Arc::clone(&pool)), data.len() as u64 + 1000);
        lanes.end();
        verdict.keep();
        assert!(lanes.join().is_none());
    }
}
