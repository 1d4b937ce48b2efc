#!/usr/bin/env bash
# Compares pgbench -S (select-only) throughput and latency through
# pgrepl-proxy, directly against the replica, and through PgBouncer (session
# or transaction pooling as the proxy, POOL_MODE; also in front of the
# replica), on a throwaway db01/db02 cluster.
# Optionally also through a second, older pgrepl-proxy build (target
# baseline), to show what a change costs, and mixed read/write runs (modes
# tpcb and mixed) that report the share of statements the replica served.
#
# Runs are interleaved (round > mode > clients > target) so every target
# meets the same machine conditions; each cell of the table is the median
# over the rounds.
#
# Usage: bench/pgbench.sh
# Environment:
#   ROUNDS=3                          rounds of the whole matrix
#   DURATION=10                       seconds per pgbench run
#   CLIENTS="1 16"                    pgbench client counts
#   MODES="simple extended prepared"  pgbench query modes (-M); tpcb runs
#                                     pgbench's built-in TPC-B-like script
#                                     (-b tpcb-like, -M simple) instead of
#                                     -S: direct then means the primary,
#                                     pgbouncer is skipped, and the replica's
#                                     share of the statements is reported;
#                                     mixed is the same with pgbench's
#                                     select-only script mixed in
#                                     (-b tpcb-like@1 -b select-only@9)
#   TARGETS="proxy direct pgbouncer"  what to measure; leave out proxy to
#                                     skip building and starting it; add
#                                     baseline to run BASELINE_BIN too
#   BASELINE_BIN=/path/pgrepl-proxy   an older pgrepl-proxy build (e.g. from
#                                     a worktree of an older commit), run
#                                     with the same config as the proxy
#   BASELINE_ENV='NAME=value ...'     environment of the baseline only, e.g.
#                                     BASELINE_BIN=<this build>
#                                     BASELINE_ENV=PGREPL_METRICS__ENABLED=false
#                                     measures what metrics cost
#   POOL_MODE=session                 session or transaction: the pooling of
#                                     the proxy, the baseline and PgBouncer
#   POOL_SIZE=20                      server connections per pool in
#                                     transaction pooling (session pooling
#                                     gets one per client: the largest of
#                                     CLIENTS)
#   SCALE=10                          pgbench scale factor
#   PROXY_TOML='...'                  TOML appended to the proxy's config
#                                     (its [proxy] and [pool] tables are
#                                     written here: give their keys through
#                                     the environment instead, e.g.
#                                     PGREPL_POOL__MAX_PREPARED_STATEMENTS)
#                                     (not the baseline's), e.g.
#                                     $'[routing]\nread_your_writes = "off"'
#   INSTRUCTIONS=1                    also count instructions per query of
#                                     the proxy and PgBouncer with valgrind
#                                     (callgrind: repeatable where times are
#                                     not); 0 skips it
#   RELAYS=0                          1: with INSTRUCTIONS=1, also count
#                                     those of two bare byte relays in front
#                                     of the replica (tests/src/bin/
#                                     barerelay.rs, on tokio and on mio):
#                                     the floor of an event loop's cost
#   CALLGRIND_KEEP=DIR                with INSTRUCTIONS=1, keep callgrind's
#                                     dumps there (TARGET-MODE.2000.out and
#                                     .12000.out): callgrind_annotate --diff
#                                     of the two gives the 10,000 per function
#   SYSCALLS=1                        also count system calls per query of
#                                     the proxy, the baseline and PgBouncer
#                                     with perf's syscall tracepoints
#                                     (SYSCALL_CLIENTS=4 clients,
#                                     SYSCALL_TRANSACTIONS=5000 each); 0
#                                     skips it
#   PGBOUNCER=                        a PgBouncer binary; unset:
#                                     bench/install-pgbouncer.sh
# CARGO_TARGET_DIR is respected.
# The table goes to stdout, progress to stderr.
set -euo pipefail

