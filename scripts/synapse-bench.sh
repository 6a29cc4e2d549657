#!/usr/bin/env bash
# Runs ganglion-load against a throwaway Synapse, so that Ganglion and Synapse are measured side by
# side by the same tool in the same session.
#
# It installs Synapse from PyPI into a virtual environment under
# ${CARGO_TARGET_DIR:-target}/synapse-venv (reused when it already has the pinned version), writes
# a config into a temp dir (server_name localhost, one listener on a free 127.0.0.1 port, SQLite
# by default, registration open without verification, every rate limit raised out of reach, no
# trusted key server; presence, caches and logging as Synapse generates them), starts Synapse,
# waits for /_matrix/client/versions, runs
#     ganglion-load --url http://127.0.0.1:PORT --server-pid SYNAPSE_PID [shape flags] "$@"
# and stops Synapse (and its PostgreSQL) when it ends, however it ends.
#
# Usage: scripts/synapse-bench.sh [ganglion-load flags]
#   SHAPE=medium scripts/synapse-bench.sh              # issue 10's medium workload (see below)
#   scripts/synapse-bench.sh --users 20 --rooms 4 --rooms-per-user 2 --syncing-users 10 \
#       --senders 2 --duration 10s --warmup 2s --timeline-limit 100 --lazy-load-members
# Environment:
#   SHAPE=medium: 200 users in 40 rooms, 10 rooms each (50 members a room), 100 of them
#     long-polling /sync with a timeline limit of 100 and lazy-loaded members, 16 closed-loop
#     senders, 60 s measured after a 10 s warm-up. The same as `SHAPE=medium scripts/bench.sh`.
#   USERS, ROOMS, ROOMS_PER_USER, SYNCING_USERS, SENDERS, DURATION, WARMUP, DRAIN, TIMELINE_LIMIT,
#     LAZY_LOAD_MEMBERS=1: the workload, each overriding SHAPE's value; unset ones are left to
#     ganglion-load's defaults (100 users, 20 rooms, 3 each, 8 senders, 30 s after 5 s: the same
#     as scripts/bench.sh's). A flag may not be given twice, so set these rather than repeat
#     them as flags.
#   SYNAPSE_VERSION (default 1.163.2, the newest on PyPI when this was written); PYTHON (default
#     python3) makes the virtual environment. Needs curl.
#   SYNAPSE_DB=postgres: Synapse on a throwaway PostgreSQL (initdb into the temp dir, default
#     durability, run as the `postgres` user when root; psycopg2-binary is added to the venv);
#     its CPU is reported through --database-pid. Default: SQLite.
#   SYNAPSE_LOG_LEVEL (default INFO, as generated): the root log level; Synapse logs every request
#     at INFO, which costs it CPU.
#   KEEP_SYNAPSE_DIR=1: keep the temp dir (config, homeserver.log) and say where it is.
#   LOAD_BIN: a ganglion-load binary to use instead of building the release one.
set -euo pipefail

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
target_dir="$(cd "$target_dir" && pwd)"
synapse_version="${SYNAPSE_VERSION:-1.163.2}"
venv="$target_dir/synapse-venv"
python="${PYTHON:-python3}"

say() { echo "== synapse-bench: $* ==" >&2; }

# 1. Synapse, from PyPI, in its own venv.
installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' \
    2>/dev/null || true)"
if [ "$installed" != "$synapse_version" ]; then
    say "installing matrix-synapse==$synapse_version into $venv"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "matrix-synapse==$synapse_version"
fi
if [ "${SYNAPSE_DB:-sqlite}" = postgres ] && ! "$venv/bin/python" -c 'import psycopg2' 2>/dev/null; then
    say "installing psycopg2-binary into $venv"
    "$venv/bin/python" -m pip install --quiet psycopg2-binary
fi

# 2. The load tool.
if [ -n "${LOAD_BIN:-}" ]; then
    load="$LOAD_BIN"
else
    cargo build --release -p ganglion-loadtool
    load="$target_dir/release/ganglion-load"
fi

