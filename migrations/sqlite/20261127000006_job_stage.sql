-- What a running job is doing now (inspecting, converting, unpacking, hashing, storing…), so the
-- upload card and the jobs page can say more than "verifying"; '' before the worker starts.
ALTER TABLE jobs ADD COLUMN stage TEXT NOT NULL DEFAULT '';
