//! RBD backend: images as RBD images with a protected snapshot `snap`, through librbd (the
//! `rbd` crate, which loads Ceph's client libraries at run time). This is the layout of Glance's
//! rbd store, which Nova and Cinder clone copy-on-write to boot VMs without copying
//! (`docs/scale-out.md`, "Ceph RBD through librbd").
//!
//! A write ([`Backend::put_file`]) never shows a partial image under its key:
//! 1. create `.partial-<key>-<random>` at the file's size (RBD images are thin: unwritten ranges
//!    read as zeros and use no space);
//! 2. write only the non-zero ranges: holes of a sparse file are skipped without being read
//!    (`SEEK_DATA`/`SEEK_HOLE`) and all-zero clusters of what is read are not sent; several
//!    asynchronous writes are in flight at once;
//! 3. flush, create the snapshot `snap` and protect it;
//! 4. rename the image to `<key>` (after removing an older image of that name, which a repeated
//!    write of the same key replaces).
//!
//! A failure removes the partial image; a process that dies mid-write leaves one, which
//! [`Backend::sweep_abandoned_writes`] removes once it is older than the sweep's age. Keys never
//! start with a dot, so a partial image can never be mistaken for a stored one.
//!
//! Reads are of the snapshot (what clones see). A delete is refused while clones of the snapshot
//! exist (their names are in the error); otherwise the snapshot is unprotected and removed, then
//! the image.
//!
//! Bounds: every librados operation is bounded by the backend's timeout (librados's
//! `rados_osd_op_timeout`, `rados_mon_op_timeout` and `client_mount_timeout`), so a stopped OSD or
//! monitor makes it fail with ETIMEDOUT instead of hanging. Short calls (connect, open, size,
//! list, delete, sweep) also run on Tokio's blocking pool under the same bound; a write has no
//! outer bound (a large image takes as long as it takes), only its operations'. A write whose
//! caller gives up (drops the future) stops at its next chunk and removes its partial image.
//!
//! The sweep removes a partial image only when it is older than the sweep's age and no client
//! watches it (a writer holds a watch; the sweep's read-only open adds none).

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rbd::{Cluster, ConnectOptions, Pool};

use crate::{bounded, Backend, BackendConfig, BackendKind, ByteStream, Key, PutMode, Space, StoreError};

/// The snapshot clones are made from (Glance's rbd store uses the same name).
pub const SNAPSHOT: &str = "snap";
/// Prefix of images being written.
pub const PARTIAL_PREFIX: &str = ".partial-";
/// Bytes read from the source file at a time (and the largest single write).
const CHUNK: usize = 4 << 20;
/// Zero detection granularity: an all-zero cluster of this size is not sent.
const CLUSTER: usize = 64 << 10;
/// Writes in flight at once (each at most [`CHUNK`]: 64 MiB of buffers at most, whatever the
/// image size). 16 measured faster than 8 against `rbd import` (`examples/rbd_bench.rs`).
const WRITES_IN_FLIGHT: usize = 16;
/// Bytes read at a time for downloads.
const READ_CHUNK: usize = 1 << 20;
/// Default object size (RBD's `order` 22).
const DEFAULT_OBJECT_SIZE_MIB: u64 = 4;

#[derive(Clone)]
struct Conn {
    cluster: Cluster,
    pool: Pool,
    fsid: String,
}

