#!/usr/bin/env bash
# The chaos suite (jepsen/): a cluster on test hosts (network namespaces when run as root with
# iproute2; loopback processes otherwise, which the report says), clients recording every
# operation, a nemesis injecting faults, then checkers over the history and the final state.
#
#   scripts/chaos.sh --quick    a short run (20 faults, two of every kind, each kind must be
#                               injected), a run that must fail without nftables, and the
#                               planted-fault runs (about 6 minutes): CI
#   scripts/chaos.sh            the long run: 100 faults of every kind (about 50 minutes)
#   scripts/chaos.sh -- ARGS    any exchange-chaos arguments (exchange-chaos --help)
#
# Writes history.jsonl, report.json and timeline.svg under target/chaos/. Everything a run makes
# (namespaces, nftables rules, node processes) is removed at its end, also after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=long
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --) shift; args=("$@"); break ;;
    *) echo "usage: scripts/chaos.sh [--quick] [-- exchange-chaos args]" >&2; exit 2 ;;
  esac
  shift
done

# The production node runs the chaos runs; a node built with the test-only faults compiled in
# (off unless a flag names one), into a target directory of its own so that it can never be
# mistaken for a real node, runs the planted-fault runs. Profile: $EXCHANGE_PROFILE (default
# release-checked: a release build with debug assertions and overflow checks).
profile=${EXCHANGE_PROFILE:-release-checked}
cargo build --profile "$profile" --quiet --bin exchange-node
cargo build --profile "$profile" --quiet -p exchange-jepsen
cargo build --profile "$profile" --quiet --features exchange/test-faults --target-dir target/faults \
  --bin exchange-node
node=target/$profile/exchange-node
faults_node=target/faults/$profile/exchange-node
chaos=target/$profile/exchange-chaos

if [ ${#args[@]} -gt 0 ]; then
  # exchange-chaos's own default, target/chaos, holds this script's runs' directories, which
  # it would refuse to write into: a run given here goes to a directory of its own.
  case " ${args[*]} " in
    *" --out"*) ;;
    *) args+=(--out target/chaos/run) ;;
  esac
  case " ${args[*]} " in
    *" --node-bin"*) exec "$chaos" "${args[@]}" ;;
    *) exec "$chaos" --node-bin "$node" "${args[@]}" ;;
  esac
fi

if [ "$mode" = long ]; then
  # 10 kinds x 100; every kind must be injected, every fault recovered within 1 s.
  "$chaos" --node-bin "$node" --faults 1000 --hold-ms 1000 --quiet-ms 300 --rto-max-ms 1000 \
    --out target/chaos/long
  exit
fi

echo "== chaos: 20 faults, two of every kind (each must be injected)"
"$chaos" --node-bin "$node" --faults 20 --hold-ms 1000 --quiet-ms 500 --rto-max-ms 1000 \
  --out target/chaos/quick

echo
echo "== chaos: a run that cannot inject every kind fails (nftables hidden from PATH)"
no_nft_path=$(echo "$PATH" | tr ':' '\n' | while read -r dir; do [ -x "$dir/nft" ] || echo "$dir"; done | paste -sd:)
set +e
out=$(PATH=$no_nft_path "$chaos" --node-bin "$node" --faults 20 --out target/chaos/no-nft 2>&1)
status=$?
set -e
if [ $status -ne 1 ] || ! echo "$out" | grep -q "NOT INJECTABLE   isolate-leader"; then
  echo "$out"
  echo "a run without nftables did not fail on the network faults it could not inject" >&2
  exit 1
fi
echo "failed as it must: $(echo "$out" | grep -m1 'NOT INJECTABLE')"

