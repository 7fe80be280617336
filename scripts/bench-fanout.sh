#!/usr/bin/env bash
# The cost of market data fan-out to the order path (docs/performance.md, "Fan-out"): one local
# 3-node cluster, and `exchange-cli bench --rate R` alternating without subscribers, with 100
# native subscribers (book and trades, on the leader) and with 100 WebSocket subscribers of a
# follower, the web console open in headless Chromium on the follower during the subscriber
# runs. Prints one JSON report a run, each prefixed with its name.
#
#   scripts/bench-fanout.sh                 # rates 5000 and 10000, 3 rounds
#   RATES=5000 ROUNDS=1 NICE_TOO=1 scripts/bench-fanout.sh
#                                            # also the subscribers at nice 19
set -euo pipefail
cd "$(dirname "$0")/.."
# A benchmark drives sessions harder than the limits sized for real brokers allow.
export EXCHANGE_SESSION_RATE=${EXCHANGE_SESSION_RATE:-1000000} EXCHANGE_BROKER_RATE=${EXCHANGE_BROKER_RATE:-1000000}
export EXCHANGE_DATA=${EXCHANGE_DATA:-/tmp/exchange-bench-fanout}
export EXCHANGE_NODES=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
command -v chromium >/dev/null || { echo "chromium is needed (apt-get install chromium)" >&2; exit 1; }
scripts/cluster.sh down >/dev/null 2>&1 || true
rm -rf "$EXCHANGE_DATA"
profile=$(mktemp -d)
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; pkill -f "$profile" || true; rm -rf "$profile"' EXIT
scripts/cluster.sh up 3 >/dev/null
sleep 2
follower=$(curl -s 127.0.0.1:8081/api/v1/cluster | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
print(next(n["status"]["http"] for n in nodes if n["status"] and n["status"]["role"] != "leader"))')
cli=target/release/exchange-cli
n=0
console_open() { chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$profile" "http://$follower/" >/dev/null 2>&1 & sleep 3; }
console_close() { pkill -f "$profile" || true; sleep 1; }
bench() {
  n=$((n + 1))
  echo "$1 $($cli bench --admin --json --duration "${DURATION:-10}" --symbol $((900 + n)) \
    --first-account $((900000 + n * 1000)) --first-broker $((100 + n * 20)) \
    --floor-dir "$EXCHANGE_DATA" "${@:2}" 2>/dev/null || echo '{"failed": true}')"
}
ws=(--ws-subscribers 100 --ws-url "ws://$follower/api/v1/ws")
for rate in ${RATES:-5000 10000}; do
  for _ in $(seq "${ROUNDS:-3}"); do
    bench "none-$rate" --rate "$rate"
    console_open; bench "native-$rate" --rate "$rate" --md-subscribers 100; console_close
    bench "none-$rate" --rate "$rate"
    console_open; bench "ws-$rate" --rate "$rate" "${ws[@]}"; console_close
    if [ -n "${NICE_TOO:-}" ]; then
      bench "none-$rate" --rate "$rate"
      console_open; bench "native-nice19-$rate" --rate "$rate" --md-subscribers 100 --subscribers-nice 19; console_close
      bench "none-$rate" --rate "$rate"
      console_open; bench "ws-nice19-$rate" --rate "$rate" "${ws[@]}" --subscribers-nice 19; console_close
    fi
  done
done
