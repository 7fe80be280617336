#!/usr/bin/env bash
# The engine's speed beside the lobster crate's bare order book, on the same stream, in one run.
#
#   scripts/bench-engine.sh [COMMANDS] [ROUNDS]
#
# Generates a seeded stream (about 1,000 resting orders, 10% marketable orders, a cancel for
# most orders) as a replay CSV, then alternates `exchange-cli engine-replay` (risk checks,
# wallets and the output hash included) and the lobster baseline on it ROUNDS times, and prints
# the median commands/s of each and their ratio. Medians, because the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
commands=${1:-1000000}
rounds=${2:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin exchange-cli --example lobster_baseline
cli=target/release/exchange-cli
"$cli" engine-bench --commands "$commands" --write-csv "$work/stream.csv" 2>/dev/null

engine=() lobster=()
for round in $(seq "$rounds"); do
  engine+=("$("$cli" engine-replay "$work/stream.csv" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["commands_per_sec"]))')")
  lobster+=("$(target/release/examples/lobster_baseline "$work/stream.csv" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["commands_per_sec"]))')")
  echo "round $round: engine ${engine[-1]} commands/s, lobster ${lobster[-1]} commands/s" >&2
done
python3 - "${engine[*]}" "${lobster[*]}" <<'PY'
import statistics, sys
engine = [int(x) for x in sys.argv[1].split()]
lobster = [int(x) for x in sys.argv[2].split()]
e, l = statistics.median(engine), statistics.median(lobster)
print(f"engine-replay (risk + wallets + hash): median {e/1e6:.2f} M commands/s")
print(f"lobster crate (bare book):             median {l/1e6:.2f} M commands/s")
print(f"ratio engine / lobster:                {e/l:.2f}x")
PY
