//! Ceph RBD through librbd and librados, opened at run time (`dlopen`, through libloading).
//!
//! This is the one crate in Hangar with `unsafe` code: the workspace denies it, this crate allows
//! it, and it holds nothing but the calls into the two C libraries and the safe types around
//! them. The C signatures are declared once, in [`Api`], as Ceph's public headers give them
//! (`rados/librados.h`, `rbd/librbd.h`; the C API has been stable since Luminous, Debian 12 ships
//! 16.2). Nothing is linked at build time: Hangar builds and runs without Ceph's libraries, and an
//! RBD store that cannot find them says which Debian packages to install.
//!
//! # Invariants (what makes each `unsafe` block sound)
//! 1. **One owner per handle.** A cluster, I/O context or image handle is created by the library
//!    and owned by exactly one Rust value ([`Cluster`], [`Pool`], [`Image`]), whose `Drop`
//!    releases it once. Dependents keep what they need alive through an `Arc` (an image its
//!    pool, a pool its cluster), so a handle is never used after its parent was released.
//! 2. **Arguments outlive the call.** Every string is a `CString` alive for the call; every
//!    pointer-and-length pair comes from a Rust slice of exactly that length.
//! 3. **Outputs are bounded.** A buffer the library fills is read only up to the length it
//!    reports and never past the buffer's own size; sizes it asks for are capped.
//! 4. **Threads.** librados cluster and I/O context handles are thread-safe (`Send + Sync`). An
//!    [`Image`] is `Send` but not `Sync`: one thread uses it at a time.
//! 5. **Asynchronous writes own their buffers.** [`AioWriter`] keeps each buffer until its
//!    completion has been waited for and released, including when it is dropped early.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CString};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libloading::Library;

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("the rbd crate declares librbd's `struct timespec` as on 64-bit Linux");

type Handle = *mut c_void;

/// `struct rados_cluster_stat_t` (librados.h).
#[repr(C)]
#[derive(Default)]
struct ClusterStatC {
    kb: u64,
    kb_used: u64,
    kb_avail: u64,
    num_objects: u64,
}

