#!/usr/bin/env bash
# Builds the static PID 1 binary (and the helpers beside it: the updater, the cloud metadata and
# time helpers, packed when a config asks for them) and prints the PID 1 binary's path.
#   scripts/build-init.sh [--test-hooks]
# --test-hooks: with the test-only control requests (`berthctl debug-stall`); for the tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
if [ "${1:-}" = "--test-hooks" ]; then
  features=(--features berth-init/test-hooks)
fi
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release -p berth-init -p berth-updater -p berth-metadata -p berth-timesync "${features[@]}" --target x86_64-unknown-linux-gnu >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/berth-init"
