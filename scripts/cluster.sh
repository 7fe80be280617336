#!/usr/bin/env bash
# A local cluster on loopback, in the background.
#
#   scripts/cluster.sh up [N]     build (release), make dev certificates if missing, start N nodes
#                                 (default 3) and wait for a leader
#   scripts/cluster.sh down       stop every node (SIGTERM, then SIGKILL after 5 s)
#   scripts/cluster.sh kill ID    kill node ID with SIGKILL (a crash)
#   scripts/cluster.sh start ID   start node ID again, with its data
#   scripts/cluster.sh status     every node's view (exchange-cli status)
#
# Node i listens for Raft on 127.0.0.1:700i and for brokers on 127.0.0.1:710i. Data, logs and
# pids live under $EXCHANGE_DATA (default ./data); credentials in $EXCHANGE_BROKERS (default
# cluster/brokers.toml). Extra node flags: $EXCHANGE_NODE_FLAGS. Node $EXCHANGE_REPORT_NODE
# (default 3) writes the reporting database, $EXCHANGE_DATA/report.db. $EXCHANGE_PIN_CORES
# pins the engine threads; EXCHANGE_NO_BUILD=1 skips the build; EXCHANGE_BIN_DIR (default
# target/release) is where the binaries are taken from.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${EXCHANGE_DATA:-data}
certs=${EXCHANGE_CERTS:-cluster/certs}
bin_dir=${EXCHANGE_BIN_DIR:-target/release}
node_bin=$bin_dir/exchange-node
brokers_file=${EXCHANGE_BROKERS:-cluster/brokers.toml}
cli_bin=$bin_dir/exchange-cli

# Whether a pid is a live process (a killed node may linger as a zombie until it is reaped).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

nodes_in_cluster() { cat "$data/cluster-size" 2>/dev/null || echo 3; }

peers() {
  local n=$1 list=""
  for i in $(seq 1 "$n"); do list+="${list:+,}$i=127.0.0.1:$((7000 + i))"; done
  echo "$list"
}

brokers() {
  local n=$1 list=""
  for i in $(seq 1 "$n"); do list+="${list:+,}127.0.0.1:$((7100 + i))"; done
  echo "$list"
}

start_node() {
  local id=$1 n
  n=$(nodes_in_cluster)
  if [ -f "$data/node-$id.pid" ] && running "$(cat "$data/node-$id.pid")"; then
    echo "node $id is already running (pid $(cat "$data/node-$id.pid"))"
    return
  fi
  # Node 1 founds the cluster on its very first start only.
  local bootstrap=""
  if [ "$id" = 1 ] && [ ! -d "$data/node-1" ]; then bootstrap=--bootstrap; fi
  # EXCHANGE_PIN_CORES=a,b,c pins node i's engine thread to the i-th core of the list.
  local pin=()
  if [ -n "${EXCHANGE_PIN_CORES:-}" ]; then
    pin=(--pin-core "$(echo "$EXCHANGE_PIN_CORES" | cut -d, -f"$id")")
  fi
  # One node (3 by default, $EXCHANGE_REPORT_NODE; empty: none) runs the reporter.
  local report=()
  if [ "$id" = "${EXCHANGE_REPORT_NODE-3}" ]; then report=(--report-db "$data/report.db"); fi
  # The HTTP API of node i on 127.0.0.1:808i (docs/http-api.md), FIX on 127.0.0.1:987i
  # (docs/fix.md), Prometheus metrics on 127.0.0.1:920i (docs/operations.md), native market
  # data subscribers on 127.0.0.1:720i (--md-listen, docs/protocol.md).
  local http="127.0.0.1:$((8080 + id))"
  local fix="127.0.0.1:$((9870 + id))"
  local metrics="127.0.0.1:$((9200 + id))"
  local market_data="127.0.0.1:$((7200 + id))"
  # shellcheck disable=SC2086
  setsid "$node_bin" --id "$id" --peers "$(peers "$n")" --data-dir "$data/node-$id" \
    --certs-dir "$certs" --brokers "$brokers_file" --dev $bootstrap --http-listen "$http" \
    --fix-listen "$fix" --metrics-listen "$metrics" --md-listen "$market_data" \
    "${pin[@]}" "${report[@]}" ${EXCHANGE_NODE_FLAGS:-} >>"$data/node-$id.log" 2>&1 < /dev/null &
  echo $! > "$data/node-$id.pid"
  echo "node $id started (pid $!, log $data/node-$id.log, HTTP API http://$http/api/v1/cluster, FIX $fix, metrics http://$metrics/metrics, market data $market_data)"
}

wait_for_leader() {
  local n=$1
  for _ in $(seq 1 100); do
    if "$cli_bin" status --json --nodes "$(brokers "$n")" --certs-dir "$certs" 2>/dev/null \
        | grep -q '"role":"leader"'; then
      "$cli_bin" status --nodes "$(brokers "$n")" --certs-dir "$certs"
      return 0
    fi
    sleep 0.1
  done
  echo "no leader after 10 s; see $data/node-*.log" >&2
  return 1
}

case "${1:-}" in
  up)
    n=${2:-3}
    # EXCHANGE_NO_BUILD=1: use the binaries already in $bin_dir (a machine without cargo).
    if [ -z "${EXCHANGE_NO_BUILD:-}" ]; then
      cargo build --release --quiet --bin exchange-node --bin exchange-cli
    fi
    mkdir -p "$data"
    echo "$n" > "$data/cluster-size"
    if [ ! -f "$certs/ca.pem" ] || [ ! -f "$certs/node-$n.pem" ]; then
      "$node_bin" gen-certs --dir "$certs" --nodes "$(seq -s, 1 "$n")" >/dev/null
      echo "development certificates in $certs"
    fi
    for i in $(seq 1 "$n"); do start_node "$i"; done
    wait_for_leader "$n"
    echo "brokers: EXCHANGE_NODES=$(brokers "$n")"
    ;;
  down)
    for pidfile in "$data"/node-*.pid; do
      [ -f "$pidfile" ] || continue
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do
      alive=0
      for pidfile in "$data"/node-*.pid; do
        [ -f "$pidfile" ] && running "$(cat "$pidfile")" && alive=1
      done
      [ $alive = 0 ] && break
      sleep 0.1
    done
    for pidfile in "$data"/node-*.pid; do
      [ -f "$pidfile" ] || continue
      kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
    echo "cluster stopped"
    ;;
  kill)
    id=${2:?usage: scripts/cluster.sh kill ID}
    kill -KILL "$(cat "$data/node-$id.pid")"
    echo "node $id killed"
    ;;
  start)
    start_node "${2:?usage: scripts/cluster.sh start ID}"
    ;;
  status)
    "$cli_bin" status --nodes "$(brokers "$(nodes_in_cluster)")" --certs-dir "$certs"
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
