#!/usr/bin/env bash
# Transaction pooling (issue 13): pgrepl-proxy in transaction mode against PgBouncer in
# transaction mode, each with a pool of POOL_SIZE server connections, side by side in front of
# the same throwaway db01/db02 pair, in one run:
# - throughput: pgbench -S (select only) and pgbench's default TPC-B-like script, each in
#   modes simple, extended and prepared, at each client count, through both; per point the
#   tps, the average latency and the server connections used (the most client backends of
#   the app role seen on each server while it ran, sampled every SAMPLE_INTERVAL s by one psql
#   session per server that does not count itself);
# - memory: the resident set (VmRSS) of a fresh proxy and a fresh PgBouncer with
#   IDLE_CLIENTS logged-in idle clients (tests/src/bin/idleclients.rs), and per client.
#
# Routing differs, and the output says so: the proxy sends pgbench -S's reads to the replica
# (db02) and every TPC-B-like transaction to the primary; PgBouncer has no read/write split and
# sends everything to the primary (db01).
#
# Runs are interleaved (round > workload > mode > clients > target) so both targets meet the
# same machine conditions; each run starts its target afresh and stops it after (only one runs
# at a time, so a server's connections during a run are that target's, and every pool starts
# empty); each cell is the median over the rounds (server connections: the
# maximum). A run that fails (pgbench exits non-zero) is recorded as failed with the errors it
# printed, never as a number.
#
# Usage: bench/pooling.sh
# Environment:
#   CLIENTS="1 16 100 1000"           pgbench client counts (-j 2, 1 for one client, one
#                                     per client with -M prepared past POOL_SIZE)
#   DURATION=10                       seconds per pgbench run, after the logins: pgbench's
#                                     clock starts before its clients log in (SCRAM, about
#                                     5 s for 1,000 clients here), so each run gets
#                                     LOGIN_MS_PER_CLIENT=10 ms more per client (-T)
#   ROUNDS=1                          rounds of the whole matrix
#   WORKLOADS="select tpcb"           select: pgbench -S; tpcb: the default TPC-B-like script
#   MODES="simple extended prepared"  pgbench query modes (-M)
#   SCALE=10                          pgbench scale factor
#   POOL_SIZE=20                      server connections per pool, both targets
#   PGREPL_MODE_KEYS=1                0: leave the proxy's pool-mode keys out of its config
#                                     (the proxy then pools per session, as before issue 13;
#                                     past [pool] max_server_connections (90) clients its
#                                     runs fail)
#   PROXY_POOL_MODE=transaction       the proxy's [pool] PROXY_MODE_KEY value
#   PROXY_MODE_KEY=mode               names of the proxy's [pool] keys for the pool mode
#   PROXY_POOL_SIZE_KEY=default_pool_size     and for the pool size (POOL_SIZE)
#   PROXY_TOML='...'                  TOML appended to the proxy's config
#   IDLE_CLIENTS=10000                idle clients for the memory figures; 0 skips them
#   PGBOUNCER=                        a PgBouncer binary; unset: bench/install-pgbouncer.sh
#                                     (Debian trixie's, built from source, else bookworm's)
#   PGBOUNCER_PREPARED=200            max_prepared_statements, when PgBouncer has it (1.21+)
#   CARGO_TARGET_DIR is respected.
# Runs as root to raise the file descriptor limit and to install PgBouncer; the tables go to
# stdout, progress to stderr.
set -euo pipefail

