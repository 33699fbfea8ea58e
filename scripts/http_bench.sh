#!/usr/bin/env bash
# HTTP end to end: the legacy example server (examples/legacy_server.rs)
# under a real load generator on loopback, Suspend vs Adapt vs ThreadHop vs
# the native-async rewrite, with the app's sessions and users in SQLite.
#
#   scripts/http_bench.sh                 # full: 1k and 10k connections, 10 s, 3 repeats
#   QUICK=1 scripts/http_bench.sh         # 3 s per run, 1 repeat (~1 min)
#   scripts/http_bench.sh --conns 1000 --modes suspend,adapt --duration 5 --repeats 2
#   scripts/http_bench.sh --help
#
# Every run starts a fresh server (`--view-delay-ms 20`, GET / awaits a
# 20 ms timer) on a fresh SQLite database (`--db-latency-ms DB_LATENCY_MS`),
# logs in once with curl (GET /csrf, POST /login) and loads GET / with that
# session cookie, so every request reads its session row and its user row
# (two database calls in the middleware; SESSION=0 loads anonymously: no
# database call at all). It warms the server up with the same number of
# connections, then loads it for a fixed time while sampling its thread count (/proc/PID/status
# `Threads`, peak) and peak RSS (`VmHWM`). Modes are interleaved: repeat r
# runs every mode for a connection count back to back (rotating which mode
# goes first), so a ratio between modes is taken under the same machine
# conditions; the table reports medians over the repeats.
#
# Load generator: `wrk` (Debian package; installed with apt-get if missing).
# If it cannot be installed, ApacheBench (`ab -k`, /usr/bin/ab) is used
# instead: single-threaded, and its percentiles are whole milliseconds.
#
# CPU placement (PIN=1, the default): the server runs on SERVER_CPUS and the
# load generator on LOAD_CPUS (`taskset`), so the two don't fight for the
# same core and the server's CPU budget is known. The server's `--workers`
# is `nproc` as the server sees it (its CPU set), unless WORKERS is given.
# PIN=0 runs both on every CPU (workers = nproc of the machine).
#
# Modes: suspend (sync middleware on fibers, database calls through
# suspendware::blocking on a pooled connection), suspend-inline (the same
# calls run on the fiber, blocking the worker thread), adapt, hop (held
# threads), async (the middleware rewritten as AsyncMiddleware,
# spawn_blocking for the database).
#
# Output: a Markdown table on stdout; runs.csv (every run) and summary.csv
# (medians) under $CARGO_TARGET_DIR/http_bench/ (default target/http_bench/),
# plus each run's wrk output and server log.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options (or the environment variables in brackets):
  --modes LIST      suspend,suspend-inline,adapt,hop,async [MODES]
  --db-latency-ms MS  blocking sleep in every database call (0) [DB_LATENCY_MS]
  --db-pool N       database connections (legacy_server's default, 16) [DB_POOL]
  --anon            no session cookie (no database calls)  [SESSION=0]
  --conns LIST      1000,10000                             [CONNS]
  --duration S      seconds of measured load per run (10)  [DURATION]
  --warmup S        seconds of warm-up load per run (2)    [WARMUP]
  --repeats N       repetitions, medians reported (3)      [REPEATS]
  --delay-ms MS     the view's delay (20)                  [DELAY_MS]
  --no-pin          don't pin server/load generator        [PIN=0]
  --quick           3 s runs, 1 s warm-up, 1 repeat        [QUICK=1]
  --tool wrk|ab     force a load generator                 [TOOL]
  --summarize       only rebuild the summary from OUT/runs.csv (give the
                    same --modes/--conns/--duration/--repeats as the run)
Other variables: SERVER_CPUS (0), LOAD_CPUS (1), WORKERS, WRK_THREADS,
PORT_BASE (18300), TIMEOUT (wrk --timeout, 10s), NOFILE (ulimit -n, 65536),
OUT (output directory).
EOF
}

