#!/usr/bin/env bash
# The exchange's main job on one machine: a local 3-node cluster and a broker flow through it,
# including the crash of the leader.
#
# Builds (release), makes development certificates, starts three nodes on loopback (Raft on
# 127.0.0.1:7001-7003, brokers on 7101-7103, data in a temporary directory), creates a market
# and two accounts, trades, kills the leader with SIGKILL, keeps trading through the new leader,
# restarts the dead node, shows that all three agree (same output hash at the same index), and
# stops everything. Then the engine alone: its benchmark and a replay of real NASDAQ data.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${EXCHANGE_DATA:-}" ]; then
  EXCHANGE_DATA=$(mktemp -d -t exchange-demo.XXXXXX)
  made_data=1
fi
export EXCHANGE_DATA
cleanup() {
  scripts/cluster.sh down >/dev/null 2>&1 || true
  if [ -n "${made_data:-}" ]; then rm -rf "$EXCHANGE_DATA"; fi
}
trap cleanup EXIT

cli=target/release/exchange-cli
say() { echo; echo "== $*"; }
run() { echo "\$ exchange-cli $*"; "$cli" "$@"; }

say "starting a 3-node cluster (data in $EXCHANGE_DATA)"
scripts/cluster.sh up 3

say "a market: symbol 1 trades asset 1 (shares) against asset 2 (cents); two funded accounts"
run admin add-symbol --symbol 1 --base 1 --quote 2 --tick-size 1 --lot-size 1
for account in 1 2; do
  run admin create-account --account $account
  run admin deposit --account $account --asset 1 --amount 10000
  run admin deposit --account $account --asset 2 --amount 10000000
done

say "a broker flow: resting orders, a crossing order that trades, a cancel"
run order new --account 1 --symbol 1 --side sell --price 10050 --qty 300
run order new --account 1 --symbol 1 --side sell --price 10040 --qty 200
run order new --account 2 --symbol 1 --side buy --price 10000 --qty 500 --client-order-id 7
run order new --account 2 --symbol 1 --side buy --price 10045 --qty 250 --tif ioc
run order mass-cancel --account 2

leader=$("$cli" status --json | python3 -c 'import json,sys; print([n["status"]["id"] for n in json.load(sys.stdin) if "status" in n and n["status"]["role"] == "leader"][0])')
say "killing the leader, node $leader, with SIGKILL"
scripts/cluster.sh kill "$leader"
run order new --account 2 --symbol 1 --side buy --price 10050 --qty 100
scripts/cluster.sh status

say "restarting node $leader: it catches up from the others"
scripts/cluster.sh start "$leader"
sleep 2
scripts/cluster.sh status

say "stopping the cluster"
scripts/cluster.sh down

say "the engine alone on a seeded stream of 1,000,000 commands"
"$cli" engine-bench

lobster=${LOBSTER_DATA:-../shared/data/lobster}
if [ -d "$lobster" ]; then
  say "real market data: LOBSTER AAPL, 10 levels, book compared after every event"
  "$cli" lobster-check "$lobster"/LOBSTER_AAPL_2012-06-21_level10_first998/*message_10.csv \
    "$lobster"/LOBSTER_AAPL_2012-06-21_level10_first998/*orderbook_10.csv --levels 10
else
  say "LOBSTER sample data not found at $lobster (set LOBSTER_DATA); skipping the replay"
fi
