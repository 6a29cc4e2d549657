#!/usr/bin/env bash
# Builds ganglion and ganglion-load in release mode and runs the issue's benchmark (100 users in
# 20 rooms, 8 concurrent senders, 30 s measured after a 5 s warm-up) against a throwaway server on
# each backend: SQLite (the embedded default) and a throwaway PostgreSQL.
#
# Usage: scripts/bench.sh [extra ganglion-load flags, e.g. --json or --duration 60s]
# Environment: BACKENDS="sqlite postgres" (the default) picks the backends to run.
#
# Targets (from the issue): on SQLite >= 2,000 sends/s, send p99 < 20 ms, fan-out p99 < 15 ms,
# RSS < 100 MiB; on PostgreSQL >= 1,000 sends/s. Each run prints its figures against them.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --release -p ganglion -p ganglion-loadtool

target_dir="${CARGO_TARGET_DIR:-target}"
# The testkit otherwise runs the newest of target/{debug,release}/ganglion; benchmark release.
GANGLION_BIN="$(cd "$target_dir/release" && pwd)/ganglion"
export GANGLION_BIN
load="$target_dir/release/ganglion-load"

status=0
for backend in ${BACKENDS:-sqlite postgres}; do
    echo "== ganglion-load --spawn $backend ==" >&2
    if ! "$load" --spawn "$backend" --users 100 --rooms 20 --senders 8 \
        --duration 30s --warmup 5s "$@"; then
        echo "== $backend run failed ==" >&2
        status=1
    fi
    echo
done
exit "$status"