pub struct RbdBackend {
    name: String,
    pool: String,
    connect: ConnectOptions,
    features: u64,
    order: u8,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl fmt::Debug for RbdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdBackend")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("client_id", &self.connect.client_id)
            .field("conf", &self.connect.conf)
            .field("features", &self.features)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

/// `rbd create --image-feature` names to bits.
fn parse_features(names: &[String]) -> Result<u64, String> {
    let mut bits = 0;
    for n in names {
        let Some((_, b)) = rbd::features::NAMED.iter().find(|(k, _)| k == n) else {
            let known: Vec<&str> = rbd::features::NAMED.iter().map(|(k, _)| *k).collect();
            return Err(format!("unknown image feature '{n}' (known: {})", known.join(", ")));
        };
        bits |= b;
    }
    use rbd::features::{EXCLUSIVE_LOCK, FAST_DIFF, JOURNALING, OBJECT_MAP};
    if bits & (OBJECT_MAP | JOURNALING) != 0 && bits & EXCLUSIVE_LOCK == 0 {
        return Err("object-map and journaling need exclusive-lock".into());
    }
    if bits & FAST_DIFF != 0 && bits & OBJECT_MAP == 0 {
        return Err("fast-diff needs object-map".into());
    }
    if bits & rbd::features::LAYERING == 0 {
        return Err("`layering` is required: clones of the image's snapshot are what RBD storage is for".into());
    }
    Ok(bits)
}

impl RbdBackend {
    pub fn open(config: &BackendConfig) -> Result<Self, StoreError> {
        let err = |what: String| StoreError::Config(format!("storage '{}' (rbd): {what}", config.name));
        let pool = config.pool.clone().ok_or_else(|| err("`pool` is required (an RBD pool: `rbd pool init <pool>`)".into()))?;
        if pool.is_empty() || pool.contains(['\0', '/', '@']) {
            return Err(err(format!("pool '{pool}' is not a pool name")));
        }
        let features = match &config.image_features {
            None => rbd::features::DEFAULT,
            Some(names) => parse_features(names).map_err(err)?,
        };
        let mib = config.object_size_mib.unwrap_or(DEFAULT_OBJECT_SIZE_MIB);
        if !(1..=32).contains(&mib) || !mib.is_power_of_two() {
            return Err(err(format!("object_size_mib = {mib} must be 1, 2, 4, 8, 16 or 32")));
        }
        // 1 MiB is 2^20.
        let order = 20 + u8::try_from(mib.trailing_zeros()).unwrap_or(0);
        if let Some(conf) = &config.conf {
            if !conf.is_file() {
                return Err(err(format!("conf '{}' is not a readable file", conf.display())));
            }
        }
        let timeout = config.timeout()?;
        // Refused at start-up, with what to install, rather than at the first upload.
        rbd::available().map_err(|e| err(e.to_string()))?;
        Ok(RbdBackend {
            name: config.name.clone(),
            pool,
            connect: ConnectOptions {
                client_id: config.client.clone(),
                conf: config.conf.clone(),
                keyring: config.keyring.clone(),
                timeout: Some(timeout),
            },
            features,
            order,
            timeout,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    pub fn pool(&self) -> &str {
        &self.pool
    }

    fn error(&self, what: String, e: rbd::Error, op: &'static str) -> StoreError {
        if e.is_timeout() {
            return StoreError::Timeout { op, after: self.timeout };
        }
        StoreError::Rbd { what: format!("{what} (storage '{}', pool '{}')", self.name, self.pool), source: e }
    }

    /// The cluster and pool, connected on first use (and again after a failed connect).
    async fn conn(&self) -> Result<Conn, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let (opts, pool) = (self.connect.clone(), self.pool.clone());
        let connected = blocking("connect", self.timeout, move || {
            let cluster = Cluster::connect(&opts).map_err(|e| ("connect to the Ceph cluster".to_owned(), e))?;
            let p = cluster.pool(&pool).map_err(|e| {
                let what = if e.is_not_found() {
                    format!(
                        "open pool '{pool}': there is no such pool (create it: `ceph osd pool create {pool}` and `rbd pool init {pool}`)"
                    )
                } else {
                    format!("open pool '{pool}'")
                };
                (what, e)
            })?;
            let fsid = cluster.fsid().map_err(|e| ("read the cluster's fsid".to_owned(), e))?;
            Ok(Conn { cluster, pool: p, fsid })
        })
        .await?
        .map_err(|(what, e)| self.error(what, e, "connect"))?;
        *slot = Some(connected.clone());
        Ok(connected)
    }

    /// Runs `f` with the pool on the blocking pool, bounded by the timeout.
    async fn with_pool<T: Send + 'static>(
        &self,
        op: &'static str,
        what: impl Into<String>,
        f: impl FnOnce(&Pool) -> Result<T, rbd::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn().await?;
        let r = blocking(op, self.timeout, move || f(&conn.pool)).await?;
        if let Err(e) = &r {
            // A client the cluster shut out (blocklisted) or lost: connect again next time.
            if matches!(e.errno(), Some(107 | 108)) {
                *self.conn.lock().await = None;
            }
        }
        r.map_err(|e| self.error(what.into(), e, op))
    }

    /// The `rbd://<fsid>/<pool>/<image>/snap` URL a compute service clones from.
    pub async fn rbd_url(&self, key: &str) -> Result<String, StoreError> {
        let key = Key::parse(key)?.as_str().to_owned();
        let conn = self.conn().await?;
        Ok(format!("rbd://{}/{}/{key}/{SNAPSHOT}", conn.fsid, self.pool))
    }

    /// The clones of `key`'s snapshot, as `pool/image`.
    pub async fn clones(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let key = Key::parse(key)?.as_str().to_owned();
        let k = key.clone();
        self.with_pool("list clones", format!("list the clones of '{key}'"), move |pool| match pool.open_at(&k, SNAPSHOT) {
            Ok(img) => img.children(),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        })
        .await
    }
}

/// Runs a blocking librbd call on Tokio's blocking pool, bounded by `after` (librados's own
/// timeouts end the call itself; this bound is the backstop).
async fn blocking<T: Send + 'static>(op: &'static str, after: Duration, f: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    bounded(
        op,
        after,
        async move { tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Remote(format!("RBD {op} task failed: {e}"))) },
    )
    .await
}

