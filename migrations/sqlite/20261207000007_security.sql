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