MODES=${MODES:-suspend,adapt,hop}
CONNS=${CONNS:-1000,10000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEATS=${REPEATS:-3}
DELAY_MS=${DELAY_MS:-20}
DB_LATENCY_MS=${DB_LATENCY_MS:-0}
SESSION=${SESSION:-1}
DB_POOL=${DB_POOL:-16}
PIN=${PIN:-1}
TOOL=${TOOL:-}
SUMMARIZE=0
if [[ ${QUICK:-0} == 1 ]]; then DURATION=3 WARMUP=1 REPEATS=1; fi

while [[ $# -gt 0 ]]; do
    case $1 in
        --modes) MODES=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        --delay-ms) DELAY_MS=$2; shift 2 ;;
        --db-latency-ms) DB_LATENCY_MS=$2; shift 2 ;;
        --anon) SESSION=0; shift ;;
        --db-pool) DB_POOL=$2; shift 2 ;;
        --no-pin) PIN=0; shift ;;
        --quick) DURATION=3 WARMUP=1 REPEATS=1; shift ;;
        --tool) TOOL=$2; shift 2 ;;
        --summarize) SUMMARIZE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
IFS=', ' read -r -a MODE_LIST <<<"$MODES"
IFS=', ' read -r -a CONN_LIST <<<"$CONNS"
for m in "${MODE_LIST[@]}"; do
    case $m in suspend | suspend-inline | adapt | hop | async) ;; *) echo "unknown mode $m (suspend, suspend-inline, adapt, hop, async)" >&2; exit 2 ;; esac
done

SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
PORT_BASE=${PORT_BASE:-18300}
TIMEOUT=${TIMEOUT:-10s}
NOFILE=${NOFILE:-65536}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/http_bench}
mkdir -p "$OUT/runs"

log() { echo "[http_bench] $*" >&2; }

RUNS_CSV=$OUT/runs.csv
START_LOAD="n/a (summary rebuilt)" END_LOAD="n/a"
if [[ $SUMMARIZE == 1 ]]; then
    WORKERS=${WORKERS:-?}
    [[ -r $RUNS_CSV ]] || { echo "no $RUNS_CSV to summarize" >&2; exit 1; }
    TOOL=$(awk -F, 'NR == 2 { print $4 }' "$RUNS_CSV")
else
# --- tools -------------------------------------------------------------------
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if [[ -z $TOOL ]]; then
    if ! command -v wrk >/dev/null; then
        log "wrk not found; installing it with apt-get"
        as_root apt-get install -y wrk >&2 ||
            { as_root apt-get update >&2 && as_root apt-get install -y wrk >&2; } ||
            log "apt-get could not install wrk"
    fi
    if command -v wrk >/dev/null; then TOOL=wrk; else TOOL=ab; fi
fi
if [[ $TOOL == ab ]] && ! command -v ab >/dev/null; then
    log "neither wrk nor ab is available (apt-get install wrk, or apache2-utils for ab)"
    exit 1
fi
log "load generator: $TOOL ($(command -v "$TOOL"))"

if [[ $PIN == 1 ]] && ! command -v taskset >/dev/null; then
    log "taskset not found (util-linux); running unpinned"
    PIN=0
fi

# --- limits ------------------------------------------------------------------
# Each connection is one descriptor in the server and one in the load
# generator (separate processes, both inherit this limit).
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $NOFILE ]]; then
    ulimit -Hn "$NOFILE" 2>/dev/null || NOFILE=$hard
fi
ulimit -n "$NOFILE"
log "ulimit -n $(ulimit -n); somaxconn $(cat /proc/sys/net/core/somaxconn);" \
    "ephemeral ports $(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range)"
max_conn=0
for c in "${CONN_LIST[@]}"; do ((c > max_conn)) && max_conn=$c; done
if ((max_conn + 64 > $(ulimit -n))); then
    log "warning: ulimit -n $(ulimit -n) is below $max_conn connections + slack; expect EMFILE"
fi

# --- build -------------------------------------------------------------------
log "building the example (release)"
(cd "$ROOT" && cargo build --release --example legacy_server >&2)
SERVER=$TARGET/release/examples/legacy_server

if [[ $PIN == 1 ]]; then
    SRV_PREFIX=(taskset -c "$SERVER_CPUS")
    GEN_PREFIX=(taskset -c "$LOAD_CPUS")
else
    SRV_PREFIX=()
    GEN_PREFIX=()
fi
WORKERS=${WORKERS:-$("${SRV_PREFIX[@]}" nproc)}
WRK_THREADS=${WRK_THREADS:-$("${GEN_PREFIX[@]}" nproc)}

