-- Why a job that did not succeed failed (records::JobFailure): 'refused' (its data: the
-- inspector, the converter, the declaration), 'over_quota' (what it would store exceeds the
-- project's quota), 'error' (Hangar could not finish it: storage, database), 'conflict' (the
-- image stopped waiting for this data), 'none' otherwise. The Glance door answers a PUT whose
-- import ended so with 415, 413, 503 and 409, as Glance does (docs/glance-api.md §1.6).
ALTER TABLE jobs ADD COLUMN failure TEXT NOT NULL DEFAULT 'none';
