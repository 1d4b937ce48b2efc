#!/usr/bin/env bash
# What causal reads ([routing] read_your_writes) cost: throughput, the share of
# reads the replica still serves, read-after-write latency and the position
# queries the proxy adds on the primary, for each mode, on a throwaway db01/db02
# cluster.
#
# One cluster, one proxy per mode, all four started at once from the same
# release build, each with its own client and metrics ports. Runs are
# interleaved (round > workload > clients > mode) so every mode meets the same
# machine conditions; each cell of the tables is the median over the rounds
# (violations and errors: the sum).
#
# Workloads:
#   mixed    pgbench -b tpcb-like@1 -b select-only@9 -M simple (scale SCALE,
#            pgbench -i on db01 directly). The replica share comes from the
#            proxy's pgrepl_queries_total (replica / all routes, delta over the
#            run), and also as replica statements / select-only transactions:
#            the TPC-B-like script's SELECT runs inside its transaction, on the
#            primary, so the select-only transactions are the reads a replica
#            could serve.
#   check2   checkload --write-share 0.02 --keys KEYS: counter increments and
#   check20  reads (0.20 for check20), checked against the mode's guarantee
#            (off and session: --rule session, global: global, linearizable:
#            linearizable). Violations under mode off are expected (it promises
#            nothing); under any other mode they are flagged in the notes.
#
# Usage: bench/causal.sh
# Environment:
#   MODES_RYW="off session global linearizable"  read_your_writes modes, one
#                                     proxy each; off is the ratio's baseline
#   CLIENTS="1 16"                    pgbench clients / checkload sessions
#   ROUNDS=3                          rounds of the whole matrix
#   DURATION=10                       seconds per run
#   SCALE=10                          pgbench scale factor
#   WORKLOADS="mixed check2 check20"  see above
#   KEYS=100                          checkload's counters
#   CAUSAL_WAIT=                      e.g. 20ms: [routing] causal_wait of every
#                                     proxy (unset: the proxy's default, 20ms)
#   CARGO_TARGET_DIR is respected.
# The tables go to stdout, progress to stderr.
set -euo pipefail

BENCH_TAG=causal
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODES_RYW=${MODES_RYW:-off session global linearizable}
CLIENTS=${CLIENTS:-1 16}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
WORKLOADS=${WORKLOADS:-mixed check2 check20}
KEYS=${KEYS:-100}
CAUSAL_WAIT=${CAUSAL_WAIT:-}

# Upper bounds on the steps that could hang: a run gets its duration plus this.
RUN_SLACK=120
SCRAPE_TIMEOUT=5

STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