# 3. A temp dir for the config, the data and the logs; everything started is stopped on exit.
work="$(mktemp -d -t synapse-bench.XXXXXX)"
synapse_pid=""
postgres_pid=""
cleanup() {
    local status=$?
    if [ -n "$synapse_pid" ] && kill -0 "$synapse_pid" 2>/dev/null; then
        kill -TERM "$synapse_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$synapse_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$synapse_pid" 2>/dev/null || true
    fi
    if [ -z "$postgres_pid" ] && [ -f "$work/pg/data/postmaster.pid" ]; then
        postgres_pid="$(head -n 1 "$work/pg/data/postmaster.pid")"
    fi
    if [ -n "$postgres_pid" ] && kill -0 "$postgres_pid" 2>/dev/null; then
        # SIGINT: PostgreSQL's fast shutdown.
        kill -INT "$postgres_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$postgres_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$postgres_pid" 2>/dev/null || true
    fi
    if [ "${KEEP_SYNAPSE_DIR:-}" = 1 ]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# 4. PostgreSQL, if asked for.
database_flags=()
if [ "${SYNAPSE_DB:-sqlite}" = postgres ]; then
    pg_bin="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
    [ -n "$pg_bin" ] || pg_bin="$(dirname "$(readlink -f "$(command -v postgres)")")"
    as_postgres=()
    if [ "$(id -u)" = 0 ]; then
        # PostgreSQL refuses to run as root.
        as_postgres=(runuser -u postgres --)
        chmod 755 "$work"
    fi
    mkdir "$work/pg"
    [ "$(id -u)" != 0 ] || chown postgres: "$work/pg"
    (cd "$work/pg" && "${as_postgres[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C --no-sync) >"$work/pg/initdb.log"
    pg_port="$(free_port)"
    (cd "$work/pg" && exec "${as_postgres[@]}" "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=100) \
        >"$work/pg/postgres.log" 2>&1 &
    runner_pid=$!
    for attempt in $(seq 150); do
        "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
        if ! kill -0 "$runner_pid" 2>/dev/null || [ "$attempt" = 150 ]; then
            say "PostgreSQL did not come up"
            tail -n 20 "$work/pg/postgres.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    # runuser forks, so the postmaster's PID comes from its pid file.
    postgres_pid="$(head -n 1 "$work/pg/data/postmaster.pid")"
    # Synapse wants a C-collated UTF-8 database.
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres --encoding=UTF8 --locale=C \
        --template=template0 synapse
    database_flags=(--database-pid "$postgres_pid")
    say "PostgreSQL pid $postgres_pid on 127.0.0.1:$pg_port"
fi

# 5. Synapse's config: generated, then edited.
port="$(free_port)"
# From inside the temp dir: the generated log config writes homeserver.log to the current one.
(cd "$work" && "$venv/bin/python" -m synapse.app.homeserver --server-name localhost \
    --config-path "$work/homeserver.yaml" --data-directory "$work/data" \
    --generate-config --report-stats=no >/dev/null)
mkdir -p "$work/data"
SYNAPSE_PORT="$port" PG_PORT="${pg_port:-}" WORK="$work" "$venv/bin/python" - <<'PYTHON'
import glob
import os

import yaml

work = os.environ["WORK"]
path = os.path.join(work, "homeserver.yaml")
with open(path) as file:
    config = yaml.safe_load(file)

config["listeners"] = [{
    "port": int(os.environ["SYNAPSE_PORT"]),
    "bind_addresses": ["127.0.0.1"],
    "type": "http",
    "tls": False,
    "x_forwarded": False,
    "resources": [{"names": ["client"], "compress": False}],
}]
config["enable_registration"] = True
config["enable_registration_without_verification"] = True
# Nothing leaves the machine: no key server to ask, no stats to report.
config["trusted_key_servers"] = []
config["suppress_key_server_warning"] = True
config["report_stats"] = False

# Every client-facing rate limit out of reach: the load comes from one address and a few users
# at thousands of requests a second.
unlimited = {"per_second": 1_000_000, "burst_count": 10_000_000}
for key in [
    "rc_message", "rc_registration", "rc_registration_token_validity", "rc_admin_redaction",
    "rc_joins_per_room", "rc_key_requests", "rc_3pid_validation", "rc_third_party_invite",
    "rc_media_create", "rc_delayed_event_mgmt", "rc_room_creation", "rc_reports",
    "rc_user_directory", "rc_profile",
]:
    config[key] = dict(unlimited)
config["rc_login"] = {part: dict(unlimited) for part in ["address", "account", "failed_attempts"]}
config["rc_joins"] = {part: dict(unlimited) for part in ["local", "remote"]}
config["rc_invites"] = {part: dict(unlimited) for part in ["per_room", "per_user", "per_issuer"]}
config["rc_presence"] = {"per_user": dict(unlimited)}

pg_port = os.environ.get("PG_PORT")
if pg_port:
    config["database"] = {
        "name": "psycopg2",
        "args": {
            "user": "postgres",
            "database": "synapse",
            "host": "127.0.0.1",
            "port": int(pg_port),
            "cp_min": 5,
            "cp_max": 10,
        },
    }

with open(path, "w") as file:
    yaml.safe_dump(config, file, sort_keys=False)

level = os.environ.get("SYNAPSE_LOG_LEVEL")
if level:
    for log_config_path in glob.glob(os.path.join(work, "*.log.config")):
        with open(log_config_path) as file:
            log_config = yaml.safe_load(file)
        log_config.setdefault("root", {})["level"] = level
        with open(log_config_path, "w") as file:
            yaml.safe_dump(log_config, file, sort_keys=False)
PYTHON

# 6. Synapse, in the background; its PID is the Python process itself.
say "starting Synapse $synapse_version ($( [ "${SYNAPSE_DB:-sqlite}" = postgres ] && echo PostgreSQL || echo SQLite)) on 127.0.0.1:$port"
(cd "$work" && exec "$venv/bin/python" -m synapse.app.homeserver --config-path "$work/homeserver.yaml") \
    >"$work/synapse.out" 2>&1 &
synapse_pid=$!
url="http://127.0.0.1:$port"
for attempt in $(seq 600); do
    if curl -fsS -o /dev/null "$url/_matrix/client/versions" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$synapse_pid" 2>/dev/null || [ "$attempt" = 600 ]; then
        say "Synapse did not come up; its output:"
        tail -n 30 "$work/synapse.out" >&2
        tail -n 30 "$work/homeserver.log" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 0.2
done
say "Synapse pid $synapse_pid answers at $url"

# 7. The workload.
case "${SHAPE:-}" in
    "") ;;
    medium)
        : "${USERS:=200}" "${ROOMS:=40}" "${ROOMS_PER_USER:=10}" "${SYNCING_USERS:=100}"
        : "${SENDERS:=16}" "${DURATION:=60s}" "${WARMUP:=10s}" "${TIMELINE_LIMIT:=100}"
        : "${LAZY_LOAD_MEMBERS:=1}"
        ;;
    *) say "unknown SHAPE=$SHAPE (known: medium)"; exit 2 ;;
esac
shape=()
[ -z "${USERS:-}" ] || shape+=(--users "$USERS")
[ -z "${ROOMS:-}" ] || shape+=(--rooms "$ROOMS")
[ -z "${ROOMS_PER_USER:-}" ] || shape+=(--rooms-per-user "$ROOMS_PER_USER")
[ -z "${SYNCING_USERS:-}" ] || shape+=(--syncing-users "$SYNCING_USERS")
[ -z "${SENDERS:-}" ] || shape+=(--senders "$SENDERS")
[ -z "${DURATION:-}" ] || shape+=(--duration "$DURATION")
[ -z "${WARMUP:-}" ] || shape+=(--warmup "$WARMUP")
[ -z "${DRAIN:-}" ] || shape+=(--drain "$DRAIN")
[ -z "${TIMELINE_LIMIT:-}" ] || shape+=(--timeline-limit "$TIMELINE_LIMIT")
[ "${LAZY_LOAD_MEMBERS:-}" != 1 ] || shape+=(--lazy-load-members)

say "ganglion-load --url $url --server-pid $synapse_pid ${database_flags[*]} ${shape[*]} $*"
"$load" --url "$url" --server-pid "$synapse_pid" "${database_flags[@]}" "${shape[@]}" "$@"
