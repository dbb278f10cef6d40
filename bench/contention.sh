#!/usr/bin/env bash
# Training throughput of `cnnlab demo` alone and beside one busy loop (a shared machine).
#   bench/contention.sh [LABEL] [VAR=value ...]    e.g.  bench/contention.sh omp NUMBA_THREADING_LAYER=omp
# Prints "LABEL | idle samples/s | busy samples/s": the mean of epochs 2-6 (the first epoch
# may include compiling), with the kernel cache warmed by a first run.
set -euo pipefail
label=${1:-default}; shift || true
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
run() {
    env "$@" cnnlab demo --epochs 6 --out "$folder/m.npz" 2>&1 | grep -o "[0-9,]* samples/s" | tail -5 |
        tr -d , | awk '{total += $1} END {printf "%.0f", total / NR}'
}
run "$@" > /dev/null
idle=$(run "$@")
( while :; do :; done ) & busy=$!
loaded=$(run "$@")
kill "$busy"
echo "$label | $idle | $loaded"