BENCH_TAG=bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1 16}
MODES=${MODES:-simple extended prepared}
TARGETS=${TARGETS:-proxy direct pgbouncer}
SCALE=${SCALE:-10}
POOL_MODE=${POOL_MODE:-session}
POOL_SIZE=${POOL_SIZE:-20}
INSTRUCTIONS=${INSTRUCTIONS:-1}
RELAYS=${RELAYS:-0}
SYSCALLS=${SYSCALLS:-1}
SYSCALL_CLIENTS=${SYSCALL_CLIENTS:-4}
SYSCALL_TRANSACTIONS=${SYSCALL_TRANSACTIONS:-5000}
PGBOUNCER=${PGBOUNCER:-}

wants() { [[ " $TARGETS " == *" $1 "* ]]; }

require_positive ROUNDS DURATION SCALE SYSCALL_CLIENTS SYSCALL_TRANSACTIONS POOL_SIZE
[[ $POOL_MODE =~ ^(session|transaction)$ ]] || die "POOL_MODE must be session or transaction, not '$POOL_MODE'"
# The most clients a run has: in session pooling each holds a server connection of each
# target that has pools, all at once in the runs' order, so the servers allow for all.
MAX_CLIENTS=$(printf '%s\n' $CLIENTS "$SYSCALL_CLIENTS" | sort -n | tail -n 1)
if [[ $POOL_MODE == session ]]; then
    SERVER_POOL=$MAX_CLIENTS
else
    SERVER_POOL=$POOL_SIZE
fi
for t in $TARGETS; do
    [[ $t =~ ^(proxy|baseline|direct|pgbouncer)$ ]] || die "unknown target '$t'"
done
for m in $MODES; do
    [[ $m =~ ^(simple|extended|prepared|tpcb|mixed)$ ]] || die "unknown mode '$m'"
done
if wants baseline; then
    [[ -x ${BASELINE_BIN:-} ]] || die "target baseline needs BASELINE_BIN=/path/to/pgrepl-proxy"
fi
if [[ $SYSCALLS == 1 ]]; then
    command -v perf >/dev/null ||
        die "SYSCALLS=1 needs perf (apt-get install linux-perf), or set SYSCALLS=0"
fi
if [[ $INSTRUCTIONS == 1 ]]; then
    command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null ||
        die "INSTRUCTIONS=1 needs valgrind (apt-get install valgrind), or set INSTRUCTIONS=0"
fi

# --- build ---------------------------------------------------------------

build_release -p pgrepl-tests --bin testcluster
if [[ $RELAYS == 1 && $INSTRUCTIONS == 1 ]]; then
    build_release -p pgrepl-tests --bin barerelay
fi
TESTCLUSTER=$TARGET_DIR/release/testcluster
if wants proxy; then
    build_release -p pgrepl-proxy
    PROXY_BIN=$TARGET_DIR/release/pgrepl-proxy
fi

# --- scratch directory and cleanup ---------------------------------------

make_workdir pgrepl-bench
RESULTS=$WORK/results
SHARES=$WORK/shares
SERVER_LOGS=("$WORK/proxy.log" "$WORK/baseline.log")

# --- cluster and data ----------------------------------------------------

start_cluster "max_connections=$((4 * (MAX_CLIENTS > SERVER_POOL ? MAX_CLIENTS : SERVER_POOL) + 40))"
pgbench_init "$SCALE"
catch_up

declare -A PORT=([direct]=$REPLICA_PORT)

# --- pgrepl-proxy (and the baseline build) ---------------------------------

