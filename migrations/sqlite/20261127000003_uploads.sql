-- Resumable uploads (tus 1.0, crates/uploads): the state that must survive a restart.
--
-- The bytes live in data_dir/uploads/<id>. `upload_offset` counts only bytes that were made
-- durable (fdatasync) before the row was updated, so a crash never claims bytes the file lacks.
-- Times are Unix seconds (UTC): they are compared with `now` and turned into RFC 9110 dates.
CREATE TABLE uploads (
    id            TEXT    PRIMARY KEY NOT NULL,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id    TEXT    NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    upload_length INTEGER NOT NULL CHECK (upload_length >= 0),
    upload_offset INTEGER NOT NULL DEFAULT 0
                  CHECK (upload_offset >= 0 AND upload_offset <= upload_length),
    -- Decoded Upload-Metadata as a JSON object of strings.
    metadata      TEXT    NOT NULL DEFAULT '{}',
    -- tus concatenation: 'partial' uploads are joined into a 'final' one; 'none' otherwise.
    concat        TEXT    NOT NULL DEFAULT 'none' CHECK (concat IN ('none', 'partial', 'final')),
    -- Finals: the ids of their parts, in order, as a JSON list.
    parts         TEXT,
    -- Partials: the final upload that claimed this part (a part joins at most one final).
    final_id      TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    -- When the complete file was handed to the ingest pipeline (never set on partials).
    completed_at  INTEGER
);

-- Quota sums and counts per project and per user over uploads still in flight.
CREATE INDEX uploads_project ON uploads (project_id, completed_at);
CREATE INDEX uploads_user ON uploads (user_id, completed_at);
-- The cleanup task's scan for expired uploads.
CREATE INDEX uploads_expires ON uploads (expires_at);
CREATE INDEX uploads_final ON uploads (final_id) WHERE final_id IS NOT NULL;
