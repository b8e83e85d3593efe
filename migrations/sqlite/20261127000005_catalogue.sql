-- The catalogue issue: one location per backend, the storage-compatibility matrix, persistent
-- conversion/copy jobs, and indexes for the Images list's filters and sort keys.

-- Where an image's bytes live: at most one copy per backend. `backend` is the configured
-- backend's name (hangar.toml `[[storage]] name`), `key` the object key / relative path inside it
-- (never a path chosen by a user or named by an image).
CREATE TABLE image_locations (
    image_id    TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    backend     TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    -- The format of this copy (a copy on Ceph may be raw while the Local one is qcow2).
    disk_format TEXT    NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    checksum    TEXT,                  -- MD5 of this copy
    os_hash_value TEXT,                -- SHA-512 of this copy
    -- 'pending' while a job writes it, 'active' once durable, 'deleting' while it is removed.
    status      TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('pending', 'active', 'deleting')),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (image_id, backend)
);
CREATE INDEX image_locations_backend ON image_locations (backend, status);

-- Existing local copies (the ingest pipeline's `location` column) become rows of the `local`
-- backend. The old column stays for reading old rows but is no longer written.
INSERT INTO image_locations (image_id, backend, key, disk_format, size, checksum, os_hash_value)
SELECT id, 'local', location, COALESCE(disk_format, 'raw'), COALESCE(size, 0), checksum, os_hash_value
FROM images WHERE location IS NOT NULL AND status IN ('active', 'deactivated');

-- The storage-compatibility matrix: backend kind × format → what an import does.
--   native  : stored as uploaded
--   convert : converted on import to `target_format`
--   extract : a package (OVA, UEC) whose members follow the rows of their own formats
--   refuse  : not accepted on this backend
-- Admins edit it; `reason` is shown in the matrix page's cells, legend and on image pages.
CREATE TABLE storage_policy (
    backend_kind  TEXT NOT NULL CHECK (backend_kind IN ('local', 'nfs', 'ceph')),
    format        TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('native', 'convert', 'extract', 'refuse')),
    target_format TEXT CHECK ((action = 'convert') = (target_format IS NOT NULL)),
    reason        TEXT NOT NULL DEFAULT '',
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_by    TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (backend_kind, format)
);

