#!/usr/bin/env bash
# Every check the project makes: formatting, lints, and all tests of the workspace (unit,
# property, integration), optimised so the property tests and data replays run quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo; echo "== $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy --workspace --all-targets --release --features exchange/test-faults -- -D warnings

step "cargo test (workspace, release)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# test-faults builds the planted faults the checker tests need (never used for a real exchange).
cargo test --workspace --release --features exchange/test-faults 2>&1 | tee "$log"

step "chaos suite, quick (scripts/chaos.sh --quick)"
scripts/chaos.sh --quick 2>&1 | tee -a "$log"

# One closing line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { print ""; print "tests: " p " passed, " f " failed" }' "$log"
