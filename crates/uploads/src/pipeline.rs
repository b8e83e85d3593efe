//! Moving bytes: request bodies gathered into blocks, written at an offset by a blocking writer
//! thread, hashed by one thread per algorithm. Memory is bounded by the queue lengths, never by
//! the size of a request or an upload.

use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

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

/// The running hashes of an upload written in order from byte 0.
#[derive(Clone, Debug, Default)]
pub struct Hashes {
    sha256: Sha256,
    md5: Md5,
    sha512: Sha512,
}

/// Hex digests of a complete upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
    pub sha512: String,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Hashes {
    pub fn digests(self) -> Digests {
        Digests {
            sha256: hex(&self.sha256.finalize()),
            md5: hex(&self.md5.finalize()),
            sha512: hex(&self.sha512.finalize()),
        }
    }
}

/// The three running hashes, each on its own thread fed through a bounded queue: SHA-512 and MD5
/// cost more than the disk's bandwidth on one core, so they must not run one after the other.
struct HashThreads {
    senders: Vec<SyncSender<Arc<Block>>>,
    sha256: JoinHandle<Sha256>,
    md5: JoinHandle<Md5>,
    sha512: JoinHandle<Sha512>,
}

fn hash_thread<H: Digest + Send + 'static>(
    name: &str,
    mut state: H,
    senders: &mut Vec<SyncSender<Arc<Block>>>,
) -> io::Result<JoinHandle<H>> {
    let (tx, rx) = sync_channel::<Arc<Block>>(QUEUE);
    senders.push(tx);
    std::thread::Builder::new().name(format!("upload-{name}")).spawn(move || {
        for block in rx {
            state.update(&block[..]);
        }
        state
    })
}

impl HashThreads {
    fn start(h: Hashes) -> io::Result<Self> {
        let mut senders = Vec::with_capacity(3);
        let sha256 = hash_thread("sha256", h.sha256, &mut senders)?;
        let md5 = hash_thread("md5", h.md5, &mut senders)?;
        let sha512 = hash_thread("sha512", h.sha512, &mut senders)?;
        Ok(HashThreads { senders, sha256, md5, sha512 })
    }

    fn feed(&self, block: &Arc<Block>) {
        for tx in &self.senders {
            // A send fails only if the thread is gone (it panicked); `finish` reports that.
            let _ = tx.send(Arc::clone(block));
        }
    }

    fn finish(self) -> io::Result<Hashes> {
        drop(self.senders);
        let lost = || io::Error::other("a hash thread panicked");
        Ok(Hashes {
            sha256: self.sha256.join().map_err(|_| lost())?,
            md5: self.md5.join().map_err(|_| lost())?,
            sha512: self.sha512.join().map_err(|_| lost())?,
        })
    }
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
    /// The running hashes advanced over the written bytes (None if none were kept).
    pub hashes: Option<Hashes>,
}

/// Asks the kernel to start writing a range back now rather than when the dirty-page thresholds
/// are hit, so that the fdatasync at the end of the request finds little left to do. Advisory:
/// errors are ignored.
fn start_writeback(file: &File, offset: u64, len: usize) {
    if let Some(len) = NonZeroU64::new(len as u64) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// Writes blocks from `next` to `file` from `start` on, feeding the request checksum and the
/// running hashes. Runs on a blocking thread; stops at the first write error.
pub fn write_blocks(
    file: &File,
    start: u64,
    mut next: impl FnMut() -> Option<Arc<Block>>,
    check: Option<ChunkCheck>,
    hashes: Option<Hashes>,
) -> WriteReport {
    let mut check = check;
    let threads = match hashes.map(HashThreads::start).transpose() {
        Ok(t) => t,
        Err(e) => return WriteReport { written: 0, error: Some(e), checksum_ok: None, hashes: None },
    };
    let mut pos = start;
    let mut error = None;
    while let Some(block) = next() {
        if let Err(e) = file.write_all_at(&block, pos) {
            error = Some(e);
            break;
        }
        start_writeback(file, pos, block.len());
        if let Some(c) = check.as_mut() {
            c.update(&block);
        }
        if let Some(t) = &threads {
            t.feed(&block);
        }
        pos += block.len() as u64;
    }
    let hashes = match threads.map(HashThreads::finish).transpose() {
        Ok(h) => h,
        Err(e) => {
            error.get_or_insert(e);
            None
        }
    };
    WriteReport { written: pos - start, error, checksum_ok: check.map(ChunkCheck::matches), hashes }
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
pub fn hash_file(path: &Path, pool: &Arc<BufferPool>) -> io::Result<Digests> {
    let mut file = File::open(path)?;
    let threads = HashThreads::start(Hashes::default())?;
    read_blocks(&mut file, pool, |block| {
        threads.feed(&block);
        Ok(())
    })?;
    Ok(threads.finish()?.digests())
}

/// Writes the parts one after the other into a new `dest` (replacing any earlier attempt),
/// hashing as it copies, and makes it durable. Returns the length and the digests.
pub fn concatenate(parts: &[std::path::PathBuf], dest: &Path, pool: &Arc<BufferPool>) -> io::Result<(u64, Digests)> {
    let out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(dest)?;
    let threads = HashThreads::start(Hashes::default())?;
    let mut pos = 0u64;
    for part in parts {
        let mut source = File::open(part)?;
        read_blocks(&mut source, pool, |block| {
            out.write_all_at(&block, pos)?;
            start_writeback(&out, pos, block.len());
            threads.feed(&block);
            pos += block.len() as u64;
            Ok(())
        })?;
    }
    out.sync_all()?;
    Ok((pos, threads.finish()?.digests()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_blocks_hash_like_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let pool = Arc::new(BufferPool::default());
        let data: Vec<u8> = (0..(BLOCK_SIZE * 2 + 17)).map(|i| (i * 31 % 251) as u8).collect();
        let mut blocks = data.chunks(BLOCK_SIZE).map(|c| Block::new(c.to_vec(), Arc::clone(&pool)));
        let want = Sha256::digest(&data);
        let check = ChunkCheck::new(&Checksum::Sha256(want.into()));
        let report = write_blocks(&file, 0, || blocks.next(), Some(check), Some(Hashes::default()));
        assert!(report.error.is_none());
        assert_eq!(report.written, data.len() as u64);
        assert_eq!(report.checksum_ok, Some(true));
        let d = report.hashes.unwrap().digests();
        assert_eq!(d.sha256, hex(&want));
        assert_eq!(d.md5, hex(&Md5::digest(&data)));
        assert_eq!(d.sha512, hex(&Sha512::digest(&data)));
        assert_eq!(hash_file(&path, &pool).unwrap(), d);
        let joined = dir.path().join("j");
        let (n, d2) = concatenate(&[path.clone(), path], &joined, &pool).unwrap();
        assert_eq!(n, 2 * data.len() as u64);
        assert_eq!(d2.sha256, hex(&Sha256::digest([&data[..], &data[..]].concat())));
    }
}
