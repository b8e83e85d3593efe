//! Local and NFS backends: one file per key in a root directory.
//!
//! Durable write protocol (the same for both; NFS needs exactly this and no file locks, which
//! NFS does not keep reliably): write `.<key>.<uuid>.tmp` in the root (same directory, so the
//! rename cannot cross a filesystem), fsync it, rename it onto `<key>`, fsync the directory.
//! Temporary names start with a dot, which no key may, so a reader never sees a half file and
//! a crash leaves only dot-files behind.
//!
//! Every filesystem call is bounded by the timeout: a hung NFS mount blocks a call forever, and
//! the caller must hear about it. The calls run on tokio's blocking pool; a call that times out
//! keeps a blocking thread until the kernel returns, but the steps after it (the rename that
//! would publish the object) never run.

use std::io::{ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{bounded, Backend, BackendConfig, BackendKind, ByteStream, Key, PutMode, Space, StoreError};

/// Size of one read or write when copying or streaming: large enough that the per-call hop to
/// the blocking pool costs little, small enough to keep memory flat.
const CHUNK: usize = 1 << 20;

/// A directory of objects, local or on an NFS mount.
#[derive(Debug)]
pub struct FsBackend {
    name: String,
    kind: BackendKind,
    root: PathBuf,
    timeout: Duration,
}

impl FsBackend {
    /// Local creates the root directory; NFS requires it (a missing directory means the export
    /// is not mounted, and creating it would write to the local disk under the mount point).
    pub fn open(config: &BackendConfig) -> Result<Self, StoreError> {
        let kind = config.kind;
        let Some(root) = config.path.clone() else {
            return Err(StoreError::Config(format!(
                "storage '{}' ({kind}): `path` is required (the directory that holds the images)",
                config.name
            )));
        };
        match kind {
            BackendKind::Local => std::fs::create_dir_all(&root).map_err(|e| StoreError::io("create the storage directory", &root, e))?,
            BackendKind::Nfs => match std::fs::metadata(&root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(StoreError::Config(format!("storage '{}' (nfs): {} is not a directory", config.name, root.display()))),
                Err(e) => {
                    return Err(StoreError::Config(format!(
                        "storage '{}' (nfs): {} is not available ({e}); is the export mounted?",
                        config.name,
                        root.display()
                    )))
                }
            },
            BackendKind::S3 | BackendKind::Rbd => return Err(StoreError::Config(format!("FsBackend cannot open a {kind} backend"))),
        }
        Ok(FsBackend { name: config.name.clone(), kind, root, timeout: config.timeout()? })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(Key::parse(key)?.as_str()))
    }

    async fn sync_root(&self) -> Result<(), StoreError> {
        let root = self.root.clone();
        bounded("directory fsync", self.timeout, async move {
            tokio::task::spawn_blocking(move || std::fs::File::open(&root)?.sync_all())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| StoreError::io("fsync the directory", &self.root, e))
        })
        .await
    }

    /// Copies `src` into a temp file and publishes it as `dest`. Removes the temp file on failure.
    async fn copy_in(&self, key: &str, src: &Path, dest: &Path, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<u64, StoreError> {
        let t = self.timeout;
        let mut input = bounded("open the source", t, async {
            tokio::fs::File::open(src).await.map_err(|e| StoreError::io("open the source", src, e))
        })
        .await?;
        let tmp = self.root.join(format!(".{key}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut out = bounded("create a temp file", t, async {
            tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| StoreError::io("create a temp file", &tmp, e))
        })
        .await?;

        let result = async {
            let mut buf = vec![0u8; CHUNK];
            let mut done = 0u64;
            loop {
                let n = bounded("read the source", t, async {
                    input.read(&mut buf).await.map_err(|e| StoreError::io("read the source", src, e))
                })
                .await?;
                if n == 0 {
                    break;
                }
                bounded("write", t, async { out.write_all(&buf[..n]).await.map_err(|e| StoreError::io("write", &tmp, e)) }).await?;
                done += n as u64;
                progress(done);
            }
            bounded("fsync", t, async {
                out.flush().await.map_err(|e| StoreError::io("write", &tmp, e))?;
                out.sync_all().await.map_err(|e| StoreError::io("fsync", &tmp, e))
            })
            .await?;
            drop(out);
            bounded("rename into place", t, async {
                tokio::fs::rename(&tmp, dest).await.map_err(|e| StoreError::io("rename into place", dest, e))
            })
            .await?;
            Ok(done)
        }
        .await;

        if result.is_err() {
            // Best effort and bounded: a hung mount must not hold the error back for long.
            let removed = tokio::time::timeout(t, tokio::fs::remove_file(&tmp)).await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::warn!(backend = %self.name, tmp = %tmp.display(), "could not remove the temp file of a failed write");
            }
        }
        let done = result?;
        self.sync_root().await?;
        Ok(done)
    }

    /// Move on the same filesystem: fsync the source, then rename it onto `dest`. `Ok(None)`
    /// when the rename crosses filesystems and the caller must copy.
    /// Hard-links `src` into place as `dest` (fsync the source, link to a temporary dot-name
    /// beside `dest`, rename over `dest`, fsync the directory), so `src` stays and no byte is
    /// copied. `None` when they are on different filesystems (the caller copies).
    async fn link_in(&self, src: &Path, dest: &Path) -> Result<Option<u64>, StoreError> {
        let t = self.timeout;
        let size = bounded("fsync the source", t, async {
            let f = tokio::fs::File::open(src).await.map_err(|e| StoreError::io("open the source", src, e))?;
            f.sync_all().await.map_err(|e| StoreError::io("fsync the source", src, e))?;
            let m = f.metadata().await.map_err(|e| StoreError::io("stat the source", src, e))?;
            if !m.is_file() {
                return Err(StoreError::io("read the source", src, ErrorKind::InvalidInput.into()));
            }
            Ok(m.len())
        })
        .await?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let tmp = dest.with_file_name(format!(".{name}.link-{}-{nonce:08x}", std::process::id()));
        let linked = bounded("link into place", t, async {
            match tokio::fs::hard_link(src, &tmp).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::CrossesDevices => return Ok(false),
                Err(e) => return Err(StoreError::io("link into place", &tmp, e)),
            }
            let renamed = tokio::fs::rename(&tmp, dest).await;
            // When `dest` already is a link to the same file (a job redone after a crash), POSIX
            // rename does nothing and `tmp` stays: remove it (NotFound otherwise, ignored).
            let _ = tokio::fs::remove_file(&tmp).await;
            renamed.map_err(|e| StoreError::io("rename into place", dest, e))?;
            Ok(true)
        })
        .await?;
        if !linked {
            return Ok(None);
        }
        self.sync_root().await?;
        Ok(Some(size))
    }

    async fn rename_in(&self, src: &Path, dest: &Path) -> Result<Option<u64>, StoreError> {
        let t = self.timeout;
        let size = bounded("fsync the source", t, async {
            let f = tokio::fs::File::open(src).await.map_err(|e| StoreError::io("open the source", src, e))?;
            f.sync_all().await.map_err(|e| StoreError::io("fsync the source", src, e))?;
            let m = f.metadata().await.map_err(|e| StoreError::io("stat the source", src, e))?;
            if !m.is_file() {
                return Err(StoreError::io("read the source", src, ErrorKind::InvalidInput.into()));
            }
            Ok(m.len())
        })
        .await?;
        let renamed = bounded("rename into place", t, async {
            match tokio::fs::rename(src, dest).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::CrossesDevices => Ok(false),
                Err(e) => Err(StoreError::io("rename into place", dest, e)),
            }
        })
        .await?;
        if !renamed {
            return Ok(None);
        }
        self.sync_root().await?;
        Ok(Some(size))
    }
}

