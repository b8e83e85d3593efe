//! Digests of whole images: SHA-256 (Hangar's own), MD5 (Glance's `checksum`) and SHA-512
//! (Glance's `os_hash_value`).
//!
//! Every byte of every upload and conversion goes through all three, so their speed bounds
//! ingest. On this project's reference machine (x86-64 with SHA-NI and AVX2) OpenSSL 3 hashes
//! MD5 at ~720 MiB/s and SHA-512 at ~820 MiB/s, the RustCrypto crates at ~560 and ~570 MiB/s
//! (SHA-256: both ~1.7 GiB/s). So [`Hasher`] uses the system's OpenSSL (libcrypto) and falls
//! back to RustCrypto when OpenSSL will not provide an algorithm (a FIPS-only configuration
//! refuses MD5, for instance). Both give the same digests; tests check one against the other.

use std::io::{self, Read};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use md5::Md5;
use openssl::hash::{Hasher as OsslHasher, MessageDigest};
use sha2::{Digest, Sha256, Sha512};

/// The algorithms Hangar records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
    Sha512,
}

impl Algorithm {
    fn openssl(self) -> MessageDigest {
        match self {
            Algorithm::Sha256 => MessageDigest::sha256(),
            Algorithm::Md5 => MessageDigest::md5(),
            Algorithm::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// A running digest. `Clone` copies the state (a discarded upload request returns to it).
#[derive(Clone)]
pub struct Hasher {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    OpenSsl(OsslHasher),
    Sha256(Sha256),
    Md5(Md5),
    Sha512(Sha512),
    /// OpenSSL reported an error mid-stream: the state is lost, so the digest is too.
    Failed,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::OpenSsl(_) => "Hasher(OpenSSL)",
            Inner::Failed => "Hasher(failed)",
            _ => "Hasher(RustCrypto)",
        })
    }
}

impl Hasher {
    /// The fastest implementation at hand: OpenSSL's if it provides `algo`, else RustCrypto's.
    pub fn new(algo: Algorithm) -> Self {
        match OsslHasher::new(algo.openssl()) {
            Ok(h) => Hasher { inner: Inner::OpenSsl(h) },
            Err(_) => Self::portable(algo),
        }
    }

    /// The pure-Rust implementation (the fallback, and the tests' reference).
    pub fn portable(algo: Algorithm) -> Self {
        let inner = match algo {
            Algorithm::Sha256 => Inner::Sha256(Sha256::new()),
            Algorithm::Md5 => Inner::Md5(Md5::new()),
            Algorithm::Sha512 => Inner::Sha512(Sha512::new()),
        };
        Hasher { inner }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            Inner::OpenSsl(h) => {
                if h.update(bytes).is_err() {
                    self.inner = Inner::Failed;
                }
            }
            Inner::Sha256(h) => h.update(bytes),
            Inner::Md5(h) => h.update(bytes),
            Inner::Sha512(h) => h.update(bytes),
            Inner::Failed => {}
        }
    }

    /// The digest, or None if OpenSSL failed along the way (the caller hashes again).
    pub fn finish(self) -> Option<Vec<u8>> {
        match self.inner {
            Inner::OpenSsl(mut h) => h.finish().ok().map(|d| d.to_vec()),
            Inner::Sha256(h) => Some(h.finalize().to_vec()),
            Inner::Md5(h) => Some(h.finalize().to_vec()),
            Inner::Sha512(h) => Some(h.finalize().to_vec()),
            Inner::Failed => None,
        }
    }

    /// [`Hasher::finish`] as lower-case hex.
    pub fn finish_hex(self) -> Option<String> {
        self.finish().map(|d| hex(&d))
    }
}

/// Bytes per read in [`hash_parallel`].
const BLOCK: usize = 1 << 20;
/// Blocks queued towards each hash thread.
const QUEUE: usize = 4;

