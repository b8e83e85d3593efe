#!/usr/bin/env bash
# Builds Hangar (optimised) and runs it on the embedded default: SQLite and local storage in
# ./data, listening on 127.0.0.1:3000. Arguments go to the server, e.g. --listen, --data-dir.
#
# usage: scripts/run.sh [--listen ADDR] [--data-dir DIR] [--config FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh run
scripts/build-site.sh release
cargo build --release -p server --bin hangar
exec target/release/hangar "$@"
