#!/usr/bin/env bash
# Installs what Hangar's build and tests need on a fresh Debian 12 machine with Rust (rustup),
# Node 20 and Python 3. Idempotent: each step checks first and skips what is present.
#
# usage: scripts/setup.sh run     what `scripts/run.sh` needs (libssl-dev, wasm32 target,
#                                 wasm-bindgen-cli)
#        scripts/setup.sh test    that plus Chromium, the apt packages in scripts/apt-packages.txt,
#                                 and the Playwright npm packages from end2end/package-lock.json
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
what=${1:-run}
log() { printf 'setup: %s\n' "$*" >&2; }

# Installs the named Debian packages that are not installed yet.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; ((EUID == 0)) || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# --- The server links the system's libcrypto (crates/digests): headers and pkg-config -------
pkg-config --exists openssl 2>/dev/null || apt_install libssl-dev pkg-config

# --- Rust: the wasm32 target and a wasm-bindgen-cli matching Cargo.lock ----------------------
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in clippy rustfmt; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    log "adding the $component component"
    rustup component add "$component"
  fi
done
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
  log "installing wasm-bindgen-cli $want (found: ${have:-none}); takes about 3-4 minutes"
  # Not --locked: its lockfile pins a webpki-roots release the registry here does not serve.
  cargo install wasm-bindgen-cli --version "$want" --force
fi

[[ $what == test ]] || exit 0

# --- Debian packages: Chromium for Playwright, tools that make test fixtures -----------------
packages=(chromium)
if [[ -f scripts/apt-packages.txt ]]; then
  while read -r pkg; do
    pkg=${pkg%%#*}; pkg=${pkg//[[:space:]]/}
    [[ -n $pkg ]] && packages+=("$pkg")
  done < scripts/apt-packages.txt
fi
apt_install "${packages[@]}"

# --- Python clients the tests drive (tuspy, later the OpenStack CLIs), in .venv ---------------
if [[ -f scripts/py-requirements.txt ]]; then
  [[ -x .venv/bin/python ]] || { log "creating .venv"; python3 -m venv .venv; }
  stamp=.venv/.requirements.installed
  if [[ ! -f $stamp ]] || ! cmp -s scripts/py-requirements.txt "$stamp"; then
    log "installing Python test clients from scripts/py-requirements.txt"
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/py-requirements.txt
    cp scripts/py-requirements.txt "$stamp"
  fi
fi

# --- Playwright (npm), exactly as locked; it downloads no browser ----------------------------
installed=end2end/node_modules/.package-lock.json
if [[ ! -f $installed || end2end/package-lock.json -nt $installed ]]; then
  log "installing end2end npm packages"
  (cd end2end && npm ci --no-audit --no-fund)
fi