INSERT INTO storage_policy (backend_kind, format, action, target_format, reason) VALUES
 ('local', 'qcow2', 'native',  NULL,    'qcow2 is sparse and supports snapshots and backing files on a filesystem.'),
 ('local', 'raw',   'convert', 'qcow2', 'Raw images are stored as qcow2: holes cost nothing and instances can snapshot them.'),
 ('local', 'iso',   'native',  NULL,    'Installer media are attached read-only as they are.'),
 ('local', 'ami',   'native',  NULL,    'AMI filesystem images are booted with their AKI kernel and ARI ramdisk as they are.'),
 ('local', 'aki',   'native',  NULL,    'Kernels are passed to the hypervisor as they are.'),
 ('local', 'ari',   'native',  NULL,    'Ramdisks are passed to the hypervisor as they are.'),
 ('local', 'vdi',   'convert', 'qcow2', 'VirtualBox disks are not bootable by KVM: converted to qcow2.'),
 ('local', 'vhd',   'convert', 'qcow2', 'Hyper-V disks are converted to qcow2, the native format of file-backed KVM storage.'),
 ('local', 'vhdx',  'convert', 'qcow2', 'Hyper-V disks are converted to qcow2, the native format of file-backed KVM storage.'),
 ('local', 'vmdk',  'convert', 'qcow2', 'VMware disks are converted to qcow2, the native format of file-backed KVM storage.'),
 ('local', 'ova',   'extract', NULL,    'OVA packages are unpacked; each disk follows the row of its own format.'),
 ('local', 'uec',   'extract', NULL,    'UEC tarballs become linked AMI, AKI and ARI images.'),
 ('nfs',   'qcow2', 'native',  NULL,    'qcow2 is sparse and supports snapshots and backing files on a shared filesystem.'),
 ('nfs',   'raw',   'convert', 'qcow2', 'Raw images are stored as qcow2: holes cost nothing and instances can snapshot them.'),
 ('nfs',   'iso',   'native',  NULL,    'Installer media are attached read-only as they are.'),
 ('nfs',   'ami',   'native',  NULL,    'AMI filesystem images are booted with their AKI kernel and ARI ramdisk as they are.'),
 ('nfs',   'aki',   'native',  NULL,    'Kernels are passed to the hypervisor as they are.'),
 ('nfs',   'ari',   'native',  NULL,    'Ramdisks are passed to the hypervisor as they are.'),
 ('nfs',   'vdi',   'convert', 'qcow2', 'VirtualBox disks are not bootable by KVM: converted to qcow2.'),
 ('nfs',   'vhd',   'convert', 'qcow2', 'Hyper-V disks are converted to qcow2, the native format of file-backed KVM storage.'),
 ('nfs',   'vhdx',  'convert', 'qcow2', 'Hyper-V disks are converted to qcow2, the native format of file-backed KVM storage.'),
 ('nfs',   'vmdk',  'convert', 'qcow2', 'VMware disks are converted to qcow2, the native format of file-backed KVM storage.'),
 ('nfs',   'ova',   'extract', NULL,    'OVA packages are unpacked; each disk follows the row of its own format.'),
 ('nfs',   'uec',   'extract', NULL,    'UEC tarballs become linked AMI, AKI and ARI images.'),
 ('ceph',  'qcow2', 'convert', 'raw',   'RBD copy-on-write clones need raw images: qcow2 would be copied in full for every instance.'),
 ('ceph',  'raw',   'native',  NULL,    'Raw is what RBD clones copy-on-write, so instances boot without a full copy.'),
 ('ceph',  'iso',   'native',  NULL,    'Installer media are attached read-only as they are.'),
 ('ceph',  'ami',   'native',  NULL,    'AMI filesystem images are raw already.'),
 ('ceph',  'aki',   'native',  NULL,    'Kernels are passed to the hypervisor as they are.'),
 ('ceph',  'ari',   'native',  NULL,    'Ramdisks are passed to the hypervisor as they are.'),
 ('ceph',  'vdi',   'convert', 'raw',   'VirtualBox disks are converted to raw so RBD can clone them copy-on-write.'),
 ('ceph',  'vhd',   'convert', 'raw',   'Hyper-V disks are converted to raw so RBD can clone them copy-on-write.'),
 ('ceph',  'vhdx',  'convert', 'raw',   'Hyper-V disks are converted to raw so RBD can clone them copy-on-write.'),
 ('ceph',  'vmdk',  'convert', 'raw',   'VMware disks are converted to raw so RBD can clone them copy-on-write.'),
 ('ceph',  'ova',   'extract', NULL,    'OVA packages are unpacked; each disk follows the row of its own format.'),
 ('ceph',  'uec',   'extract', NULL,    'UEC tarballs become linked AMI, AKI and ARI images.');

-- Persistent background work: conversions on import, copies to another backend. A job that was
-- `running` when the server stopped is picked up again at start (status back to `queued`).
CREATE TABLE jobs (
    id             TEXT    PRIMARY KEY NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('import', 'copy')),
    image_id       TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    backend        TEXT    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- JSON: what the worker needs to run the job again after a restart (source path, formats).
    params         TEXT    NOT NULL DEFAULT '{}',
    bytes_done     INTEGER NOT NULL DEFAULT 0 CHECK (bytes_done >= 0),
    bytes_total    INTEGER NOT NULL DEFAULT 0 CHECK (bytes_total >= 0),
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    error          TEXT    NOT NULL DEFAULT '',
    -- A human summary of what the job did ("vdi → qcow2, 2.1 GiB → 740 MiB").
    summary        TEXT    NOT NULL DEFAULT '',
    created_by     TEXT,
    created_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at     TEXT,
    finished_at    TEXT,
    updated_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX jobs_status ON jobs (status, created_at);
CREATE INDEX jobs_image ON jobs (image_id, created_at DESC);

-- The Images list's filters and sort keys (each index ends with id, the paging tie-breaker).
CREATE INDEX images_name_id ON images (name, id);
CREATE INDEX images_status_id ON images (status, id);
CREATE INDEX images_size_id ON images (size, id);
CREATE INDEX images_updated_at_id ON images (updated_at, id);
CREATE INDEX images_disk_format ON images (disk_format);