# --- one run -----------------------------------------------------------------
echo "repeat,mode,conns,tool,rps,p50_ms,p99_ms,requests,non2xx,err_connect,err_read,err_write,err_timeout,peak_threads,vmhwm_kib,served,accept_errors,load1,server_cpu_s,server_us_per_req,load_gen_cpu_s,stalls" >"$RUNS_CSV"

# CPU time (user + system, seconds) a process has used so far, threads included.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"; }

# Latency in wrk's units (123.45us, 1.23ms, 1.02s, 2.00m) to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

wait_ready() { # port pid
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/users/alice" && return 0
        sleep 0.1
    done
    return 1
}

stop_server() { # pid
    kill -INT "$1" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "server $1 did not stop in 15 s; killing it"
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# The server's flags for a mode.
mode_args() { # mode
    case $1 in
        suspend) echo "--mode suspend --db-calls blocking" ;;
        suspend-inline) echo "--mode suspend --db-calls inline" ;;
        *) echo "--mode $1" ;;
    esac
}

# Logs alice in (GET /csrf for the token, POST /login with it); prints the
# session key.
login() { # port
    local base=http://127.0.0.1:$1 csrf
    csrf=$(curl -s --max-time 5 -D - -o /dev/null "$base/csrf" | tr -d '\r' |
        sed -n 's/^[Ss]et-[Cc]ookie: csrftoken=\([^;]*\).*/\1/p')
    curl -s --max-time 5 -D - -o /dev/null -H "Cookie: csrftoken=$csrf" -H "X-CSRFToken: $csrf" \
        --data "username=alice" "$base/login" | tr -d '\r' |
        sed -n 's/^[Ss]et-[Cc]ookie: sessionid=\([^;]*\).*/\1/p'
}

# Runs the load generator for $2 seconds with $1 connections against $3
# (with cookie $5 if given).
load() { # conns secs url outfile [cookie]
    local cookie=${5:-}
    if [[ $TOOL == wrk ]]; then
        local t=$WRK_THREADS
        ((t > $1)) && t=$1
        local hdr=()
        [[ -n $cookie ]] && hdr=(-H "Cookie: $cookie")
        { time "${GEN_PREFIX[@]}" wrk -t"$t" -c"$1" -d"$2"s --timeout "$TIMEOUT" --latency "${hdr[@]}" "$3" >"$4" 2>&1; } 2>"$4.cpu" || true
    else
        local hdr=()
        [[ -n $cookie ]] && hdr=(-C "$cookie")
        { time "${GEN_PREFIX[@]}" ab -q -k -r -c "$1" -t "$2" -n 100000000 "${hdr[@]}" "$3" >"$4" 2>&1; } 2>"$4.cpu" || true
    fi
}

TIMEFORMAT='%3U %3S'
run_num=0
SERVER_PID=
cleanup() { [[ -n $SERVER_PID ]] && stop_server "$SERVER_PID"; }
trap cleanup EXIT

