#!/usr/bin/env bash
# Fuzzes lifeboat-rdb's reader with cargo-fuzz (libFuzzer) for SECONDS (default 30): arbitrary
# bytes in arbitrary chunks must be read or refused with an error, never a panic or a hang.
# cargo-fuzz needs a nightly toolchain; it is installed (Rust crates) into ~/.cache/lifeboat.
#
#   scripts/fuzz.sh          # 30 seconds
#   scripts/fuzz.sh 600      # longer, when changing the reader
set -euo pipefail
cd "$(dirname "$0")/../crates/lifeboat-rdb/fuzz"
SECONDS_TO_RUN="${1:-30}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz needs a nightly Rust toolchain, and this machine has none (rustup toolchain list)." >&2
  exit 3
fi
FUZZ_ROOT="$HOME/.cache/lifeboat/cargo-fuzz"
if [ ! -x "$FUZZ_ROOT/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $FUZZ_ROOT (Rust crates)" >&2
  cargo install -q cargo-fuzz --locked --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"
# Its own target directory: a nightly, sanitizer-instrumented build shares nothing with ours.
export CARGO_TARGET_DIR="$HOME/.cache/lifeboat/fuzz-target"
LOG="$(mktemp /tmp/lifeboat-fuzz.XXXXXX.log)"
set +e
cargo +nightly fuzz run read_rdb -- -max_total_time="$SECONDS_TO_RUN" >"$LOG" 2>&1
rc=$?
set -e
grep -E "^Done [0-9]+ runs" "$LOG" | sed 's/^/fuzz: /' >&2 || true
if [ "$rc" -ne 0 ]; then
  tail -n 40 "$LOG" >&2
  echo "fuzz: the RDB reader failed on an input (log: $LOG); the input is saved under crates/lifeboat-rdb/fuzz/artifacts/" >&2
  exit 1
fi
rm -f "$LOG"
