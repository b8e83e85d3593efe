-- What the upload/ingest pipeline records on an image (Glance v2 fields plus Hangar's own).
ALTER TABLE images ADD COLUMN checksum TEXT;              -- MD5 of the stored data (Glance `checksum`)
ALTER TABLE images ADD COLUMN os_hash_algo TEXT;          -- 'sha512'
ALTER TABLE images ADD COLUMN os_hash_value TEXT;         -- SHA-512 of the stored data
ALTER TABLE images ADD COLUMN uploaded_format TEXT;       -- what the user sent, before conversion
ALTER TABLE images ADD COLUMN uploaded_size INTEGER;
ALTER TABLE images ADD COLUMN min_disk INTEGER NOT NULL DEFAULT 0 CHECK (min_disk >= 0);
ALTER TABLE images ADD COLUMN min_ram INTEGER NOT NULL DEFAULT 0 CHECK (min_ram >= 0);
ALTER TABLE images ADD COLUMN os_hidden INTEGER NOT NULL DEFAULT 0 CHECK (os_hidden IN (0, 1));
-- Free-form properties (architecture, os_distro, os_version, description, …) as a JSON object,
-- and tags as a JSON array of strings.
ALTER TABLE images ADD COLUMN properties TEXT NOT NULL DEFAULT '{}';
ALTER TABLE images ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
-- The inspector's report (JSON) and, for a refused image, the reason users see.
ALTER TABLE images ADD COLUMN findings TEXT NOT NULL DEFAULT '[]';
ALTER TABLE images ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
-- Where the bytes are (local backend: a path under the data dir; the catalogue issue turns this
-- into one location per backend).
ALTER TABLE images ADD COLUMN location TEXT;
ALTER TABLE images ADD COLUMN created_by TEXT REFERENCES users (id);