/// Hex digests of everything `source` yields, one thread per algorithm (in `algos` order): the
/// caller's thread reads, so MD5 and SHA-512 (each slower than the page cache on one core) run
/// side by side instead of one after the other. After each read, `each` gets the bytes read so
/// far; an error from it (a cancelled job) stops the hashing and is returned. Memory: about
/// `(QUEUE + 2) × 1 MiB` per algorithm.
pub fn hash_parallel(source: &mut dyn Read, algos: &[Algorithm], mut each: impl FnMut(u64) -> io::Result<()>) -> io::Result<Vec<String>> {
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(algos.len());
        let mut threads = Vec::with_capacity(algos.len());
        for &algo in algos {
            let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(QUEUE);
            senders.push(tx);
            threads.push(scope.spawn(move || {
                let mut h = Hasher::new(algo);
                for block in rx {
                    h.update(&block);
                }
                h.finish_hex()
            }));
        }
        let mut total = 0u64;
        let mut read_all = || -> io::Result<()> {
            loop {
                let mut buf = vec![0u8; BLOCK];
                let n = read_full(source, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                total += n as u64;
                let block = Arc::new(buf);
                for tx in &senders {
                    tx.send(Arc::clone(&block)).map_err(|_| io::Error::other("a hash thread stopped"))?;
                }
                each(total)?;
            }
        };
        let read = read_all();
        drop(senders);
        let digests: Vec<Option<String>> = threads.into_iter().map(|t| t.join().ok().flatten()).collect();
        read?;
        digests.into_iter().map(|d| d.ok_or_else(|| io::Error::other("a digest failed"))).collect()
    })
}

/// Fills `buf` from `source` unless it ends first; returns the bytes read.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Md5, Algorithm::Sha512];

    #[test]
    fn known_answers() {
        let want = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "d41d8cd98f00b204e9800998ecf8427e",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        ];
        for (algo, want) in ALL.into_iter().zip(want) {
            assert_eq!(Hasher::new(algo).finish_hex().as_deref(), Some(want), "{algo:?}");
            assert_eq!(Hasher::portable(algo).finish_hex().as_deref(), Some(want), "{algo:?}");
        }
        let mut h = Hasher::new(Algorithm::Md5);
        h.update(b"hello world");
        assert_eq!(h.finish_hex().unwrap(), "5eb63bbbe01eeed093cb22bb8f5acdc3");
    }

    #[test]
    fn openssl_is_used_here_and_agrees_with_rustcrypto() {
        // This machine's OpenSSL provides all three; if it stopped doing so, ingest would
        // silently lose a third of its hashing speed.
        for algo in ALL {
            assert!(format!("{:?}", Hasher::new(algo)).contains("OpenSSL"), "{algo:?}");
        }
        // Odd-sized pieces across block boundaries, and a clone taken midway.
        let data: Vec<u8> = (0..300_001u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for algo in ALL {
            let (mut fast, mut slow) = (Hasher::new(algo), Hasher::portable(algo));
            let mut mid = None;
            for (i, piece) in data.chunks(4_099).enumerate() {
                fast.update(piece);
                slow.update(piece);
                if i == 20 {
                    mid = Some((fast.clone(), slow.clone()));
                }
            }
            let (mf, ms) = mid.unwrap();
            assert_eq!(mf.finish(), ms.finish(), "{algo:?} clone");
            assert_eq!(fast.finish(), slow.finish(), "{algo:?}");
        }
    }

    #[test]
    fn parallel_hashing_matches_and_stops_when_told() {
        let data: Vec<u8> = (0..(3 * BLOCK + 12_345) as u32).map(|i| (i % 253) as u8).collect();
        let mut seen = Vec::new();
        let got = hash_parallel(&mut &data[..], &ALL, |n| {
            seen.push(n);
            Ok(())
        })
        .unwrap();
        for (algo, got) in ALL.into_iter().zip(&got) {
            let mut h = Hasher::portable(algo);
            h.update(&data);
            assert_eq!(Some(got.clone()), h.finish_hex(), "{algo:?}");
        }
        assert_eq!(seen.last().copied(), Some(data.len() as u64));
        assert_eq!(seen.len(), 4, "one progress call per block");
        // An error from the progress callback (a cancelled job) stops the hashing and is
        // returned, without hanging the threads.
        let err = hash_parallel(&mut &data[..], &ALL, |n| {
            if n > BLOCK as u64 {
                Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(
            hash_parallel(&mut io::empty(), &[Algorithm::Md5], |_| Ok(())).unwrap(),
            vec!["d41d8cd98f00b204e9800998ecf8427e".to_owned()]
        );
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
