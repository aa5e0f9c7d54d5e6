#!/usr/bin/env bash
# Builds the Parley web client into web-client/dist/ (served by the homeserver at `/`):
#   dist/           index.html, app.js, … (copied from app/)
#   dist/pkg/       parley_web.js + parley_web_bg.wasm (wasm-bindgen --target web)
#
# Usage:
#   web-client/build.sh                        build (adds the wasm32 target / wasm-bindgen-cli
#                                              if missing)
#   web-client/build.sh --install-build-tools  install what building needs: rustup target,
#                                              wasm-bindgen-cli (pinned) — scripts/run.sh
#   web-client/build.sh --install-only         install what building and testing need: the
#                                              above, npm deps (playwright-core), Debian chromium
set -euo pipefail
cd "$(dirname "$0")"
HERE="$(pwd)"

# The CLI must be exactly the `wasm-bindgen` crate version pinned in Cargo.toml.
WB_VERSION="$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' Cargo.toml)"
if [ -z "$WB_VERSION" ]; then
    echo "build.sh: cannot find the pinned wasm-bindgen version in Cargo.toml" >&2
    exit 1
fi

install_toolchain() {
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
        rustup target add wasm32-unknown-unknown
    fi
    if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WB_VERSION"; then
        # --locked first (reproducible); a registry mirror lagging behind the CLI's lock file
        # makes that fail, then resolve afresh at the same CLI version.
        cargo install wasm-bindgen-cli --version "$WB_VERSION" --locked \
            || cargo install wasm-bindgen-cli --version "$WB_VERSION"
    fi
}

# Only test.sh needs these (the browser end-to-end tests); building the client does not.
install_test_deps() {
    if [ ! -x /usr/bin/chromium ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    fi
    if [ ! -d node_modules/playwright-core ]; then
        npm ci --no-audit --no-fund
    fi
}

case "${1:-}" in
    "") ;;
    --install-build-tools)
        install_toolchain
        exit 0
        ;;
    --install-only)
        install_toolchain
        install_test_deps
        exit 0
        ;;
    *)
        echo "usage: $0 [--install-build-tools | --install-only]" >&2
        exit 2
        ;;
esac

install_toolchain

# getrandom 0.3 picks its browser backend only with this cfg (mls/README.md#building-testing-benchmarking); scoped to the wasm
# target so native builds sharing the target dir are not rebuilt.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:-} --cfg getrandom_backend=\"wasm_js\""
cargo build -p parley-web --lib --target wasm32-unknown-unknown --release

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
WASM="$TARGET_DIR/wasm32-unknown-unknown/release/parley_web.wasm"
if [ ! -f "$WASM" ]; then
    echo "build.sh: $WASM was not built" >&2
    exit 1
fi

rm -rf "$HERE/dist"
mkdir -p "$HERE/dist/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$HERE/dist/pkg" "$WASM"
cp "$HERE"/app/* "$HERE/dist/"
echo "web client built in $HERE/dist ($(du -k "$HERE/dist/pkg/parley_web_bg.wasm" | cut -f1) KiB wasm)"
