#!/usr/bin/env bash
# Every check the project makes: formatting, lints, and all tests of the workspace (unit,
# property, integration) in the release-checked profile (optimised, so the property tests and
# data replays run quickly, with debug assertions and overflow checks on), the tests that need
# a browser, Prometheus and a FIX engine (QuickFIX, built by scripts/quickfix.sh), then the
# quick chaos run and its planted faults.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it starts (seconds since the run began), so a slow step shows in CI's log.
started=$SECONDS
step() { echo; echo "== [$((SECONDS - started)) s] $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy --workspace --all-targets --release --features exchange/test-faults -- -D warnings

step "cargo test (workspace, the production build; profile release-checked)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# release-checked: optimised, with debug assertions and overflow checks (Cargo.toml). No
# test-faults here: the tests run the node a real exchange would run.
cargo test --workspace --profile release-checked 2>&1 | tee "$log"

step "cargo test (the tests that plant faults: a test-faults build in target/faults)"
# A directory of its own, so that a node with the planted faults compiled in never sits where a
# real one is looked for.
cargo test --profile release-checked --features exchange/test-faults --target-dir target/faults \
  --test cluster_divergence 2>&1 | tee -a "$log"

step "the web console in headless Chromium (tests/console.rs; screenshots in target/console-screenshots)"
cargo test --profile release-checked --test console -- --ignored 2>&1 | tee -a "$log"

step "the Grafana dashboard's queries on a real Prometheus scraping a cluster (tests/grafana_dashboard.rs)"
cargo test --profile release-checked --test grafana_dashboard -- --ignored 2>&1 | tee -a "$log"

step "FIX with QuickFIX as the broker (scripts/quickfix.sh builds it; tests/fix_quickfix.rs)"
scripts/quickfix.sh
cargo test --profile release-checked --test fix_quickfix -- --ignored 2>&1 | tee -a "$log"

step "chaos suite, quick (scripts/chaos.sh --quick)"
EXCHANGE_PROFILE=release-checked scripts/chaos.sh --quick 2>&1 | tee -a "$log"

# One closing line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { print ""; print "tests: " p " passed, " f " failed" }' "$log"
echo "scripts/test.sh took $((SECONDS - started)) s"
