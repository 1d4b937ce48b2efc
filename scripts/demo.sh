#!/usr/bin/env bash
# The main job on a fresh machine: installs PostgreSQL, builds pgrepl-proxy, starts a local
# primary (db01) and streaming replica (db02) from PostgreSQL's own binaries, and serves the
# proxy in front of them on 127.0.0.1:6432 (user app, password app-pass, database appdb)
# until Ctrl-C, which stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release -p pgrepl-proxy -p pgrepl-tests --bins
dir="${PGREPL_DEMO_DIR:-$PWD/.pgrepl/demo}"
listen="${PGREPL_DEMO_LISTEN:-127.0.0.1:6432}"
if [ -f "$dir/ports.env" ]; then target/release/testcluster stop "$dir" || true; fi
rm -rf "$dir"
eval "$(target/release/testcluster start "$dir")"
trap 'target/release/testcluster stop "$dir"' EXIT

target/release/testcluster proxy-config "$dir" "$listen" > "$dir/proxy.toml"

echo "db01 on 127.0.0.1:$PRIMARY_PORT, db02 on 127.0.0.1:$REPLICA_PORT"
echo "connect: PGPASSWORD=app-pass psql -h ${listen%:*} -p ${listen##*:} -U app appdb"
echo "  and try: SELECT current_setting('cluster_name');"
target/release/pgrepl-proxy serve --config "$dir/proxy.toml"