/// `struct timespec` on 64-bit Linux.
#[repr(C)]
#[derive(Default)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// The functions Hangar calls, with their C signatures.
struct Api {
    rados_create: unsafe extern "C" fn(*mut Handle, *const c_char) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(Handle) -> c_int,
    rados_shutdown: unsafe extern "C" fn(Handle),
    rados_ioctx_create: unsafe extern "C" fn(Handle, *const c_char, *mut Handle) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(Handle),
    rados_cluster_fsid: unsafe extern "C" fn(Handle, *mut c_char, usize) -> c_int,
    rados_cluster_stat: unsafe extern "C" fn(Handle, *mut ClusterStatC) -> c_int,
    rbd_create2: unsafe extern "C" fn(Handle, *const c_char, u64, u64, *mut c_int) -> c_int,
    rbd_open: unsafe extern "C" fn(Handle, *const c_char, *mut Handle, *const c_char) -> c_int,
    rbd_open_read_only: unsafe extern "C" fn(Handle, *const c_char, *mut Handle, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(Handle) -> c_int,
    rbd_read: unsafe extern "C" fn(Handle, u64, usize, *mut c_char) -> isize,
    rbd_flush: unsafe extern "C" fn(Handle) -> c_int,
    rbd_get_size: unsafe extern "C" fn(Handle, *mut u64) -> c_int,
    rbd_get_create_timestamp: unsafe extern "C" fn(Handle, *mut Timespec) -> c_int,
    rbd_snap_create: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    rbd_snap_protect: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    rbd_snap_unprotect: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    rbd_snap_is_protected: unsafe extern "C" fn(Handle, *const c_char, *mut c_int) -> c_int,
    rbd_snap_remove: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    rbd_remove: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    rbd_rename: unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int,
    rbd_list: unsafe extern "C" fn(Handle, *mut c_char, *mut usize) -> c_int,
    rbd_list_children: unsafe extern "C" fn(Handle, *mut c_char, *mut usize, *mut c_char, *mut usize) -> isize,
    // The array argument is `rbd_image_watcher_t *`; Hangar passes NULL with a capacity of 0 and
    // reads only the count back, so the struct is not declared.
    rbd_watchers_list: unsafe extern "C" fn(Handle, *mut c_void, *mut usize) -> c_int,
    rbd_aio_create_completion: unsafe extern "C" fn(*mut c_void, Option<unsafe extern "C" fn(Handle, *mut c_void)>, *mut Handle) -> c_int,
    rbd_aio_write: unsafe extern "C" fn(Handle, u64, usize, *const c_char, Handle) -> c_int,
    rbd_aio_wait_for_complete: unsafe extern "C" fn(Handle) -> c_int,
    rbd_aio_get_return_value: unsafe extern "C" fn(Handle) -> isize,
    rbd_aio_release: unsafe extern "C" fn(Handle),
    // The libraries stay loaded for the life of the process (the `Api` lives in a static).
    _rados: Library,
    _rbd: Library,
}

const LIBRADOS: &str = "librados.so.2";
const LIBRBD: &str = "librbd.so.1";

impl Api {
    fn load() -> Result<Api, String> {
        let missing = |lib: &str, e: libloading::Error| {
            format!("cannot load {lib} ({e}); install Ceph's client libraries (Debian: apt install librbd1 librados2)")
        };
        // SAFETY: loading Ceph's client libraries runs their initialisers, which have no
        // preconditions; the names are the sonames Ceph has shipped since 2012.
        let rados = unsafe { Library::new(LIBRADOS) }.map_err(|e| missing(LIBRADOS, e))?;
        // SAFETY: as above.
        let rbd = unsafe { Library::new(LIBRBD) }.map_err(|e| missing(LIBRBD, e))?;
        macro_rules! sym {
            ($lib:ident, $name:ident) => {{
                // SAFETY: the field's type is the function's C signature from Ceph's headers
                // (invariant: signatures are declared once, in `Api`).
                let s = unsafe { $lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                    .map_err(|e| format!("{} has no {} ({e}): Ceph's client library is too old", stringify!($lib), stringify!($name)))?;
                *s
            }};
        }
        Ok(Api {
            rados_create: sym!(rados, rados_create),
            rados_conf_read_file: sym!(rados, rados_conf_read_file),
            rados_conf_set: sym!(rados, rados_conf_set),
            rados_connect: sym!(rados, rados_connect),
            rados_shutdown: sym!(rados, rados_shutdown),
            rados_ioctx_create: sym!(rados, rados_ioctx_create),
            rados_ioctx_destroy: sym!(rados, rados_ioctx_destroy),
            rados_cluster_fsid: sym!(rados, rados_cluster_fsid),
            rados_cluster_stat: sym!(rados, rados_cluster_stat),
            rbd_create2: sym!(rbd, rbd_create2),
            rbd_open: sym!(rbd, rbd_open),
            rbd_open_read_only: sym!(rbd, rbd_open_read_only),
            rbd_close: sym!(rbd, rbd_close),
            rbd_read: sym!(rbd, rbd_read),
            rbd_flush: sym!(rbd, rbd_flush),
            rbd_get_size: sym!(rbd, rbd_get_size),
            rbd_get_create_timestamp: sym!(rbd, rbd_get_create_timestamp),
            rbd_snap_create: sym!(rbd, rbd_snap_create),
            rbd_snap_protect: sym!(rbd, rbd_snap_protect),
            rbd_snap_unprotect: sym!(rbd, rbd_snap_unprotect),
            rbd_snap_is_protected: sym!(rbd, rbd_snap_is_protected),
            rbd_snap_remove: sym!(rbd, rbd_snap_remove),
            rbd_remove: sym!(rbd, rbd_remove),
            rbd_rename: sym!(rbd, rbd_rename),
            rbd_list: sym!(rbd, rbd_list),
            rbd_list_children: sym!(rbd, rbd_list_children),
            rbd_watchers_list: sym!(rbd, rbd_watchers_list),
            rbd_aio_create_completion: sym!(rbd, rbd_aio_create_completion),
            rbd_aio_write: sym!(rbd, rbd_aio_write),
            rbd_aio_wait_for_complete: sym!(rbd, rbd_aio_wait_for_complete),
            rbd_aio_get_return_value: sym!(rbd, rbd_aio_get_return_value),
            rbd_aio_release: sym!(rbd, rbd_aio_release),
            _rados: rados,
            _rbd: rbd,
        })
    }
}

fn api() -> Result<&'static Api, Error> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(Api::load).as_ref().map_err(|e| Error::Load(e.clone()))
}

/// Whether librbd and librados can be loaded on this machine (and the reason if not).
pub fn available() -> Result<(), Error> {
    api().map(|_| ())
}

/// An error from librados/librbd, or from loading them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The libraries are missing or too old.
    Load(String),
    /// A call returned a negative errno.
    Call { op: &'static str, errno: i32 },
    /// An argument holds a NUL byte (never the case for names Hangar generates).
    Nul(&'static str),
}

impl Error {
    /// The errno of a failed call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// No such image, snapshot or pool (ENOENT).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(ENOENT)
    }

    /// The call timed out (ETIMEDOUT): the cluster did not answer within the configured bound.
    pub fn is_timeout(&self) -> bool {
        self.errno() == Some(ETIMEDOUT)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(e) => f.write_str(e),
            Error::Call { op, errno } => write!(f, "{op} failed: {}", std::io::Error::from_raw_os_error(*errno)),
            Error::Nul(what) => write!(f, "{what} contains a NUL byte"),
        }
    }
}

