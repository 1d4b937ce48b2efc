#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints, builds, and runs
# every test (unit tests and the integration suites against real PostgreSQL servers).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The integration suites that run statements through the proxy, again with transaction
# pooling ([pool] mode = "transaction"; a test of one mode's own behaviour chooses its mode).
TEST_POOL_MODE=transaction cargo test -p pgrepl-tests --locked \
  --test causal --test concurrency --test consistency --test copy_notify --test deferred_tx \
  --test drivers_native --test drivers_python --test errors_auth --test extended \
  --test fidelity --test functions --test hints --test limits --test logs --test metrics \
  --test node_local --test pooling --test primary_down --test read_failover \
  --test read_your_writes --test regress --test route_reasons --test routing \
  --test session_state --test settings_replay --test tls --test admin --test reload \
  --test logins --test partitions --test replica_faults --test follow_primary --test switchover \
  --test failover
