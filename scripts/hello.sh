#!/usr/bin/env bash
# Boots examples/hello.toml in QEMU: its container prints where it runs, then the VM powers off.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -q --release -p berth-image-build
export BERTH_INIT
BERTH_INIT=$(scripts/build-init.sh)
scripts/busybox-image.sh examples/images/busybox >/dev/null
target/release/berth build examples/hello.toml -o target/hello
exec target/release/berth run target/hello