declare -A BIN=([proxy]=${PROXY_BIN:-} [baseline]=${BASELINE_BIN:-})
# Extra environment per target (word-split on purpose: NAME=value pairs).
declare -A ENVS=([proxy]="" [baseline]=${BASELINE_ENV:-})
# The process of each target that has one of its own (not direct).
declare -A PID=()
# PgBouncer daemonizes: its pid, to measure it, apart from PID (the children cleanup stops;
# it stops PgBouncer by its pidfile).
declare -A DAEMON_PID=()
for target in proxy baseline; do
    if wants "$target"; then
        PORT[$target]=$("$TESTCLUSTER" free-port)
        "$TESTCLUSTER" proxy-config "$WORK/cluster" "127.0.0.1:${PORT[$target]}" >"$WORK/$target.toml"
        set_toml "$WORK/$target.toml" proxy max_client_connections "$((MAX_CLIENTS + 10))"
        set_toml "$WORK/$target.toml" pool mode "\"$POOL_MODE\""
        set_toml "$WORK/$target.toml" pool max_server_connections "$((SERVER_POOL + 10))"
        if [[ $POOL_MODE == transaction ]]; then
            set_toml "$WORK/$target.toml" pool default_pool_size "$POOL_SIZE"
        fi
        if [[ $target == proxy && -n ${PROXY_TOML:-} ]]; then
            printf '\n%s\n' "$PROXY_TOML" >>"$WORK/$target.toml"
        fi
        say "starting $target (${BIN[$target]}) on port ${PORT[$target]}"
        # shellcheck disable=SC2086
        env ${ENVS[$target]} "${BIN[$target]}" serve --config "$WORK/$target.toml" >"$WORK/$target.log" 2>&1 &
        PID[$target]=$!
        wait_port "${PORT[$target]}" "${PID[$target]}"
    fi
done

# --- PgBouncer -------------------------------------------------------------

if wants pgbouncer; then
    find_pgbouncer
    prepared=()
    if pgbouncer_tracks_prepared; then prepared=("max_prepared_statements = 200"); fi
    PORT[pgbouncer]=$("$TESTCLUSTER" free-port)
    pgbouncer_ini pgbouncer "${PORT[pgbouncer]}" "$REPLICA_PORT" \
        "pool_mode = $POOL_MODE" "max_client_conn = $((MAX_CLIENTS + 10))" \
        "default_pool_size = $SERVER_POOL" "${prepared[@]}"
    say "starting PgBouncer on port ${PORT[pgbouncer]}"
    start_pgbouncer pgbouncer "${PORT[pgbouncer]}"
    DAEMON_PID[pgbouncer]=$(cat "$WORK/pgbouncer.pid")
fi

# --- measurements ------------------------------------------------------------

# Committed plus rolled-back transactions in $DB_NAME on the server at port $1,
# from pg_stat_database (read over the postgres database, so the reading is
# not counted). A backend flushes its counters at most once a second, and an
# idle one (a pooled proxy connection) only after up to 10 s, hence the wait.
xacts() {
    "$PG_BIN/psql" -X -A -t -h 127.0.0.1 -p "$1" -U "$DB_USER" -d postgres -c \
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$DB_NAME'"
}
STATS_SETTLE=11

# Statements pgbench ran, from its output: 7 per TPC-B-like transaction (BEGIN,
# 3 UPDATEs, SELECT, INSERT, END), 1 per select-only one.
statements() {
    awk '/^transaction type: .*TPC-B/ { single = 7 } /^transaction type: .*select only/ { single = 1 }
        /^number of transactions actually processed:/ { total = $6 }
        /^SQL script/ { weight = /TPC-B/ ? 7 : 1; multi = 1 }
        /^ - [0-9]+ transactions/ { s += weight * $2 }
        END { print multi ? s : single * total }'
}

