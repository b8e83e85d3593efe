#!/usr/bin/env bash
# Runs every test of Hangar: Rust unit and integration tests, clippy with warnings as errors
# (server and browser builds), the wasm32 builds, and the Playwright suite in Debian's Chromium
# against a freshly built server. Installs what it needs first (scripts/setup.sh test).
#
# usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$SECONDS
step() { printf '\n=== %s (%ss)\n' "$*" "$((SECONDS - start))"; }

step "set-up ($(df -h --output=avail . | tail -1 | tr -d ' ') free on this disk)"
scripts/setup.sh test

step "format (rustfmt.toml: cargo fmt --all to fix)"
cargo fmt --all --check

step "browser bundle (wasm32) and site"
scripts/build-site.sh dev

step "server binary"
cargo build -p server --bin hangar

step "Ceph (single node on 127.0.0.1:17380 for the storage tests; stopped when this script exits)"
# One cluster for the whole run: the Ceph tests (crates/storage, later the server's) find it
# through the variables ceph-up.sh prints. Alone, `cargo test -p storage` starts its own.
ceph_state="${CARGO_TARGET_DIR:-target}/ceph-ci"
trap 'scripts/ceph-down.sh "$ceph_state" --purge 2>/dev/null || true' EXIT
ceph_env=$(CEPH_OBJECTSTORE=memstore CEPH_STORE_MB=2048 CEPH_RBD_POOL=hangar-rbd scripts/ceph-up.sh "$ceph_state" 17380)
while IFS='=' read -r key value; do export "$key=$value"; done <<<"$ceph_env"

step "Rust tests"
crates=(-p app -p records -p domain -p policy -p accounts -p digests -p diskimage -p uploads -p storage -p rbd -p imageops)
if cargo nextest --version >/dev/null 2>&1; then
  # cargo-nextest (on this kind of machine: ARCHITECTURE.md, "Tests"): one build of every
  # crate's tests with one feature set, and each test in a process of its own, so the server's
  # integration tests (each a whole Hangar) run side by side as separate servers do. Bounded,
  # so a stall fails the run instead of hanging it.
  timeout 1200 cargo nextest run --no-fail-fast --test-threads 4 "${crates[@]}" -p server
  cargo test --doc -p diskimage -p uploads
else
  cargo test "${crates[@]}"
  # Without nextest the server's integration tests share one process: several Hangars on their
  # own Tokio runtimes there occasionally stall an SSR render, so they run one at a time.
  timeout 900 cargo test -p server -- --test-threads=1
fi

step "clippy: server side (warnings are errors)"
cargo clippy -p server -p app -p records -p domain -p policy -p accounts -p digests -p uploads -p storage -p rbd -p imageops --all-targets -- -D warnings
step "clippy: browser side"
cargo clippy -p frontend -p app --target wasm32-unknown-unknown -- -D warnings
step "clippy: diskimage (all features, and the WASM feature set)"
cargo clippy -p diskimage --all-targets -- -D warnings
cargo clippy -p diskimage --lib --no-default-features --target wasm32-unknown-unknown -- -D warnings

step "diskimage builds for wasm32"
cargo build -p diskimage --lib --no-default-features --target wasm32-unknown-unknown

step "Playwright (Chromium: no-js and hydrated)"
(cd end2end && HANGAR_BIN="$PWD/../target/debug/hangar" npx playwright test)

step "Glance API with the real clients (glance, openstack image) against a fresh server"
timeout 900 scripts/glance-cli-test.sh

step "all tests passed (target/ uses $(du -sh "${CARGO_TARGET_DIR:-target}" | cut -f1))"
