#!/usr/bin/env bash
# Two embedded Ganglions that find each other by name, as servers on the internet do: run
# inside fresh network and mount namespaces (`unshare --net --mount`), with dnsmasq answering
# for the names through /etc/resolv.conf (bind-mounted, in this mount namespace only).
#
#   alpha.test  A 127.0.0.2; https://alpha.test/.well-known/matrix/server (served by alpha on
#               127.0.0.2:443) delegates to alpha.test:443.
#   beta.test   no well-known (nothing on 127.0.0.3:443); SRV _matrix-fed._tcp.beta.test points
#               at beta-host.test:8449 (A 127.0.0.3), where beta's federation listener is.
#
# usage: by-name.sh GANGLION_BINARY WORK_DIR
# Exits 0 once profiles, a join and a message have crossed both ways; prints why otherwise.
set -euo pipefail

bin="$1" work="$2"
mkdir -p "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
fail() {
    echo "FAILED: $*" >&2
    for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 40 "$log" >&2; done
    exit 1
}

ip link set lo up
echo "nameserver 127.0.0.1" >"$work/resolv.conf"
mount --bind "$work/resolv.conf" /etc/resolv.conf
: >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts

dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --user=root --pid-file= \
    --listen-address=127.0.0.1 --bind-interfaces --port=53 \
    --host-record=alpha.test,127.0.0.2 \
    --host-record=beta.test,127.0.0.3 \
    --host-record=beta-host.test,127.0.0.3 \
    --srv-host=_matrix-fed._tcp.beta.test,beta-host.test,8449,0,10 \
    --log-queries --log-facility="$work/dnsmasq.log" &
pids+=($!)

node() {
    local name="$1" address="$2" federation="$3" extra="$4"
    mkdir -p "$work/$name"
    cat >"$work/$name/ganglion.toml" <<EOF
server_name = "$name.test"
data_dir = "$work/$name/data"

[http]
listen = "$address:8008"

[registration]
enabled = true

[rate_limits]
enabled = false

[federation]
listen = "$federation"
verify_certificates = false
allowed_address_ranges = ["127.0.0.0/8"]
$extra
EOF
    "$bin" run --config "$work/$name/ganglion.toml" >>"$work/$name.log" 2>&1 &
    pids+=($!)
}
node alpha 127.0.0.2 127.0.0.2:443 'well_known_server = "alpha.test:443"'
node beta 127.0.0.3 127.0.0.3:8449 ''

# curl METHOD URL [BODY] with the token in $token, if any; the body of the answer.
call() {
    local args=(-sS --max-time 30 -X "$1" "$2" -H 'Content-Type: application/json')
    [[ -n "${token:-}" ]] && args+=(-H "Authorization: Bearer $token")
    [[ $# -ge 3 ]] && args+=(--data "$3")
    curl "${args[@]}"
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }

for address in 127.0.0.2 127.0.0.3; do
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "http://$address:8008/_matrix/client/versions" && break
        sleep 0.1
    done
done
well_known="$(curl -sk --max-time 10 https://alpha.test/.well-known/matrix/server)" || fail "no well-known"
[[ "$well_known" == *'"alpha.test:443"'* ]] || fail "alpha's well-known: $well_known"

register() {
    local answer
    answer="$(token='' call POST "http://$1:8008/_matrix/client/v3/register" \
        "{\"username\": \"$2\", \"password\": \"password-$2\", \"auth\": {\"type\": \"m.login.dummy\"}}")"
    echo "$answer" | field access_token
}
alice="$(register 127.0.0.2 alice)"
bob="$(register 127.0.0.3 bob)"
[[ -n "$alice" && -n "$bob" ]] || fail "registration"
token="$alice" call PUT "http://127.0.0.2:8008/_matrix/client/v3/profile/@alice:alpha.test/displayname" \
    '{"displayname": "Alice of alpha"}' >/dev/null
token="$bob" call PUT "http://127.0.0.3:8008/_matrix/client/v3/profile/@bob:beta.test/displayname" \
    '{"displayname": "Bob of beta"}' >/dev/null

# alpha finds beta by SRV, beta finds alpha by its well-known; each checks the other's keys.
name="$(token="$alice" call GET "http://127.0.0.2:8008/_matrix/client/v3/profile/@bob:beta.test" | field displayname)"
[[ "$name" == "Bob of beta" ]] || fail "alpha's view of bob: '$name'"
name="$(token="$bob" call GET "http://127.0.0.3:8008/_matrix/client/v3/profile/@alice:alpha.test" | field displayname)"
[[ "$name" == "Alice of alpha" ]] || fail "beta's view of alice: '$name'"

room="$(token="$alice" call POST "http://127.0.0.2:8008/_matrix/client/v3/createRoom" '{"preset": "public_chat"}' | field room_id)"
[[ -n "$room" ]] || fail "createRoom"
room_path="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$room")"
joined="$(token="$bob" call POST "http://127.0.0.3:8008/_matrix/client/v3/join/$room_path?server_name=alpha.test" '{}' | field room_id)"
[[ "$joined" == "$room" ]] || fail "bob's join: '$joined'"
token="$bob" call PUT "http://127.0.0.3:8008/_matrix/client/v3/rooms/$room_path/send/m.room.message/1" \
    '{"msgtype": "m.text", "body": "found you by name"}' >/dev/null
for _ in $(seq 1 100); do
    if token="$alice" call GET "http://127.0.0.2:8008/_matrix/client/v3/rooms/$room_path/messages?dir=b&limit=10" \
        | grep -q '"found you by name"'; then
        grep -q "_matrix-fed._tcp.beta.test" "$work/dnsmasq.log" || fail "no SRV query reached dnsmasq"
        echo "discovered by name both ways"
        exit 0
    fi
    sleep 0.2
done
fail "alice never saw bob's message"
