#!/usr/bin/env bash
# Fuzzes the two readers of untrusted dumps with cargo-fuzz (libFuzzer), each for SECONDS
# (default 30): lifeboat-rdb's RDB reader and lifeboat-mongo-archive's mongodump archive reader.
# Arbitrary bytes in arbitrary chunks must be read or refused with an error, never a panic or a
# hang.
# cargo-fuzz needs a nightly toolchain; it is installed (Rust crates) into ~/.cache/lifeboat.
#
#   scripts/fuzz.sh          # 30 seconds
#   scripts/fuzz.sh 600      # longer, when changing the reader
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
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
fuzz_one() {
  local crate="$1" target="$2" what="$3"
  local log
  log="$(mktemp /tmp/lifeboat-fuzz.XXXXXX.log)"
  set +e
  (cd "$ROOT/crates/$crate/fuzz" && cargo +nightly fuzz run "$target" -- -max_total_time="$SECONDS_TO_RUN") >"$log" 2>&1
  local rc=$?
  set -e
  grep -E "^Done [0-9]+ runs" "$log" | sed "s/^/fuzz: $target: /" >&2 || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz: the $what failed on an input (log: $log); the input is saved under crates/$crate/fuzz/artifacts/" >&2
    exit 1
  fi
  rm -f "$log"
}

fuzz_one lifeboat-rdb read_rdb "RDB reader"
fuzz_one lifeboat-mongo-archive read_archive "mongodump archive reader"
