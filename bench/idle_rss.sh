#!/usr/bin/env bash
# What idle clients cost the proxy in memory: starts a throwaway db01/db02 cluster and a
# release-built proxy, logs CLIENTS clients in (tests/src/bin/idleclients.rs: raw protocol, SCRAM),
# holds them idle, and prints the proxy's resident memory (VmRSS) before and with them, and
# per client.
#
# With QUERY=0 (the default) the clients only log in: in session pooling a client holds the
# server connections it has used until it leaves, so clients that each ran a query could not
# number more than [pool] max_server_connections. QUERY=1 runs one SELECT on each (for
# transaction pooling, where an idle client holds no server connection).
#
# Usage: bench/idle_rss.sh
# Environment:
#   CLIENTS=10000      idle clients
#   QUERY=0            1: one SELECT 1 per client after its login
#   USER_NAME=app      the harness role to log in as (app: SCRAM, md5user: md5,
#                      trustuser: trust); its harness password is used
#   PROXY_TOML='...'   TOML appended to the proxy's config
#   CARGO_TARGET_DIR is respected.
# The figures go to stdout, progress to stderr.
set -euo pipefail

CLIENTS=${CLIENTS:-10000}
QUERY=${QUERY:-0}
USER_NAME=${USER_NAME:-app}
PROXY_TOML=${PROXY_TOML:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "[idle_rss] $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be a positive integer, not '$CLIENTS'"
[[ $QUERY =~ ^[01]$ ]] || die "QUERY must be 0 or 1, not '$QUERY'"
case $USER_NAME in
    app) PASSWORD=app-pass ;;
    md5user) PASSWORD=md5-pass ;;
    trustuser) PASSWORD= ;;
    *) die "USER_NAME must be app, md5user or trustuser, not '$USER_NAME'" ;;
esac

cd "$ROOT"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n $TARGET_DIR ]] || die "cannot find cargo's target directory"
say "building (release) in $TARGET_DIR"
cargo build --release -q -p pgrepl-proxy --bin pgrepl-proxy
cargo build -q -p pgrepl-tests --bin testcluster --bin idleclients
PROXY_BIN=$TARGET_DIR/release/pgrepl-proxy
TESTCLUSTER=$TARGET_DIR/debug/testcluster
IDLECLIENTS=$TARGET_DIR/debug/idleclients

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgrepl-idle.XXXXXX")
chmod 755 "$WORK"
PROXY_PID=
CLIENTS_PID=
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 && -s $WORK/proxy.log ]]; then
        say "last lines of the proxy's log:"
        tail -n 20 "$WORK/proxy.log" >&2
    fi
    if [[ -n $CLIENTS_PID ]]; then
        kill "$CLIENTS_PID" 2>/dev/null || true
        wait "$CLIENTS_PID" 2>/dev/null || true
    fi
    if [[ -n $PROXY_PID ]]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
    if [[ -f $WORK/cluster/ports.env ]]; then
        "$TESTCLUSTER" stop "$WORK/cluster" || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting db01/db02"
"$TESTCLUSTER" start "$WORK/cluster" >"$WORK/cluster.env"
LISTEN=127.0.0.1:$("$TESTCLUSTER" free-port)
{
    "$TESTCLUSTER" proxy-config "$WORK/cluster" "$LISTEN" |
        sed "s/^listen = \"$LISTEN\"\$/&\nmax_client_connections = $((CLIENTS + 100))/"
    printf '%s\n' "$PROXY_TOML"
} >"$WORK/proxy.toml"
"$PROXY_BIN" serve --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 100); do
    grep -q "pgrepl-proxy serving" "$WORK/proxy.log" && break
    kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited"
    sleep 0.2
done
grep -q "pgrepl-proxy serving" "$WORK/proxy.log" || die "the proxy did not start"
# The monitor's first round and the first backend logins settle before the baseline.
sleep 2
say "$(grep -m1 'open file limit' "$WORK/proxy.log" | sed 's/.*INFO //')"

say "logging in $CLIENTS clients as $USER_NAME (query: $QUERY)"
ulimit -n "$((CLIENTS + 1000))" 2>/dev/null || die "cannot raise the open file limit to $((CLIENTS + 1000)): run as root"
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$PROXY_PID/status"; }
BEFORE=$(rss_kb)
ARGS=(--addr "$LISTEN" --clients "$CLIENTS" --user "$USER_NAME" --password "$PASSWORD")
[[ $QUERY == 1 ]] && ARGS+=(--query)
"$IDLECLIENTS" "${ARGS[@]}" >"$WORK/clients.out" 2>"$WORK/clients.err" &
CLIENTS_PID=$!
# Bounded: 10,000 SCRAM logins take seconds here.
for _ in $(seq 3000); do
    grep -q '^ready ' "$WORK/clients.out" && break
    kill -0 "$CLIENTS_PID" 2>/dev/null || { cat "$WORK/clients.err" >&2; die "idleclients failed"; }
    sleep 0.2
done
READY=$(grep '^ready ' "$WORK/clients.out") || die "the clients did not log in within 600 s"
# Idle for a while before reading: what the logins left behind settles.
sleep 5
IDLE=$(rss_kb)
echo "clients=$CLIENTS query=$QUERY login_seconds=${READY##*seconds=} rss_before_kb=$BEFORE" \
    "rss_idle_kb=$IDLE per_client_bytes=$(((IDLE - BEFORE) * 1024 / CLIENTS))"
