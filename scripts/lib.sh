# Shared helpers of scripts/run.sh and scripts/test.sh: each installs only what is missing.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# apt-get install, with one `apt-get update` per run, as root or through sudo.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "${PARLEY_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >/dev/null
    export PARLEY_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
}

# What building the web client needs (mls/README.md#building-testing-benchmarking): the wasm32 rustup target and the pinned
# wasm-bindgen-cli. Nothing for tests: run.sh only builds and serves.
ensure_web_build_tools() {
  if [ -x web-client/build.sh ]; then
    web-client/build.sh --install-build-tools
  fi
}

# What testing the web client needs besides building it: npm deps (playwright-core) and
# Debian's Chromium for the browser end-to-end tests (scripts/test.sh only).
ensure_web_test_tools() {
  if [ -x web-client/build.sh ]; then
    web-client/build.sh --install-only
  fi
}

build_web_client() {
  if [ -x web-client/build.sh ]; then
    web-client/build.sh
  fi
}

# A free TCP port on the loopback interface.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# PostgreSQL server binaries (initdb, pg_ctl), installed from Debian when missing.
ensure_postgres() {
  if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    return
  fi
  log "installing PostgreSQL"
  apt_install postgresql
}

# nginx, for the test that runs deploy/nginx.conf in front of two parley processes.
ensure_nginx() {
  if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    return
  fi
  log "installing nginx"
  apt_install nginx
}

# Fuzzing (fuzz/run.sh): cargo-fuzz at a pinned version, a C++ compiler for libFuzzer, and a
# toolchain that takes `-Zsanitizer`: nightly through rustup when it is installed, else the
# default (stable) toolchain with RUSTC_BOOTSTRAP=1. Sets FUZZ_CARGO (an array) to the cargo
# command to run `fuzz …` with.
PARLEY_CARGO_FUZZ_VERSION=0.13.2
ensure_fuzz_toolchain() {
  ensure_rust
  if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $PARLEY_CARGO_FUZZ_VERSION"; then
    log "installing cargo-fuzz $PARLEY_CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$PARLEY_CARGO_FUZZ_VERSION" --locked --force
  fi
  command -v c++ >/dev/null 2>&1 || apt_install g++
  if command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ_CARGO=(cargo +nightly)
  else
    FUZZ_CARGO=(env RUSTC_BOOTSTRAP=1 cargo)
  fi
}