run_one() { # repeat mode conns
    local rep=$1 mode=$2 conns=$3
    run_num=$((run_num + 1))
    local port=$((PORT_BASE + run_num))
    local tag=r${rep}_${mode}_c${conns}
    local slog=$OUT/runs/$tag.server.log res=$OUT/runs/$tag.$TOOL.txt
    local url=http://127.0.0.1:$port/
    # shellcheck disable=SC2046 # mode_args is a list of flags
    RUST_LOG=${RUST_LOG:-info} "${SRV_PREFIX[@]}" "$SERVER" --addr "127.0.0.1:$port" \
        --workers "$WORKERS" $(mode_args "$mode") --view-delay-ms "$DELAY_MS" \
        --db-latency-ms "$DB_LATENCY_MS" --db-pool "$DB_POOL" >"$slog" 2>&1 &
    SERVER_PID=$!
    if ! wait_ready "$port" "$SERVER_PID"; then
        log "server did not come up ($tag); log: $slog"
        cat "$slog" >&2
        exit 1
    fi
    local cookie=
    if [[ $SESSION == 1 ]]; then
        local key
        key=$(login "$port")
        if [[ -z $key ]] || [[ $(curl -s --max-time 5 -H "Cookie: sessionid=$key" "http://127.0.0.1:$port/me") != "user alice"* ]]; then
            log "could not log in ($tag); log: $slog"
            exit 1
        fi
        cookie="sessionid=$key"
    fi
    load "$conns" "$WARMUP" "$url" "$OUT/runs/$tag.warmup.txt" "$cookie"
    sleep 0.5 # let the warm-up's connections close
    # Sample the thread count while the measured load runs.
    local samp=$OUT/runs/$tag.threads
    (
        peak=0
        while [[ -r /proc/$SERVER_PID/status ]]; do
            t=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
            [[ -n $t ]] && ((t > peak)) && peak=$t && echo "$peak" >"$samp"
            sleep 0.2
        done
    ) &
    local sampler=$!
    local load1 cpu0 cpu1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    cpu0=$(cpu_s "$SERVER_PID")
    load "$conns" "$DURATION" "$url" "$res" "$cookie"
    cpu1=$(cpu_s "$SERVER_PID")
    local hwm
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
    stop_server "$SERVER_PID"
    SERVER_PID=
    wait "$sampler" 2>/dev/null || true
    local peak
    peak=$(cat "$samp" 2>/dev/null || echo 0)
    local served accept_errs
    served=$(sed 's/\x1b\[[0-9;]*m//g' "$slog" | sed -n 's/.*stopped served=\([0-9]*\).*/\1/p' | tail -1)
    accept_errs=$(grep -c "accept failed" "$slog" || true)
    # The watchdog's stall counts by layer, logged at shutdown ("layer:count", ";"-joined).
    local stalls
    stalls=$(sed 's/\x1b\[[0-9;]*m//g' "$slog" |
        sed -n 's/.*sync code blocked its thread layer=\(.*\) count=\([0-9]*\).*/\1:\2/p' |
        tr ',' '+' | tr -d ' ' | paste -sd';' -)

    local rps p50 p99 reqs non2xx ec er ew et
    if [[ $TOOL == wrk ]]; then
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$res")
        p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$res")")
        p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$res")")
        reqs=$(awk '/requests in/ {print $1}' "$res")
        non2xx=$(awk '/Non-2xx/ {print $NF}' "$res")
        read -r ec er ew et < <(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$res") || true
    else
        rps=$(awk '/^Requests per second:/ {print $4}' "$res")
        p50=$(awk '$1 == "50%" {print $2}' "$res")
        p99=$(awk '$1 == "99%" {print $2}' "$res")
        reqs=$(awk '/^Complete requests:/ {print $3}' "$res")
        non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$res")
        ec=$(sed -n 's/.*(Connect: \([0-9]*\),.*/\1/p' "$res")
        er=$(sed -n 's/.*Receive: \([0-9]*\),.*/\1/p' "$res")
        ew=0
        et=$(grep -c "timed out" "$res" || true)
    fi
    local scpu us_req gcpu
    scpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')
    us_req=$(awk -v c="$scpu" -v n="${reqs:-0}" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n; else print "" }')
    gcpu=$(awk 'NF == 2 { printf "%.2f", $1 + $2 }' "$res.cpu" 2>/dev/null || true)
    echo "$rep,$mode,$conns,$TOOL,${rps:-0},${p50:-},${p99:-},${reqs:-0},${non2xx:-0},${ec:-0},${er:-0},${ew:-0},${et:-0},$peak,${hwm:-0},${served:-},$accept_errs,$load1,$scpu,$us_req,${gcpu:-},${stalls:-}" >>"$RUNS_CSV"
    log "$tag: ${rps:-?} req/s, p50 ${p50:-?} ms, p99 ${p99:-?} ms, errors c/r/w/t ${ec:-0}/${er:-0}/${ew:-0}/${et:-0}, non-2xx ${non2xx:-0}, threads $peak, VmHWM ${hwm:-?} KiB, server CPU ${scpu} s (${us_req} us/req), $TOOL CPU ${gcpu:-?} s, load $load1, stalls ${stalls:-none}"
}

log "modes ${MODE_LIST[*]}; connections ${CONN_LIST[*]}; ${DURATION}s (+${WARMUP}s warm-up) x $REPEATS;" \
    "view ${DELAY_MS} ms; db latency ${DB_LATENCY_MS} ms, pool $DB_POOL; session $SESSION; workers $WORKERS; pin=$PIN (server cpus ${SERVER_CPUS}, load cpus ${LOAD_CPUS})"
