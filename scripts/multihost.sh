#!/usr/bin/env bash
# Two load hosts and a server on one machine, with network namespaces.
#
# Three namespaces: "srv" holds a bridge and the server (10.77.0.1), "d1" and
# "d2" are the load hosts (10.77.0.2, 10.77.0.3), each joined to the bridge
# by a veth pair. The addresses exist inside these namespaces only; the
# machine's own network is not touched. Both drivers are launched with the
# same --start-at a few seconds ahead, as ssh or pdsh would launch them on
# two hosts, each with its share of the rate (--driver 1/2 and 2/2); then
# `socklab merge` makes them one run, and the script checks that
#   - the merged rate is the requested rate within 2%,
#   - the two runs started within 50 ms of each other,
#   - Python's hdrhistogram package (another HdrHistogram implementation,
#     installed into a venv in a temp dir) reads socklab's histograms and
#     interval log with the same counts and percentiles.
# Everything it makes (namespaces, processes, files) goes on every exit.
#
# Needs root (ip netns), python3 with venv, and PyPI for the package.
# Usage: sudo scripts/multihost.sh   (RATE, DURATION, CLIENTS, AHEAD, SOCKLAB to change)

set -euo pipefail

RATE=${RATE:-1000}          # requests per second in total, both drivers
DURATION=${DURATION:-5s}    # how long each driver runs
CLIENTS=${CLIENTS:-4}       # connections per driver
AHEAD=${AHEAD:-3}           # seconds between launching the drivers and their start
SOCKLAB=${SOCKLAB:-}
NET=10.77.0                 # a private test range, inside the namespaces only
PORT=7000
NS_PREFIX="socklab$$"
SRV="${NS_PREFIX}srv" D1="${NS_PREFIX}d1" D2="${NS_PREFIX}d2"

here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/socklab-multihost.XXXXXX)
pids=()

cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for ns in "$D1" "$D2" "$SRV"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
    if [ "$status" -eq 0 ]; then
        echo "multihost: ok"
    else
        echo "multihost: FAILED (exit $status)" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "multihost: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "needs root for ip netns"
if [ -z "$SOCKLAB" ]; then
    (cd "$here" && cargo build --quiet)
    SOCKLAB="$here/target/debug/socklab"
fi
[ -x "$SOCKLAB" ] || fail "no socklab binary at $SOCKLAB"

echo "== network: $SRV (bridge, server $NET.1), $D1 ($NET.2), $D2 ($NET.3)"
ip netns add "$SRV"
ip netns add "$D1"
ip netns add "$D2"
ip -n "$SRV" link add br0 type bridge
ip -n "$SRV" addr add "$NET.1/24" dev br0
n=2
for ns in "$D1" "$D2"; do
    ip link add "v$n" netns "$SRV" type veth peer name eth0 netns "$ns"
    ip -n "$SRV" link set "v$n" master br0 up
    ip -n "$ns" addr add "$NET.$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    n=$((n + 1))
done
ip -n "$SRV" link set lo up
ip -n "$SRV" link set br0 up

echo "== server in $SRV"
ip netns exec "$SRV" "$SOCKLAB" serve --model epoll --service echo \
    --listen "tcp:$NET.1:$PORT" >"$work/serve.out" 2>"$work/serve.err" &
pids+=($!)
for _ in $(seq 100); do
    grep -q '^listening on ' "$work/serve.out" && break
    sleep 0.05
done
grep -q '^listening on ' "$work/serve.out" || fail "the server did not start: $(cat "$work/serve.err")"
cat "$work/serve.out"
# The bridge forwards once its ports are up: one echo from each side says so.
for ns in "$D1" "$D2"; do
    ok=
    for _ in $(seq 20); do
        if [ "$(ip netns exec "$ns" "$SOCKLAB" send "tcp:$NET.1:$PORT" --timeout 1s ping 2>/dev/null)" = ping ]; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [ -n "$ok" ] || fail "$ns cannot reach $NET.1:$PORT"
done

start=$(($(date +%s) + AHEAD))
echo "== drivers in $D1 and $D2: $RATE/s in total for $DURATION, --start-at $start"
# Started directly (no subshell), so that the pids are timeout's, which
# passes the cleanup's SIGTERM on to the driver.
drivers=()
for k in 1 2; do
    ns=$D1
    [ "$k" -eq 2 ] && ns=$D2
    timeout 120 ip netns exec "$ns" "$SOCKLAB" bench "tcp:$NET.1:$PORT" \
        --rate "$RATE" --driver "$k/2" --start-at "$start" --duration "$DURATION" \
        --clients "$CLIENTS" --size 64 --expect echo --json --quiet \
        --hdr-log "$work/d$k.hlog" >"$work/d$k.json" &
    drivers+=($!)
    pids+=($!)