# Runs one pgbench and appends "mode clients target tps latency_ms user_us system_us" to
# RESULTS (the target's CPU time per pgbench transaction, n/a for direct);
# for tpcb and mixed also "mode clients target transactions statements
# primary_xacts replica_xacts" to SHARES.
measure() {
    local target=$1 mode=$2 clients=$3 out tps lat port=${PORT[$1]} p0 r0 p1 r1 n st
    local pid=${PID[$1]:-${DAEMON_PID[$1]:-}} ticks0=0 cpu="n/a n/a"
    local threads=$((clients < 2 ? clients : 2))
    local script=(-S -M "$mode")
    if [[ $mode == tpcb || $mode == mixed ]]; then
        # The TPC-B-like script writes: directly, it can only run on the primary.
        [[ $target != direct ]] || port=$PRIMARY_PORT
        script=(-b tpcb-like -M simple)
        [[ $mode == tpcb ]] || script=(-b tpcb-like@1 -b select-only@9 -M simple)
        sleep "$STATS_SETTLE"
        p0=$(xacts "$PRIMARY_PORT") r0=$(xacts "$REPLICA_PORT")
    fi
    [[ -z $pid ]] || ticks0=$(cpu_ticks "$pid")
    out=$("$PG_BIN/pgbench" "${script[@]}" -c "$clients" -j "$threads" -T "$DURATION" -n \
        -h 127.0.0.1 -p "$port" -U "$DB_USER" "$DB_NAME" 2>&1) ||
        { echo "$out" >&2; die "pgbench against $target failed"; }
    tps=$(pgbench_tps <<<"$out")
    lat=$(pgbench_latency <<<"$out")
    [[ -n $tps && -n $lat ]] || { echo "$out" >&2; die "cannot parse pgbench output"; }
    [[ -z $pid ]] || cpu=$(cpu_per_transaction "$ticks0" "$(cpu_ticks "$pid")" "$(pgbench_transactions <<<"$out")")
    say "$(printf 'round %s %-8s c=%-3s %-9s %10.0f tps %8.3f ms, cpu us/tx user system: %s' "$round" "$mode" "$clients" "$target" "$tps" "$lat" "$cpu")"
    echo "$mode $clients $target $tps $lat $cpu" >>"$RESULTS"
    if [[ $mode == tpcb || $mode == mixed ]]; then
        n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
        st=$(statements <<<"$out")
        sleep "$STATS_SETTLE"
        p1=$(xacts "$PRIMARY_PORT") r1=$(xacts "$REPLICA_PORT")
        say "round $round $mode c=$clients $target: $n pgbench transactions, $st statements, $((p1 - p0)) transactions on the primary, $((r1 - r0)) on the replica"
        echo "$mode $clients $target $n $st $((p1 - p0)) $((r1 - r0))" >>"$SHARES"
    fi
}

for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        for clients in $CLIENTS; do
            for target in proxy baseline direct pgbouncer; do
                if [[ $mode =~ ^(tpcb|mixed)$ && $target == pgbouncer ]]; then continue; fi
                if wants "$target"; then measure "$target" "$mode" "$clients"; fi
            done
        done
    done
done

# --- system calls per query -----------------------------------------------------

declare -A SYSC=()
if [[ $SYSCALLS == 1 ]]; then
    for mode in $MODES; do
        [[ ! $mode =~ ^(tpcb|mixed)$ ]] || continue
        for target in proxy baseline pgbouncer; do
            wants "$target" || continue
            queries=$((SYSCALL_CLIENTS * SYSCALL_TRANSACTIONS))
            mapfile -t counts < <(count_syscalls "${PID[$target]:-${DAEMON_PID[$target]}}" "$PG_BIN/pgbench" -S -M "$mode" \
                -c "$SYSCALL_CLIENTS" -j 2 -t "$SYSCALL_TRANSACTIONS" -n \
                -h 127.0.0.1 -p "${PORT[$target]}" -U "$DB_USER" "$DB_NAME")
            for i in "${!SYSCALL_KINDS[@]}"; do
                SYSC[$mode.$target.${SYSCALL_KINDS[$i]}]=$(awk -v c="${counts[$i]:-0}" -v q="$queries" \
                    'BEGIN { printf "%.2f", c / q }')
            done
            say "system calls $mode $target: ${SYSC[$mode.$target.all]} per query"
        done
    done
fi

# --- instructions per query ----------------------------------------------------