impl std::error::Error for Error {}

pub const ENOENT: i32 = 2;
pub const EBUSY: i32 = 16;
pub const EEXIST: i32 = 17;
pub const EINVAL: i32 = 22;
pub const ERANGE: i32 = 34;
pub const ETIMEDOUT: i32 = 110;

/// A return code: negative is an errno.
fn check(op: &'static str, rc: c_int) -> Result<c_int, Error> {
    if rc < 0 {
        Err(Error::Call { op, errno: -rc })
    } else {
        Ok(rc)
    }
}

fn check_len(op: &'static str, rc: isize) -> Result<usize, Error> {
    usize::try_from(rc).map_err(|_| Error::Call { op, errno: i32::try_from(-rc).unwrap_or(EINVAL) })
}

fn cstr(what: &'static str, s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Nul(what))
}

fn cpath(what: &'static str, p: &Path) -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Nul(what))
}

/// Splits a buffer of NUL-terminated names (as `rbd_list` fills it).
fn names(buf: &[u8]) -> Vec<String> {
    buf.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// Largest name list accepted from the library (a pool with ~ a million images).
const MAX_LIST_BYTES: usize = 128 << 20;

/// How to reach a cluster.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// The client's id (`admin` for `client.admin`); librados's default when `None`.
    pub client_id: Option<String>,
    /// `ceph.conf`; librados's search (`$CEPH_CONF`, `/etc/ceph/ceph.conf`, …) when `None`.
    pub conf: Option<std::path::PathBuf>,
    /// A keyring, when the configuration does not name the right one.
    pub keyring: Option<std::path::PathBuf>,
    /// Bound on connecting and on each monitor and OSD operation: a cluster that stops answering
    /// makes calls fail with ETIMEDOUT instead of hanging.
    pub timeout: Option<Duration>,
}

struct ClusterHandle {
    api: &'static Api,
    h: Handle,
}

// SAFETY: a librados cluster handle may be used from any thread (invariant 4).
unsafe impl Send for ClusterHandle {}
// SAFETY: as above; librados serialises internally.
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: `h` came from rados_create and is released once, here (invariant 1); every
        // pool holds an Arc to this handle, so none is alive any more.
        unsafe { (self.api.rados_shutdown)(self.h) }
    }
}

/// A connection to a Ceph cluster.
#[derive(Clone)]
pub struct Cluster(Arc<ClusterHandle>);

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cluster")
    }
}

/// Raw capacity of the cluster, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStat {
    pub total: u64,
    pub used: u64,
    pub avail: u64,
}

