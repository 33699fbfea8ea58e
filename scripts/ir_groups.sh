#!/usr/bin/env bash
# Instructions per request of the comparison harness's modes, grouped by
# what runs them (the fiber's switch, the segment future, the layers, ...),
# side by side: where one mode's extra instructions go. Marginal counts:
# (Ir at N2 requests - Ir at N1) / (N2 - N1), callgrind self cost, one
# request at a time (`compare --profile MODE K 0 N`). Needs valgrind.
# Usage: scripts/ir_groups.sh [MODE ...]      (default: suspend stackful)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
N1=${N1:-4000}
N2=${N2:-12000}
K=${K:-5}
cargo build --release --quiet -p suspendware-benches --bench compare
B=$(ls -t target/release/deps/compare-* | grep -v '\.d$' | head -1)
OUT=target/ir_groups
mkdir -p "$OUT"
MODES=("${@:-suspend}")
[ $# -eq 0 ] && MODES=(suspend stackful)
for m in "${MODES[@]}"; do
  for n in "$N1" "$N2"; do
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$m.$n" "$B" --profile "$m" "$K" 0 "$n" >/dev/null 2>&1
    callgrind_annotate --threshold=100 "$OUT/cg.$m.$n" > "$OUT/ann.$m.$n"
  done
done
python3 scripts/ir_groups.py "$OUT" "$N1" "$N2" "${MODES[@]}"
