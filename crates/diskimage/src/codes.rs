//! Stable finding codes. They are part of the API: the UI and the server match on them, so a code
//! is never renamed or reused for another meaning. The number in brackets is the point of the
//! validator checklist (docs/formats.md §2.5) that the code implements.

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $val:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $val;)*
        /// Every code, for documentation and tests.
        pub const ALL: &[&str] = &[$($val),*];
    };
}

codes! {
    // Generic [1, 2, 3]
    /// The declared format differs from the detected one [1].
    FORMAT_MISMATCH = "format-mismatch";
    /// Several formats match the same bytes (a polyglot) [1].
    MULTIPLE_FORMATS = "multiple-formats";
    /// The virtual size exceeds the configured maximum [2].
    VIRTUAL_SIZE_TOO_LARGE = "virtual-size-too-large";
    /// The virtual size is not a multiple of 512 bytes [2].
    VIRTUAL_SIZE_UNALIGNED = "virtual-size-unaligned";
    /// The file ends before a structure it declares [3].
    TRUNCATED = "truncated";
    /// The storage failed while reading (not a property of the image).
    READ_ERROR = "read-error";
    /// Sniffing could not finish with the bytes the browser may read (informational).
    SNIFF_INCOMPLETE = "sniff-incomplete";
    /// The file is empty.
    EMPTY_FILE = "empty-file";
    /// The format is recognised but never accepted (qcow v1, QED, COWD).
    FORMAT_NOT_ALLOWED = "format-not-allowed";
    /// An archive that is neither an OVA nor a UEC tarball, or a compressed stream of unknown content.
    UNSUPPORTED_CONTAINER = "unsupported-container";
    /// Nested containers (an OVA inside an OVA).
    NESTING_TOO_DEEP = "nesting-too-deep";
    /// Informational: a filesystem was recognised inside a raw image.
    FILESYSTEM_HINT = "filesystem-hint";

    // qcow2 [3, 6-11]
    /// Header version is not 2 or 3 [6].
    QCOW2_VERSION = "qcow2-unsupported-version";
    /// cluster_bits outside 9..=21 [6].
    QCOW2_CLUSTER_BITS = "qcow2-cluster-bits";
    /// v3 header_length invalid [6].
    QCOW2_HEADER_LENGTH = "qcow2-header-length";
    /// A backing file is named [7].
    QCOW2_BACKING_FILE = "qcow2-backing-file";
    /// A backing-format header extension is present [7].
    QCOW2_BACKING_FORMAT = "qcow2-backing-format";
    /// Dirty bit set: refcounts need repair, which would write to the upload [8].
    QCOW2_DIRTY = "qcow2-dirty";
    /// Corrupt bit set [8].
    QCOW2_CORRUPT = "qcow2-corrupt";
    /// External data file (bit, name extension or raw-data autoclear bit) [8].
    QCOW2_DATA_FILE = "qcow2-external-data-file";
    /// Incompatible feature bits Hangar does not know [8].
    QCOW2_UNKNOWN_FEATURES = "qcow2-unknown-incompatible-features";
    /// Compression type byte invalid or inconsistent with bit 3 [8].
    QCOW2_COMPRESSION_TYPE = "qcow2-compression-type";
    /// Extended L2 entries with too small clusters [8].
    QCOW2_EXTENDED_L2 = "qcow2-extended-l2";
    /// Encrypted (crypt_method ≠ 0 or a full-disk-encryption extension) [9].
    QCOW2_ENCRYPTED = "qcow2-encrypted";
    /// Internal snapshots present (only the active state is used) [10].
    QCOW2_SNAPSHOTS = "qcow2-snapshots";
    /// Header extensions run past cluster 0 or are malformed [11].
    QCOW2_HEADER_EXTENSIONS = "qcow2-header-extensions";
    /// refcount_order outside 0..=6 [6].
    QCOW2_REFCOUNT_ORDER = "qcow2-refcount-order";
    /// L1 table larger than QEMU's limit or smaller than the virtual size needs [3].
    QCOW2_L1_SIZE = "qcow2-l1-size";
    /// Refcount table larger than QEMU's limit or empty [3].
    QCOW2_REFCOUNT_TABLE = "qcow2-refcount-table";
    /// A metadata structure lies (partly) outside the file [3].
    QCOW2_OUTSIDE_FILE = "qcow2-metadata-outside-file";
    /// Metadata structures overlap [3].
    QCOW2_OVERLAP = "qcow2-metadata-overlap";
    /// A table offset is not cluster aligned, or an entry has reserved bits set [3].
    QCOW2_MISALIGNED = "qcow2-misaligned";

    // VMDK [12, 13]
    /// A text descriptor file (points at other files) [12].
    VMDK_DESCRIPTOR_FILE = "vmdk-descriptor-file";
    /// createType is not monolithicSparse or streamOptimized [12].
    VMDK_CREATE_TYPE = "vmdk-create-type";
    /// Not exactly one SPARSE extent [12].
    VMDK_EXTENTS = "vmdk-extents";
    /// An extent names a path (contains '/' or '\\') [12].
    VMDK_EXTENT_PATH = "vmdk-extent-path";
    /// A parent (parentFileNameHint / parentCID) [12].
    VMDK_PARENT = "vmdk-parent";
    /// Descriptor line not understood [12].
    VMDK_DESCRIPTOR_SYNTAX = "vmdk-descriptor-syntax";
    /// No embedded descriptor, or not at sector 1, or too big [13].
    VMDK_DESCRIPTOR_LOCATION = "vmdk-descriptor-location";
    /// Header fields out of range (version, grain size, GTEs per GT, compression) [13].
    VMDK_HEADER = "vmdk-header";
    /// Grain directory/table outside the file or too large [3].
    VMDK_TABLES = "vmdk-tables";
    /// streamOptimized footer / markers invalid (header gdOffset = GD_AT_END): the file is too
    /// short for the 1,536-byte trailer, or the footer @EOF-1024 lacks the `KDMV` signature, has
    /// another version or descriptor than the header or a GD_AT_END gdOffset of its own, or the
    /// footer marker @EOF-1536 or the end-of-stream marker @EOF-512 is invalid
    /// (`formats::vmdk::FooterProblem` names each; the message says which) [13].
    VMDK_FOOTER = "vmdk-footer";
    /// Extent size differs from the header capacity [2].
    VMDK_CAPACITY = "vmdk-capacity-mismatch";
    /// Extent name differs from the uploaded file's name (informational) [12].
    VMDK_EXTENT_NAME = "vmdk-extent-name";

    // VHD [14]
    /// Footer or dynamic header checksum wrong [14].
    VHD_CHECKSUM = "vhd-checksum";
    /// Disk type not fixed/dynamic [14].
    VHD_DISK_TYPE = "vhd-disk-type";
    /// Differencing disk / parent references [14].
    VHD_PARENT = "vhd-parent";
    /// Footer copy at offset 0 differs from the footer at the end [14].
    VHD_FOOTER_MISMATCH = "vhd-footer-mismatch";
    /// Dynamic header / BAT invalid or outside the file [14].
    VHD_TABLES = "vhd-tables";
    /// Disk larger than the VHD format allows (2040 GiB) [2].
    VHD_TOO_LARGE = "vhd-too-large";

    // VHDX [15]
    /// No valid header (signature/CRC-32C) or unsupported version [15].
    VHDX_HEADER = "vhdx-header";
    /// A log needs replaying [15].
    VHDX_LOG = "vhdx-log-pending";
    /// Region table invalid (signature, CRC, count, unknown required region, layout) [15].
    VHDX_REGIONS = "vhdx-regions";
    /// Metadata table or items invalid [15].
    VHDX_METADATA = "vhdx-metadata";
    /// A differencing VHDX (HasParent / parent locator) [15].
    VHDX_PARENT = "vhdx-parent";
    /// BAT entries outside the file / invalid [3].
    VHDX_BAT = "vhdx-bat";

    // VDI [16]
    /// Image type not dynamic/static [16].
    VDI_TYPE = "vdi-image-type";
    /// Link or parent UUID set [16].
    VDI_PARENT = "vdi-parent";
    /// Header fields invalid (version, block size, sector size, sizes) [16].
    VDI_HEADER = "vdi-header";
    /// Block map invalid or outside the file [16].
    VDI_BLOCK_MAP = "vdi-block-map";

    // ISO / raw [17, 18]
    /// Another format's structure inside the ISO system area [17].
    ISO_POLYGLOT = "iso-polyglot";
    /// Volume descriptors invalid [17].
    ISO_DESCRIPTORS = "iso-descriptors";
    /// El Torito boot catalog invalid (warning) [17].
    ISO_BOOT_CATALOG = "iso-boot-catalog";
    /// MBR partition entries invalid (oslo `mbr` check) [18].
    MBR_INVALID = "mbr-invalid";
    /// GPT header/entries invalid [18].
    GPT_INVALID = "gpt-invalid";
    /// GPT backup header not in the last sector (warning) [18].
    GPT_BACKUP = "gpt-backup";

    // LUKS / QED
    /// LUKS volume: encrypted, cannot be inspected [9].
    LUKS_ENCRYPTED = "luks-encrypted";

    // tar / OVA [19, 20]
    /// Member is a link, device, FIFO or a directory with content [19].
    TAR_MEMBER_TYPE = "tar-member-type";
    /// Member name absolute, with `..`, NUL, backslash, not UTF-8 or too long [19].
    TAR_MEMBER_NAME = "tar-member-name";
    /// Two members with the same name [19].
    TAR_DUPLICATE = "tar-duplicate-member";
    /// Too many members [19].
    TAR_TOO_MANY = "tar-too-many-members";
    /// PAX `size` override (TARmageddon), a `linkpath`, a malformed or too large PAX header, or a
    /// global PAX header [19].
    TAR_PAX = "tar-pax-size";
    /// Header magic, checksum or number field invalid [19].
    TAR_HEADER = "tar-header";
    /// Something other than zeros follows the end-of-archive block (a payload another tar
    /// reader might see) [19].
    TAR_TRAILING_DATA = "tar-trailing-data";
    /// The `.ovf` is not the first member, or there are several [19].
    OVA_OVF_FIRST = "ova-ovf-not-first";
    /// OVF not UTF-8 or not well-formed XML, has a DOCTYPE, is too large or has too many nodes,
    /// has no `<Envelope>` root, or declares a `File` or `Disk` twice, incompletely, compressed
    /// or chunked, or a `File` whose `ovf:size` is not a whole number or not its member's
    /// length [20].
    OVF_INVALID = "ovf-invalid";
    /// `ovf:href` is not a plain member name (a URL or drive path, an unsafe name, an `.ovf`,
    /// `.mf` or `.cert` name), a disk names no declared file, or a referenced file is not in
    /// the archive [20].
    OVF_HREF = "ovf-href";
    /// Disk format not streamOptimized/monolithicSparse VMDK or raw, or a VMDK disk that is not
    /// the subformat its `ovf:format` names [20].
    OVF_DISK_FORMAT = "ovf-disk-format";
    /// Capacity missing, not a whole number, in unknown units or beyond 2^64 bytes, or different
    /// from the disk's own size [20].
    OVF_CAPACITY = "ovf-capacity-mismatch";
    /// A disk member failed its own inspection [20].
    OVA_DISK = "ova-disk";
    /// Manifest invalid: not UTF-8, bad syntax, unknown algorithm, too large, a second one, or
    /// not listing exactly the descriptor and the files the OVF references [20].
    OVA_MANIFEST = "ova-manifest";
    /// Manifest digest does not match the member [20].
    OVA_DIGEST = "ova-manifest-digest";
    /// A member the OVF does not reference (other than the manifest and the certificate):
    /// refused, as the extractor refuses it [20].
    OVA_UNREFERENCED = "ova-unreferenced-member";
    /// More than one `.cert`, one too large, or one before the `.mf` [19].
    OVA_CERTIFICATE = "ova-certificate";

    // gzip / UEC / AKI / ARI [21]
    /// gzip header invalid or the stream does not inflate [21].
    GZIP_INVALID = "gzip-invalid";
    /// Inflated output exceeds the size or ratio cap [21].
    GZIP_BOMB = "gzip-bomb";
    /// UEC tarball lacks its machine image, or has several [21].
    UEC_MEMBERS = "uec-members";
    /// The kernel member is not a kernel [21].
    UEC_KERNEL = "uec-kernel";
    /// The ramdisk member is not an initrd [21].
    UEC_RAMDISK = "uec-ramdisk";
    /// The machine image member is not raw (a qcow2 etc. hidden in the tarball) [21].
    UEC_IMAGE = "uec-image";
    /// Kernel header invalid [21].
    AKI_INVALID = "aki-invalid";
    /// Initrd stream invalid [21].
    ARI_INVALID = "ari-invalid";
}
