# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): messages, the release build, the
# scratch directory and its cleanup, waiting for a server, the test cluster and its pgbench
# data, TOML edits, pgbench's figures, medians and the description of the machine.
#
# The sourcing script sets BENCH_TAG (the prefix of its messages) first, and TESTCLUSTER
# (the testcluster binary) before starting a cluster.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The login every target accepts; the cluster's `app` role owns appdb.
DB_USER=app
DB_PASSWORD=app-pass
DB_NAME=appdb

# Upper bound on waiting for the replica to replay the primary's writes.
CATCH_UP_TIMEOUT=${CATCH_UP_TIMEOUT:-300}

say() { echo "[$BENCH_TAG] $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Fails unless each variable named holds a positive integer.
require_positive() {
    local n
    for n; do
        [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, not '${!n}'"
    done
}

# PostgreSQL and PgBouncer refuse to run as root. setpriv, not runuser: runuser's PAM
# session lowers the open-files limit to 1024, and a pooler needs one per client.
as_server_user() {
    if [[ $EUID -eq 0 ]]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

# --- build ---------------------------------------------------------------

# `cargo build --release -q ARGS...` in the workspace; sets TARGET_DIR, asked of cargo so
# CARGO_TARGET_DIR and .cargo/config.toml are honoured.
build_release() {
    cd "$ROOT" || die "cannot enter $ROOT"
    if [[ -z ${TARGET_DIR:-} ]]; then
        TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
        [[ -n $TARGET_DIR ]] || die "cannot find cargo's target directory"
        say "building (release) in $TARGET_DIR"
    fi
    cargo build --release -q "$@"
}

# --- scratch directory and cleanup ---------------------------------------

# Background processes by name, stopped at exit.
declare -A PID=()
# Daemons (PgBouncer -d) by their pid files, stopped at exit.
PIDFILES=()
# Server logs whose last lines are shown when the script fails.
SERVER_LOGS=()

# Appends $2 to the array named $1 unless it is there.
add_once() {
    local -n list=$1
    local item
    for item in "${list[@]}"; do [[ $item != "$2" ]] || return 0; done
    list+=("$2")
}

# Creates WORK (readable by the postgres user the servers run as) and arranges the cleanup.
make_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 755 "$WORK"
    [[ $EUID -ne 0 ]] || chown postgres: "$WORK"
    trap cleanup EXIT
    # Turn signals into a normal exit, so the EXIT trap cleans up.
    trap 'exit 130' INT TERM
}

# Stops the processes given by pid: SIGTERM, then SIGKILL for those still there after 10 s;
# reaps those that are children of this shell.
stop_pids() {
    local pid
    for pid; do kill "$pid" 2>/dev/null || true; done
    for pid; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$? f pid daemons=()
    trap - INT TERM
    if [[ $rc -ne 0 ]]; then
        for f in "${SERVER_LOGS[@]}"; do
            if [[ -s $f ]]; then
                say "last lines of $(basename "$f"):"
                tail -n 20 "$f" >&2
            fi
        done
    fi
    stop_pids "${PID[@]}"
    # A daemon's pid only while that pid still runs the daemon's own config: one that ended
    # may have been handed to another process since (pid_max is small here).
    for f in "${PIDFILES[@]}"; do
        [[ -s $f ]] || continue
        pid=$(cat "$f")
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "${f%.pid}.ini"; then
            daemons+=("$pid")
        fi
    done
    stop_pids "${daemons[@]}"
    if [[ -f $WORK/cluster/ports.env ]]; then
        timeout 120 "$TESTCLUSTER" stop "$WORK/cluster" || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}

# Waits until 127.0.0.1:$1 accepts TCP connections; $2, if given, is the
# pid of the server, whose death ends the wait early.
wait_port() {
    local port=$1 pid=${2:-}
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "the server for port $port exited"
        fi
        sleep 0.1
    done
    die "nothing accepts connections on port $port after 20 s"
}

# --- cluster and data ----------------------------------------------------

# Starts the db01/db02 pair in $WORK/cluster with the server settings given (NAME=VALUE);
# sets PRIMARY_PORT, REPLICA_PORT and PG_BIN, and PGPASSWORD for the clients.
# shellcheck disable=SC2120 # the settings are optional
start_cluster() {
    say "starting the cluster in $WORK/cluster"
    eval "$(timeout 300 "$TESTCLUSTER" start "$WORK/cluster" "$@")"
    [[ -n ${PRIMARY_PORT:-} && -n ${REPLICA_PORT:-} && -n ${PG_BIN:-} ]] ||
        die "testcluster start printed no PRIMARY_PORT/REPLICA_PORT/PG_BIN"
    export PGPASSWORD=$DB_PASSWORD
}

# pgbench's tables at scale $1, on the primary.
pgbench_init() {
    say "pgbench -i -s $1 on the primary"
    timeout 900 "$PG_BIN/pgbench" -i -q -s "$1" -h 127.0.0.1 -p "$PRIMARY_PORT" -U "$DB_USER" "$DB_NAME" \
        >"$WORK/init.log" 2>&1 || {
        cat "$WORK/init.log" >&2
        die "pgbench -i failed"
    }
}

# Waits until the replica has replayed the primary's writes.
catch_up() {
    timeout "$CATCH_UP_TIMEOUT" "$TESTCLUSTER" wait "$WORK/cluster" ||
        die "the replica did not catch up within $CATCH_UP_TIMEOUT s"
}

# Sets KEY = VALUE (VALUE is written as is: quote strings yourself) in
# [SECTION] of the TOML file FILE: replaces the key if the section has it,
# adds it at the top of the section if the section exists, else appends the
# section.
set_toml() {
    local file=$1 section=$2 key=$3 value=$4
    awk -v s="[$section]" -v k="$key" -v v="$value" '
        BEGIN { found = 0; done = 0 }
        /^[[:space:]]*\[/ {
            header = $0; sub(/[[:space:]]*(#.*)?$/, "", header); sub(/^[[:space:]]*/, "", header)
            if (in_s && !done) { print k " = " v; done = 1 }
            in_s = (header == s)
            if (in_s) found = 1
            print
            next
        }
        in_s && !done && $0 ~ "^[[:space:]]*" k "[[:space:]]*=" { print k " = " v; done = 1; next }
        { print }
        END {
            if (in_s && !done) { print k " = " v; done = 1 }
            if (!found) { print ""; print s; print k " = " v }
        }' "$file" >"$file.new"
    mv "$file.new" "$file"
}

# --- pgbench's figures ---------------------------------------------------------

# tps from pgbench's output on stdin. PostgreSQL 15: "tps = N (without initial connection
# time)"; 14 and older print an "including" line first, then "(excluding ...)".
pgbench_tps() {
    local out tps
    out=$(cat)
    tps=$(sed -n 's/^tps = \([0-9.]*\) (excluding.*/\1/p; s/^tps = \([0-9.]*\) (without.*/\1/p' <<<"$out" | head -n 1)
    [[ -n $tps ]] || tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    echo "$tps"
}

# Average latency in ms from pgbench's output on stdin.
pgbench_latency() {
    sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' | head -n 1
}

# --- what one process spends per query ----------------------------------------

# CPU time process $1 has used so far, all its threads, in clock ticks: "user system"
# (/proc/PID/stat fields 14 and 15, counted after the command name, which may hold spaces).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}

# Microseconds of user and of system time per transaction: "user system", from two
# cpu_ticks readings ($1, $2) and the transactions run between them ($3).
cpu_per_transaction() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        if (n <= 0) { print "n/a n/a"; exit }
        printf "%.2f %.2f\n", (y[1] - x[1]) * 1e6 / hz / n, (y[2] - x[2]) * 1e6 / hz / n }'
}

# Transactions pgbench ran, from its output on stdin.
pgbench_transactions() {
    sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' | head -n 1
}

# The system calls counted per query, by kind, and what they are.
SYSCALL_KINDS=(all epoll_wait reads writes futex)
declare -A SYSCALL_EVENTS=(
    [all]="raw_syscalls:sys_enter"
    [epoll_wait]="syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_pwait syscalls:sys_enter_epoll_pwait2"
    [reads]="syscalls:sys_enter_recvfrom syscalls:sys_enter_read syscalls:sys_enter_recvmsg syscalls:sys_enter_readv"
    [writes]="syscalls:sys_enter_sendto syscalls:sys_enter_write syscalls:sys_enter_sendmsg syscalls:sys_enter_writev"
    [futex]="syscalls:sys_enter_futex"
)

# Counts the system calls of process $1 (every thread) with perf's tracepoints while the
# rest of the arguments run, and prints the count of each kind of SYSCALL_KINDS, in order.
count_syscalls() {
    local pid=$1 out=$WORK/perf-stat.csv events=() kind event perf
    shift
    for kind in "${SYSCALL_KINDS[@]}"; do
        for event in ${SYSCALL_EVENTS[$kind]}; do events+=(-e "$event"); done
    done
    perf stat -x, -o "$out" "${events[@]}" -p "$pid" &
    perf=$!
    sleep 0.5 # attached before the load starts
    "$@" >/dev/null || die "the load under perf stat failed: $*"
    kill -INT "$perf"
    wait "$perf" || true
    for kind in "${SYSCALL_KINDS[@]}"; do
        awk -F, -v names="${SYSCALL_EVENTS[$kind]}" '
            BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) want[list[i]] = 1 }
            $3 in want && $1 ~ /^[0-9]+$/ { sum += $1 }
            END { print sum + 0 }' "$out"
    done
}

# --- report ------------------------------------------------------------------

# Median over the rounds of field $4 of the lines of RESULTS whose first three fields are
# $1 $2 $3 (n/a and nan values skipped), or n/a.
median() {
    awk -v a="$1" -v b="$2" -v c="$3" -v f="$4" \
        '$1 == a && $2 == b && $3 == c && $f != "n/a" && tolower($f) != "nan" { print $f }' "$RESULTS" |
        sort -g |
        awk '{ v[NR] = $1 }
             END { if (NR == 0) print "n/a"
                   else if (NR % 2) print v[(NR + 1) / 2]
                   else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# printf-formats $2 with $1, or passes n/a through.
# shellcheck disable=SC2059 # the format is the argument
fmt() { if [[ $2 == n/a ]]; then echo n/a; else printf "$1" "$2"; fi; }

# $1 / $2 with two decimals, or n/a.
ratio() {
    if [[ $1 == n/a || $2 == n/a ]] || awk -v b="$2" 'BEGIN { exit !(b == 0) }'; then
        echo n/a
    else
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    fi
}

# "2 CPUs (model), Linux x.y": where a run was made.
machine_summary() {
    local model
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    echo "$(nproc) CPUs (${model:-unknown CPU}), Linux $(uname -r)"
}

# The commit the proxy was built from, and whether tracked files differed from it.
revision() {
    local rev
    if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || rev="$rev with uncommitted changes"
        echo "$rev"
    else
        echo "(not a git checkout)"
    fi
}

# --- PgBouncer -------------------------------------------------------------

# PgBouncer's userlist: the SCRAM verifiers the primary stores for the cluster's login roles
# (pg_authid, read by the superuser over the Unix socket), as PgBouncer deployments keep them.
# A client's login then costs PgBouncer no PBKDF2 (the proxy, too, salts each password once,
# at start), and PgBouncer logs in to the servers with the keys of the client's SCRAM proof.
pgbouncer_userlist() {
    "$PG_BIN/psql" -X -A -t -q -h "$WORK/cluster/db01" -p "$PRIMARY_PORT" -U postgres -d postgres -c \
        "SELECT '\"' || rolname || '\" \"' || rolpassword || '\"' FROM pg_authid
         WHERE rolcanlogin AND rolpassword LIKE 'SCRAM-SHA-256\$%' ORDER BY rolname"
}

# Writes $WORK/NAME.ini: PgBouncer on 127.0.0.1:PORT in front of $DB_NAME on the server at
# SERVER_PORT, SCRAM with pgbouncer_userlist, NAME.log and NAME.pid in WORK; the further
# arguments (`key = value` lines) complete the [pgbouncer] section.
pgbouncer_ini() {
    local name=$1 port=$2 server_port=$3
    shift 3
    if [[ ! -s $WORK/userlist.txt ]]; then
        pgbouncer_userlist >"$WORK/userlist.txt"
        grep -q "^\"$DB_USER\" \"SCRAM-SHA-256" "$WORK/userlist.txt" ||
            die "no SCRAM verifier of $DB_USER on the primary for PgBouncer's userlist"
    fi
    {
        cat <<INI
[databases]
$DB_NAME = host=127.0.0.1 port=$server_port dbname=$DB_NAME

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
logfile = $WORK/$name.log
pidfile = $WORK/$name.pid
INI
        printf '%s\n' "$@"
    } >"$WORK/$name.ini"
}

# The first PgBouncer release with max_prepared_statements.
PGBOUNCER_PREPARED_SINCE=1.21

# Sets PGBOUNCER (when empty: the build of bench/install-pgbouncer.sh) and PGBOUNCER_VERSION.
find_pgbouncer() {
    if [[ -z ${PGBOUNCER:-} ]]; then
        PGBOUNCER=$(bash "$ROOT/bench/install-pgbouncer.sh" | tail -n 1)
    fi
    [[ -x $PGBOUNCER ]] || die "no PgBouncer at '$PGBOUNCER'"
    PGBOUNCER_VERSION=$("$PGBOUNCER" --version | sed -n 's/^PgBouncer \([0-9.]*\).*/\1/p')
    [[ -n $PGBOUNCER_VERSION ]] || die "cannot read the version of $PGBOUNCER"
}

# Whether this PgBouncer has max_prepared_statements (an unknown key stops older ones).
pgbouncer_tracks_prepared() {
    [[ $(printf '%s\n' "$PGBOUNCER_PREPARED_SINCE" "$PGBOUNCER_VERSION" | sort -V | head -n 1) == "$PGBOUNCER_PREPARED_SINCE" ]]
}

# Starts PgBouncer ($PGBOUNCER) as a daemon with $WORK/NAME.ini; waits until port $2 answers.
start_pgbouncer() {
    local name=$1 port=$2
    add_once PIDFILES "$WORK/$name.pid"
    add_once SERVER_LOGS "$WORK/$name.log"
    as_server_user "$PGBOUNCER" -d -q "$WORK/$name.ini"
    wait_port "$port"
}