# Instructions per query of a server (proxy, baseline, pgbouncer, or a bare relay:
# relay-tokio, relay-mio) under callgrind, in mode $2: one server process, a warm-up run of
# one pgbench client, then the counters zeroed, and two measured runs of 2,000 and 12,000
# select-only transactions, each dumped on its own; (long - short) / 10,000. Start-up, the
# backend logins (SCRAM: tens of millions of instructions each, and their number varies with
# timing) and each run's own connection fall outside the difference. The proxy's health
# monitor is made idle for this ([health] interval = "60s": the first samples at start-up,
# then none during the runs): under callgrind its probes outlive their timeout and each
# reconnect is a SCRAM login.
callgrind_per_query() {
    local target=$1 mode=$2 port pid config out short long p vg=
    port=$("$TESTCLUSTER" free-port)
    out=$WORK/callgrind.out
    rm -f "$out" "$out".*
    local control=(callgrind_control)
    if [[ $target == proxy || $target == baseline ]]; then
        config=$WORK/callgrind-$target.toml
        # Both listeners move, so this run does not clash with the proxy serving the rounds.
        { awk -v p="$port" -v m="$("$TESTCLUSTER" free-port)" '
              /^\[/ { section = $0 }
              /^listen = / && section == "[proxy]" { $0 = "listen = \"127.0.0.1:" p "\"" }
              /^listen = / && section == "[metrics]" { $0 = "listen = \"127.0.0.1:" m "\"" }
              { print }' "$WORK/$target.toml"
          printf '\n[health]\ninterval = "60s"\n'; } >"$config"
        # shellcheck disable=SC2086
        env ${ENVS[$target]} valgrind --tool=callgrind --callgrind-out-file="$out" \
            "${BIN[$target]}" serve --config "$config" >"$WORK/callgrind.log" 2>&1 &
    elif [[ $target == pgbouncer ]]; then
        config=$WORK/callgrind-pgbouncer.ini
        sed -e "s/^listen_port = .*/listen_port = $port/" \
            -e "s|^pidfile = .*|pidfile = $WORK/callgrind-pgbouncer.pid|" \
            -e "s|^logfile = .*|logfile = $WORK/callgrind-pgbouncer.log|" \
            "$WORK/pgbouncer.ini" >"$config"
        as_server_user valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$PGBOUNCER" -q "$config" >"$WORK/callgrind.log" 2>&1 &
        # callgrind_control reaches a process only as the user it runs as, and with the same
        # USER in its environment (valgrind names its control files after it).
        control=(as_server_user callgrind_control)
    elif [[ $target == relay-* ]]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$TARGET_DIR/release/barerelay" \
            "${target#relay-}" "127.0.0.1:$port" "127.0.0.1:$REPLICA_PORT" >"$WORK/callgrind.log" 2>&1 &
    fi
    pid=$!
    wait_port "$port" "$pid"
    # The valgrind process itself (as_server_user may have started it under runuser).

    for p in $(pgrep -f -- "--callgrind-out-file=$out"); do
        if [[ $(ps -o comm= -p "$p") == callgrind* ]]; then vg=$p; fi
    done
    [[ -n $vg ]] || die "cannot find the callgrind process of $target"
    pgbench_run() {
        "$PG_BIN/pgbench" -S -M "$mode" -c 1 -t "$1" -n -h 127.0.0.1 -p "$port" \
            -U "$DB_USER" "$DB_NAME" >/dev/null 2>&1 || die "pgbench under callgrind failed"
    }
    pgbench_run 500
    "${control[@]}" --zero "$vg" >/dev/null
    pgbench_run 2000
    "${control[@]}" --dump=short "$vg" >/dev/null
    pgbench_run 12000
    "${control[@]}" --dump=long "$vg" >/dev/null
    if [[ $target == relay-* ]]; then kill "$pid" 2>/dev/null || true; else pkill -INT -f -- "$config" || true; fi
    wait "$pid" 2>/dev/null || true
    cg_total() { callgrind_annotate "$1" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,; }
    short=$(cg_total "$out.1") long=$(cg_total "$out.2")
    [[ -n $short && -n $long ]] || die "no callgrind totals for $target"
    say "callgrind $target $mode: $short instructions for 2000 transactions, $long for 12000"
    if [[ -n ${CALLGRIND_KEEP:-} ]]; then
        mkdir -p "$CALLGRIND_KEEP"
        cp "$out.1" "$CALLGRIND_KEEP/$target-$mode.2000.out"
        cp "$out.2" "$CALLGRIND_KEEP/$target-$mode.12000.out"
    fi
    # callgrind_control gives up on a process that does not answer in time (a loaded
    # machine), and the command then lands later, in the middle of a run: the two runs then
    # disagree about the cost of a query. Such a measurement is not reported.
    local per_short=$((short / 2000)) per_long=$(((long - short) / 10000))
    if ((per_long * 5 < per_short * 4 || per_long * 4 > per_short * 5)); then
        say "callgrind $target $mode: the runs disagree ($per_short and $per_long per query): a control command came late"
        return 1
    fi
    echo "$per_long"
}

declare -A INSN=()
if [[ $INSTRUCTIONS == 1 ]]; then
    for mode in $MODES; do
        [[ ! $mode =~ ^(tpcb|mixed)$ ]] || continue
        relays=()
        if [[ $RELAYS == 1 ]]; then relays=(relay-tokio relay-mio); fi
        for target in proxy baseline pgbouncer "${relays[@]}"; do
            if wants "$target" || [[ $target == relay-* ]]; then
                for attempt in 1 2 3; do
                    if INSN[$mode.$target]=$(callgrind_per_query "$target" "$mode"); then break; fi
                    [[ $attempt -lt 3 ]] || die "callgrind of $target in $mode failed three times"
                    say "measuring $target in $mode again"
                done
                say "instructions $mode $target ${INSN[$mode.$target]} per query"
            fi
        done
    done
fi

# --- report ------------------------------------------------------------------

echo
echo "| mode | clients | tps proxy | tps direct | tps pgbouncer | latency proxy (ms) | latency pgbouncer (ms) | tps proxy/pgbouncer | tps proxy/direct |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in $MODES; do
    for clients in $CLIENTS; do
        tp=$(median "$mode" "$clients" proxy 4)
        td=$(median "$mode" "$clients" direct 4)
        tb=$(median "$mode" "$clients" pgbouncer 4)
        lp=$(median "$mode" "$clients" proxy 5)
        lb=$(median "$mode" "$clients" pgbouncer 5)
        echo "| $mode | $clients | $(fmt %.0f "$tp") | $(fmt %.0f "$td") | $(fmt %.0f "$tb") | $(fmt %.3f "$lp") | $(fmt %.3f "$lb") | $(ratio "$tp" "$tb") | $(ratio "$tp" "$td") |"
    done
done
echo
bouncer=
if wants pgbouncer; then bouncer="; $("$PGBOUNCER" --version | head -n 1)"; fi
echo "Machine: $(machine_summary); $("$PG_BIN/postgres" --version)$bouncer."
echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'); pgbench -S (tpcb: -b tpcb-like; mixed: -b tpcb-like@1 -b select-only@9; for both direct = the primary), scale $SCALE, $DURATION s per run, median of $ROUNDS round(s), -j min(clients, 2); $POOL_MODE pooling, $SERVER_POOL server connections per pool."
echo
echo "| mode | clients | user us/query, proxy | kernel us/query, proxy | user, pgbouncer | kernel, pgbouncer | user, baseline | kernel, baseline |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for mode in $MODES; do
    for clients in $CLIENTS; do
        row="| $mode | $clients"
        for target in proxy pgbouncer baseline; do
            row+=" | $(fmt %.2f "$(median "$mode" "$clients" "$target" 6)") | $(fmt %.2f "$(median "$mode" "$clients" "$target" 7)")"
        done
        echo "$row |"
    done
done
echo
echo "CPU: the process's own utime and stime (/proc/PID/stat, every thread) over each pgbench run, per pgbench transaction (one query with -S; a TPC-B-like transaction is 7 statements), median of the rounds; the clock ticks at $(getconf CLK_TCK) Hz."
if [[ $SYSCALLS == 1 ]]; then
    echo
    echo "| mode | target | system calls per query | epoll_wait | reads | writes | futex |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for mode in $MODES; do
        [[ ! $mode =~ ^(tpcb|mixed)$ ]] || continue
        for target in proxy baseline pgbouncer; do
            wants "$target" || continue
            row="| $mode | $target"
            for kind in "${SYSCALL_KINDS[@]}"; do row+=" | ${SYSC[$mode.$target.$kind]}"; done
            echo "$row |"
        done
    done
    echo
    echo "System calls: perf stat on the syscall tracepoints of the server process (every thread) during pgbench -S, $SYSCALL_CLIENTS clients x $SYSCALL_TRANSACTIONS transactions; reads = recvfrom + read + recvmsg + readv, writes = sendto + write + sendmsg + writev, epoll_wait with epoll_pwait(2)."
fi
if wants baseline; then
    echo
    echo "Baseline: $BASELINE_BIN${BASELINE_ENV:+ with $BASELINE_ENV}, same config and rounds as the proxy."
    echo
    echo "| mode | clients | tps proxy | tps baseline | tps proxy/baseline |"
    echo "|---|---:|---:|---:|---:|"
    for mode in $MODES; do
        for clients in $CLIENTS; do
            tp=$(median "$mode" "$clients" proxy 4)
            tb=$(median "$mode" "$clients" baseline 4)
            echo "| $mode | $clients | $(fmt %.0f "$tp") | $(fmt %.0f "$tb") | $(ratio "$tp" "$tb") |"
        done
    done
fi
if [[ -s $SHARES ]]; then
    echo
    echo "| mode | target | clients | pgbench transactions | statements | transactions on the primary | transactions on the replica | replica share of statements |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for mode in tpcb mixed; do
        for target in proxy baseline direct; do
            for clients in $CLIENTS; do
                awk -v m="$mode" -v c="$clients" -v t="$target" '$1 == m && $2 == c && $3 == t { n += $4; s += $5; p += $6; r += $7 }
                    END { if (n) printf "| %s | %s | %s | %d | %d | %d | %d | %.1f%% |\n", m, t, c, n, s, p, r, 100 * r / s }' "$SHARES"
            done
        done
    done
    echo
    echo "Transactions: xact_commit + xact_rollback of $DB_NAME in pg_stat_database on db01 and db02, before and after each run, summed over the rounds; an autocommit statement counts as one, a BEGIN ... END block as one. The proxy's own catalog look-ups in $DB_NAME (one every 30 s) are included. Statements: from pgbench's counts per script (7 per TPC-B-like transaction, 1 per select-only one); every statement the replica ran is an autocommit read, one transaction there, so its share is replica transactions / statements."
fi
if [[ $INSTRUCTIONS == 1 ]]; then
    echo
    echo "| mode | instructions per query, proxy | instructions per query, baseline | instructions per query, pgbouncer | proxy/baseline | proxy/pgbouncer |"
    echo "|---|---:|---:|---:|---:|---:|"
    for mode in $MODES; do
        [[ ! $mode =~ ^(tpcb|mixed)$ ]] || continue
        ip=${INSN[$mode.proxy]:-n/a}
        il=${INSN[$mode.baseline]:-n/a}
        ib=${INSN[$mode.pgbouncer]:-n/a}
        echo "| $mode | $ip | $il | $ib | $(ratio "$ip" "$il") | $(ratio "$ip" "$ib") |"
    done
    echo
    echo "Instructions: valgrind callgrind, user space only, one pgbench client, one server process: (12,000 - 2,000 transactions) / 10,000 after a 500-transaction warm-up; the proxies with [health] interval = \"60s\" (monitor idle)."
    if [[ $RELAYS == 1 ]]; then
        echo
        echo "| mode | bare relay on tokio | bare relay on mio | proxy - relay on tokio |"
        echo "|---|---:|---:|---:|"
        for mode in $MODES; do
            [[ ! $mode =~ ^(tpcb|mixed)$ ]] || continue
            it=${INSN[$mode.relay-tokio]} im=${INSN[$mode.relay-mio]} ip=${INSN[$mode.proxy]:-}
            echo "| $mode | $it | $im | $([[ -n $ip ]] && echo $((ip - it)) || echo n/a) |"
        done
        echo
        echo "Bare relays (tests/src/bin/barerelay.rs): a byte copy between each client and a connection of its own to the replica, no protocol, measured like the proxies: what the event loop alone costs per query."
    fi
fi
