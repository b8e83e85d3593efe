//! Every hard limit of the parsers, with the reason for its value.
//!
//! Architecture invariant: no parser allocates from a length it read from the file without first
//! bounding it by one of these constants, so memory stays under [`MEMORY_BOUND`] whatever the
//! input claims.

/// Peak heap use promised for one sniff or inspect call (checked by the property tests).
pub const MEMORY_BOUND: u64 = 4 << 20;

/// Default maximum virtual size: 16 TiB. Larger disks are not something a cloud image service
/// should boot; the product can raise it per deployment through `InspectOptions`.
pub const DEFAULT_MAX_VIRTUAL_SIZE: u64 = 16 << 40;

/// The browser reads this much from the start of the file (docs/formats.md §1.3: decides every format
/// except VHDX's virtual size).
pub const SNIFF_HEAD: u64 = 64 << 10;
/// The browser reads this much from the end: the VHD footer (512 B) and the streamOptimized VMDK
/// footer + markers (1,536 B).
pub const SNIFF_TAIL: u64 = 1536;
/// Follow-up reads are rounded up to this size so one round trip serves neighbouring structures.
pub const SNIFF_FETCH_GRANULE: u64 = 64 << 10;
/// Largest single piece a sniffer fetches (keeps the browser's memory small).
pub const SNIFF_MAX_PIECE: u64 = 256 << 10;
/// Follow-up rounds allowed after head + tail (VHDX needs two: headers + region table at
/// 64..256 KiB, then its metadata region; an OVA's walk one per member header the head and
/// earlier rounds do not hold, so a package of a few disks is listed whole; past this budget the
/// OVA walk lists what it holds and the server checks the rest).
pub const SNIFF_MAX_FOLLOWUPS: usize = 8;

/// Largest single read any parser does; bigger tables are walked in chunks of this size.
pub const MAX_READ_CHUNK: u64 = 256 << 10;

/// qcow2: cluster_bits range. The spec says ≥ 9; QEMU refuses more than 21 (2 MiB clusters,
/// `MAX_CLUSTER_BITS` in block/qcow2.h).
pub const QCOW2_MIN_CLUSTER_BITS: u32 = 9;
/// See [`QCOW2_MIN_CLUSTER_BITS`].
pub const QCOW2_MAX_CLUSTER_BITS: u32 = 21;
/// qcow2: QEMU's `QCOW_MAX_L1_SIZE` (32 MiB of L1 entries).
pub const QCOW2_MAX_L1_BYTES: u64 = 32 << 20;
/// qcow2: QEMU's `QCOW_MAX_REFTABLE_SIZE` (8 MiB of refcount table).
pub const QCOW2_MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// qcow2: QEMU's `QCOW_MAX_SNAPSHOTS` is 65,536; we accept none in practice but bound the walk.
pub const QCOW2_MAX_SNAPSHOTS: u32 = 65_536;
/// qcow2: the backing file name may be at most 1,023 bytes in QEMU (`bs->backing_file` is 1 KiB).
pub const QCOW2_MAX_BACKING_NAME: u32 = 1023;
/// qcow2: header extensions must end inside cluster 0 (docs/formats.md §2.5 #11); we walk at most this
/// many of them, which is more than cluster 0 (2 MiB at most) can hold with 8-byte records / 8.
pub const QCOW2_MAX_HEADER_EXTENSIONS: usize = 4096;
/// qcow2: refcount_order may be 0..=6 (spec: refcount_bits = 1 << refcount_order ≤ 64).
pub const QCOW2_MAX_REFCOUNT_ORDER: u32 = 6;

/// VMDK: an embedded descriptor is read up to this size (oslo caps at 1 MiB − 1; qemu writes
/// 10 KiB). Larger claims are refused rather than read.
pub const VMDK_MAX_DESCRIPTOR: u64 = 1 << 20;
/// VMDK: QEMU refuses L1 (grain directory) tables above 32 Mi entries (block/vmdk.c).
pub const VMDK_MAX_GD_ENTRIES: u64 = 32 << 20;
/// VMDK: grain size range QEMU accepts: up to 128 MiB (`grain_size > 128 * 2048` sectors refused).
pub const VMDK_MAX_GRAIN_SECTORS: u64 = 128 * 2048;
/// VMDK: a text descriptor file larger than this is not a descriptor (qemu accepts up to 1 MiB).
pub const VMDK_MAX_TEXT_DESCRIPTOR: u64 = 1 << 20;
/// VMDK: at most this many lines are inspected in a descriptor (a 1 MiB descriptor of empty lines
/// would otherwise cost a lot of findings).
pub const VMDK_MAX_DESCRIPTOR_LINES: usize = 10_000;

