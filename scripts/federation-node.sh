#!/usr/bin/env bash
# Starts or stops an embedded Ganglion for a test federation on this machine.
#
#   scripts/federation-node.sh start DIR CLIENT_PORT FED_PORT
#   scripts/federation-node.sh stop DIR
#
# `start` runs one `role = "all"` process with server name 127.0.0.1:FED_PORT: the client API on
# plain HTTP at 127.0.0.1:CLIENT_PORT, federation over TLS at 127.0.0.1:FED_PORT with a
# self-signed certificate, peers' certificates not verified, loopback peers allowed, open
# registration and no rate limits. Its data (SQLite, keys, certificate, media) stays in DIR across
# restarts; its config is DIR/ganglion.toml and its log DIR/ganglion.log. It returns once both
# listeners serve. `stop` returns once the process is gone.
#
# The binary is $GANGLION_BIN when set, else the release build (built first if missing).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR CLIENT_PORT FED_PORT | stop DIR" >&2
    exit 2
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

binary() {
    if [[ -n "${GANGLION_BIN:-}" ]]; then
        echo "$GANGLION_BIN"
        return
    fi
    local target="${CARGO_TARGET_DIR:-$repo/target}"
    if [[ ! -x "$target/release/ganglion" ]]; then
        (cd "$repo" && cargo build --release -p ganglion >&2)
    fi
    echo "$target/release/ganglion"
}

# Waits (at most 60 s) until `curl ARGS` succeeds.
wait_for() {
    for _ in $(seq 1 600); do
        if curl -sf -o /dev/null --max-time 2 "$@"; then
            return 0
        fi
        if [[ -n "${pid:-}" ]] && ! kill -0 "$pid" 2>/dev/null; then
            echo "ganglion exited; the end of its log:" >&2
            tail -n 30 "$dir/ganglion.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "timed out waiting for $*" >&2
    return 1
}

start() {
    [[ $# -eq 3 ]] || usage
    dir="$1" client_port="$2" fed_port="$3"
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"
    if [[ -f "$dir/ganglion.pid" ]] && kill -0 "$(cat "$dir/ganglion.pid")" 2>/dev/null; then
        echo "already running (pid $(cat "$dir/ganglion.pid"))" >&2
        exit 1
    fi
    cat >"$dir/ganglion.toml" <<EOF
# Written by scripts/federation-node.sh: a node of a test federation on loopback.
server_name = "127.0.0.1:$fed_port"
data_dir = "$dir/data"

[http]
listen = "127.0.0.1:$client_port"

[registration]
enabled = true

[rate_limits]
enabled = false

[federation]
listen = "127.0.0.1:$fed_port"
verify_certificates = false
allowed_address_ranges = ["127.0.0.0/8", "::1/128"]
EOF
    local bin
    bin="$(binary)"
    nohup "$bin" run --config "$dir/ganglion.toml" >>"$dir/ganglion.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/ganglion.pid"
    wait_for "http://127.0.0.1:$client_port/_matrix/client/versions"
    wait_for -k "https://127.0.0.1:$fed_port/_matrix/key/v2/server"
    echo "ganglion serves 127.0.0.1:$fed_port (client API http://127.0.0.1:$client_port, pid $pid)"
}

stop() {
    [[ $# -eq 1 ]] || usage
    dir="$1"
    local pidfile="$dir/ganglion.pid"
    [[ -f "$pidfile" ]] || { echo "not running (no $pidfile)"; return 0; }
    local pid
    pid="$(cat "$pidfile")"
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    fi
    rm -f "$pidfile"
    echo "stopped"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) usage ;;
esac
