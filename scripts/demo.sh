#!/usr/bin/env bash
# The exchange's main job on one machine: a local 3-node cluster and a broker flow through it,
# including the crash of the leader.
#
# Builds (release), makes development certificates, starts three nodes on loopback (Raft on
# 127.0.0.1:7001-7003, brokers on 7101-7103, data in a temporary directory), creates a market,
# funds two brokers' accounts, trades as those brokers (with a resend and a refused account),
# kills the leader with SIGKILL, keeps trading through the new leader, restarts the dead node,
# shows that all three agree (same output hash at the same index), shows the market data and
# the reporting database, and stops everything. Then the engine alone: its benchmark and a replay of real NASDAQ data.
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
# Exit 1 is the exchange refusing a command, which the flow shows on purpose; anything else
# (3 unavailable, 4 outcome unknown, 2 usage) stops the demo.
run() {
  echo "\$ exchange-cli $*"
  local rc=0
  "$cli" "$@" || rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then exit $rc; fi
}

say "starting a 3-node cluster (data in $EXCHANGE_DATA)"
scripts/cluster.sh up 3

say "a market: AAPL (whole shares) trades against USD (2 decimals), prices to the cent"
echo "(--admin: log on as the operator, with the admin key of cluster/brokers.toml)"
run admin add-asset --admin --asset 1 --name AAPL --decimals 0
run admin add-asset --admin --asset 2 --name USD --decimals 2
run admin add-symbol --admin --symbol 1 --name AAPL --base AAPL --quote USD --price-decimals 2 --tick-size 0.01

# Brokers 1 and 2 of cluster/brokers.toml own accounts 1001 and 2001; the leader opens them
# when it takes office, so the first deposit may have to wait a moment for it.
deposit() {
  for _ in $(seq 50); do
    out=$("$cli" admin deposit --admin --account "$1" --asset "$2" --amount "$3" 2>&1) || true
    case "$out" in *"unknown account"*|*"cluster unavailable"*) sleep 0.1 ;; *) echo "\$ exchange-cli admin deposit --admin --account $1 --asset $2 --amount $3"; echo "$out"; return ;; esac
  done
  echo "account $1 was never opened" >&2; exit 1
}
say "the operator funds the brokers' accounts"
for account in 1001 2001; do
  deposit $account AAPL 10000
  deposit $account USD 100000.00
done

broker1=(--api-key dev-broker-1-key-not-secret)
broker2=(--api-key dev-broker-2-key-not-secret)
say "a broker flow: resting orders, a crossing order that trades, a resend, a cancel"
run order new "${broker1[@]}" --account 1001 --symbol AAPL --side sell --price 100.50 --qty 300 --client-order-id 1
run order new "${broker1[@]}" --account 1001 --symbol AAPL --side sell --price 100.40 --qty 200 --client-order-id 2
run order new "${broker2[@]}" --account 2001 --symbol AAPL --side buy --price 100.00 --qty 500 --client-order-id 7
run order new "${broker2[@]}" --account 2001 --symbol AAPL --side buy --price 100.45 --qty 250 --tif ioc --client-order-id 8
echo "(the same client order id again: answered with the original order, not traded twice)"
run order new "${broker2[@]}" --account 2001 --symbol AAPL --side buy --price 100.45 --qty 250 --tif ioc --client-order-id 8
echo "(broker 2 may not act for broker 1's account)"
run order new "${broker2[@]}" --account 1001 --symbol AAPL --side buy --price 100.45 --qty 1 --client-order-id 9
run order mass-cancel "${broker2[@]}" --account 2001

leader=$("$cli" status --json | python3 -c 'import json,sys; print([n["status"]["id"] for n in json.load(sys.stdin) if "status" in n and n["status"]["role"] == "leader"][0])')
say "killing the leader, node $leader, with SIGKILL"
scripts/cluster.sh kill "$leader"
run order new "${broker2[@]}" --account 2001 --symbol AAPL --side buy --price 100.50 --qty 100 --client-order-id 10
scripts/cluster.sh status

say "restarting node $leader: it catches up from the others"
scripts/cluster.sh start "$leader"
sleep 2
scripts/cluster.sh status

say "market data: the book's snapshot, recent trades, and the 1 s candles (any node builds them)"
run watch book AAPL --seconds 0.5 --admin
run watch trades AAPL --seconds 0.5 --admin
run candles AAPL --interval 1s --admin

say "the reporting database node 3 writes (exactly once, also across its crash)"
run report summary --db "$EXCHANGE_DATA/report.db"
run report trades --db "$EXCHANGE_DATA/report.db"

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
