#!/usr/bin/env bash
# Builds the static PID 1 binary (and the updater beside it, packed for [update]) and prints
# the PID 1 binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release -p berth-init -p berth-updater -p berth-metadata -p berth-timesync --target x86_64-unknown-linux-gnu >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/berth-init"
