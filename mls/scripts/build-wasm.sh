#!/usr/bin/env bash
# Builds parley-mls for wasm32-unknown-unknown (mls/README.md#building-testing-benchmarking). Installs the rustup target when it
# is missing. Usage: mls/scripts/build-wasm.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

# getrandom 0.3 picks its browser backend only with this cfg (getrandom 0.2 uses feature "js").
export RUSTFLAGS="${RUSTFLAGS:-} --cfg getrandom_backend=\"wasm_js\""
cargo build -p parley-mls --target wasm32-unknown-unknown "$@"
