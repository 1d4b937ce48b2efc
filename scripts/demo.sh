#!/usr/bin/env bash
# The main job on a fresh machine: builds pgrepl-proxy, provisions the tutorial's primary db01
# and streaming replica db02 as Docker containers (`pgrepl-proxy up`: the 11 steps, skipped when
# already done), and serves the proxy in front of them on 127.0.0.1:6432 until Ctrl-C. The pair
# keeps running afterwards; `target/release/pgrepl-proxy teardown` removes it.
#
# The image is $PG_IMAGE if set, else the tutorial's postgres:16.1 when it is present or can be
# pulled, else a local PostgreSQL image built by scripts/build-pg-image.sh (for machines that
# reach no container registry).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked -p pgrepl-proxy

image=${PG_IMAGE:-}
if [ -z "$image" ]; then
    if docker image inspect postgres:16.1 >/dev/null 2>&1 || docker pull postgres:16.1 >/dev/null 2>&1; then
        image=postgres:16.1
    else
        echo "demo: postgres:16.1 cannot be pulled here; building a local PostgreSQL image"
        image=$(scripts/build-pg-image.sh | tail -n 1)
    fi
fi
exec target/release/pgrepl-proxy up --image "$image"