BENCH_TAG=pooling
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-1 16 100 1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
WORKLOADS=${WORKLOADS:-select tpcb}
MODES=${MODES:-simple extended prepared}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
PGREPL_MODE_KEYS=${PGREPL_MODE_KEYS:-1}
# The proxy reads every PGREPL_* variable in its environment as configuration and refuses
# unknown ones: this knob is the script's, so it stays out of the proxy's environment.
export -n PGREPL_MODE_KEYS
PROXY_POOL_MODE=${PROXY_POOL_MODE:-transaction}
PROXY_MODE_KEY=${PROXY_MODE_KEY:-mode}
PROXY_POOL_SIZE_KEY=${PROXY_POOL_SIZE_KEY:-default_pool_size}
PROXY_TOML=${PROXY_TOML:-}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
PGBOUNCER=${PGBOUNCER:-}
PGBOUNCER_PREPARED=${PGBOUNCER_PREPARED:-200}
LOGIN_MS_PER_CLIENT=${LOGIN_MS_PER_CLIENT:-10}

# Upper bounds on the steps that could hang: a run gets its duration plus RUN_SLACK; the idle
# clients get IDLE_LOGIN_TIMEOUT to log in.
RUN_SLACK=120
IDLE_LOGIN_TIMEOUT=900
SAMPLE_INTERVAL=0.2
# PgBouncer tracks prepared statements from this version on.
TARGETS="proxy pgbouncer"
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