done
d1=${drivers[0]} d2=${drivers[1]}
wait "$d1" || fail "driver 1/2 failed"
wait "$d2" || fail "driver 2/2 failed"
for k in 1 2; do
    jq -r '"driver \(.driver): \(.requests) requests, \(.replies) replies, started \(.started_at), \(.throughput_rps|floor)/s, p99 \(.latency_us.p99) µs"' "$work/d$k.json"
done

echo "== socklab merge"
"$SOCKLAB" merge "$work/d1.json" "$work/d2.json"
"$SOCKLAB" merge --json "$work/d1.json" "$work/d2.json" >"$work/merged.json"

echo "== checks"
python3 - "$work/merged.json" "$RATE" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
rate = float(sys.argv[2])
off = abs(m["throughput_rps"] - rate) / rate * 100
print(f"merged rate {m['throughput_rps']:.1f}/s, requested {rate:.0f}/s: {off:.2f}% off (at most 2%)")
print(f"starts {m['start_spread_ms']:.3f} ms apart (at most 50 ms)")
assert off <= 2.0, "merged rate off by more than 2%"
assert m["start_spread_ms"] <= 50.0, "the runs did not start within 50 ms"
EOF

echo "== Python's hdrhistogram reads socklab's histograms"
python3 -m venv "$work/venv"
timeout 300 "$work/venv/bin/pip" install --quiet --disable-pip-version-check hdrhistogram
"$work/venv/bin/python" - "$work" <<'EOF'
import json, math, sys
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

work = sys.argv[1]
runs = {name: json.load(open(f"{work}/{name}.json")) for name in ("d1", "d2", "merged")}
decoded = {name: HdrHistogram.decode(r["histogram"]) for name, r in runs.items()}

# Two rank rules: HdrHistogram's reference (Java, and socklab): the first
# value with ceil(p% of n) at or below it; this package's own
# get_value_at_percentile: p% of n rounded half up. Where they pick the same
# rank, the package's own answer must be socklab's; the reference rule is
# also computed here from the package's decoded counts, for every row.
def reference_rank(p, n):
    return max(1, math.ceil(math.nextafter(p, -math.inf) * n / 100))

def package_rank(p, n):
    return max(1, int(p * n / 100 + 0.5))

def at_rank(h, rank):
    for item in h.get_recorded_iterator():
        if item.total_count_to_this_value >= rank:
            return h.get_highest_equivalent_value(item.value_iterated_to)
    return h.get_max_value()

def check(name, h, report):
    n = h.get_total_count()
    assert n == report["replies"], (name, n, report["replies"])
    shown, notes = [], []
    for row in report["percentiles_us"]:
        p, us = row["percentile"], row["latency_us"]
        ref = at_rank(h, reference_rank(p, n))
        assert ref == us, (name, p, us, ref)
        own = h.get_value_at_percentile(p)
        if package_rank(p, n) == reference_rank(p, n):
            assert own == us, (name, p, us, own)
        else:
            notes.append(f"p{p:g}: the package rounds to rank {package_rank(p, n)}, not {reference_rank(p, n)}")
        shown.append(f"p{p:g} {us}")
    print(f"{name}: count {n} = replies; {', '.join(shown)}: same in Python"
          + "".join(f"\n  note {x}" for x in notes))

for name in ("d1", "d2", "merged"):
    check(name, decoded[name], runs[name])

# Python's own sum of the two runs is socklab's merged histogram.
both = HdrHistogram(1, 3_600_000_000, 3)
both.add(decoded["d1"])
both.add(decoded["d2"])
check("d1+d2 added in Python", both, runs["merged"])

# The interval logs: one histogram a second, every reply in one of them.
for name in ("d1", "d2"):
    reader = HistogramLogReader(f"{work}/{name}.hlog", HdrHistogram(1, 3_600_000_000, 3))
    seconds, count = 0, 0
    while (h := reader.get_next_interval_histogram()) is not None:
        seconds += 1
        count += h.get_total_count()
    print(f"{name}.hlog: {seconds} intervals, {count} latencies")
    assert count == runs[name]["replies"], (count, runs[name]["replies"])
EOF