impl Cluster {
    /// Reads the configuration and connects (bounded by `timeout` when set).
    pub fn connect(opts: &ConnectOptions) -> Result<Cluster, Error> {
        let api = api()?;
        let id = opts.client_id.as_deref().map(|s| cstr("client id", s)).transpose()?;
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: `h` is a valid out-pointer; `id` is NULL or a live CString (invariant 2).
        check("rados_create", unsafe { (api.rados_create)(&mut h, id.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())) })?;
        // From here the handle is owned (and shut down on any error) by `cluster`.
        let cluster = Cluster(Arc::new(ClusterHandle { api, h }));
        let conf = opts.conf.as_deref().map(|p| cpath("ceph.conf path", p)).transpose()?;
        // SAFETY: `h` is live; `conf` is NULL (search the default places) or a live CString.
        check("rados_conf_read_file", unsafe { (api.rados_conf_read_file)(h, conf.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())) })?;
        if let Some(keyring) = &opts.keyring {
            cluster.set("keyring", &keyring.to_string_lossy())?;
        }
        if let Some(t) = opts.timeout {
            let secs = t.as_secs().max(1).to_string();
            for option in ["client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"] {
                cluster.set(option, &secs)?;
            }
        }
        // SAFETY: `h` is live and configured.
        check("rados_connect", unsafe { (api.rados_connect)(h) })?;
        Ok(cluster)
    }

    fn set(&self, option: &str, value: &str) -> Result<(), Error> {
        let (o, v) = (cstr("option", option)?, cstr("option value", value)?);
        // SAFETY: live handle, live CStrings.
        check("rados_conf_set", unsafe { (self.0.api.rados_conf_set)(self.0.h, o.as_ptr(), v.as_ptr()) }).map(|_| ())
    }

    /// The cluster's fsid (as in `rbd://<fsid>/<pool>/<image>/<snap>` locations).
    pub fn fsid(&self) -> Result<String, Error> {
        let mut buf = [0u8; 64];
        // SAFETY: live handle; `buf` is 64 writable bytes and its length is passed (invariant 3).
        check("rados_cluster_fsid", unsafe { (self.0.api.rados_cluster_fsid)(self.0.h, buf.as_mut_ptr().cast(), buf.len()) })?;
        // The buffer was zeroed: the fsid is what precedes the first NUL (whatever the return
        // value says, which differs between the header's comment and the code).
        Ok(names(&buf).into_iter().next().unwrap_or_default())
    }

    /// The cluster's raw capacity.
    pub fn stat(&self) -> Result<ClusterStat, Error> {
        let mut s = ClusterStatC::default();
        // SAFETY: live handle; `s` is a valid `rados_cluster_stat_t` to fill.
        check("rados_cluster_stat", unsafe { (self.0.api.rados_cluster_stat)(self.0.h, &mut s) })?;
        Ok(ClusterStat { total: s.kb.saturating_mul(1024), used: s.kb_used.saturating_mul(1024), avail: s.kb_avail.saturating_mul(1024) })
    }

    /// An I/O context on `pool`.
    pub fn pool(&self, pool: &str) -> Result<Pool, Error> {
        let name = cstr("pool name", pool)?;
        let mut io: Handle = std::ptr::null_mut();
        // SAFETY: live cluster handle, live CString, valid out-pointer.
        check("rados_ioctx_create", unsafe { (self.0.api.rados_ioctx_create)(self.0.h, name.as_ptr(), &mut io) })?;
        Ok(Pool(Arc::new(PoolHandle { io, cluster: self.0.clone() })))
    }
}

struct PoolHandle {
    io: Handle,
    cluster: Arc<ClusterHandle>,
}

// SAFETY: librados I/O contexts are thread-safe (invariant 4).
unsafe impl Send for PoolHandle {}
// SAFETY: as above.
unsafe impl Sync for PoolHandle {}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        // SAFETY: `io` came from rados_ioctx_create and is released once; every image holds an
        // Arc to this handle, and the cluster outlives it through `cluster`.
        unsafe { (self.cluster.api.rados_ioctx_destroy)(self.io) }
    }
}

/// A pool's I/O context: creates, lists, renames, removes and opens RBD images.
#[derive(Clone)]
pub struct Pool(Arc<PoolHandle>);

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pool")
    }
}

/// RBD image feature bits (`rbd/features.h`).
pub mod features {
    pub const LAYERING: u64 = 1 << 0;
    pub const STRIPINGV2: u64 = 1 << 1;
    pub const EXCLUSIVE_LOCK: u64 = 1 << 2;
    pub const OBJECT_MAP: u64 = 1 << 3;
    pub const FAST_DIFF: u64 = 1 << 4;
    pub const DEEP_FLATTEN: u64 = 1 << 5;
    pub const JOURNALING: u64 = 1 << 6;