require_positive DURATION ROUNDS SCALE POOL_SIZE PGBOUNCER_PREPARED
[[ $LOGIN_MS_PER_CLIENT =~ ^[0-9]+$ ]] || die "LOGIN_MS_PER_CLIENT must be a number, not '$LOGIN_MS_PER_CLIENT'"
[[ -n ${CLIENTS// /} ]] || die "CLIENTS is empty"
for c in $CLIENTS; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS: '$c' is not a positive integer"
done
[[ $IDLE_CLIENTS =~ ^[0-9]+$ ]] || die "IDLE_CLIENTS must be a number, not '$IDLE_CLIENTS'"
[[ $PGREPL_MODE_KEYS =~ ^[01]$ ]] || die "PGREPL_MODE_KEYS must be 0 or 1"
for w in $WORKLOADS; do
    [[ $w =~ ^(select|tpcb)$ ]] || die "unknown workload '$w' in WORKLOADS"
done
for m in $MODES; do
    [[ $m =~ ^(simple|extended|prepared)$ ]] || die "unknown mode '$m' in MODES"
done

MAX_PGBENCH_CLIENTS=$(tr -s ' ' '\n' <<<"$CLIENTS" | sort -n | tail -n 1)
# Client connections each target must take (pgbench's or the idle clients), with room to spare.
MAX_CLIENT_CONN=$(((MAX_PGBENCH_CLIENTS > IDLE_CLIENTS ? MAX_PGBENCH_CLIENTS : IDLE_CLIENTS) + 100))
# File descriptors every process here may need: a target holds a socket per client and its
# server connections, pgbench and idleclients a socket per client.
NOFILE=$((MAX_CLIENT_CONN + 1000))

# --- file descriptors ------------------------------------------------------------

if [[ $(ulimit -Hn) != unlimited && $(ulimit -Hn) -lt $NOFILE ]]; then
    [[ $EUID -eq 0 ]] || die "needs $NOFILE file descriptors, the hard limit is $(ulimit -Hn): run as root"
    ulimit -Hn "$NOFILE"
fi
ulimit -Sn "$NOFILE"

# --- build and PgBouncer ---------------------------------------------------------

build_release -p pgrepl-tests --bin testcluster --bin idleclients
build_release -p pgrepl-proxy
TESTCLUSTER=$TARGET_DIR/release/testcluster
IDLECLIENTS=$TARGET_DIR/release/idleclients
PROXY_BIN=$TARGET_DIR/release/pgrepl-proxy

find_pgbouncer
say "PgBouncer $PGBOUNCER_VERSION ($PGBOUNCER)"

# --- scratch directory, cluster, data ------------------------------------------

make_workdir pgrepl-pooling
RESULTS=$WORK/results
NOTES=$WORK/notes
MEMORY=$WORK/memory
: >"$RESULTS"
: >"$NOTES"
: >"$MEMORY"

# Server connections at most: each target's pool, the proxy's monitor and catalog, the
# samplers; testcluster's servers allow 300.
MAX_CONNECTIONS=$((2 * POOL_SIZE + 50 > 300 ? 2 * POOL_SIZE + 50 : 300))
start_cluster "max_connections=$MAX_CONNECTIONS"
pgbench_init "$SCALE"
catch_up

# --- the targets -------------------------------------------------------------------

declare -A PORT=()
SERVER_LOGS+=("$WORK/proxy.log")
PORT[proxy]=$("$TESTCLUSTER" free-port)
PORT[pgbouncer]=$("$TESTCLUSTER" free-port)
[[ ${PORT[proxy]} != "${PORT[pgbouncer]}" ]] || die "free-port handed out port ${PORT[proxy]} twice; run again"

"$TESTCLUSTER" proxy-config "$WORK/cluster" "127.0.0.1:${PORT[proxy]}" >"$WORK/proxy.toml"
set_toml "$WORK/proxy.toml" proxy max_client_connections "$MAX_CLIENT_CONN"
if [[ $PGREPL_MODE_KEYS == 1 ]]; then
    set_toml "$WORK/proxy.toml" pool "$PROXY_MODE_KEY" "\"$PROXY_POOL_MODE\""
    set_toml "$WORK/proxy.toml" pool "$PROXY_POOL_SIZE_KEY" "$POOL_SIZE"
    PROXY_POOLING="[pool] $PROXY_MODE_KEY = \"$PROXY_POOL_MODE\", $PROXY_POOL_SIZE_KEY = $POOL_SIZE"
else
    PROXY_POOLING="session pooling: no pool-mode keys (PGREPL_MODE_KEYS=0), [pool] defaults"
fi
if [[ -n $PROXY_TOML ]]; then
    printf '\n%s\n' "$PROXY_TOML" >>"$WORK/proxy.toml"
fi

pgbouncer_settings=("pool_mode = transaction" "default_pool_size = $POOL_SIZE" "max_client_conn = $MAX_CLIENT_CONN")
if pgbouncer_tracks_prepared; then
    pgbouncer_settings+=("max_prepared_statements = $PGBOUNCER_PREPARED")
    PGBOUNCER_POOLING="pool_mode = transaction, default_pool_size = $POOL_SIZE, max_prepared_statements = $PGBOUNCER_PREPARED"
else
    PGBOUNCER_POOLING="pool_mode = transaction, default_pool_size = $POOL_SIZE (no max_prepared_statements before $PGBOUNCER_PREPARED_SINCE: -M prepared cannot work)"
fi
pgbouncer_ini pgbouncer "${PORT[pgbouncer]}" "$PRIMARY_PORT" "${pgbouncer_settings[@]}"

# The app role's client backends on the server at port $1 now, the asking one excluded.
CONNECTIONS_SQL="SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '$DB_USER' AND pid <> pg_backend_pid()"

connections_now() {
    "$PG_BIN/psql" -X -A -t -q -h 127.0.0.1 -p "$1" -U "$DB_USER" -d postgres -c "$CONNECTIONS_SQL"
}

# The pid of a target's process.
pid_of() {
    if [[ $1 == proxy ]]; then echo "${PID[proxy]}"; else cat "$WORK/pgbouncer.pid"; fi
}

# Fails unless process $1 ($2 names it) may open NOFILE files.
check_nofile() {
    local limit
    limit=$(awk '/^Max open files/ { print $4 }' "/proc/$1/limits")
    [[ $limit == unlimited || $limit -ge $NOFILE ]] || die "$2 may open $limit files, it needs $NOFILE"
}

# Starts target $1 (proxy or pgbouncer), fresh: only one target runs at a time, so the
# server connections counted during a run are that target's, and each run starts with an
# empty pool for both.
start_target() {
    if [[ $1 == proxy ]]; then
        "$PROXY_BIN" serve --config "$WORK/proxy.toml" >>"$WORK/proxy.log" 2>&1 &
        PID[proxy]=$!
        wait_port "${PORT[proxy]}" "${PID[proxy]}"
    else
        start_pgbouncer pgbouncer "${PORT[pgbouncer]}"
    fi
    check_nofile "$(pid_of "$1")" "$1"
}

# Stops target $1 and waits until its server connections are gone.
stop_target() {
    local left
    stop_pids "$(pid_of "$1")"
    if [[ $1 == proxy ]]; then unset 'PID[proxy]'; else rm -f "$WORK/pgbouncer.pid"; fi
    for _ in $(seq 100); do
        left=$(($(connections_now "$PRIMARY_PORT") + $(connections_now "$REPLICA_PORT")))
        [[ $left -ne 0 ]] || return 0
        sleep 0.1
    done
    die "$left server connections of $DB_USER still open 10 s after $1 stopped"
}

# Each target once, to fail early on a configuration it refuses.
for target in $TARGETS; do
    say "checking that $target starts"
    start_target "$target"
    stop_target "$target"
done

# --- server connections ---------------------------------------------------------

# Starts sampling connections_now on the server at port $1 every SAMPLE_INTERVAL s, from one
# psql session (\watch) whose counts go to $WORK/samples-$1.
start_sampler() {
    printf '%s;\n\\watch %s\n' "$CONNECTIONS_SQL" "$SAMPLE_INTERVAL" |
        "$PG_BIN/psql" -X -A -t -q -h 127.0.0.1 -p "$1" -U "$DB_USER" -d postgres >"$WORK/samples-$1" 2>&1 &
    PID[sampler-$1]=$!
}

stop_sampler() {
    stop_pids "${PID[sampler-$1]}"
    unset "PID[sampler-$1]"
}

# The most connections the sampler of port $1 saw.
most_sampled() {
    local most
    most=$(grep -E '^[0-9]+$' "$WORK/samples-$1" | sort -n | tail -n 1) || true
    echo "${most:-n/a}"
}

# --- throughput --------------------------------------------------------------------

# Records a note for the report (and says it now).
note() {
    say "$*"
    echo "$*" >>"$NOTES"
}

# pgbench's -T for $1 clients: DURATION and time for the logins.
run_seconds() {
    echo $((DURATION + ($1 * LOGIN_MS_PER_CLIENT + 999) / 1000))
}

# Fields of a RESULTS line: 1 workload/mode  2 clients  3 target  4 tps  5 latency (ms)
# 6 server connections on db01  7 on db02  8 round  9 pgbench's initial connection time (ms)
# (tps and latency n/a for a failed run)
measure() {
    local target=$1 workload=$2 mode=$3 clients=$4 out rc=0 tps lat cp cr logins seconds
    local threads=$((clients < 2 ? clients : 2))
    # pgbench -M prepared prepares with a blocking call, which holds up its thread's other
    # clients while they hold server connections: past the pool's size, one thread per client
    # (for both targets alike), or a thread's clients wait on each other until a timeout.
    if [[ $mode == prepared && $clients -gt $POOL_SIZE ]]; then
        threads=$clients
    fi
    seconds=$(run_seconds "$clients")
    local script=(-M "$mode")
    [[ $workload == tpcb ]] || script=(-S -M "$mode")
    start_target "$target"
    start_sampler "$PRIMARY_PORT"
    start_sampler "$REPLICA_PORT"
    sleep 0.5
    out=$(timeout $((seconds + RUN_SLACK)) "$PG_BIN/pgbench" "${script[@]}" -c "$clients" -j "$threads" \
        -T "$seconds" -n -h 127.0.0.1 -p "${PORT[$target]}" -U "$DB_USER" "$DB_NAME" 2>&1) || rc=$?
    stop_sampler "$PRIMARY_PORT"
    stop_sampler "$REPLICA_PORT"
    stop_target "$target"
    cp=$(most_sampled "$PRIMARY_PORT")
    cr=$(most_sampled "$REPLICA_PORT")
    if [[ $cp == n/a || $cr == n/a ]]; then
        note "no connection counts for $target, $workload -M $mode, $clients clients: $(head -c 300 "$WORK/samples-$PRIMARY_PORT" "$WORK/samples-$REPLICA_PORT")"
    fi
    tps=$(pgbench_tps <<<"$out")
    lat=$(pgbench_latency <<<"$out")
    logins=$(sed -n 's/^initial connection time = \([0-9.]*\) ms$/\1/p' <<<"$out")
    if [[ $rc -ne 0 || -z $tps || -z $lat ]]; then
        echo "$workload/$mode $clients $target n/a n/a $cp $cr $round ${logins:-n/a}" >>"$RESULTS"
        note "FAILED: $target, $workload -M $mode, $clients clients, round $round (pgbench exit $rc); its errors (count, text) and counts:"
        { grep -iE 'error|fatal|abort' <<<"$out" | sed -E 's/client [0-9]+/client N/g' | sort | uniq -c | sort -rn | head -n 5
          grep -E '^(number of transactions actually processed|initial connection time|tps) ' <<<"$out" | sed 's/^/      /'
        } | sed 's/^/    /' | tee -a "$NOTES" >&2 || true
        return 0
    fi
    echo "$workload/$mode $clients $target $tps $lat $cp $cr $round ${logins:-n/a}" >>"$RESULTS"
    say "$(printf 'round %s %-6s %-8s c=%-4s %-9s %9.0f tps %9.3f ms  server connections db01 %s db02 %s  (-T %s, logins %s ms)' \
        "$round" "$workload" "$mode" "$clients" "$target" "$tps" "$lat" "$cp" "$cr" "$seconds" "${logins:-n/a}")"
}

runs=0 total=0
for _ in $WORKLOADS; do for _ in $MODES; do for c in $CLIENTS; do
    runs=$((runs + 2 * ROUNDS))
    total=$((total + 2 * ROUNDS * ($(run_seconds "$c") + 3)))
done; done; done
say "$runs pgbench runs: about $((total / 60 + 1)) minutes"
for round in $(seq "$ROUNDS"); do
    for workload in $WORKLOADS; do
        for mode in $MODES; do
            for clients in $CLIENTS; do
                for target in $TARGETS; do
                    measure "$target" "$workload" "$mode" "$clients"
                done
            done
        done
    done
done

# --- memory with idle clients --------------------------------------------------------

# VmRSS of process $1, in kB.
rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Restarts target $1 and reads its RSS before and with IDLE_CLIENTS logged-in idle clients;
# appends "target rss_before_kb rss_idle_kb connections_db01 connections_db02 login_seconds"
# to MEMORY.
idle_memory() {
    local target=$1 pid before after ready=
    start_target "$target"
    pid=$(pid_of "$target")
    sleep 2
    before=$(rss_kb "$pid")
    say "$target: RSS $before kB; logging in $IDLE_CLIENTS idle clients"
    : >"$WORK/idle-$target.out"
    "$IDLECLIENTS" --addr "127.0.0.1:${PORT[$target]}" --clients "$IDLE_CLIENTS" \
        --hold-seconds $((IDLE_LOGIN_TIMEOUT + 300)) >"$WORK/idle-$target.out" 2>"$WORK/idle-$target.err" &
    PID[idle]=$!
    for _ in $(seq $((IDLE_LOGIN_TIMEOUT * 2))); do
        ready=$(sed -n 's/^ready clients=[0-9]* seconds=\([0-9.]*\)$/\1/p' "$WORK/idle-$target.out")
        [[ -z $ready ]] || break
        kill -0 "${PID[idle]}" 2>/dev/null || break
        sleep 0.5
    done
    if [[ -z $ready ]]; then
        note "FAILED: $IDLE_CLIENTS idle clients on $target did not all log in within $IDLE_LOGIN_TIMEOUT s:"
        tail -n 12 "$WORK/idle-$target.err" | sed 's/^/    /' | tee -a "$NOTES" >&2
        stop_pids "${PID[idle]}"
        unset 'PID[idle]'
        stop_target "$target"
        echo "$target $before n/a n/a n/a n/a" >>"$MEMORY"
        return 0
    fi
    # Let the target settle (buffers freed after the logins) before reading.
    sleep 3
    kill -0 "${PID[idle]}" 2>/dev/null || die "idleclients exited while holding its clients"
    after=$(rss_kb "$pid")
    echo "$target $before $after $(connections_now "$PRIMARY_PORT") $(connections_now "$REPLICA_PORT") $ready" >>"$MEMORY"
    say "$target: RSS $after kB with $IDLE_CLIENTS idle clients (logged in in $ready s)"
    stop_pids "${PID[idle]}"
    unset 'PID[idle]'
    stop_target "$target"
}

if [[ $IDLE_CLIENTS -gt 0 ]]; then
    for target in $TARGETS; do idle_memory "$target"; done
fi
FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# --- report ----------------------------------------------------------------------------

# The cell of a point: a figure (median over the rounds), or "failed" if any round failed.
failed_rounds() {
    awk -v k="$1" -v c="$2" -v t="$3" '$1 == k && $2 == c && $3 == t && $4 == "n/a" { n++ } END { print n + 0 }' "$RESULTS"
}
cell() {
    if [[ $(failed_rounds "$1" "$2" "$3") -gt 0 ]]; then echo failed; else fmt "$5" "$(median "$1" "$2" "$3" "$4")"; fi
}

# The most of field $4 over the rounds.
most() {
    awk -v k="$1" -v c="$2" -v t="$3" -v f="$4" '$1 == k && $2 == c && $3 == t && (m == "" || $f > m) { m = $f }
        END { print m == "" ? "n/a" : m }' "$RESULTS"
}

tps_ratio() {
    local p b
    p=$(cell "$1" "$2" proxy 4 %.0f)
    b=$(cell "$1" "$2" pgbouncer 4 %.0f)
    if [[ $p == failed || $b == failed ]]; then echo n/a; else ratio "$(median "$1" "$2" proxy 4)" "$(median "$1" "$2" pgbouncer 4)"; fi
}

describe() {
    case $1 in
        select) echo "pgbench -S" ;;
        tpcb) echo "pgbench (TPC-B-like)" ;;
    esac
}

echo
echo "### Transaction pooling: pgrepl-proxy and PgBouncer, pool of $POOL_SIZE"
echo
echo "| workload | -M | clients | proxy tps | proxy latency (ms) | proxy server connections db01 / db02 | PgBouncer tps | PgBouncer latency (ms) | PgBouncer server connections db01 / db02 | tps proxy/PgBouncer |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for workload in $WORKLOADS; do
    for mode in $MODES; do
        for clients in $CLIENTS; do
            k=$workload/$mode
            row="| $(describe "$workload") | $mode | $clients"
            for target in $TARGETS; do
                row="$row | $(cell "$k" "$clients" "$target" 4 %.0f) | $(cell "$k" "$clients" "$target" 5 %.3f)"
                row="$row | $(most "$k" "$clients" "$target" 6) / $(most "$k" "$clients" "$target" 7)"
            done
            echo "$row | $(tps_ratio "$k" "$clients") |"
        done
    done
done

echo
echo "tps proxy/PgBouncer by client count:"
echo
header="| workload | -M |"
rule="|---|---|"
for clients in $CLIENTS; do
    header="$header $clients |"
    rule="$rule---:|"
done
echo "$header"
echo "$rule"
for workload in $WORKLOADS; do
    for mode in $MODES; do
        row="| $(describe "$workload") | $mode |"
        for clients in $CLIENTS; do row="$row $(tps_ratio "$workload/$mode" "$clients") |"; done
        echo "$row"
    done
done

if [[ -s $MEMORY ]]; then
    echo
    echo "Memory with $IDLE_CLIENTS idle clients (logged in, then idle):"
    echo
    echo "| target | RSS before (MiB) | RSS with idle clients (MiB) | per client (bytes) | server connections db01 / db02 | logins took (s) |"
    echo "|---|---:|---:|---:|---:|---:|"
    while read -r target before after cp cr secs; do
        if [[ $after == n/a ]]; then
            echo "| $target | $(awk -v b="$before" 'BEGIN { printf "%.1f", b / 1024 }') | failed | n/a | n/a | n/a |"
        else
            awk -v t="$target" -v b="$before" -v a="$after" -v n="$IDLE_CLIENTS" -v cp="$cp" -v cr="$cr" -v s="$secs" \
                'BEGIN { printf "| %s | %.1f | %.1f | %.0f | %s / %s | %s |\n", t, b / 1024, a / 1024, (a - b) * 1024 / n, cp, cr, s }'
        fi
    done <"$MEMORY"
fi

echo
cmd="CLIENTS=\"$CLIENTS\" DURATION=$DURATION ROUNDS=$ROUNDS WORKLOADS=\"$WORKLOADS\" MODES=\"$MODES\" SCALE=$SCALE POOL_SIZE=$POOL_SIZE PGREPL_MODE_KEYS=$PGREPL_MODE_KEYS IDLE_CLIENTS=$IDLE_CLIENTS"
echo "Notes. Command: \`$cmd bash bench/pooling.sh\`; run from $STARTED to $FINISHED;" \
    "$(machine_summary), $("$PG_BIN/postgres" --version), max_connections = $MAX_CONNECTIONS." \
    "Proxy: pgrepl-proxy $(revision) (release build), $PROXY_POOLING, [proxy] max_client_connections = $MAX_CLIENT_CONN." \
    "PgBouncer $PGBOUNCER_VERSION ($PGBOUNCER): $PGBOUNCER_POOLING, max_client_conn = $MAX_CLIENT_CONN, auth_type = scram-sha-256 (userlist: the primary's SCRAM verifiers), one process." \
    "Routing: the proxy sends pgbench -S's reads to the replica (db02) and the TPC-B-like transactions to the primary (db01); PgBouncer has no read/write split, so it sends everything to the primary (db01)." \
    "pgbench (the same binary for both): scale $SCALE, -T $DURATION s plus $LOGIN_MS_PER_CLIENT ms per client for the logins (pgbench reports tps without the login time), -n, -j 2 (1 for one client; with -M prepared past the pool size, one thread per client), file descriptor limit $NOFILE; cells are medians over $ROUNDS round(s), runs interleaved round > workload > mode > clients > target; \"failed\": a round's pgbench exited non-zero (errors below)." \
    "Server connections: the most client backends of $DB_USER in pg_stat_activity on each server during the run, sampled every $SAMPLE_INTERVAL s by one psql session per server that does not count itself;" \
    "the proxy's include its health monitor's and catalog look-up's (they log in as $DB_USER too)." \
    "Each run starts the target afresh (empty pool) and stops it after, so only one target runs at a time."
if [[ -s $MEMORY ]]; then
    echo "Memory: VmRSS from /proc of a freshly started target, before and with $IDLE_CLIENTS clients of tests/src/bin/idleclients.rs" \
        "(startup and SCRAM login in raw protocol, at most 64 at a time, then idle), read 3 s after the last login; per client = the difference / $IDLE_CLIENTS."
fi
if [[ -s $NOTES ]]; then
    echo
    echo "**Failures:**"
    echo
    echo '```'
    cat "$NOTES"
    echo '```'
fi
