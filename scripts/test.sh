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
