#!/usr/bin/env bash
# The test command. Installs what the tests need and is missing (Debian packages, when run as
# root), builds every target of the workspace, then runs every test: unit tests, the storage
# conformance tests and the black-box suite (real `ganglion` processes on SQLite and on a
# throwaway PostgreSQL that the testkit starts on a free port and stops when the tests end; the
# cluster tests add throwaway Redis and nginx processes the same way; the machine's own
# PostgreSQL and Redis are never used). Tools from the registries are installed on first use under
# the target dir: matrix-nio (target/nio-venv), moto (target/moto-venv) and Synapse
# (target/synapse-venv, the federation peer) from PyPI, ansible-core
# and supervisor (target/ansible-venv) for the playbook test, and Grafana's schema package with
# TypeScript from npm (target/grafana-schema) for the dashboard test.
#
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -p ganglion-tests -- sqlite`.
# Environment: CARGO_BUILD_JOBS and RUST_TEST_THREADS default to 2 (a 2-core machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have() { command -v "$1" >/dev/null 2>&1; }

# Debian package -> how to tell it is already there.
missing=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! have initdb; then
    # Only the server binaries are used (initdb, postgres, createdb, pg_isready).
    missing+=(postgresql)
fi
# The cluster tests start throwaway Redis and nginx processes from these packages.
have redis-server || missing+=(redis-server)
# scripts/federation-node.sh (run by the federation tests) waits for its listeners with curl.
have curl || missing+=(curl)
have nginx || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
# The media tests scan files with a throwaway clamd (its signatures written by the tests).
have clamd || [[ -x /usr/sbin/clamd ]] || missing+=(clamav-daemon)
have sigtool || missing+=(clamav)
# The metrics tests check every process's exposition with promtool; the dashboard tests run a
# Prometheus scraping a cluster.
have promtool || missing+=(prometheus)
# The load balancer tests run HAProxy in front of the cluster too.
have haproxy || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
# The discovery test answers for server names with dnsmasq, in network and mount namespaces of
# its own (unshare and ip: util-linux and iproute2).
have dnsmasq || [[ -x /usr/sbin/dnsmasq ]] || missing+=(dnsmasq-base)
have unshare || missing+=(util-linux)
have ip || [[ -x /usr/sbin/ip ]] || missing+=(iproute2)
# The dashboard tests check the JSON against Grafana's schema package with Node.js (npm).
have npm || missing+=(npm)
# The interoperability tests install matrix-nio (PyPI) into a virtual environment.
have python3 || missing+=(python3)
if have python3 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if ((${#missing[@]})); then
    if [[ "$(id -u)" -eq 0 ]] && have apt-get; then
        echo "scripts/test.sh: installing ${missing[*]}" >&2
        if [[ " ${missing[*]} " == *" postgresql "* && ! -e /etc/postgresql-common/createcluster.conf ]]; then
            # We want the binaries, not a system cluster started on port 5432.
            mkdir -p /etc/postgresql-common
            echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
        fi
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            # Install the packages without starting their system services (port 80, 6379).
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "scripts/test.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
fi

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo --version
cargo build --workspace --all-targets
cargo test --workspace "$@"
