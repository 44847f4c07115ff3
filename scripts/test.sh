#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, host integration and QEMU boot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
export BERTH_INIT
BERTH_INIT=$(scripts/build-init.sh)
cargo clippy -q --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
