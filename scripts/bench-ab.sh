#!/usr/bin/env bash
# A against B (docs/performance.md, "openraft 0.10"): two builds of the exchange, each on a
# fresh local 3-node cluster, alternating A, B, B, A, A, B... so that a machine's slow spell
# falls on both. Each cluster runs the same benches: one session closed loop (one order per
# request: the round trip at its floor), open loop at 2,000 and 10,000 orders/s, 200,000/s
# open loop for throughput; each bench also measures the floor (a QUIC round trip on loopback
# plus one fdatasync on the data disk). Prints one JSON report a run, prefixed with the build's
# name, the round and the bench's name; scripts/bench-ab-summary.py makes the table.
#
#   scripts/bench-ab.sh A_DIR B_DIR [ROUNDS]     # directories holding exchange-node and -cli
#   DURATION=5 BENCHES="closed1 open10k" scripts/bench-ab.sh ...
#   BENCH_CPUS=8-15 EXCHANGE_PIN_CORES=2,4,6 EXCHANGE_NODE_FLAGS="--idle spin" scripts/bench-ab.sh ...
#                                            # a many-core machine: the bench on cores of its own
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 A_DIR B_DIR [ROUNDS]" >&2; exit 2; }
a=$1 b=$2 rounds=${3:-3}
for dir in "$a" "$b"; do
  [ -x "$dir/exchange-node" ] && [ -x "$dir/exchange-cli" ] \
    || { echo "$dir: no exchange-node and exchange-cli there" >&2; exit 2; }
done
# A benchmark drives sessions harder than the limits sized for real brokers allow.
export EXCHANGE_SESSION_RATE=${EXCHANGE_SESSION_RATE:-1000000} EXCHANGE_BROKER_RATE=${EXCHANGE_BROKER_RATE:-1000000}
export EXCHANGE_DATA=${EXCHANGE_DATA:-/tmp/exchange-bench-ab} EXCHANGE_NO_BUILD=1
duration=${DURATION:-10}
benches=${BENCHES:-closed1 open2k open10k open200k}
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT

run_cluster() {
  local name=$1 dir=$2 round=$3 n=0 bench args
  export EXCHANGE_BIN_DIR=$dir
  scripts/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$EXCHANGE_DATA"
  scripts/cluster.sh up 3 >/dev/null
  sleep 1
  for bench in $benches; do
    n=$((n + 1))
    case $bench in
      closed1) args=(--sessions 1 --rate 0) ;;
      open2k) args=(--rate 2000) ;;
      open10k) args=(--rate 10000) ;;
      open200k) args=(--rate 200000) ;;
      *) echo "unknown bench $bench" >&2; exit 2 ;;
    esac
    echo "$name $round $bench $(${BENCH_CPUS:+taskset -c "$BENCH_CPUS"} "$dir/exchange-cli" bench --admin --json --duration "$duration" \
      --symbol $((900 + n)) --first-account $((900000 + n * 1000)) --first-broker $((100 + n * 20)) \
      --floor-dir "$EXCHANGE_DATA" "${args[@]}" 2>/dev/null || echo '{"failed":true}')"
  done
  scripts/cluster.sh down >/dev/null 2>&1 || true
}

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    run_cluster A "$a" "$round"; run_cluster B "$b" "$round"
  else
    run_cluster B "$b" "$round"; run_cluster A "$a" "$round"
  fi
done
