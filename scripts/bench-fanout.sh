#!/usr/bin/env bash
# The cost of market data fan-out to the order path (docs/performance.md, "Fan-out"): one local
# 3-node cluster, and `exchange-cli bench --rate R` alternating without subscribers, with 100
# native subscribers (book and trades) of a follower, with 100 WebSocket subscribers of the same
# follower, and with a CPU burner that takes the share of a core the native subscribers took in
# the run before it, the web console open in headless Chromium on the follower during all but
# the runs without subscribers. The burner's run tells the subscribers' own processing (they
# share this host's cores with the nodes) from what serving them costs the nodes. Prints one
# JSON report a run, each prefixed with its name.
#
#   scripts/bench-fanout.sh                 # rates 5000 and 10000, 3 rounds
#   RATES=5000 ROUNDS=1 NICE_TOO=1 scripts/bench-fanout.sh
#                                            # also the subscribers at nice 19
#   MD_ON=leader scripts/bench-fanout.sh     # the native subscribers on the leader
#   MD_PORT=broker scripts/bench-fanout.sh   # on the broker endpoint (710i), not --md-listen's
#                                            # (720i, on the fan-out runtime)
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
burner=
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; [ -z "$burner" ] || kill "$burner" 2>/dev/null || true; pkill -f "$profile" || true; rm -rf "$profile"' EXIT
scripts/cluster.sh up 3 >/dev/null
sleep 2
# Now: a follower's HTTP address and node id (node i takes brokers on 127.0.0.1:710i), the
# leader's id and its term. Asked before every run: on these 2 cores the leader may change
# under load.
roles() {
  local tries
  for tries in $(seq 50); do
    curl -s 127.0.0.1:8081/api/v1/cluster | python3 -c '
import json, sys
nodes = [n["status"] for n in json.load(sys.stdin)["nodes"] if n["status"]]
leader = next(n for n in nodes if n["role"] == "leader")
follower = next(n for n in nodes if n["role"] != "leader")
print(follower["http"], follower["id"], leader["id"], leader["term"])' 2>/dev/null && return
    sleep 0.2
  done
  echo "no leader for 10 s" >&2
  exit 1
}
cli=target/release/exchange-cli
n=0
console_open() { read -r follower _ < <(roles); chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$profile" "http://$follower/" >/dev/null 2>&1 & sleep 3; }
console_close() { pkill -f "$profile" || true; sleep 1; }
# Busy for SHARE of each 5 ms, asleep for the rest, at the bench's priority, until killed.
burner_start() {
  python3 -c '
import sys, time
share, period = min(float(sys.argv[1]), 0.95), 0.005
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < share * period:
        pass
    time.sleep(period * (1 - share))' "$1" "$profile" & burner=$!
}
burner_stop() { kill "$burner" 2>/dev/null || true; wait "$burner" 2>/dev/null || true; burner=; }
share_of() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])["market_data"]["subscribers_cpu_share"])' "$1" 2>/dev/null || echo 0.45; }
# CPU seconds so far of each node and of its fan-out thread: "id total fanout" lines.
node_cpu() {
  python3 - "$EXCHANGE_DATA" <<'PY'
import glob, os, sys
tick = os.sysconf("SC_CLK_TCK")
for pidfile in sorted(glob.glob(sys.argv[1] + "/node-*.pid")):
    node = pidfile.rsplit("-", 1)[1].split(".")[0]
    total = fanout = 0
    try:
        pid = open(pidfile).read().strip()
        for task in os.listdir(f"/proc/{pid}/task"):
            stat = open(f"/proc/{pid}/task/{task}/stat").read()
            fields = stat[stat.rindex(")") + 2:].split()
            used = (int(fields[11]) + int(fields[12])) / tick
            total += used
            if "fanout" in stat[stat.index("(") + 1:stat.rindex(")")]:
                fanout += used
    except OSError:
        pass
    print(node, total, fanout)
PY
}
# What each node took from STARTED (epoch seconds) to now, in cores: "node-1=0.49(fanout 0.05)
# ...". It spans the whole bench command: the set-up and the subscribers' connections too.
node_cpu_used() {
  python3 -c '
import sys, time
before = {l.split()[0]: l.split()[1:] for l in sys.argv[1].splitlines()}
after = [l.split() for l in sys.argv[2].splitlines()]
seconds = time.time() - float(sys.argv[3])
print(" ".join(f"node-{n}={(float(t) - float(before.get(n, [t, f])[0])) / seconds:.2f}(fanout {(float(f) - float(before.get(n, [t, f])[1])) / seconds:.2f})" for n, t, f in after))' "$1" "$2" "$3"
}
# Each run's line: its name, the leader's term before and after it (a leader change within a
# run is a failover, not a fan-out measurement), each node's CPU during it, and the bench's
# JSON report.
bench() {
  n=$((n + 1))
  read -r follower follower_id leader_id term_before < <(roles)
  md_id=$follower_id
  [ "${MD_ON:-follower}" = leader ] && md_id=$leader_id
  local args=("${@:2}")
  for i in "${!args[@]}"; do
    case ${args[$i]} in
      NATIVE) args[$i]="127.0.0.1:7$([ "${MD_PORT:-md}" = broker ] && echo 1 || echo 2)0$md_id" ;;
      WS) args[$i]="ws://$follower/api/v1/ws" ;;
    esac
  done
  local cpu_before started
  cpu_before=$(node_cpu)
  started=$(date +%s.%N)
  last=$($cli bench --admin --json --duration "${DURATION:-10}" --symbol $((900 + n)) \
    --first-account $((900000 + n * 1000)) --first-broker $((100 + n * 20)) \
    --floor-dir "$EXCHANGE_DATA" "${args[@]}" 2>"$profile/stderr") ||
    last=$(tail -n 1 "$profile/stderr" | python3 -c 'import json, sys; print(json.dumps({"failed": True, "why": sys.stdin.read().strip()}))')
  local cpu
  cpu=$(node_cpu_used "$cpu_before" "$(node_cpu)" "$started")
  read -r _ _ _ term_after < <(roles)
  echo "$1 term $term_before $term_after cpu $cpu $last"
}
# NATIVE and WS stand for the follower's addresses at the time of each run.
ws=(--ws-subscribers 100 --ws-url WS)
native=(--md-subscribers 100 --md-node NATIVE)
for rate in ${RATES:-5000 10000}; do
  for _ in $(seq "${ROUNDS:-3}"); do
    bench "none-$rate" --rate "$rate"
    console_open; bench "native-$rate" --rate "$rate" "${native[@]}"; console_close
    share=$(share_of "$last")
    console_open; burner_start "$share"; bench "burn-$share-$rate" --rate "$rate"; burner_stop; console_close
    bench "none-$rate" --rate "$rate"
    console_open; bench "ws-$rate" --rate "$rate" "${ws[@]}"; console_close
    if [ -n "${NICE_TOO:-}" ]; then
      bench "none-$rate" --rate "$rate"
      console_open; bench "native-nice19-$rate" --rate "$rate" "${native[@]}" --subscribers-nice 19; console_close
      bench "none-$rate" --rate "$rate"
      console_open; bench "ws-nice19-$rate" --rate "$rate" "${ws[@]}" --subscribers-nice 19; console_close
    fi
  done
done
