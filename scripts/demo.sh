#!/usr/bin/env bash
# The exchange's main job on one machine.
#
# Today it runs the matching engine: a small broker flow (every order type, cancels, an
# unknown cancel), the synthetic benchmark stream, and the replay of real NASDAQ data from
# LOBSTER. The local 3-node cluster with a broker flow replaces it as the replicated node lands.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building (release)"
cargo build --release --quiet --bin exchange-cli --bin exchange-node
cli=target/release/exchange-cli

echo
echo "== a broker flow through the engine (scripts/demo/orders.csv)"
"$cli" engine-replay scripts/demo/orders.csv --events target/demo-events.jsonl
echo "   every output event: target/demo-events.jsonl"

echo
echo "== the engine on a seeded stream of 1,000,000 commands"
"$cli" engine-bench

lobster=${LOBSTER_DATA:-../shared/data/lobster}
echo
if [ -d "$lobster" ]; then
  echo "== real market data: LOBSTER AAPL, 10 levels, book compared after every event"
  "$cli" lobster-check "$lobster"/LOBSTER_AAPL_2012-06-21_level10_first998/*message_10.csv \
    "$lobster"/LOBSTER_AAPL_2012-06-21_level10_first998/*orderbook_10.csv --levels 10
else
  echo "== LOBSTER sample data not found at $lobster (set LOBSTER_DATA); skipping the replay"
fi
