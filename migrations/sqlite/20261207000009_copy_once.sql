-- One live copy of an image to a backend at a time, decided by the insert itself: two parallel
-- copy requests (dashboard, Glance copy-image) cannot both queue one (imageops::copy_image turns
-- the refusal into 409). Duplicates an older Hangar let through are cancelled first.
UPDATE jobs SET status = 'cancelled', error = 'A second copy to the same backend; the first one runs.'
 WHERE kind = 'copy' AND status IN ('queued', 'running')
   AND EXISTS (SELECT 1 FROM jobs j2 WHERE j2.image_id = jobs.image_id AND j2.backend = jobs.backend AND j2.kind = 'copy'
               AND j2.status IN ('queued', 'running') AND j2.rowid < jobs.rowid);
CREATE UNIQUE INDEX jobs_one_copy ON jobs (image_id, backend) WHERE kind = 'copy' AND status IN ('queued', 'running');
