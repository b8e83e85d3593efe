//! Local and NFS backends against a real temp directory. The NFS backend runs the same protocol
//! on whatever directory it is given; here that is a local one (no NFS server on CI), so these
//! tests check the protocol and the NFS-specific refusals, not NFS itself.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{collect, pattern, recorder, write_file};
use storage::{open, Backend, BackendConfig, BackendKind, PutMode, StoreError};

fn backend(kind: BackendKind, root: &Path) -> Arc<dyn Backend> {
    open(&BackendConfig {
        name: format!("test-{kind}"),
        kind,
        path: Some(root.to_path_buf()),
        timeout_secs: Some(10),
        ..Default::default()
    })
    .unwrap()
}

/// Everything in the root, dot-files (temp files) included.
fn entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

async fn write_read_delete(kind: BackendKind) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    std::fs::create_dir(&root).unwrap(); // NFS requires it; local would create it
    let b = backend(kind, &root);
    assert_eq!(b.kind(), kind);
    let data = pattern(3 * 1024 * 1024 + 17, 1); // more than one 1 MiB chunk, not a multiple
    let src = dir.path().join("upload");
    write_file(&src, &data);

    let (last, progress) = recorder();
    let key = "0b6f5c1e-7a7e-4b7c-9d5e-0123456789ab.qcow2";
    assert_eq!(b.size(key).await.unwrap(), None);
    let n = b.put_file(key, &src, PutMode::Copy, &progress).await.unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(last.load(Ordering::SeqCst), data.len() as u64);
    assert!(src.exists(), "Copy keeps the source");
    assert_eq!(entries(&root), vec![key.to_string()], "no temp file left");
    assert_eq!(b.local_path(key).unwrap(), root.join(key));
    assert_eq!(std::fs::read(root.join(key)).unwrap(), data);

    assert_eq!(b.size(key).await.unwrap(), Some(data.len() as u64));
    assert_eq!(collect(b.get(key, None).await.unwrap()).await.unwrap(), data);
    for r in [0..1, 5..1_048_600, 1_048_576..2_097_152, 100..data.len() as u64, data.len() as u64..data.len() as u64] {
        let got = collect(b.get(key, Some(r.clone())).await.unwrap()).await.unwrap();
        assert_eq!(got, data[r.start as usize..r.end as usize], "range {r:?}");
    }
    let past = data.len() as u64 + 1;
    assert!(matches!(
        b.get(key, Some(10..past)).await,
        Err(StoreError::InvalidRange { size, .. }) if size == data.len() as u64
    ));

    // Replacing an object.
    let other = pattern(1000, 2);
    write_file(&src, &other);
    b.put_file(key, &src, PutMode::Copy, &|_| {}).await.unwrap();
    assert_eq!(collect(b.get(key, None).await.unwrap()).await.unwrap(), other);

    b.delete(key).await.unwrap();
    assert_eq!(b.size(key).await.unwrap(), None);
    assert!(matches!(b.get(key, None).await, Err(StoreError::NotFound { .. })));
    b.delete(key).await.unwrap(); // idempotent
    assert!(entries(&root).is_empty());

    let space = b.space().await.unwrap();
    let (free, total) = (space.free.unwrap(), space.total.unwrap());
    assert!(total > 0 && free <= total, "{space:?}");
    b.check().await.unwrap();
    assert!(entries(&root).is_empty(), "the probe file is removed");
}

#[tokio::test]
async fn local_write_read_delete() {
    write_read_delete(BackendKind::Local).await;
}

#[tokio::test]
async fn nfs_write_read_delete() {
    write_read_delete(BackendKind::Nfs).await;
}

/// Link keeps the source (the caller deletes it once what it stored is recorded) and costs no
/// copy on the same filesystem; linking again over an existing key (a job redone after a
/// crash) replaces it.
#[tokio::test]
async fn link_keeps_the_source_and_shares_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(BackendKind::Local, &dir.path().join("images"));
    let src = dir.path().join("upload");
    let data = pattern(70_000, 4);
    write_file(&src, &data);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&src).unwrap());
    let (last, progress) = recorder();
    assert_eq!(b.put_file("k1", &src, PutMode::Link, &progress).await.unwrap(), 70_000);
    assert_eq!(last.load(Ordering::SeqCst), 70_000);
    assert!(src.exists(), "the source stays");
    let dest = b.local_path("k1").unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dest).unwrap()), ino, "linked, not copied");
    assert_eq!(b.put_file("k1", &src, PutMode::Link, &|_| {}).await.unwrap(), 70_000, "again over the same key");
    std::fs::remove_file(&src).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data, "the stored copy outlives the source");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("images")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary names left: {leftovers:?}");
}

