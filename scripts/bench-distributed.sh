#!/usr/bin/env bash
# Scaling of data-parallel training on one machine (docs/distributed.md): the same 2 micro-batches per
# step as 1 rank x 1 thread, 1 rank x 2 threads (--grad-accum 2) and 2 ranks x 1 thread (mpirun -np 2).
# Prints the median step seconds over steps 2..N, rank 0's median allreduce seconds, and a hash of the
# losses (equal hashes: bit-identical losses).
# Usage: scripts/bench-distributed.sh MODEL DATA.jsonl WORKDIR [steps]
set -euo pipefail
model=$1 data=$2 work=$3 steps=${4:-12}
qlora=${QLORA:-$(cd "$(dirname "$0")/.." && pwd)/.build/release/qlora}
mkdir -p "$work"
common=(train --model "$model" --data "$data" --steps "$steps" --batch 1 --seq-len 256 --rank 8 --schedule constant
        --token-cache "$work/tokens")
rm -rf "$work"/r11 "$work"/r12 "$work"/r21
uptime
"$qlora" "${common[@]}" --output "$work/r11" --grad-accum 2 --threads 1 > "$work/r11.log" 2>&1
"$qlora" "${common[@]}" --output "$work/r12" --grad-accum 2 --threads 2 > "$work/r12.log" 2>&1
mpirun --allow-run-as-root --oversubscribe -np 2 "$qlora" "${common[@]}" --output "$work/r21" --threads 1 > "$work/r21.log" 2>&1
uptime
for run in r11 r12 r21; do
  step=$(jq -s '[.[] | select(.step > 1) | .seconds] | sort | .[length/2|floor]' "$work/$run/metrics.jsonl")
  wait=$(jq -s '[.[] | select(.step > 1) | (.allreduce_seconds // 0)] | sort | .[length/2|floor]' "$work/$run/metrics.jsonl")
  losses=$(jq -r 'select(.step) | .loss' "$work/$run/metrics.jsonl" | md5sum | cut -c1-8)
  printf '%s  median step %.3f s  median allreduce %.3f s  losses %s\n' "$run" "$step" "$wait" "$losses"
done
