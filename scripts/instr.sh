#!/usr/bin/env bash
# Marginal instructions per request of the hot-path probes (benches/instr.rs),
# counted by callgrind: (Ir at N2 requests - Ir at N1) / (N2 - N1).
# Usage: scripts/instr.sh [SCENARIO ...]   (default: wait wait10 yield10 segs k5)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
N1=${N1:-5000}
N2=${N2:-15000}
cargo bench -p suspendware-benches --bench instr --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/instr-* | grep -v '\.d$' | head -1)
OUT=$(mktemp -d)
for s in "${@:-wait wait10 yield10 segs k5}"; do
  for s1 in $s; do
    for n in "$N1" "$N2"; do
      valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$s1.$n" "$BIN" "$s1" "$n" >/dev/null 2>"$OUT/log.$s1.$n"
    done
    a=$(grep -m1 '^summary:' "$OUT/cg.$s1.$N1" | awk '{print $2}')
    b=$(grep -m1 '^summary:' "$OUT/cg.$s1.$N2" | awk '{print $2}')
    echo "$s1 $(( (b - a) / (N2 - N1) )) Ir/request"
  done
done
echo "(callgrind outputs in $OUT)"
