//! Output files: created exclusively under a temporary name, published by an atomic link, and
//! deleted when anything fails (so a partial output never appears under its final name).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Error, ErrorKind, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written. Dropping it without [`OutFile::publish`] deletes it.
pub(crate) struct OutFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl OutFile {
    /// Creates `dest`'s temporary sibling with O_EXCL. `dest` itself must not exist.
    pub(crate) fn create(dest: &Path) -> Result<Self> {
        if dest.symlink_metadata().is_ok() {
            return Err(Error::new(ErrorKind::Usage, format!("{} already exists; refusing to overwrite it", dest.display())));
        }
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = dest.file_name().ok_or_else(|| Error::new(ErrorKind::Usage, "the output path has no file name"))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.partial-{}-{n}", name.to_string_lossy(), std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(OutFile { file: Some(file), tmp, dest: dest.to_path_buf() })
    }

    pub(crate) fn file(&self) -> &File {
        // Present until publish() consumes self.
        self.file.as_ref().expect("OutFile used after publish")
    }

    /// Optionally syncs, then links the file under its final name (failing if that name
    /// appeared meanwhile) and removes the temporary name.
    pub(crate) fn publish(mut self, sync: bool) -> Result<PathBuf> {
        if let Some(f) = self.file.take() {
            if sync {
                f.sync_all().map_err(|e| Error::io("syncing the output", e))?;
            }
        }
        std::fs::hard_link(&self.tmp, &self.dest).map_err(|e| Error::io(format!("publishing {}", self.dest.display()), e))?;
        let _ = std::fs::remove_file(&self.tmp);
        Ok(std::mem::take(&mut self.dest))
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.dest.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
