#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, host integration and QEMU boot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
export BERTH_INIT
# The tests' init has the test-only control requests (the watchdog test freezes PID 1).
BERTH_INIT=$(scripts/build-init.sh --test-hooks)
cargo clippy -q --workspace --all-targets -- -D warnings
cargo clippy -q -p berth-init --all-targets --features test-hooks -- -D warnings
cargo test --workspace --no-fail-fast
