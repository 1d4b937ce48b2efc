#!/usr/bin/env bash
# Bounded fuzzing of the proxy's edge with cargo-fuzz (libFuzzer): the startup negotiation,
# the framing of typed messages and the classifier (targets in fuzz/fuzz_targets, entry
# points in proxy/src/fuzzing.rs). cargo-fuzz needs nightly compiler flags: on a stable
# toolchain RUSTC_BOOTSTRAP=1 allows them. Installs cargo-fuzz from crates.io when missing.
# Each target runs for SECONDS (default 60) with AddressSanitizer, a 2 GB memory limit and a
# 2 s limit per input; a crash, leak, timeout or out-of-memory input fails the run, and
# libFuzzer leaves the input in fuzz/artifacts/TARGET/ (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE` in fuzz/). The corpus grows in
# fuzz/corpus/TARGET/ (not committed). The first build takes about 15 minutes on 2 cores.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(startup frames classify)

export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    dict=()
    [ -f "dict/$target.dict" ] && dict=(-dict="dict/$target.dict")
    echo "fuzz: $target for ${seconds}s"
    nice cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=2 -max_len=65536 \
        -print_final_stats=1 "${dict[@]}"
done
