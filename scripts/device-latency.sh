#!/usr/bin/env bash
# One prepared latency run on a many-core machine: a local 3-node cluster with each node's
# engine thread pinned to a core of its own (busy-polling), and `exchange-cli bench` on other
# cores. Uses prebuilt binaries from devbin/ (no cargo needed there). Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
# A benchmark drives sessions harder than the limits sized for real brokers allow.
export EXCHANGE_SESSION_RATE=${EXCHANGE_SESSION_RATE:-1000000} EXCHANGE_BROKER_RATE=${EXCHANGE_BROKER_RATE:-1000000}
mkdir -p target/release
cp devbin/exchange-node devbin/exchange-cli target/release/
export EXCHANGE_DATA=${EXCHANGE_DATA:-/tmp/exchange-latency} EXCHANGE_NO_BUILD=1
export EXCHANGE_PIN_CORES=2,4,6 EXCHANGE_NODE_FLAGS="--idle spin"
nproc
scripts/cluster.sh down >/dev/null 2>&1 || true
rm -rf "$EXCHANGE_DATA"
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
scripts/cluster.sh up 3 >/dev/null
cli=target/release/exchange-cli
n=0
bench() { n=$((n+1)); echo "$1 $(taskset -c 8-15 $cli bench --admin --json --duration 10 --symbol $((900+n)) --first-account $((900000+n*1000)) --first-broker $((100+n*20)) --floor-dir "$EXCHANGE_DATA" "${@:2}" 2>/dev/null)"; }
for i in 1 2 3; do bench open10k --rate 10000; done
bench closed1 --rate 0 --sessions 16
bench open50k --rate 50000