#[async_trait]
impl Backend for FsBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        self.kind
    }

    #[tracing::instrument(level = "debug", skip(self, progress), fields(backend = %self.name))]
    async fn put_file(&self, key: &str, src: &Path, mode: PutMode, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<u64, StoreError> {
        let dest = self.path_of(key)?;
        if mode == PutMode::Move {
            if let Some(size) = self.rename_in(src, &dest).await? {
                progress(size);
                return Ok(size);
            }
        }
        if mode == PutMode::Link {
            if let Some(size) = self.link_in(src, &dest).await? {
                progress(size);
                return Ok(size);
            }
        }
        let size = self.copy_in(key, src, &dest, progress).await?;
        if mode == PutMode::Move {
            // The bytes are durable in the store; a leftover source is only wasted space.
            if let Err(e) = tokio::fs::remove_file(src).await {
                tracing::warn!(src = %src.display(), error = %e, "could not remove the moved source");
            }
        }
        Ok(size)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StoreError> {
        let path = self.path_of(key)?;
        let t = self.timeout;
        let (mut file, size) = bounded("open", t, async {
            let f = tokio::fs::File::open(&path).await.map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound { key: key.to_owned() },
                _ => StoreError::io("open", &path, e),
            })?;
            let len = f.metadata().await.map_err(|e| StoreError::io("stat", &path, e))?.len();
            Ok((f, len))
        })
        .await?;
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(StoreError::InvalidRange { start: range.start, end: range.end, size });
        }
        if range.start > 0 {
            bounded("seek", t, async { file.seek(SeekFrom::Start(range.start)).await.map_err(|e| StoreError::io("seek", &path, e)) })
                .await?;
        }
        let remaining = range.end - range.start;
        // State: the file, the bytes still owed, and whether an error ended the stream.
        let stream = futures::stream::unfold((file, remaining, path, false), move |(mut f, left, path, failed)| async move {
            if left == 0 || failed {
                return None;
            }
            let want = left.min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let read = bounded("read", t, async { f.read(&mut buf).await.map_err(|e| StoreError::io("read", &path, e)) }).await;
            match read {
                Ok(0) => {
                    let e = StoreError::io("read", &path, ErrorKind::UnexpectedEof.into());
                    Some((Err(e), (f, left, path, true)))
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (f, left - n as u64, path, false)))
                }
                Err(e) => Some((Err(e), (f, left, path, true))),
            }
        });
        Ok(stream.boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path_of(key)?;
        bounded("stat", self.timeout, async {
            match tokio::fs::metadata(&path).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError::io("stat", &path, e)),
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let removed = bounded("delete", self.timeout, async {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(StoreError::io("delete", &path, e)),
            }
        })
        .await?;
        if removed {
            self.sync_root().await?;
        }
        Ok(())
    }

    async fn space(&self) -> Result<Space, StoreError> {
        let root = self.root.clone();
        let st = bounded("statvfs", self.timeout, async {
            tokio::task::spawn_blocking(move || rustix::fs::statvfs(&root))
                .await
                .map_err(|e| StoreError::io("statvfs", &self.root, std::io::Error::other(e)))?
                .map_err(|e| StoreError::io("statvfs", &self.root, e.into()))
        })
        .await?;
        Ok(Space { free: Some(st.f_bavail.saturating_mul(st.f_frsize)), total: Some(st.f_blocks.saturating_mul(st.f_frsize)) })
    }

    async fn check(&self) -> Result<(), StoreError> {
        let probe = self.root.join(format!(".probe.{}", uuid::Uuid::new_v4().simple()));
        bounded("health check", self.timeout, async {
            tokio::fs::write(&probe, b"hangar").await.map_err(|e| StoreError::io("write a probe file", &probe, e))?;
            tokio::fs::remove_file(&probe).await.map_err(|e| StoreError::io("remove a probe file", &probe, e))
        })
        .await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }
}
