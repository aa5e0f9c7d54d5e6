#!/usr/bin/env bash
# Runs cargo-fuzz targets for a fixed time each, one after the other, in one process each
# (no -jobs/-workers: the machines this runs on are shared).
#
#   fuzz/run.sh [--keep] TARGET|all SECONDS [-- LIBFUZZER_ARGS…]
#
# Each target starts from its committed corpus, fuzz/corpus/TARGET. New inputs libFuzzer finds
# go to a temporary copy of it, removed at the end. With --keep, the new inputs that add
# coverage are then merged into fuzz/corpus/TARGET (libFuzzer -merge=1: existing files stay,
# only inputs with new features are added, under their SHA-1 names).
# A crash leaves its input in fuzz/artifacts/TARGET/ with the log beside it, and the script
# exits 1 after the remaining targets ran. The toolchain comes from scripts/lib.sh
# (ensure_fuzz_toolchain: nightly if installed, else stable with RUSTC_BOOTSTRAP=1).
set -euo pipefail
fuzz_dir=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz_dir/.."
source scripts/lib.sh

usage() {
  echo "usage: fuzz/run.sh [--keep] TARGET|all SECONDS [-- LIBFUZZER_ARGS...]" >&2
  echo "targets: $(all_targets | tr '\n' ' ')" >&2
  exit 2
}
all_targets() { for f in "$fuzz_dir"/fuzz_targets/*.rs; do basename "$f" .rs; done; }

keep=0
positional=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[ ${#positional[@]} -eq 2 ] || usage
which_target=${positional[0]}
seconds=${positional[1]}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || usage
if [ "$which_target" = all ]; then
  mapfile -t targets < <(all_targets)
else
  [ -f "$fuzz_dir/fuzz_targets/$which_target.rs" ] || usage
  targets=("$which_target")
fi

ensure_fuzz_toolchain
log "fuzz: ${FUZZ_CARGO[*]} fuzz, cargo-fuzz $PARLEY_CARGO_FUZZ_VERSION, ${seconds}s per target: ${targets[*]}"

work=$(mktemp -d /tmp/parley-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

cd "$fuzz_dir"
build_start=$(date +%s)
if [ "$which_target" = all ]; then
  "${FUZZ_CARGO[@]}" fuzz build
else
  "${FUZZ_CARGO[@]}" fuzz build "$which_target"
fi
log "fuzz: built in $(( $(date +%s) - build_start ))s"

# Files and bytes in a directory.
dir_size() { find "$1" -type f -printf '%s\n' | awk '{n++; b+=$1} END {printf "%d %d\n", n, b}'; }

failed=()
# Columns: wall-clock seconds (build check and corpus load included), executions, average
# executions per second, libFuzzer's final in-memory corpus (entries/size) and the files in the
# output corpus directory (entries/bytes).
summary=$(printf '%-24s %7s %11s %7s %15s %15s %s' target seconds execs exec/s 'corp (libFuzzer)' 'corpus files' result)
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  [ -d "$fuzz_dir/corpus/$t" ] && cp -r "$fuzz_dir/corpus/$t/." "$corpus/"
  read -r n0 b0 < <(dir_size "$corpus")
  log "fuzz: $t for ${seconds}s from $n0 inputs ($b0 bytes)"
  logfile="$work/$t.log"
  start=$(date +%s)
  status=0
  "${FUZZ_CARGO[@]}" fuzz run "$t" "$corpus" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    ${extra[@]+"${extra[@]}"} >"$logfile" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logfile" | tail -1)
  read -r n1 b1 < <(dir_size "$corpus")
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[bKM]b?' "$logfile" | tail -1 | cut -d' ' -f2)
  if [ "$status" = 0 ]; then
    result=ok
    grep -E '^#[0-9]+[[:space:]]+DONE' "$logfile" | tail -1 >&2 || true
    if [ "$keep" = 1 ]; then
      mkdir -p "$fuzz_dir/corpus/$t"
      read -r k0 _ < <(dir_size "$fuzz_dir/corpus/$t")
      "${FUZZ_CARGO[@]}" fuzz run "$t" "$fuzz_dir/corpus/$t" "$corpus" -- -merge=1 \
        >"$work/$t.merge.log" 2>&1 || { tail -n 20 "$work/$t.merge.log" >&2; failed+=("$t (merge)"); }
      read -r k1 kb < <(dir_size "$fuzz_dir/corpus/$t")
      log "fuzz: kept $((k1 - k0)) new inputs in fuzz/corpus/$t ($k1 files, $kb bytes)"
    fi
  else
    result="FAILED (exit $status)"
    failed+=("$t")
    mkdir -p "$fuzz_dir/artifacts/$t"
    cp "$logfile" "$fuzz_dir/artifacts/$t/last-run.log"
    echo "---- $t: last lines of the log (full log: fuzz/artifacts/$t/last-run.log)" >&2
    tail -n 60 "$logfile" >&2
    ls -l "$fuzz_dir/artifacts/$t" >&2 || true
  fi
  summary+=$'\n'$(printf '%-24s %7s %11s %7s %15s %15s %s' "$t" "$elapsed" "${execs:-?}" "${rate:-?}" "${corp:-?}" "$n1/${b1}b" "$result")
done

echo "$summary"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
