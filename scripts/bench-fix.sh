#!/usr/bin/env bash
# FIX beside the native protocol (docs/performance.md, "FIX"): one local 3-node cluster, and
# alternating runs of `exchange-cli bench --sessions 1 --rate R` (native, one session) and
# `exchange-cli fix-bench --rate R` (one FIX session, broker 1 as BROKER1) at each rate. Prints
# one JSON report a run, each prefixed with its protocol and rate.
#
#   scripts/bench-fix.sh                     # rates 2000 and 10000, 3 rounds, 10 s each
#   RATES=2000 ROUNDS=1 DURATION=5 scripts/bench-fix.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# A benchmark drives sessions harder than the limits sized for real brokers allow.
export EXCHANGE_SESSION_RATE=${EXCHANGE_SESSION_RATE:-1000000} EXCHANGE_BROKER_RATE=${EXCHANGE_BROKER_RATE:-1000000}
export EXCHANGE_DATA=${EXCHANGE_DATA:-/tmp/exchange-bench-fix}
export EXCHANGE_NODES=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
scripts/cluster.sh down >/dev/null 2>&1 || true
rm -rf "$EXCHANGE_DATA"
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
scripts/cluster.sh up 3 >/dev/null
sleep 2
cli=target/release/exchange-cli
# The leader's FIX address, as its status names it.
fix=$($cli status --json 2>/dev/null | python3 -c '
import json, sys
print(next(n["status"]["fix"] for n in json.load(sys.stdin)
           if n.get("status") and n["status"]["role"] == "leader"))')
n=0
# A run that fails says why: the last line it wrote to stderr.
failed() {
  python3 -c 'import json, sys; print(json.dumps({"failed": True, "error": sys.argv[1]}))' \
    "$(tail -n 1 "$EXCHANGE_DATA/run-$n.err")"
}
native() {
  n=$((n + 1))
  echo "native-$1 $($cli bench --admin --json --sessions 1 --rate "$1" --duration "${DURATION:-10}" \
    --symbol $((900 + n)) --first-account $((900000 + n * 10)) --first-broker $((100 + n)) \
    --floor-dir "$EXCHANGE_DATA" 2>"$EXCHANGE_DATA/run-$n.err" || failed)"
}
fix_run() {
  n=$((n + 1))
  echo "fix-$1 $($cli fix-bench --admin --json --fix "$fix" --rate "$1" --duration "${DURATION:-10}" \
    --symbol $((900 + n)) 2>"$EXCHANGE_DATA/run-$n.err" || failed)"
}
for rate in ${RATES:-2000 10000}; do
  for _ in $(seq "${ROUNDS:-3}"); do
    native "$rate"
    fix_run "$rate"
  done
done
