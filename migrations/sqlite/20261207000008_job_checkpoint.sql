-- The last step a job completed durably (JSON written by server::ingest::Checkpoint: the output
-- file and what is known of it), so a job interrupted by a stop or a crash resumes from that step
-- instead of redoing its work; '' when the job has completed no step yet.
ALTER TABLE jobs ADD COLUMN checkpoint TEXT NOT NULL DEFAULT '';
