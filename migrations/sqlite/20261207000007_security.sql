-- The security issue: token expiry, tombstones for deleted image ids.

-- An API token may end on its own; NULL means it lasts until revoked.
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;

-- Ids of deleted images, kept for good so that no id is ever taken again (OpenStack's OSSN-0075:
-- a re-used id lets another project plant an image where users' references point). The image's
-- own row (with its tags, properties, members and locations) is gone, so listings and quotas
-- never see tombstones.
CREATE TABLE deleted_images (
    id         TEXT PRIMARY KEY NOT NULL,
    owner      TEXT,
    deleted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- Bytes (and upload slots) a project has in flight outside tus uploads, so that its quota is
-- checked against everything at once: a Glance PUT or web-download while its body arrives
-- ('upload', slot 1), staged data ('stage'), an upload handed to its import job until the image
-- is active or killed ('import': the upload's size, then the converted output's), a copy to
-- another backend until its location is recorded ('copy:<backend>'). One row per image and
-- purpose; a hold goes with its image.
CREATE TABLE quota_holds (
    image_id   TEXT    NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    purpose    TEXT    NOT NULL,
    project_id TEXT    NOT NULL,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    slot       INTEGER NOT NULL DEFAULT 0 CHECK (slot IN (0, 1)),
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (image_id, purpose)
);
CREATE INDEX quota_holds_project ON quota_holds (project_id);

-- An image's data is imported once: at most one import job queued or running per image (a tus
-- upload completing for an image whose Glance PUT is importing, or two tus finals, used to start
-- a second job writing the same storage key). Duplicates left by older versions are failed first.
UPDATE jobs SET status = 'failed', error = 'Another import of this image was already queued.',
       finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
 WHERE kind = 'import' AND status IN ('queued', 'running')
   AND EXISTS (SELECT 1 FROM jobs j2 WHERE j2.image_id = jobs.image_id AND j2.kind = 'import'
               AND j2.status IN ('queued', 'running') AND j2.rowid < jobs.rowid);
CREATE UNIQUE INDEX jobs_one_import ON jobs (image_id) WHERE kind = 'import' AND status IN ('queued', 'running');