#[tokio::test]
async fn move_renames_on_the_same_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(BackendKind::Local, &dir.path().join("images"));
    let src = dir.path().join("upload");
    let data = pattern(70_000, 3);
    write_file(&src, &data);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&src).unwrap());
    let (last, progress) = recorder();
    assert_eq!(b.put_file("k1", &src, PutMode::Move, &progress).await.unwrap(), 70_000);
    assert_eq!(last.load(Ordering::SeqCst), 70_000);
    assert!(!src.exists());
    let dest = b.local_path("k1").unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dest).unwrap()), ino, "renamed, not copied");
    assert_eq!(std::fs::read(dest).unwrap(), data);
}

#[tokio::test]
async fn invalid_keys_are_refused_before_any_path_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let b = backend(BackendKind::Local, &root);
    let src = dir.path().join("upload");
    write_file(&src, b"x");
    for key in ["", "../escape", "a/b", ".hidden", "x y", "/abs", &"k".repeat(201)] {
        let put = b.put_file(key, &src, PutMode::Copy, &|_| {}).await;
        assert!(matches!(put, Err(StoreError::InvalidKey { .. })), "{key:?}: {put:?}");
        assert!(matches!(b.get(key, None).await, Err(StoreError::InvalidKey { .. })));
        assert!(matches!(b.size(key).await, Err(StoreError::InvalidKey { .. })));
        assert!(matches!(b.delete(key).await, Err(StoreError::InvalidKey { .. })));
        assert_eq!(b.local_path(key), None);
    }
    assert!(entries(&root).is_empty());
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test]
async fn a_failed_write_leaves_no_object_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    for kind in [BackendKind::Local, BackendKind::Nfs] {
        std::fs::create_dir_all(&root).unwrap();
        let b = backend(kind, &root);

        // The source vanished before the write.
        let gone = dir.path().join("gone");
        let e = b.put_file("k", &gone, PutMode::Copy, &|_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert!(e.to_string().contains("gone"), "{e}");
        let e = b.put_file("k", &gone, PutMode::Move, &|_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");

        // The source fails while it is read (a directory opens, then refuses to be read): the temp
        // file has been created by then and must go.
        let not_a_file = dir.path().join("a-directory");
        std::fs::create_dir_all(&not_a_file).unwrap();
        let e = b.put_file("k", &not_a_file, PutMode::Copy, &|_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        let e = b.put_file("k", &not_a_file, PutMode::Move, &|_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert!(not_a_file.is_dir(), "a directory is never moved into the store");
        assert!(entries(&root).is_empty(), "{:?}", entries(&root));

        // A failed replacement keeps the object that was there.
        let src = dir.path().join("good");
        write_file(&src, b"old bytes");
        b.put_file("k", &src, PutMode::Copy, &|_| {}).await.unwrap();
        b.put_file("k", &not_a_file, PutMode::Copy, &|_| {}).await.unwrap_err();
        assert_eq!(collect(b.get("k", None).await.unwrap()).await.unwrap(), b"old bytes");
        assert_eq!(entries(&root), vec!["k".to_string()]);

        // The store's directory disappears (an unmounted export, a deleted data dir).
        std::fs::remove_dir_all(&root).unwrap();
        let e = b.put_file("k", &src, PutMode::Copy, &|_| {}).await.unwrap_err();
        assert!(matches!(e, StoreError::Io { .. }), "{e}");
        assert!(b.check().await.is_err());
        assert!(!root.exists());
    }
}

#[tokio::test]
async fn nfs_requires_a_mounted_directory_local_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mnt/images");
    let e =
        open(&BackendConfig { name: "nas".into(), kind: BackendKind::Nfs, path: Some(missing.clone()), ..Default::default() }).unwrap_err();
    assert!(matches!(e, StoreError::Config(_)) && e.to_string().contains("mounted"), "{e}");
    assert!(!missing.exists(), "NFS never creates its root");

    let b = backend(BackendKind::Local, &missing);
    assert!(missing.is_dir());
    assert_eq!(b.name(), "test-local");
}
