#!/usr/bin/env bash
# Runs parley-mls' core flow compiled to wasm32-unknown-unknown under Node
# (mls/tests/wasm_node.rs, through wasm-bindgen-test-runner). Installs what is missing on a
# fresh machine: the rustup target and wasm-bindgen-cli at exactly the `wasm-bindgen` version
# of Cargo.lock (the runner and the crate must match). Node itself must be installed
# (Debian: apt-get install -y nodejs).
# Usage: mls/scripts/test-wasm.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! command -v node >/dev/null; then
    echo "test-wasm.sh: node is required (apt-get install -y nodejs)" >&2
    exit 1
fi

# Resolve the lock file (adds wasm-bindgen-test and friends if missing), then read the pin.
cargo metadata --format-version 1 >/dev/null
versions=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock | sort -u)
if [ "$(printf '%s\n' "$versions" | grep -c .)" -ne 1 ]; then
    echo "test-wasm.sh: expected one wasm-bindgen version in Cargo.lock, found: $versions" >&2
    exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$versions" ] ||
    ! command -v wasm-bindgen-test-runner >/dev/null; then
    cargo install wasm-bindgen-cli --version "$versions" --locked
fi

# getrandom 0.3 picks its JS backend only with this cfg (getrandom 0.2 uses feature "js").
export RUSTFLAGS="${RUSTFLAGS:-} --cfg getrandom_backend=\"wasm_js\""
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# Release: the vault's Argon2id (19 MiB, t=2) is slow in an unoptimised wasm build.
cargo test -p parley-mls --target wasm32-unknown-unknown --test wasm_node --release "$@"
