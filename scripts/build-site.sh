#!/usr/bin/env bash
# Builds the browser side of Hangar into target/site (what cargo-leptos would do, without needing
# cargo-leptos): the `frontend` crate for wasm32, wasm-bindgen's JS glue, the stylesheet and the
# static files. The server serves target/site by default.
#
# usage: scripts/build-site.sh [dev|release]     (default dev)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-dev}
site=target/site
case $mode in
  dev) profile_flag=(); wasm=target/wasm32-unknown-unknown/debug/frontend.wasm ;;
  release) profile_flag=(--profile wasm-release); wasm=target/wasm32-unknown-unknown/wasm-release/frontend.wasm ;;
  *) echo "usage: $0 [dev|release]" >&2; exit 2 ;;
esac

# LEPTOS_OUTPUT_NAME must be unset while compiling: leptos then asks for `<name>_bg.wasm`, which
# is the file wasm-bindgen writes (cargo-leptos sets it and renames the file instead).
env -u LEPTOS_OUTPUT_NAME cargo build -p frontend --lib --target wasm32-unknown-unknown "${profile_flag[@]}"
mkdir -p "$site/pkg"
wasm-bindgen --target web --no-typescript --out-name hangar --out-dir "$site/pkg" "$wasm"
cp style/main.css "$site/pkg/hangar.css"
cp style/nojs.css "$site/pkg/nojs.css"
cp -r public/. "$site/"
echo "site built in $site ($(du -sh "$site/pkg/hangar_bg.wasm" | cut -f1) wasm, $mode)"
