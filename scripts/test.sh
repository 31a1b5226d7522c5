#!/usr/bin/env bash
# Runs every test on a fresh machine: installs and starts the test servers, builds, tests.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the clone, so CI and later runs reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"

# `eval "$(...)"` alone would hide services.sh's exit status and go on without servers.
if ! service_env="$(scripts/services.sh start)"; then
  echo "test.sh: the test servers did not start (services.sh's message is above); nothing was run" >&2
  exit 1
fi
eval "$service_env"

cargo fmt --all --check
# The end-to-end tests run the real binaries; build them first. One build serves both: with
# --all-targets the binaries get the same dependency features as the tests (a plain
# `cargo build --bins` resolves them without dev-dependencies, and `cargo test` would then
# rebuild some 35 crates).
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast
# A short fuzz run of the RDB and mongodump archive readers (cargo-fuzz needs a nightly toolchain; without one the
# property tests above are the only check of damaged input, and this says so).
if cargo +nightly --version >/dev/null 2>&1; then
  scripts/fuzz.sh 30
else
  echo "test.sh: NOTE: no nightly Rust toolchain here, so the cargo-fuzz runs of the RDB and archive readers did not run" >&2
fi