echo
echo "== chaos: the checkers and the run's rules catch planted faults"
# Each run breaks one thing (with a flag only test-faults builds accept, or a setting a real
# cluster could have) and must fail on the report field that matches it.
# $WHY, when set, is text the run's output must hold: the rule that failed it.
planted() { # name, the report field that must be above 0, then exchange-chaos args
  local name=$1 field=$2 out status count
  shift 2
  set +e
  out=$("$chaos" --faults 2 --hold-ms "${HOLD_MS:-500}" --quiet-ms 500 --json \
    --out "target/chaos/planted-$name" "$@")
  status=$?
  set -e
  # The report's own count comes first (each fault in its log has a "lost" count too).
  count=$(echo "$out" | grep -o "\"$field\":[0-9]*" | head -1 | cut -d: -f2)
  if [ $status -ne 1 ] || [ "${count:-0}" -eq 0 ] || ! echo "$out" | grep -q "${WHY:-}"; then
    echo "$out"
    echo "the $field check missed the planted fault '$name'${WHY:+ (expected: $WHY)}" >&2
    exit 1
  fi
  echo "caught: $name -> $field $count"
}
# A test-only fault on every node (the leader is the one that shows it).
on_all() { for id in 1 2 3; do echo "--node-flag"; echo "$id:$1"; done; }
faulty() { # name, field, node flag for every node[, fault kind[, exchange-chaos args]]
  local name=$1 field=$2 flag=$3 kind=${4:-kill}
  shift $(($# < 4 ? $# : 4))
  mapfile -t flags < <(on_all "$flag")
  planted "$name" "$field" --node-bin "$faults_node" --kinds "$kind" "${flags[@]}" "$@"
}
# A replica that reports a wrong output hash from index 300 on (a nondeterminism bug).
planted divergence divergences --node-bin "$faults_node" --kinds kill --node-flag 2:--fault-diverge-at=300
# A gateway that acknowledges every 50th order without sequencing it.
faulty ack-without-commit lost --fault-ack-unsequenced-every=50
# A gateway that enters every 50th order a second time, past the exactly-once window.
faulty double-entry duplicates --fault-double-submit-every=50
# A report stream that leaves out every 20th execution: trades with one side.
faulty one-sided-trade unmatched_trades --fault-drop-execution-every=20
# A report stream that swaps two reports in every 10th batch: a stream that goes back.
faulty reordered-reports sequence_errors --fault-reorder-reports-every=10
# Balances replies that count held funds as available too: money from nowhere.
faulty held-counted-twice conservation_errors --fault-count-held-twice
# Every 5th balances read answered with the previous read of the account: a stale read.
faulty stale-read linearizability_errors --fault-stale-balances-every=5
# Every 100th command sequenced, yet answered with a refusal: failed, yet it took effect.
faulty refused-yet-sequenced failed_took_effect --fault-refuse-sequenced-every=100
# A market data stream that leaves out every 20th message.
faulty market-data-gap market_data_gaps --fault-market-gap-every=20
# Depth reads with one lot too many at the best bid: the final books differ.
faulty wrong-final-book book_mismatches --fault-wrong-depth
# Report timestamps that go back in every 10th batch.
faulty timestamps-back timestamp_errors --fault-report-time-back-every=10
# A leader that exits after 200 commands: a node crash. (After 500, a run in which the harness
# killed the leader first and the next never reached 500 before the end saw no crash.)
faulty node-crash crashes --fault-exit-after-commands=200
# Elections that take 1.5-2 s (a real setting, badly chosen), with the leader down for 1.5 s
# (a leader restarted sooner takes office again at once): its loss costs clients more than the
# run allows.
mapfile -t slow < <(on_all --election-min-ms=1500; on_all --election-max-ms=2000)
HOLD_MS=1500 planted slow-failover rto_errors --node-bin "$node" --kinds kill-leader "${slow[@]}"
# Brokers held to 2 commands a second each: too little is acknowledged for the checks to mean
# anything.
mapfile -t starved < <(on_all --session-rate=2)
WHY="the checks need at least" \
  planted starved-run coverage_errors --node-bin "$node" --kinds kill "${starved[@]}"
# Nodes that never name the leader: the leader's faults cannot be aimed, fewer are injected.
# (From log index 100, held 1 s a fault: with index 200 and 0.5 s, a slow run's second fault
# came before the cluster had reached 200 entries, found its leader, and the check missed.)
HOLD_MS=1000 WHY="of 2 faults injected" \
  faulty leader-unseen coverage_errors --fault-status-hides-leader-from=100 kill-leader
# A node that refuses status requests: its final state cannot be compared (the run waits out
# the final read's 60 s for it).
WHY="node 3 gave no final status" planted status-unread coverage_errors \
  --node-bin "$faults_node" --kinds kill --node-flag 3:--fault-status-refused
# Every deposit and withdrawal answered "outcome unknown" (each may have taken effect at any
# time up to the end), and the search held to 100 states an account: it gives up on them.
# (With the default budget of 20 million, the reads between them let it settle this short
# run's 13-18 unknowns an account.)
WHY="ledger operations unsettled" \
  faulty unsettled-ledger coverage_errors --fault-admin-unknown-every=1 kill --search-visits-max 100
