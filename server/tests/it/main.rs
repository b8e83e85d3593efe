//! The server's integration tests, as one test binary (one link instead of one per file: the
//! server is large). Each module is one area; `common` holds the shared set-up. scripts/test.sh
//! runs them with cargo-nextest, each test in a process of its own; under plain `cargo test`
//! give `--test-threads=1`: several whole Hangars on separate runtimes in one process at once
//! occasionally stall an SSR render.

mod common;

mod accounts;
mod ceph;
mod diskfull;
mod doors;
mod faults;
mod glance;
mod http;
mod ingest;
mod packages;
mod quotas;
mod restart;
mod security;
