#!/usr/bin/env bash
# The comparison harness's peers end to end over HTTP: the same K sync
# layers and view as `compare` (benches/compare/modes.rs), each mode behind
# the same hyper HTTP/1.1 server (`compare --serve`, one current-thread
# runtime), loaded by wrk with keep-alive connections on loopback.
#
#   scripts/http_peers.sh                          # suspend,suspend_wait,stackful,tower; 1k and 10k conns; D 0 and 20
#   scripts/http_peers.sh --modes suspend,stackful --conns 1000 --d 0 --duration 5 --repeats 3
#
# Why: the in-process harness starts a client's next request in the same
# poll that finished its last one; over a socket the next request arrives
# later, after other connections' requests have started. A peer whose
# design depends on the first pattern (the `stackful` crate keeps one
# spare stack and maps a fresh 2 MiB stack for every other fiber) shows it
# only here.
#
# The server runs on SERVER_CPU (0) and wrk on LOAD_CPU (1), so the
# server's budget is one core. For every repeat, connection count and
# delay, the modes run back to back in a rotating order (ratios are taken
# under the same conditions); each run starts a fresh server, warms it up
# with the same load, then measures. Reported per run: req/s, p50/p99
# latency (wrk --latency), the server's CPU time per request, its peak RSS
# (VmHWM, warm-up included) above its idle RSS before any load, per
# connection (what a connection and its request in flight keep: hyper's
# buffers, the task, and for the stackful modes the stack pages touched),
# and non-2xx/socket errors.
# Output: a Markdown table of medians on stdout; runs.csv and each run's wrk
# output under OUT (default target/http_peers/). The build honours cargo's
# environment, e.g. the LTO profile README recommends:
#   CARGO_TARGET_DIR=target/lto CARGO_PROFILE_RELEASE_LTO=fat \
#   CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 scripts/http_peers.sh --d 0
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=suspend,suspend_wait,stackful,tower
CONNS=1000,10000
DELAYS=0,20
K=5
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
REPEATS=${REPEATS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-target/http_peers}
PORT=${PORT_BASE:-18400}
while [ $# -gt 0 ]; do
    case $1 in
        --modes) MODES=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        --d) DELAYS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[http_peers] $*" >&2; }
if ! command -v wrk >/dev/null; then
    log "wrk not found; installing it with apt-get"
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y wrk >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y wrk >&2; }
fi
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet -p suspendware-benches --bench compare
BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/compare-* | grep -v '\.d$' | head -1)
mkdir -p "$OUT"
CSV=$OUT/runs.csv
echo "repeat,conns,d_ms,mode,rps,p50_ms,p99_ms,cpu_us_per_req,rss_kib_per_conn,errors" > "$CSV"

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# wrk's latency ("1.23ms", "456.00us", "1.20s") in milliseconds.
ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

IFS=, read -r -a modes <<< "$MODES"
IFS=, read -r -a conns <<< "$CONNS"
IFS=, read -r -a delays <<< "$DELAYS"
hz=$(getconf CLK_TCK)
for ((r = 1; r <= REPEATS; r++)); do
    for c in "${conns[@]}"; do
        for d in "${delays[@]}"; do
            n=${#modes[@]}
            for ((i = 0; i < n; i++)); do
                m=${modes[$(((i + r - 1) % n))]}
                PORT=$((PORT + 1))
                taskset -c "$SERVER_CPU" "$BIN" --serve "$m" "$K" "$d" "$PORT" 2> "$OUT/server.$m.$c.$d.$r.log" &
                pid=$!
                for _ in $(seq 50); do
                    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
                    sleep 0.1
                done
                url="http://127.0.0.1:$PORT/"
                idle=$(kib "$pid" VmRSS)
                taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${WARMUP}s" --timeout 10s "$url" > /dev/null
                t0=$(cpu_ticks "$pid")
                w=$OUT/wrk.$m.$c.$d.$r.txt
                taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s --latency "$url" > "$w"
                t1=$(cpu_ticks "$pid")
                hwm=$(kib "$pid" VmHWM)
                kill "$pid"; wait "$pid" 2> /dev/null || true
                total=$(awk '/requests in/ { print $1 }' "$w")
                rps=$(awk '/Requests\/sec/ { print $2 }' "$w")
                p50=$(ms "$(awk '$1 == "50%" { print $2 }' "$w")")
                p99=$(ms "$(awk '$1 == "99%" { print $2 }' "$w")")
                errs=$(awk '/Non-2xx/ { e += $NF } /Socket errors/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) e += $i } END { print e + 0 }' "$w")
                cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$total" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
                per=$(awk -v h="$hwm" -v b="$idle" -v c="$c" 'BEGIN { printf "%.2f", (h - b) / c }')
                echo "$r,$c,$d,$m,$rps,$p50,$p99,$cpu,$per,$errs" >> "$CSV"
                log "r$r c=$c d=$d $m: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu us/req, +$per KiB/conn (hwm), errors $errs"
            done
        done
    done
done

python3 - "$CSV" "$MODES" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
modes = sys.argv[2].split(",")
print("| conns | D ms | mode | req/s (median) | runs | p50 ms | p99 ms | CPU µs/req | RSS KiB/conn | " + modes[0] + " ÷ this |")
print("|---:|---:|---|---:|---|---:|---:|---:|---:|---:|")
cells = sorted({(int(r["conns"]), int(r["d_ms"])) for r in rows})
for c, d in cells:
    med = {}
    for m in modes:
        rs = [r for r in rows if int(r["conns"]) == c and int(r["d_ms"]) == d and r["mode"] == m]
        if rs:
            med[m] = {k: statistics.median(float(r[k]) for r in rs) for k in
                      ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_kib_per_conn")}
            med[m]["runs"] = " / ".join(f"{float(r['rps']) / 1000:.1f}k" for r in rs)
    for m, v in med.items():
        ratio = med[modes[0]]["rps"] / v["rps"] if modes[0] in med else float("nan")
        print(f"| {c:,} | {d} | {m} | {v['rps']:,.0f} | {v['runs']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
              f"{v['cpu_us_per_req']:.2f} | {v['rss_kib_per_conn']:.1f} | {ratio:.2f}× |")
EOF
