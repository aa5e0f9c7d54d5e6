#!/usr/bin/env bash
# Web client tests: builds the client (build.sh), then runs node's test runner over tests/ —
# unit tests of the JS glue (logic, api, session) and the end-to-end browser test, which starts
# real `parley serve` processes and drives Debian's Chromium with playwright-core.
# (The Rust side of parley-web is tested by `cargo test --workspace`.)
#
# Env: PARLEY_BIN (homeserver binary; default $CARGO_TARGET_DIR/debug/parley or
# ../target/debug/parley, built when missing), PARLEY_E2E=0 skips the browser test.
set -euo pipefail
# A relative PARLEY_BIN is relative to the caller's directory.
case "${PARLEY_BIN:-}" in ""|/*) ;; *) PARLEY_BIN="$PWD/$PARLEY_BIN" ;; esac
cd "$(dirname "$0")"

./build.sh --install-only
./build.sh

if [ -z "${PARLEY_BIN:-}" ]; then
    PARLEY_BIN="$(cd .. && pwd)/${CARGO_TARGET_DIR:-target}/debug/parley"
    case "${CARGO_TARGET_DIR:-}" in /*) PARLEY_BIN="$CARGO_TARGET_DIR/debug/parley" ;; esac
fi
if [ ! -x "$PARLEY_BIN" ] && [ "${PARLEY_E2E:-1}" != "0" ]; then
    (cd .. && cargo build -p parley-homeserver)
fi
export PARLEY_BIN

mkdir -p test-artifacts
node --test --test-concurrency=1 tests/
