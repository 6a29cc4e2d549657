#!/usr/bin/env bash
# Builds ganglion and ganglion-load in release mode and runs the issue's benchmark (100 users in
# 20 rooms, 8 concurrent senders, 30 s measured after a 5 s warm-up) against a throwaway server on
# each backend: SQLite (the embedded default), a throwaway PostgreSQL, and, when asked for, a
# throwaway cluster (PostgreSQL, Redis, master, sync workers, two client-readers, nginx).
#
# Usage: scripts/bench.sh [extra ganglion-load flags, e.g. --json or --timeline-limit 50]
# Environment:
#   BACKENDS="sqlite postgres" (the default) picks the backends; add `cluster` for a cluster.
#   SYNC_WORKERS=1|2 (default 2): the cluster's sync workers (--sync-workers).
#   USERS=100, ROOMS=20, SENDERS=8: the workload (a flag may not be given twice, so change these
#   here rather than in the extra flags).
#   DURATION=30s, WARMUP=5s: the measured window and the warm-up before it.
#
# Targets (from the issue): on SQLite >= 2,000 sends/s, send p99 < 20 ms, fan-out p99 < 15 ms,
# RSS < 100 MiB; on PostgreSQL >= 1,000 sends/s; on a cluster, replication lag p99 < 10 ms at
# 1,000 events/s. Each run prints its figures against them.
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
    cluster_flags=()
    if [ "$backend" = cluster ]; then
        cluster_flags=(--sync-workers "${SYNC_WORKERS:-2}")
    fi
    echo "== ganglion-load --spawn $backend ${cluster_flags[*]} ==" >&2
    if ! "$load" --spawn "$backend" "${cluster_flags[@]}" \
        --users "${USERS:-100}" --rooms "${ROOMS:-20}" --senders "${SENDERS:-8}" \
        --duration "${DURATION:-30s}" --warmup "${WARMUP:-5s}" "$@"; then
        echo "== $backend run failed ==" >&2
        status=1
    fi
    echo
done
exit "$status"
