#!/usr/bin/env bash
# Runs every test on a fresh machine: installs and starts the test servers, builds, tests.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the clone, so CI and later runs reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"

eval "$(scripts/services.sh start)"

cargo fmt --all --check
# The end-to-end tests run the real binaries; build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
