//! Storage records: the storage-compatibility matrix, image locations and background jobs.
