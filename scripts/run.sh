#!/usr/bin/env bash
# Quick start, part 1: install what building and serving need and is missing (the web client's
# wasm32 target and wasm-bindgen-cli; nothing used only by tests), build the web client and the
# homeserver, and run it on the embedded SQLite default (http://127.0.0.1:8008, server name
# localhost:8008, data in ./data, the web client at /).
# Extra arguments go to `parley serve`, e.g. scripts/run.sh --server-name chat.example.org
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
ensure_web_build_tools
build_web_client
cargo build --release -p parley-homeserver
# Where cargo put it: ./target unless CARGO_TARGET_DIR says otherwise.
exec "${CARGO_TARGET_DIR:-target}/release/parley" serve "$@"
