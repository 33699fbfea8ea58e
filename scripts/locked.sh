#!/usr/bin/env bash
# Locked (atomic read-modify-write) instructions per request of one mode of
# the comparison harness, per function. Callgrind counts each as one
# instruction, but on this project's machines an uncontended one costs about
# 8 ns in time (BENCHMARKS.md, "Sixth round (issue 13)"), so instruction
# counts hide them. Needs valgrind and objdump.
# Usage: scripts/locked.sh [MODE [K [D_MS]]]     (default: suspend 5 0)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-suspend}
K=${2:-5}
D=${3:-0}
cargo build --release --quiet -p suspendware-benches --bench compare
B=$(ls -t target/release/deps/compare-* | grep -v '\.d$' | head -1)
OUT=target/locked
mkdir -p "$OUT"
for r in 2000 12000; do
  valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$OUT/cg.$MODE.$r" \
    "$B" --profile "$MODE" "$K" "$D" "$r" > /dev/null 2>&1
done
python3 scripts/locked.py "$B" "$OUT/cg.$MODE.2000" 2000 "$OUT/cg.$MODE.12000" 12000
