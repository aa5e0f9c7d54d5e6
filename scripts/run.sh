#!/usr/bin/env bash
# Quick start, part 1: install whatever is missing, build, and run a homeserver on the embedded
# SQLite default (http://127.0.0.1:8008, server name localhost:8008, data in ./data).
# Extra arguments go to `parley serve`, e.g. scripts/run.sh --server-name chat.example.org
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
ensure_web_build_tools
build_web_client
cargo build --release -p parley-homeserver
exec ./target/release/parley serve "$@"