/// Removes an image whatever state a write left it in: snapshot unprotected and removed first.
/// A missing image is not an error.
fn remove_image(pool: &Pool, name: &str) -> Result<(), rbd::Error> {
    let img = match pool.open(name) {
        Ok(img) => img,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    match img.snap_protected(SNAPSHOT)? {
        Some(true) => {
            img.snap_unprotect(SNAPSHOT)?;
            img.snap_remove(SNAPSHOT)?;
        }
        Some(false) => img.snap_remove(SNAPSHOT)?,
        None => {}
    }
    drop(img);
    match pool.remove(name) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// Whether every byte is zero (a branch-free fold per page, which the compiler vectorises).
fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(4096).all(|page| page.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// The non-zero runs of `buf`, in clusters of [`CLUSTER`] bytes: (start, end) pairs.
fn data_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, c) in buf.chunks(CLUSTER).enumerate() {
        if is_zero(c) {
            continue;
        }
        let (s, e) = (i * CLUSTER, i * CLUSTER + c.len());
        match runs.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => runs.push((s, e)),
        }
    }
    runs
}

/// Writes the non-zero data of `file` (of `size` bytes) through `writer` and waits until it is
/// written; `done` follows the offset reached. Returns the bytes sent. On an error, writes may
/// still be in flight: they are waited for when the caller drops the writer, which it does after
/// it has reported the error (see `put_file`).
fn write_data(writer: &mut rbd::AioWriter<'_>, file: &File, size: u64, done: &AtomicU64, cancel: &AtomicBool) -> Result<u64, StoreError> {
    use rustix::fs::{seek, SeekFrom};
    let io = |e: std::io::Error| StoreError::Remote(format!("RBD write: reading the source failed: {e}"));
    let rbd_err = |e: rbd::Error| StoreError::Rbd { what: "write".into(), source: e };
    let mut sent = 0u64;
    let mut pos = 0u64;
    while pos < size {
        let (data, hole) = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => (d, seek(file, SeekFrom::Hole(d)).map_err(|e| io(e.into()))?.min(size)),
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem that cannot tell: everything from here on is read (and its zero
            // clusters still skipped).
            Err(rustix::io::Errno::INVAL) => (pos, size),
            Err(e) => return Err(io(e.into())),
        };
        let mut off = data;
        while off < hole {
            if cancel.load(Ordering::Relaxed) {
                return Err(StoreError::Remote("RBD write cancelled".into()));
            }
            let len = usize::try_from(hole - off).unwrap_or(CHUNK).min(CHUNK);
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, off).map_err(io)?;
            let runs = data_runs(&buf);
            if let [(0, end)] = runs.as_slice() {
                if *end == len {
                    sent += len as u64;
                    writer.write(off, buf).map_err(rbd_err)?;
                    off += len as u64;
                    done.store(off, Ordering::Relaxed);
                    continue;
                }
            }
            for (s, e) in runs {
                sent += (e - s) as u64;
                writer.write(off + s as u64, buf[s..e].to_vec()).map_err(rbd_err)?;
            }
            off += len as u64;
            done.store(off, Ordering::Relaxed);
        }
        pos = hole;
    }
    writer.wait_all().map_err(rbd_err)?;
    done.store(size, Ordering::Relaxed);
    Ok(sent)
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Puts the complete image `partial` under `key`. An older image of that name (a repeated write
/// of the key) is renamed aside first and removed after, so at no moment is there no image
/// under the key once there was one, and a failed rename puts the old one back. An old image
/// that cannot be removed (clones of it exist) stays under its partial name, for the sweep.
fn publish(pool: &Pool, partial: &str, key: &str) -> Result<(), rbd::Error> {
    let aside = format!("{PARTIAL_PREFIX}{key}-old-{}", random_suffix());
    let had_old = match pool.rename(key, &aside) {
        Ok(()) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e),
    };
    if let Err(e) = pool.rename(partial, key) {
        if had_old {
            let _ = pool.rename(&aside, key);
        }
        return Err(e);
    }
    if had_old {
        if let Err(e) = remove_image(pool, &aside) {
            tracing::warn!(error = %e, image = aside, "rbd: the replaced image stays until the sweep removes it");
        }
    }
    Ok(())
}

