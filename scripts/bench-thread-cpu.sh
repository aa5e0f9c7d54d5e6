#!/usr/bin/env bash
# CPU per relayed message, by server thread, over 8 s of parley-bench's full-load phase.
# usage: scripts/bench-thread-cpu.sh [PARLEY_BINARY]   (release builds in $CARGO_TARGET_DIR)
# Prints e.g. "rate 5395 sqlite-writer 87us tokio-rt-worker 89us sqlite-checkpoi 7us".
set -euo pipefail
target=${CARGO_TARGET_DIR:-target}
bench=$target/release/parley-bench
parley=${1:-$target/release/parley}
log=$(mktemp)
trap 'rm -f "$log" "$log".0 "$log".1' EXIT
"$bench" relay --parley "$parley" --senders 32 --receivers 4 --duration-secs 10 \
  --idle-connections 0 >"$log" 2>&1 &
until grep -q "\[single\] full load: running" "$log" 2>/dev/null; do sleep 0.2; done
pid=$(grep -oE "server pid [0-9]+" "$log" | head -1 | grep -oE "[0-9]+")
sleep 1
# utime + stime of every thread, in clock ticks, keyed by thread id.
snapshot() {
  for t in /proc/"$pid"/task/*; do
    echo "$(basename "$t") $(tr ' ' _ <"$t"/comm) $(awk '{print $14+$15}' "$t"/stat)"
  done 2>/dev/null
}
snapshot | sort >"$log".0
sleep 8
snapshot | sort >"$log".1
wait
rate=$(grep -E '^\[single\] full load: [0-9]' "$log" | grep -oE '[0-9]+ msgs/s' | cut -d' ' -f1)
tick=$(getconf CLK_TCK)
join "$log".0 "$log".1 | awk -v r="$rate" -v hz="$tick" '
  { used[$2] += $5 - $3 }
  END { printf "rate %d", r
        for (k in used) if (used[k] > 0) printf " %s %.0fus", k, used[k] * 1e6 / hz / (r * 8)
        printf "\n" }'