require_positive ROUNDS DURATION SCALE KEYS
for c in $CLIENTS; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS: '$c' is not a positive integer"
done
[[ -n ${CLIENTS// /} ]] || die "CLIENTS is empty"
[[ -n ${MODES_RYW// /} ]] || die "MODES_RYW is empty"
[[ -n ${WORKLOADS// /} ]] || die "WORKLOADS is empty"
for m in $MODES_RYW; do
    [[ $m =~ ^(off|session|global|linearizable)$ ]] || die "unknown mode '$m' in MODES_RYW"
done
for w in $WORKLOADS; do
    [[ $w =~ ^(mixed|check2|check20)$ ]] || die "unknown workload '$w' in WORKLOADS"
done
if [[ -n $CAUSAL_WAIT ]]; then
    [[ $CAUSAL_WAIT =~ ^[0-9]+(ms|s|us)?$ ]] || die "CAUSAL_WAIT looks wrong: '$CAUSAL_WAIT' (e.g. 5ms)"
fi
command -v curl >/dev/null || die "needs curl (to read the proxies' /metrics)"

# The checker's rule for a mode: what the mode promises (off: nothing, checked
# against the session rule to show what is lost).
rule_of() {
    case $1 in
        off | session) echo session ;;
        global) echo global ;;
        linearizable) echo linearizable ;;
    esac
}

# --- build ---------------------------------------------------------------

build_release -p pgrepl-tests --bin testcluster --bin checkload
build_release -p pgrepl-proxy
TESTCLUSTER=$TARGET_DIR/release/testcluster
CHECKLOAD=$TARGET_DIR/release/checkload
PROXY_BIN=$TARGET_DIR/release/pgrepl-proxy

# --- scratch directory and cleanup ---------------------------------------

make_workdir pgrepl-causal
RESULTS=$WORK/results
NOTES=$WORK/notes
: >"$RESULTS"
: >"$NOTES"

# --- cluster, proxies and data ----------------------------------------------

start_cluster

declare -A PORT=() MPORT=()
for m in $MODES_RYW; do
    PORT[$m]=$("$TESTCLUSTER" free-port)
    MPORT[$m]=$("$TESTCLUSTER" free-port)
    config=$WORK/proxy-$m.toml
    "$TESTCLUSTER" proxy-config "$WORK/cluster" "127.0.0.1:${PORT[$m]}" >"$config"
    set_toml "$config" metrics listen "\"127.0.0.1:${MPORT[$m]}\""
    # proxy-config writes no [routing] today; set_toml edits it if it ever does.
    set_toml "$config" routing read_your_writes "\"$m\""
    if [[ -n $CAUSAL_WAIT ]]; then
        set_toml "$config" routing causal_wait "\"$CAUSAL_WAIT\""
    fi
done
# Distinct ports (free-port asks the kernel each time, which may repeat itself).
ports=$(for m in $MODES_RYW; do echo "${PORT[$m]}"; echo "${MPORT[$m]}"; done | sort | uniq -d)
[[ -z $ports ]] || die "free-port handed out port $ports twice; run again"

for m in $MODES_RYW; do
    say "starting proxy $m on port ${PORT[$m]} (metrics ${MPORT[$m]})"
    SERVER_LOGS+=("$WORK/proxy-$m.log")
    "$PROXY_BIN" serve --config "$WORK/proxy-$m.toml" >"$WORK/proxy-$m.log" 2>&1 &
    PID[$m]=$!
done
for m in $MODES_RYW; do
    wait_port "${PORT[$m]}" "${PID[$m]}"
    wait_port "${MPORT[$m]}" "${PID[$m]}"
done

FIRST_MODE=${MODES_RYW%% *}
if [[ " $WORKLOADS " == *" mixed "* ]]; then
    pgbench_init "$SCALE"
fi
if [[ " $WORKLOADS " == *" check"* ]]; then
    say "checkload --prepare --keys $KEYS through proxy $FIRST_MODE"
    # A zero-length load: --prepare creates and fills counters, then waits until a
    # fresh session (on the replica, if routed there) sees all keys.
    timeout 120 "$CHECKLOAD" --addr "127.0.0.1:${PORT[$FIRST_MODE]}" --sessions 1 --keys "$KEYS" \
        --seconds 0 --prepare >"$WORK/prepare.log" 2>&1 ||
        { cat "$WORK/prepare.log" >&2; die "checkload --prepare failed"; }
fi
catch_up

# --- measurements ------------------------------------------------------------

# One scrape of proxy $1's /metrics: "all replica position waits_replica waits_primary
# ryw lag down none", all = statements on every route, replica = those on the replica
# route, position = position queries (every kind), waits_* = causal waits by where the
# read then ran; the last four: reads the primary ran for want of a usable replica, by
# reason (read_your_writes, lag, replica_down, no_replica).
scrape() {
    local page
    page=$(curl -sf --max-time "$SCRAPE_TIMEOUT" "http://127.0.0.1:${MPORT[$1]}/metrics") ||
        die "cannot read /metrics of proxy $1 (port ${MPORT[$1]})"
    awk '
        /^#/ { next }
        /^pgrepl_queries_total[{ ]/ { all += $NF; if ($0 ~ /route="replica"/) rep += $NF }
        /^pgrepl_primary_position_queries_total[{ ]/ { pos += $NF }
        /^pgrepl_causal_waits_total[{ ]/ {
            if ($0 ~ /outcome="replica"/) wr += $NF; else if ($0 ~ /outcome="primary"/) wp += $NF
        }
        /^pgrepl_queries_total[{ ]/ && /route="primary"/ {
            if ($0 ~ /reason="read_your_writes"/) ryw += $NF
            else if ($0 ~ /reason="lag"/) lag += $NF
            else if ($0 ~ /reason="replica_down"/) down += $NF
            else if ($0 ~ /reason="no_replica"/) none += $NF
        }
        END { printf "%d %d %d %d %d %d %d %d %d\n", all, rep, pos, wr, wp, ryw, lag, down, none }' <<<"$page"
}

# Says which reads the primary ran during a run, from scrapes $1 (before) and $2 (after).
primary_reads() {
    local b a
    read -r -a b <<<"$1"
    read -r -a a <<<"$2"
    echo "reads on the primary: read_your_writes $((a[5] - b[5])), lag $((a[6] - b[6])), replica_down $((a[7] - b[7])), no_replica $((a[8] - b[8]))"
}

# Records a warning for the notes (and says it now).
warn() {
    say "WARNING: $*"
    echo "$*" >>"$NOTES"
}

# Fields of a RESULTS line (n/a when a workload has no such figure):
#  1 workload  2 clients  3 mode  4 round  5 throughput (tps or ops/s)
#  6 replica share (statements: mixed; reads: checkload)
#  7 replica / select-only transactions (mixed only)
#  8 read-after-write p50 ms  9 p99 ms  10 position queries/s
#  11 violations  12 errors  13 causal waits/s that ran on the replica
#  14 causal waits/s that went to the primary

run_mixed() {
    local mode=$1 clients=$2 threads out tps n_sel before after
    threads=$((clients < 2 ? clients : 2))
    before=$(scrape "$mode")
    out=$(timeout $((DURATION + RUN_SLACK)) "$PG_BIN/pgbench" -b tpcb-like@1 -b select-only@9 -M simple \
        -c "$clients" -j "$threads" -T "$DURATION" -n \
        -h 127.0.0.1 -p "${PORT[$mode]}" -U "$DB_USER" "$DB_NAME" 2>&1) ||
        { echo "$out" >&2; die "pgbench through proxy $mode failed"; }
    after=$(scrape "$mode")
    tps=$(pgbench_tps <<<"$out")
    # Per-script counts: "SQL script 2: <builtin: select only>" then " - N transactions (...)".
    n_sel=$(awk '/^SQL script/ { sel = /select only/ } sel && /^ - [0-9]+ transactions/ { print $2; exit }' <<<"$out")
    [[ -n $tps && -n $n_sel ]] || { echo "$out" >&2; die "cannot parse pgbench output"; }
    read -r a0 r0 p0 w0 x0 _ <<<"$before"
    read -r a1 r1 p1 w1 x1 _ <<<"$after"
    awk -v w=mixed -v c="$clients" -v m="$mode" -v r="$round" -v tps="$tps" -v sel="$n_sel" -v d="$DURATION" \
        -v da=$((a1 - a0)) -v dr=$((r1 - r0)) -v dp=$((p1 - p0)) -v dw=$((w1 - w0)) -v dx=$((x1 - x0)) '
        BEGIN { printf "%s %s %s %s %s %s %s n/a n/a %.1f 0 0 %.1f %.1f\n", w, c, m, r, tps,
                       da ? dr / da : "n/a", sel ? dr / sel : "n/a", dp / d, dw / d, dx / d }' >>"$RESULTS"
    say "$(printf 'round %s mixed   c=%-3s %-12s %8.0f tps  replica %s of %s statements, %s select-only; +%s position queries' \
        "$round" "$clients" "$mode" "$tps" $((r1 - r0)) $((a1 - a0)) "$n_sel" $((p1 - p0)))"
    say "    $(primary_reads "$before" "$after")"
}

run_check() {
    local workload=$1 mode=$2 clients=$3 share out line rc before after rule
    share=0.02
    [[ $workload == check2 ]] || share=0.20
    rule=$(rule_of "$mode")
    before=$(scrape "$mode")
    rc=0
    out=$(timeout $((DURATION + RUN_SLACK)) "$CHECKLOAD" --addr "127.0.0.1:${PORT[$mode]}" \
        --sessions "$clients" --keys "$KEYS" --write-share "$share" --seconds "$DURATION" \
        --rule "$rule" 2>"$WORK/checkload.err") || rc=$?
    after=$(scrape "$mode")
    line=$(grep '^checkload ' <<<"$out" | head -n 1 || true)
    # Exit 1 with a summary line: violations or errors (judged below); anything else failed.
    if [[ -z $line || ( $rc -ne 0 && $rc -ne 1 ) ]]; then
        echo "$out" >&2
        cat "$WORK/checkload.err" >&2
        die "checkload through proxy $mode failed (exit $rc)"
    fi
    val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    local ops rs p50 p99 v e
    ops=$(val ops_per_s) rs=$(val replica_share) p50=$(val raw_p50_ms) p99=$(val raw_p99_ms)
    v=$(val violations) e=$(val errors)
    [[ -n $ops && -n $rs && -n $v && -n $e ]] || { echo "$out" >&2; die "cannot parse checkload output"; }
    read -r a0 r0 p0 w0 x0 _ <<<"$before"
    read -r a1 r1 p1 w1 x1 _ <<<"$after"
    awk -v w="$workload" -v c="$clients" -v m="$mode" -v r="$round" -v ops="$ops" -v rs="$rs" \
        -v p50="$p50" -v p99="$p99" -v v="$v" -v e="$e" -v d="$DURATION" \
        -v dp=$((p1 - p0)) -v dw=$((w1 - w0)) -v dx=$((x1 - x0)) '
        BEGIN { printf "%s %s %s %s %s %s n/a %s %s %.1f %s %s %.1f %.1f\n", w, c, m, r, ops, rs,
                       p50, p99, dp / d, v, e, dw / d, dx / d }' >>"$RESULTS"
    say "$(printf 'round %s %-7s c=%-3s %-12s %8.0f ops/s replica %s raw p50/p99 %s/%s ms violations %s errors %s; +%s position queries' \
        "$round" "$workload" "$clients" "$mode" "$ops" "$rs" "$p50" "$p99" "$v" "$e" $((p1 - p0)))"
    say "    $(primary_reads "$before" "$after")"
    if [[ $v != 0 && $mode != off ]]; then
        warn "!!! VIOLATIONS: $v violation(s) of the $rule rule under read_your_writes = \"$mode\" ($workload, $clients clients, round $round). First ones:"
        grep -v '^checkload ' <<<"$out" | head -n 3 | sed 's/^/    /' | tee -a "$NOTES" >&2
    fi
    if [[ $e != 0 ]]; then
        warn "!!! ERRORS: $e failed operation(s) under read_your_writes = \"$mode\" ($workload, $clients clients, round $round). First ones:"
        head -n 3 "$WORK/checkload.err" | sed 's/^/    /' | tee -a "$NOTES" >&2
    fi
}

for round in $(seq "$ROUNDS"); do
    for workload in $WORKLOADS; do
        for clients in $CLIENTS; do
            for mode in $MODES_RYW; do
                # Each run starts with the replica caught up, whatever the one before left.
                catch_up
                if [[ $workload == mixed ]]; then
                    run_mixed "$mode" "$clients"
                else
                    run_check "$workload" "$mode" "$clients"
                fi
            done
        done
    done
done
FINISHED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# --- report ------------------------------------------------------------------

# Sum over the rounds of field $4.
total() {
    awk -v w="$1" -v c="$2" -v m="$3" -v f="$4" '$1 == w && $2 == c && $3 == m && $f != "n/a" { s += $f; n++ }
        END { print n ? s : "n/a" }' "$RESULTS"
}

pct() { if [[ $1 == n/a ]]; then echo n/a; else awk -v x="$1" 'BEGIN { printf "%.1f%%", 100 * x }'; fi; }

describe() {
    case $1 in
        mixed) echo "pgbench -b tpcb-like@1 -b select-only@9 -M simple -c C -j min(C,2) -T $DURATION -n (scale $SCALE)" ;;
        check2 | check20) echo "checkload --sessions C --keys $KEYS --write-share $([[ $1 == check2 ]] && echo 0.02 || echo 0.20) --seconds $DURATION --rule session (off, session) / global / linearizable" ;;
    esac
}

for workload in $WORKLOADS; do
    echo
    echo "### $workload: $(describe "$workload")"
    echo
    if [[ $workload == mixed ]]; then
        echo "| clients | mode | tps | ratio to off | replica share (statements / select-only) | read-after-write p50/p99 (ms) | primary position queries/s | causal waits/s (replica/primary) | violations |"
    else
        echo "| clients | mode | ops/s | ratio to off | replica share (reads) | read-after-write p50/p99 (ms) | primary position queries/s | causal waits/s (replica/primary) | violations |"
    fi
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for clients in $CLIENTS; do
        base=$(median "$workload" "$clients" off 5)
        for mode in $MODES_RYW; do
            t=$(median "$workload" "$clients" "$mode" 5)
            if [[ $workload == mixed ]]; then
                share="$(pct "$(median "$workload" "$clients" "$mode" 6)") / $(pct "$(median "$workload" "$clients" "$mode" 7)")"
                raw="n/a"
                viol="n/a"
            else
                share=$(pct "$(median "$workload" "$clients" "$mode" 6)")
                raw="$(fmt %.2f "$(median "$workload" "$clients" "$mode" 8)") / $(fmt %.2f "$(median "$workload" "$clients" "$mode" 9)")"
                viol=$(total "$workload" "$clients" "$mode" 11)
                errs=$(total "$workload" "$clients" "$mode" 12)
                if [[ $viol != 0 && $viol != n/a && $mode != off ]]; then viol="**$viol !!!**"; fi
                if [[ $errs != 0 && $errs != n/a ]]; then viol="$viol (errors: $errs)"; fi
            fi
            waits="$(fmt %.1f "$(median "$workload" "$clients" "$mode" 13)") / $(fmt %.1f "$(median "$workload" "$clients" "$mode" 14)")"
            echo "| $clients | $mode | $(fmt %.0f "$t") | $(ratio "$t" "$base") | $share | $raw | $(fmt %.1f "$(median "$workload" "$clients" "$mode" 10)") | $waits | $viol |"
        done
    done
done

echo
cmd="MODES_RYW=\"$MODES_RYW\" CLIENTS=\"$CLIENTS\" ROUNDS=$ROUNDS DURATION=$DURATION SCALE=$SCALE WORKLOADS=\"$WORKLOADS\" KEYS=$KEYS"
[[ -z $CAUSAL_WAIT ]] || cmd="$cmd CAUSAL_WAIT=$CAUSAL_WAIT"
echo "Notes. Command: \`$cmd bash bench/causal.sh\`; run from $STARTED to $FINISHED;" \
    "$(machine_summary), $("$PG_BIN/postgres" --version);" \
    "proxy $(revision)," \
    "one proxy per mode, [routing] causal_wait = ${CAUSAL_WAIT:-the default (20ms)}." \
    "Each cell is the median over $ROUNDS round(s) (violations: the sum), runs interleaved round > workload > clients > mode, the replica caught up before each run." \
    "Replica share: mixed, from the proxy's pgrepl_queries_total (replica route / all routes, and replica route / pgbench's select-only transactions);" \
    "checkload, the reads answered by a server other than db01 (cluster_name)." \
    "Read-after-write: checkload's latency of a read right after the session's own write." \
    "Position queries/s: pgrepl_primary_position_queries_total (commit + round + flush) added during the run / $DURATION s;" \
    "causal waits/s: pgrepl_causal_waits_total by outcome (the read then ran on the replica / gave up and ran on the primary)." \
    "Violations: checkload's checker, rule session for off and session, global for global, linearizable for linearizable (no outside writer on the primary, so linearizable is checked like global);" \
    "under off they are expected."
if [[ -s $NOTES ]]; then
    echo
    echo "**Warnings:**"
    echo
    echo '```'
    cat "$NOTES"
    echo '```'
fi
