#!/usr/bin/env bash
# The chaos suite (jepsen/): a cluster on test hosts (network namespaces when run as root with
# iproute2; loopback processes otherwise, which the report says), clients recording every
# operation, a nemesis injecting faults, then checkers over the history and the final state.
#
#   scripts/chaos.sh --quick    a short run (20 faults, two of every kind) and the planted-fault
#                               runs (about 3 minutes): CI
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

# The nodes are built with the test-only faults compiled in (off unless a flag names one), so
# that the planted-fault runs can switch one on; production builds reject those flags.
cargo build --release --quiet --features exchange/test-faults --bin exchange-node
cargo build --release --quiet -p exchange-jepsen
chaos=target/release/exchange-chaos

if [ ${#args[@]} -gt 0 ]; then
  exec "$chaos" "${args[@]}"
fi

if [ "$mode" = long ]; then
  # 10 kinds x 100.
  "$chaos" --faults 1000 --hold-ms 1000 --quiet-ms 300 --out target/chaos/long
  exit
fi

echo "== chaos: 20 faults, two of every kind the machine allows"
"$chaos" --faults 20 --hold-ms 1000 --quiet-ms 500 --out target/chaos/quick

echo
echo "== chaos: the checkers catch planted faults"
# Each run plants one test-only fault (flags only test-faults builds accept) and must fail on
# the checker that matches it.
planted() { # name, the report field that must be above 0, node flags...
  local name=$1 field=$2 flags=() out status
  shift 2
  for flag in "$@"; do flags+=(--node-flag "$flag"); done
  set +e
  out=$("$chaos" --faults 2 --kinds kill --hold-ms 500 --quiet-ms 500 --json "${flags[@]}" \
    --out "target/chaos/planted-$name")
  status=$?
  set -e
  # The report's own count comes first (each fault in its log has a "lost" count too).
  local count
  count=$(echo "$out" | grep -o "\"$field\":[0-9]*" | head -1 | cut -d: -f2)
  if [ $status -ne 1 ] || [ "${count:-0}" -eq 0 ]; then
    echo "$out"
    echo "the $field checker missed the planted fault '$name'" >&2
    exit 1
  fi
  echo "caught: $name -> $field $count"
}
# A replica that reports a wrong output hash from index 300 on (a nondeterminism bug).
planted divergence divergences 2:--fault-diverge-at=300
# A gateway that acknowledges every 50th order without sequencing it.
planted ack-without-commit lost \
  1:--fault-ack-unsequenced-every=50 2:--fault-ack-unsequenced-every=50 3:--fault-ack-unsequenced-every=50
# A gateway that enters every 50th order a second time, past the exactly-once window.
planted double-entry duplicates \
  1:--fault-double-submit-every=50 2:--fault-double-submit-every=50 3:--fault-double-submit-every=50
# A report stream that leaves out every 20th execution: trades with one side.
planted one-sided-trade unmatched_trades \
  1:--fault-drop-execution-every=20 2:--fault-drop-execution-every=20 3:--fault-drop-execution-every=20
# A report stream that swaps two reports in every 10th batch: a stream that goes back.
planted reordered-reports sequence_errors \
  1:--fault-reorder-reports-every=10 2:--fault-reorder-reports-every=10 3:--fault-reorder-reports-every=10
# Balances replies that count held funds as available too: money from nowhere.
planted held-counted-twice conservation_errors \
  1:--fault-count-held-twice 2:--fault-count-held-twice 3:--fault-count-held-twice
# Every 5th balances read answered with the previous read of the account: a stale read.
planted stale-read linearizability_errors \
  1:--fault-stale-balances-every=5 2:--fault-stale-balances-every=5 3:--fault-stale-balances-every=5
