#!/bin/bash
# Runs the benchmark set of docs/benchmarks.md on a fresh local 3-node cluster and
# prints each mode's table: latency (40 msg/s and 4 msg/s, with the single-writer
# and the shared-disk floor), throughput (window 4 and 16, batched and not),
# fanout (2,000 and 10,000 members) and connections (N sessions, default
# rx_buffer and 512).  Several minutes; nothing here asserts a number.
#
#   scripts/bench-all.sh [BUILD_DIR] [--quick]
#
# BUILD_DIR defaults to build/ (make build).  --quick runs every mode once,
# small.  The cluster lives in a temporary directory on ports 8110..8303 (the
# local-3 ports + 1000), with the raised gateway.rate limits and a cheap scrypt
# that benchmarks need (docs/benchmarks.md, "Rate limits"); it is stopped at the
# end, also on Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
quick=0
for a in "$@"; do
    case $a in
    --quick) quick=1 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) build=$(cd "$a" && pwd) ;;
    esac
done
ctl=$build/chorusctl
bench=$build/chorus-bench
for b in "$ctl" "$bench" "$build/chorusd"; do
    [ -x "$b" ] || { echo "bench-all: $b not found (make build, or give BUILD_DIR)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/chorus-bench-all-XXXXXX)
dir=$work/cluster
cleanup() { "$ctl" --dir "$dir" local down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# cluster-conf/local-3.json with ports + 1000, raised limits, cheap scrypt; extra
# gateway keys come as JSON on the command line
make_conf() {
    python3 - "$here/cluster-conf/local-3.json" "$1" "$2" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "bench-3"
for n in c["nodes"]:
    for k in ("raft", "client", "gateway"):
        h, p = n[k].rsplit(":", 1)
        n[k] = "%s:%d" % (h, int(p) + 1000)
c["gateway"] = {"rate": {"send_per_s": 100000, "send_burst": 100000,
                         "login_per_s": 100000, "login_burst": 100000}}
c["gateway"].update(json.loads(sys.argv[3]))
c["auth"]["scrypt_log2_n"] = 10
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF
}

up() { # up EXTRA_GATEWAY_JSON: a fresh cluster
    "$ctl" --dir "$dir" local down >/dev/null 2>&1 || true
    rm -rf "$dir"
    make_conf "$work/bench.json" "$1"
    "$ctl" --dir "$dir" --config "$work/bench.json" local up --bin "$build/chorusd" >/dev/null
}

gw="--gateway 127.0.0.1:8301 --gateway 127.0.0.1:8302 --gateway 127.0.0.1:8303"
say() { printf '\n### %s\n' "$*"; }

if [ $quick = 1 ]; then
    lat_n=200 slow_n=20 dur=3 fan_small=200 fan_big=1000 conns=2000
else
    lat_n=2000 slow_n=300 dur=10 fan_small=2000 fan_big=10000 conns=19000
fi

up '{}'
say "latency: $lat_n messages at 40/s, floor with one writer, then three"
"$bench" latency --gateway 127.0.0.1:8301 --gateway2 127.0.0.1:8302 --count "$lat_n" \
    --rate 40 --floor-data "$dir" || true
"$bench" latency --gateway 127.0.0.1:8301 --gateway2 127.0.0.1:8302 --count "$lat_n" \
    --rate 40 --floor-data "$dir" --fsync-writers 3 || true
say "latency: $slow_n messages at 4/s (sparse traffic), shared-disk floor"
"$bench" latency --gateway 127.0.0.1:8301 --gateway2 127.0.0.1:8302 --count "$slow_n" \
    --rate 4 --floor-data "$dir" --fsync-writers 3 || true

for w in 4 16; do
    for frames in "" --no-batch; do
        up '{}'
        say "throughput: 64 connections, 64 conversations, window $w ${frames:-(batched)}"
        # shellcheck disable=SC2086
        "$bench" throughput $gw --connections 64 --convs 64 --window "$w" \
            --duration "$dur" $frames || true
    done
done

for g in "$fan_small" "$fan_big"; do
    up '{}'
    say "fanout: $g members"
    # shellcheck disable=SC2086
    "$bench" fanout $gw --members "$g" --repeats 10 || true
done

for rx in '{}' '{"rx_buffer": 512}'; do
    up "$rx"
    say "connections: $conns sessions on gateway 1, gateway $rx"
    pid=$(cat "$dir/node-1.pid")
    "$bench" connections --gateway 127.0.0.1:8301 --pid "$pid" --connections "$conns" \
        --duration "$dur" || true
done
