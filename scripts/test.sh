#!/usr/bin/env bash
# Quick start, part 2: run every test — formatting, lints, unit and integration tests of every
# crate on SQLite and on a throw-away PostgreSQL cluster (started here, stopped on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
ensure_postgres
ensure_nginx
ensure_web_test_tools

pg_dir=$(mktemp -d /tmp/parley-test-pg.XXXXXX)
chmod 755 "$pg_dir"
cleanup() { scripts/postgres.sh stop "$pg_dir"; }
trap cleanup EXIT INT TERM
port=$(free_port)
log "starting throw-away PostgreSQL on 127.0.0.1:$port"
PARLEY_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir" "$port")
export PARLEY_TEST_POSTGRES_URL

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test (SQLite and PostgreSQL)"
cargo test --workspace

log "parley-mls: core flow in wasm under Node"
mls/scripts/test-wasm.sh

log "sytest: the conformance suite against parley (SQLite, PostgreSQL, two processes on PostgreSQL)"
cargo build -p parley-homeserver -p parley-sytest
target_dir=${CARGO_TARGET_DIR:-target}
"$target_dir/debug/sytest" --db sqlite
"$target_dir/debug/sytest" --db postgres --postgres-url "$PARLEY_TEST_POSTGRES_URL"
log "sytest: again with two parley processes per server on one PostgreSQL database"
"$target_dir/debug/sytest" --db postgres --processes 2 --postgres-url "$PARLEY_TEST_POSTGRES_URL"

log "web client: JS unit tests and browser end-to-end (one and two homeservers)"
case "$target_dir" in /*) parley_bin="$target_dir/debug/parley" ;; *) parley_bin="$PWD/$target_dir/debug/parley" ;; esac
PARLEY_BIN="$parley_bin" web-client/test.sh

# ---------------------------------------------------------------------------------------------
# Fuzzing (fuzz/README.md): each cargo-fuzz target for 30 s on its committed corpus, one process
# at a time. fuzz/ is a workspace of its own (not built above); scripts/lib.sh
# ensure_fuzz_toolchain installs cargo-fuzz and picks nightly, or stable with RUSTC_BOOTSTRAP=1.
log "fuzz: every target for 30 s (fuzz/run.sh all 30)"
fuzz/run.sh all 30