    /// The names `rbd create --image-feature` accepts, with their bits.
    pub const NAMED: [(&str, u64); 6] = [
        ("layering", LAYERING),
        ("exclusive-lock", EXCLUSIVE_LOCK),
        ("object-map", OBJECT_MAP),
        ("fast-diff", FAST_DIFF),
        ("deep-flatten", DEEP_FLATTEN),
        ("journaling", JOURNALING),
    ];

    /// What `rbd create` gives a new image by default (and what Glance's rbd store asks for).
    pub const DEFAULT: u64 = LAYERING | EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF | DEEP_FLATTEN;
}

impl Pool {
    fn api(&self) -> &'static Api {
        self.0.cluster.api
    }

    /// Creates an image of `size` bytes with `features` and objects of `2^order` bytes.
    pub fn create(&self, name: &str, size: u64, features: u64, order: u8) -> Result<(), Error> {
        let n = cstr("image name", name)?;
        let mut order = c_int::from(order);
        // SAFETY: live I/O context, live CString, valid in/out pointer.
        check("rbd_create2", unsafe { (self.api().rbd_create2)(self.0.io, n.as_ptr(), size, features, &mut order) }).map(|_| ())
    }

    /// Opens an image for writing (its head), or read-only at a snapshot.
    pub fn open(&self, name: &str) -> Result<Image, Error> {
        self.open_with(name, None, false)
    }

    /// Opens an image read-only, at `snap` when given.
    pub fn open_read_only(&self, name: &str, snap: Option<&str>) -> Result<Image, Error> {
        self.open_with(name, snap, true)
    }

    /// Opens an image at `snap` (read-only data, but snapshot operations and children work).
    pub fn open_at(&self, name: &str, snap: &str) -> Result<Image, Error> {
        self.open_with(name, Some(snap), false)
    }

    fn open_with(&self, name: &str, snap: Option<&str>, read_only: bool) -> Result<Image, Error> {
        let n = cstr("image name", name)?;
        let s = snap.map(|s| cstr("snapshot name", s)).transpose()?;
        let mut h: Handle = std::ptr::null_mut();
        let (f, op) = if read_only { (self.api().rbd_open_read_only, "rbd_open_read_only") } else { (self.api().rbd_open, "rbd_open") };
        // SAFETY: live I/O context, live CStrings (or NULL for no snapshot), valid out-pointer.
        check(op, unsafe { f(self.0.io, n.as_ptr(), &mut h, s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())) })?;
        Ok(Image { h, pool: self.0.clone() })
    }

    /// Removes an image (which must have no snapshots).
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let n = cstr("image name", name)?;
        // SAFETY: live I/O context, live CString.
        check("rbd_remove", unsafe { (self.api().rbd_remove)(self.0.io, n.as_ptr()) }).map(|_| ())
    }

    /// Renames an image within the pool.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        let (f, t) = (cstr("image name", from)?, cstr("image name", to)?);
        // SAFETY: live I/O context, live CStrings.
        check("rbd_rename", unsafe { (self.api().rbd_rename)(self.0.io, f.as_ptr(), t.as_ptr()) }).map(|_| ())
    }

    /// The names of the pool's images.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let mut cap = 4096usize;
        loop {
            let mut buf = vec![0u8; cap];
            let mut size = cap;
            // SAFETY: `buf` has `size` writable bytes (invariant 2); the library writes at most
            // that many and reports the length it needs.
            let rc = unsafe { (self.api().rbd_list)(self.0.io, buf.as_mut_ptr().cast(), &mut size) };
            if rc == -ERANGE && size > cap && size <= MAX_LIST_BYTES {
                cap = size;
                continue;
            }
            // On success the return value is the bytes used.
            let used = usize::try_from(check("rbd_list", rc)?).unwrap_or(0).min(cap);
            return Ok(names(&buf[..used]));
        }
    }
}

/// An open RBD image.
pub struct Image {
    h: Handle,
    pool: Arc<PoolHandle>,
}

