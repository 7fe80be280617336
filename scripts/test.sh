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

step "cargo test (workspace, release)"
cargo test --workspace --release
