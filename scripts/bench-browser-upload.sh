#!/usr/bin/env bash
# Benchmark: browser upload throughput (headless Debian Chromium, the Upload page's WASM uploader)
# vs a plain tus API client, same file and server in one run. Builds the optimised server and
# site first (as scripts/run.sh does). Not part of the test command: it takes minutes and its
# figures go into closing notes. BENCH_MIB / BENCH_ROUNDS size it (see end2end/bench/).
#
# usage: scripts/bench-browser-upload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh test
scripts/build-site.sh release
cargo build --release -p server --bin hangar
cd end2end
npx playwright test -c bench.config.ts