/// An image closed on Tokio's blocking pool when dropped (closing waits for the cluster).
struct ClosingImage(Option<rbd::Image>);

impl Drop for ClosingImage {
    fn drop(&mut self) {
        if let Some(img) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(img))),
                Err(_) => drop(img),
            }
        }
    }
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[async_trait]
impl Backend for RbdBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Rbd
    }

    #[tracing::instrument(level = "debug", skip(self, progress), fields(backend = %self.name))]
    async fn put_file(&self, key: &str, src: &Path, _mode: PutMode, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<u64, StoreError> {
        let key = Key::parse(key)?.as_str().to_owned();
        let conn = self.conn().await?;
        let file = File::open(src).map_err(|e| StoreError::io("open", src, e))?;
        let size = file.metadata().map_err(|e| StoreError::io("stat", src, e))?.len();
        let partial = format!("{PARTIAL_PREFIX}{key}-{}", random_suffix());
        let done = Arc::new(AtomicU64::new(0));
        // Set when this future is dropped (the caller gave up): the write stops at its next
        // chunk and removes its partial image instead of publishing.
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (features, order, d, k) = (self.features, self.order, done.clone(), key.clone());
        let (pool, name) = (conn.pool.clone(), partial.clone());
        // The whole write, publish and cleanup run on one blocking thread, in order, so a
        // cleanup never races the image it removes. The result is sent as soon as it is known:
        // closing an image (releasing its exclusive lock) and removing a partial one wait out
        // librados's bound once per call when the cluster has stopped answering, and the
        // caller's error need not wait for that. There is no outer bound on the write (a large
        // image takes as long as it takes); every librados operation in it is bounded.
        let (tx, mut rx) = tokio::sync::oneshot::channel::<Result<u64, StoreError>>();
        tokio::task::spawn_blocking(move || {
            let step = |what: &'static str| move |e: rbd::Error| StoreError::Rbd { what: what.to_owned(), source: e };
            if let Err(e) = pool.create(&name, size, features, order) {
                let _ = tx.send(Err(step("create the image")(e)));
                return;
            }
            let written = match pool.open(&name) {
                Err(e) => Err(step("open the new image")(e)),
                Ok(img) => {
                    let mut writer = img.writer(WRITES_IN_FLIGHT);
                    let written = write_data(&mut writer, &file, size, &d, &cancel).and_then(|sent| {
                        img.flush().map_err(step("flush"))?;
                        img.snap_create(SNAPSHOT).map_err(step("create the snapshot"))?;
                        img.snap_protect(SNAPSHOT).map_err(step("protect the snapshot"))?;
                        Ok(sent)
                    });
                    match written {
                        Ok(sent) => {
                            // Closed before it is renamed and published.
                            drop(writer);
                            drop(img);
                            if cancel.load(Ordering::Relaxed) {
                                Err(StoreError::Remote("RBD write cancelled".into()))
                            } else {
                                publish(&pool, &name, &k).map(|()| sent).map_err(step("publish the image"))
                            }
                        }
                        Err(e) => {
                            // Answered before the writes still in flight are waited out: with an
                            // OSD stopped they can time out one after another.
                            let _ = tx.send(Err(e));
                            drop(writer);
                            drop(img);
                            if let Err(e) = remove_image(&pool, &name) {
                                tracing::warn!(error = %e, partial = name, "rbd: the partial image stays until the sweep removes it");
                            }
                            return;
                        }
                    }
                }
            };
            if written.is_err() {
                if let Err(e) = remove_image(&pool, &name) {
                    tracing::warn!(error = %e, partial = name, "rbd: the partial image stays until the sweep removes it");
                }
            }
            let _ = tx.send(written);
        });
        // Progress while the blocking write runs.
        let written = loop {
            tokio::select! {
                r = &mut rx => break r,
                _ = tokio::time::sleep(Duration::from_millis(100)) => progress(done.load(Ordering::Relaxed)),
            }
        };
        let written = written.map_err(|_| StoreError::Remote("RBD write task ended without an answer".into())).and_then(|r| r);
        match written {
            Ok(sent) => {
                tracing::debug!(key, size, sent, "rbd: written and published");
                progress(size);
                Ok(size)
            }
            Err(StoreError::Rbd { what, source }) if source.is_timeout() => {
                tracing::warn!(what, key, "rbd: write timed out");
                Err(StoreError::Timeout { op: "write", after: self.timeout })
            }
            Err(StoreError::Rbd { what, source }) => Err(self.error(format!("write '{key}': {what}"), source, "write")),
            Err(other) => Err(other),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StoreError> {
        let key = Key::parse(key)?.as_str().to_owned();
        let k = key.clone();
        let (img, size) = self
            .with_pool("open", format!("open '{key}'"), move |pool| {
                let img = pool.open_read_only(&k, Some(SNAPSHOT))?;
                let size = img.size()?;
                Ok((img, size))
            })
            .await
            .map_err(|e| match e {
                StoreError::Rbd { source, .. } if source.is_not_found() => StoreError::NotFound { key: key.clone() },
                e => e,
            })?;
        let Range { start, end } = range.unwrap_or(0..size);
        if start > end || end > size {
            return Err(StoreError::InvalidRange { start, end, size });
        }
        let timeout = self.timeout;
        let name = self.name.clone();
        let stream = futures::stream::unfold(Some((ClosingImage(Some(img)), start)), move |state| {
            let name = name.clone();
            async move {
                let (mut img, pos) = state?;
                if pos >= end {
                    return None;
                }
                let n = usize::try_from(end - pos).unwrap_or(READ_CHUNK).min(READ_CHUNK);
                let handle = img.0.take()?;
                let read = blocking("read", timeout, move || {
                    let mut buf = vec![0u8; n];
                    let r = handle.read_at(pos, &mut buf);
                    (ClosingImage(Some(handle)), buf, r)
                })
                .await;
                match read {
                    Ok((img, mut buf, Ok(got))) if got > 0 => {
                        buf.truncate(got);
                        Some((Ok(Bytes::from(buf)), Some((img, pos + got as u64))))
                    }
                    Ok((_, _, Ok(_))) => {
                        Some((Err(StoreError::Remote(format!("RBD read of storage '{name}' ended early at byte {pos}"))), None))
                    }
                    Ok((_, _, Err(e))) if e.is_timeout() => Some((Err(StoreError::Timeout { op: "read", after: timeout }), None)),
                    Ok((_, _, Err(e))) => Some((Err(StoreError::Rbd { what: format!("read at byte {pos}"), source: e }), None)),
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let key = Key::parse(key)?.as_str().to_owned();
        let k = key.clone();
        self.with_pool("size", format!("read the size of '{key}'"), move |pool| match pool.open_read_only(&k, Some(SNAPSHOT)) {
            Ok(img) => img.size().map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let clones = self.clones(key).await?;
        if !clones.is_empty() {
            return Err(StoreError::InUse { key: key.to_owned(), clones });
        }
        let k = key.to_owned();
        match self.with_pool("delete", format!("delete '{key}'"), move |pool| remove_image(pool, &k)).await {
            // Clones RBD did not list (in its trash, or made between the check and now) keep
            // the snapshot protected.
            Err(StoreError::Rbd { source, .. }) if source.errno() == Some(rbd::EBUSY) => Err(StoreError::InUse {
                key: key.to_owned(),
                clones: vec!["clones RBD did not list (in its trash, or just made)".to_owned()],
            }),
            r => r,
        }
    }

    async fn space(&self) -> Result<Space, StoreError> {
        let conn = self.conn().await?;
        let stat = blocking("stat", self.timeout, move || conn.cluster.stat())
            .await?
            .map_err(|e| self.error("read the cluster's capacity".into(), e, "stat"))?;
        Ok(Space { free: Some(stat.avail), total: Some(stat.total) })
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.with_pool("check", "list the pool's images", |pool| pool.list().map(|_| ())).await
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    async fn sweep_abandoned_writes(&self, age: Duration) -> Result<usize, StoreError> {
        self.with_pool("sweep", "remove abandoned partial images", move |pool| {
            let mut removed = 0;
            for name in pool.list()?.into_iter().filter(|n| n.starts_with(PARTIAL_PREFIX)) {
                // Read-only opens add no watch: a watcher is a writer, whose image is in use
                // however old it is (a large image takes long).
                let (created, in_use) = match pool.open_read_only(&name, None).and_then(|img| Ok((img.created()?, img.has_watchers()?))) {
                    Ok(facts) => facts,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, image = name, "rbd sweep: cannot read the partial image; skipped");
                        continue;
                    }
                };
                if in_use || SystemTime::now().duration_since(created).unwrap_or_default() < age {
                    continue;
                }
                match remove_image(pool, &name) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(error = %e, image = name, "rbd sweep: cannot remove the partial image; tried again next time"),
                }
            }
            Ok(removed)
        })
        .await
    }

    fn key_for(&self, image_id: &str, _ext: &str) -> String {
        image_id.to_owned()
    }

    async fn dependents(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.clones(key).await
    }

    async fn direct_url(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.rbd_url(key).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_runs_skip_zero_clusters_and_merge_neighbours() {
        let mut buf = vec![0u8; 5 * CLUSTER + 100];
        assert!(data_runs(&buf).is_empty());
        buf[CLUSTER + 7] = 1;
        buf[2 * CLUSTER] = 1;
        buf[5 * CLUSTER + 99] = 1;
        assert_eq!(data_runs(&buf), [(CLUSTER, 3 * CLUSTER), (5 * CLUSTER, 5 * CLUSTER + 100)]);
        assert!(is_zero(&[0; 10_000]) && !is_zero(&[0, 0, 0, 9]));
    }

    #[test]
    fn features_by_name_with_their_dependencies() {
        let f = |names: &[&str]| parse_features(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(f(&["layering"]), Ok(rbd::features::LAYERING));
        assert_eq!(f(&["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]), Ok(rbd::features::DEFAULT));
        assert!(f(&["layering", "object-map"]).unwrap_err().contains("exclusive-lock"));
        assert!(f(&["layering", "exclusive-lock", "fast-diff"]).unwrap_err().contains("object-map"));
        assert!(f(&["exclusive-lock"]).unwrap_err().contains("layering"));
        assert!(f(&["layering", "striping"]).unwrap_err().contains("unknown image feature 'striping'"));
    }

    #[test]
    fn config_is_checked_when_opened() {
        let c = |f: fn(&mut BackendConfig)| {
            let mut c = BackendConfig { name: "r".into(), kind: BackendKind::Rbd, pool: Some("images".into()), ..Default::default() };
            f(&mut c);
            RbdBackend::open(&c).map(|b| (b.order, b.features))
        };
        assert_eq!(c(|_| {}).unwrap(), (22, rbd::features::DEFAULT));
        assert_eq!(c(|c| c.object_size_mib = Some(8)).unwrap().0, 23);
        assert!(c(|c| c.object_size_mib = Some(3)).unwrap_err().to_string().contains("object_size_mib"));
        assert!(c(|c| c.pool = None).unwrap_err().to_string().contains("`pool` is required"));
        assert!(c(|c| c.pool = Some("a/b".into())).is_err());
        assert!(c(|c| c.conf = Some("/nonexistent/ceph.conf".into())).unwrap_err().to_string().contains("not a readable file"));
    }
}