START_LOAD=$(cat /proc/loadavg)
for ((rep = 1; rep <= REPEATS; rep++)); do
    for conns in "${CONN_LIST[@]}"; do
        # Rotate the order of the modes each repeat.
        n=${#MODE_LIST[@]}
        for ((i = 0; i < n; i++)); do
            run_one "$rep" "${MODE_LIST[$(((i + rep - 1) % n))]}" "$conns"
        done
    done
done
END_LOAD=$(cat /proc/loadavg)
fi

# --- summary -----------------------------------------------------------------
SUMMARY_CSV=$OUT/summary.csv
{
    echo "## HTTP end to end: legacy_server, GET / (view awaits ${DELAY_MS} ms; $( ((SESSION)) && echo "logged in: 2 database reads" || echo "anonymous: no database call"), db latency ${DB_LATENCY_MS} ms, pool ${DB_POOL}), $TOOL, ${DURATION} s runs, median of $REPEATS"
    echo
    echo "workers $WORKERS, pin=$PIN (server CPUs $( ((PIN)) && echo "$SERVER_CPUS" || echo all), load generator CPUs $( ((PIN)) && echo "$LOAD_CPUS" || echo all)); load average before: $START_LOAD; after: $END_LOAD"
    echo
} >"$OUT/summary.md"
# Medians per (conns, mode), modes in the order given; ratios against Adapt.
awk -F, -v modes="${MODE_LIST[*]}" -v conns="${CONN_LIST[*]}" -v csv="$SUMMARY_CSV" -v secs="$DURATION" '
function median(key, col,   n, i, j, a, t) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = v[key, i, col] + 0
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR > 1 {
    key = $3 SUBSEP $2; k = ++cnt[key]
    for (c = 5; c <= 21; c++) v[key, k, c] = $c
    stl[key] = $22
    errs[key] = errs[key] ($10 + $11 + $12 + $13 + $9 > 0 ? (errs[key] == "" ? "" : " ") $10 "/" $11 "/" $12 "/" $13 "/" $9 : "")
    tot[key] += $10 + $11 + $12 + $13 + $9
}
END {
    nm = split(modes, M, " "); nc = split(conns, C, " ")
    print "conns,mode,runs,rps,p50_ms,p99_ms,peak_threads,vmhwm_kib,server_cpu_pct,server_us_per_req,errors_total,rps_vs_adapt" > csv
    print "| connections | mode | req/s | vs Adapt | p50 ms | p99 ms | peak threads | peak RSS (MiB) | server CPU | server CPU µs/req | errors (c/r/w/t/non-2xx) | watchdog stalls (last run) |"
    print "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for (i = 1; i <= nc; i++) {
        base = ((C[i] SUBSEP "adapt") in cnt) ? median(C[i] SUBSEP "adapt", 5) : 0
        for (j = 1; j <= nm; j++) {
            key = C[i] SUBSEP M[j]
            if (!(key in cnt)) continue
            rps = median(key, 5)
            ratio = base > 0 ? sprintf("%.2fx", rps / base) : "-"
            cpu = median(key, 19) * 100 / secs
            printf "| %d | %s | %.0f | %s | %.1f | %.1f | %d | %.1f | %.0f%% | %.1f | %s | %s |\n", C[i], M[j], rps, ratio,
                median(key, 6), median(key, 7), median(key, 14), median(key, 15) / 1024, cpu, median(key, 20),
                tot[key] ? errs[key] : "0", stl[key] == "" ? "none" : stl[key]
            printf "%d,%s,%d,%.1f,%.2f,%.2f,%d,%d,%.1f,%.2f,%d,%s\n", C[i], M[j], cnt[key], rps, median(key, 6),
                median(key, 7), median(key, 14), median(key, 15), cpu, median(key, 20), tot[key],
                (base > 0 ? sprintf("%.3f", rps / base) : "") > csv
        }
    }
}' "$RUNS_CSV" >>"$OUT/summary.md"
{
    echo
    echo "server CPU: the server process's user+system time during the measured load, as a share of one CPU; µs/req: that time per request served (median over runs)."
    echo "Errors are per run (wrk socket errors connect/read/write/timeout, then non-2xx responses), listed only for runs that had any."
} >>"$OUT/summary.md"
cat "$OUT/summary.md"
log "wrote $RUNS_CSV, $SUMMARY_CSV, $OUT/summary.md and per-run outputs in $OUT/runs/"