/// VHD: BAT entries ≤ this (QEMU's `VHD_MAX_SECTORS`-derived cap: 2 TiB / 512 KiB… we use the
/// 2040 GiB VHD size limit with 2 MiB blocks = 1,044,480 entries, rounded up).
pub const VHD_MAX_BAT_ENTRIES: u64 = 1 << 21;
/// VHD: largest disk the format can describe (2040 GiB, the VHD specification's limit; qemu's
/// `VHD_MAX_SIZE`).
pub const VHD_MAX_SIZE: u64 = 2040 << 30;

/// VHDX: region table and metadata table entry counts must be below 2,048 (oslo, spec: region
/// table entries ≤ 2047, metadata entries ≤ 2047).
pub const VHDX_MAX_ENTRIES: u32 = 2047;
/// VHDX: largest metadata item we read (oslo clamps item length to 32 × 2048 bytes).
pub const VHDX_MAX_ITEM: u32 = 64 << 10;
/// VHDX: largest virtual disk the format allows (64 TiB, VHDX specification).
pub const VHDX_MAX_SIZE: u64 = 64 << 40;

/// VDI: blocks in image bound (QEMU's `VDI_BLOCKS_IN_IMAGE_MAX` = 0x3fffffff / 4).
pub const VDI_MAX_BLOCKS: u32 = 0x3fff_ffff / 4;
/// VDI: QEMU only supports 1 MiB blocks (`DEFAULT_CLUSTER_SIZE`).
pub const VDI_BLOCK_SIZE: u32 = 1 << 20;

/// ISO: at most this many volume descriptors are walked after sector 16 (real discs have < 10).
pub const ISO_MAX_DESCRIPTORS: u64 = 32;

/// tar/OVA/UEC: at most this many members (OVAs have a handful; bounds the walk and the name
/// set). The package extractor's limit too, so the inspector accepts no package it refuses.
pub const TAR_MAX_MEMBERS: usize = 64;
/// tar/OVA: longest member name we accept (POSIX PAX names are unbounded; 1 KiB is plenty).
pub const TAR_MAX_NAME: usize = 1024;
/// tar: largest PAX extended header we read.
pub const TAR_MAX_PAX: u64 = 64 << 10;
/// OVA: largest OVF descriptor we parse (real ones are a few KiB). With the node limit below this
/// keeps the XML tree well inside [`MEMORY_BOUND`].
pub const OVF_MAX_SIZE: u64 = 256 << 10;
/// OVF: node limit passed to roxmltree (bounds the DOM; a real OVF has a few hundred nodes).
pub const OVF_MAX_NODES: u32 = 10_000;
/// OVA manifest size limit.
pub const MF_MAX_SIZE: u64 = 64 << 10;
/// OVA certificate (`.cert`) size limit. A real one is the manifest's signature plus a PEM
/// certificate chain, a few KiB; it is never verified, so this only keeps the member honest.
pub const CERT_MAX_SIZE: u64 = 64 << 10;

/// gzip: at most this many bytes are inflated while sniffing (enough to see the first tar header
/// or cpio magic, docs/formats.md §1.1 gzip row).
pub const GZIP_SNIFF_OUTPUT: usize = 64 << 10;
/// gzip: the browser walks the members of a UEC tarball in at most this much inflated output
/// (the member headers it can list from the 64 KiB head; it is advice only).
pub const GZIP_SNIFF_WALK: u64 = 1 << 20;
/// gzip: inspect inflates the whole stream to walk the tar, but refuses output beyond this …
pub const GZIP_MAX_OUTPUT: u64 = 64 << 30;
/// … and a compression ratio beyond this (zip-bomb defence; images rarely exceed 1:100 except for
/// empty disks, which a UEC tarball does not hold) …
pub const GZIP_MAX_RATIO: u64 = 1024;
/// … once the output passes this (small, highly compressible headers). The UEC extractor's
/// default `UecLimits` are these three, so a tarball the inspector accepts also unpacks.
pub const GZIP_RATIO_GRACE: u64 = 1 << 20;
/// Captured head of each UEC member (to identify kernels, initrds and the machine image).
pub const UEC_MEMBER_HEAD: usize = 64 << 10;