// SAFETY: an image handle may move between threads; it is used by one at a time (invariant 4).
unsafe impl Send for Image {}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Image")
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: `h` came from rbd_open and is closed once; the pool outlives it (`pool`).
        unsafe { (self.api().rbd_close)(self.h) };
    }
}

impl Image {
    fn api(&self) -> &'static Api {
        self.pool.cluster.api
    }

    fn snap_call(&self, op: &'static str, f: unsafe extern "C" fn(Handle, *const c_char) -> c_int, snap: &str) -> Result<(), Error> {
        let s = cstr("snapshot name", snap)?;
        // SAFETY: live image handle, live CString.
        check(op, unsafe { f(self.h, s.as_ptr()) }).map(|_| ())
    }

    /// The image's size in bytes.
    pub fn size(&self) -> Result<u64, Error> {
        let mut size = 0u64;
        // SAFETY: live handle, valid out-pointer.
        check("rbd_get_size", unsafe { (self.api().rbd_get_size)(self.h, &mut size) })?;
        Ok(size)
    }

    /// When the image was created.
    pub fn created(&self) -> Result<SystemTime, Error> {
        let mut ts = Timespec::default();
        // SAFETY: live handle, valid out-pointer to a 64-bit Linux `struct timespec`.
        check("rbd_get_create_timestamp", unsafe { (self.api().rbd_get_create_timestamp)(self.h, &mut ts) })?;
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        Ok(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        // SAFETY: `buf` is `buf.len()` writable bytes (invariant 2).
        let n = check_len("rbd_read", unsafe { (self.api().rbd_read)(self.h, offset, buf.len(), buf.as_mut_ptr().cast()) })?;
        Ok(n.min(buf.len()))
    }

    /// Waits until every write is durable in the cluster.
    pub fn flush(&self) -> Result<(), Error> {
        // SAFETY: live handle.
        check("rbd_flush", unsafe { (self.api().rbd_flush)(self.h) }).map(|_| ())
    }

    pub fn snap_create(&self, snap: &str) -> Result<(), Error> {
        self.snap_call("rbd_snap_create", self.api().rbd_snap_create, snap)
    }

    pub fn snap_protect(&self, snap: &str) -> Result<(), Error> {
        self.snap_call("rbd_snap_protect", self.api().rbd_snap_protect, snap)
    }

    pub fn snap_unprotect(&self, snap: &str) -> Result<(), Error> {
        self.snap_call("rbd_snap_unprotect", self.api().rbd_snap_unprotect, snap)
    }

    pub fn snap_remove(&self, snap: &str) -> Result<(), Error> {
        self.snap_call("rbd_snap_remove", self.api().rbd_snap_remove, snap)
    }

    /// Whether `snap` exists and is protected: `None` when there is no such snapshot.
    pub fn snap_protected(&self, snap: &str) -> Result<Option<bool>, Error> {
        let s = cstr("snapshot name", snap)?;
        let mut p: c_int = 0;
        // SAFETY: live handle, live CString, valid out-pointer.
        match check("rbd_snap_is_protected", unsafe { (self.api().rbd_snap_is_protected)(self.h, s.as_ptr(), &mut p) }) {
            Ok(_) => Ok(Some(p != 0)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether any client watches the image (has it open for writing: a write in progress).
    /// An image opened read-only adds no watch, so a read-only handle can ask about others.
    pub fn has_watchers(&self) -> Result<bool, Error> {
        let mut count = 0usize;
        // SAFETY: a NULL array with a capacity of 0: the library writes only the count (and
        // answers -ERANGE when there are watchers it could not store), allocating nothing.
        let rc = unsafe { (self.api().rbd_watchers_list)(self.h, std::ptr::null_mut(), &mut count) };
        if rc == -ERANGE {
            return Ok(true);
        }
        check("rbd_watchers_list", rc)?;
        Ok(count > 0)
    }

    /// The clones of the snapshot this image was opened at, as `pool/image`.
    pub fn children(&self) -> Result<Vec<String>, Error> {
        let mut cap = 1024usize;
        loop {
            let (mut pools, mut images) = (vec![0u8; cap], vec![0u8; cap]);
            let (mut pl, mut il) = (cap, cap);
            // SAFETY: both buffers have `cap` writable bytes and their lengths are passed
            // (invariants 2 and 3).
            let rc =
                unsafe { (self.api().rbd_list_children)(self.h, pools.as_mut_ptr().cast(), &mut pl, images.as_mut_ptr().cast(), &mut il) };
            if rc == -(ERANGE as isize) && pl.max(il) > cap && pl.max(il) <= MAX_LIST_BYTES {
                cap = pl.max(il);
                continue;
            }
            check_len("rbd_list_children", rc)?;
            let pools = names(&pools[..pl.min(cap)]);
            let images = names(&images[..il.min(cap)]);
            return Ok(pools.into_iter().zip(images).map(|(p, i)| format!("{p}/{i}")).collect());
        }
    }

    /// A queue of asynchronous writes to this image, at most `depth` in flight.
    pub fn writer(&self, depth: usize) -> AioWriter<'_> {
        AioWriter { image: self, inflight: VecDeque::new(), depth: depth.max(1) }
    }
}

/// Asynchronous writes to one image with a bounded number in flight (invariant 5).
pub struct AioWriter<'i> {
    image: &'i Image,
    inflight: VecDeque<(Handle, Vec<u8>)>,
    depth: usize,
}

impl AioWriter<'_> {
    /// Queues `data` to be written at `offset`, first waiting for the oldest write when `depth`
    /// are in flight (its error, if it failed, is returned here).
    pub fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<(), Error> {
        if self.inflight.len() >= self.depth {
            self.wait_oldest()?;
        }
        let api = self.image.api();
        let mut c: Handle = std::ptr::null_mut();
        // SAFETY: NULL argument and callback (librbd calls no callback then); valid out-pointer.
        check("rbd_aio_create_completion", unsafe { (api.rbd_aio_create_completion)(std::ptr::null_mut(), None, &mut c) })?;
        // SAFETY: live image and completion; `data` stays owned by `inflight` (its heap buffer does
        // not move) until the completion is waited for (invariant 5).
        let rc = unsafe { (api.rbd_aio_write)(self.image.h, offset, data.len(), data.as_ptr().cast(), c) };
        if rc < 0 {
            // SAFETY: the write was not started; the completion is released once.
            unsafe { (api.rbd_aio_release)(c) };
            return check("rbd_aio_write", rc).map(|_| ());
        }
        self.inflight.push_back((c, data));
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), Error> {
        let Some((c, data)) = self.inflight.pop_front() else { return Ok(()) };
        let api = self.image.api();
        // SAFETY: `c` is a live completion of a started write; waited for, read and released
        // once, after which `data` may be freed.
        let rc = unsafe {
            (api.rbd_aio_wait_for_complete)(c);
            let rc = (api.rbd_aio_get_return_value)(c);
            (api.rbd_aio_release)(c);
            rc
        };
        drop(data);
        check_len("rbd_aio_write", rc).map(|_| ())
    }

    /// Waits for the queued writes in order and stops at the first that failed, returning its
    /// error; the writes still in flight are waited for when the writer is dropped. A caller
    /// can so report a failure at once instead of after every other write has also run into
    /// librados's timeout (when an OSD stops, queued writes can fail one bound after another).
    pub fn wait_all(&mut self) -> Result<(), Error> {
        while !self.inflight.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }
}

impl Drop for AioWriter<'_> {
    fn drop(&mut self) {
        // The buffers must outlive their writes, whatever happened before.
        while !self.inflight.is_empty() {
            let _ = self.wait_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_split_on_nul_and_skip_empty_entries() {
        assert_eq!(names(b"a\0bc\0\0"), ["a", "bc"]);
        assert!(names(b"").is_empty());
    }

    #[test]
    fn errors_say_what_failed_and_classify_errno() {
        let e = check("rbd_open", -ENOENT).unwrap_err();
        assert!(e.is_not_found() && !e.is_timeout());
        assert!(e.to_string().starts_with("rbd_open failed: No such file or directory"), "{e}");
        assert!(check_len("rbd_read", -(ETIMEDOUT as isize)).unwrap_err().is_timeout());
        assert_eq!(check_len("rbd_read", 5), Ok(5));
        assert_eq!(cstr("x", "a\0b"), Err(Error::Nul("x")));
    }
}
