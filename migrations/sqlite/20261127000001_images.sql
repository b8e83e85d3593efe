-- The image catalogue, minimal for now: the catalogue issue extends it to all of Glance v2's
-- fields. Status and visibility use Glance's names so the API can expose them unchanged.
CREATE TABLE images (
    id               TEXT    PRIMARY KEY NOT NULL,
    name             TEXT    NOT NULL DEFAULT '',
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'saving', 'uploading', 'importing', 'active',
                                       'deactivated', 'killed', 'deleted', 'pending_delete')),
    disk_format      TEXT,
    container_format TEXT,
    visibility       TEXT    NOT NULL DEFAULT 'shared'
                     CHECK (visibility IN ('private', 'shared', 'community', 'public')),
    size             INTEGER CHECK (size IS NULL OR size >= 0),
    virtual_size     INTEGER CHECK (virtual_size IS NULL OR virtual_size >= 0),
    sha256           TEXT,
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- The list page's default order (newest first) with a tie-breaker for stable paging.
CREATE INDEX images_created_at_id ON images (created_at DESC, id);
