-- Two kinds of Ceph storage (crates/storage): `s3` objects through a RADOS Gateway (what the
-- kind `ceph` was; hangar.toml still accepts `kind = "ceph"` for it) and `rbd`, RBD images with a
-- protected snapshot that compute services clone copy-on-write. The matrix gets both columns:
-- the `ceph` cells become the `s3` column as they were (edits kept, so nothing an operator set
-- changes), and the `rbd` column starts from RBD's defaults. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt.
CREATE TABLE storage_policy_new (
    backend_kind  TEXT NOT NULL CHECK (backend_kind IN ('local', 'nfs', 's3', 'rbd')),
    format        TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('native', 'convert', 'extract', 'refuse')),
    target_format TEXT CHECK ((action = 'convert') = (target_format IS NOT NULL)),
    reason        TEXT NOT NULL DEFAULT '',
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_by    TEXT NOT NULL DEFAULT 'default',
    PRIMARY KEY (backend_kind, format)
);

INSERT INTO storage_policy_new (backend_kind, format, action, target_format, reason, updated_at, updated_by)
SELECT CASE backend_kind WHEN 'ceph' THEN 's3' ELSE backend_kind END, format, action, target_format, reason, updated_at, updated_by
FROM storage_policy;

-- The s3 cells nobody edited said why RBD wants raw; on object storage the reason is the import
-- into RBD that raw makes possible.
UPDATE storage_policy_new SET reason = CASE format
    WHEN 'qcow2' THEN 'Kept as raw on object storage, so it can be imported into an RBD pool and cloned copy-on-write.'
    WHEN 'raw'   THEN 'Raw objects can be imported into an RBD pool as they are and cloned copy-on-write.'
    WHEN 'ami'   THEN 'AMI filesystem images are raw already.'
    ELSE replace(reason, 'so RBD can clone them copy-on-write', 'so they can be imported into an RBD pool and cloned')
  END
WHERE backend_kind = 's3' AND updated_by = 'default';

INSERT INTO storage_policy_new (backend_kind, format, action, target_format, reason) VALUES
 ('rbd', 'qcow2', 'convert', 'raw', 'RBD copy-on-write clones need raw images: qcow2 would be copied in full for every instance.'),
 ('rbd', 'raw',   'native',  NULL,  'Raw is what RBD clones copy-on-write, so instances boot without a full copy.'),
 ('rbd', 'iso',   'native',  NULL,  'Installer media are attached read-only as they are.'),
 ('rbd', 'ami',   'native',  NULL,  'AMI filesystem images are raw already.'),
 ('rbd', 'aki',   'native',  NULL,  'Kernels are passed to the hypervisor as they are.'),
 ('rbd', 'ari',   'native',  NULL,  'Ramdisks are passed to the hypervisor as they are.'),
 ('rbd', 'vdi',   'convert', 'raw', 'VirtualBox disks are converted to raw so RBD can clone them copy-on-write.'),
 ('rbd', 'vhd',   'convert', 'raw', 'Hyper-V disks are converted to raw so RBD can clone them copy-on-write.'),
 ('rbd', 'vhdx',  'convert', 'raw', 'Hyper-V disks are converted to raw so RBD can clone them copy-on-write.'),
 ('rbd', 'vmdk',  'convert', 'raw', 'VMware disks are converted to raw so RBD can clone them copy-on-write.'),
 ('rbd', 'ova',   'extract', NULL,  'OVA packages are unpacked; each disk follows the row of its own format.'),
 ('rbd', 'uec',   'extract', NULL,  'UEC tarballs become linked AMI, AKI and ARI images.');

DROP TABLE storage_policy;
ALTER TABLE storage_policy_new RENAME TO storage_policy;
