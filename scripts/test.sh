#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, host integration and QEMU boot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A one-shot run gains nothing from incremental state, which is gigabytes on disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# The build and the boot tests' images need room; fail early and say so rather than
# dying mid-link with a bus error.
need_gb=12
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_gb=$(df -P -BG "$target_dir" | awk 'NR == 2 { sub("G", "", $4); print $4 }')
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "scripts/test.sh: only ${free_gb} GB free under $target_dir; the tests need about ${need_gb} GB (build and boot images). Free some space (e.g. cargo clean) and run again." >&2
    exit 1
fi
cargo fmt --all -- --check
export BERTH_INIT
# The tests' init has the test-only control requests (the watchdog test freezes PID 1).
BERTH_INIT=$(scripts/build-init.sh --test-hooks)
cargo clippy -q --workspace --all-targets -- -D warnings
cargo clippy -q -p berth-init --all-targets --features test-hooks -- -D warnings
cargo test --workspace --no-fail-fast
