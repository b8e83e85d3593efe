//! The server's integration tests, as one test binary (one link instead of one per file: the
//! server is large). Each module is one area; `common` holds the shared set-up. They run one at a
//! time (`--test-threads=1`, scripts/test.sh): several whole Hangars on separate runtimes in one
//! process at once occasionally stall an SSR render.

mod common;

mod accounts;
mod ceph;
mod diskfull;
mod doors;
mod faults;
mod glance;
mod http;
mod ingest;
mod quotas;
mod restart;
mod security;
