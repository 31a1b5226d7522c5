#!/usr/bin/env bash
# Benchmark (not a test): PostgreSQL backups under one competing CPU-bound process
# (`stress-ng --cpu 1`), against the floor and against what an old script's pipeline costs under
# the same load, on bench.sh's database. Prints a markdown report and writes it to
# benches/last-run-load.md.
#
#   scripts/bench-load.sh                        # bench.sh's ~1 GB database (made by bench.sh)
#   LIFEBOAT_BENCH_ROUNDS=5 scripts/bench-load.sh
#
# Every command runs once per round, in the same order, with the load running throughout; the
# report gives medians and every run. It shows where the time goes when the cores are full: the
# floor does no work beside the dump, each other line adds compression or a digest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
ROWS="${LIFEBOAT_BENCH_ROWS:-3600000}"
ROUNDS="${LIFEBOAT_BENCH_ROUNDS:-3}"
DB="lifeboat_bench_${ROWS}"

eval "$(scripts/services.sh start)"
export PATH="$LIFEBOAT_TEST_PG_BIN:$PATH"
for tool in time stress-ng zstd openssl; do
  command -v "$tool" >/dev/null || [ -x "/usr/bin/$tool" ] || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
cargo build --release --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/release"
SERVER="${LIFEBOAT_TEST_PG_URL%/*}"
SRC="$SERVER/$DB"
if [ "$(psql -X -A -t "$SERVER/postgres" -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  echo "bench-load: database $DB does not exist; run LIFEBOAT_BENCH_ROWS=$ROWS scripts/bench.sh once first (it creates it)" >&2
  exit 1
fi
OUT="$(mktemp -d /tmp/lifeboat-bench-load.XXXXXX)"
stress-ng --cpu 1 --quiet &
STRESS_PID=$!
trap 'kill "$STRESS_PID" 2>/dev/null || true; rm -rf "$OUT"' EXIT
source scripts/bench-measure.sh

LB=("$BIN/lifeboat-backup" --engine postgres --url "$SRC" --job bench)
sleep 1
LOAD="$(cut -d' ' -f1 /proc/loadavg)"
echo "Under stress-ng --cpu 1 (load average $LOAD):" >&2
for round in $(seq 1 "$ROUNDS"); do
  measure floor bash -c "pg_dump -Fc -Z0 -d '$SRC' > /dev/null"
  measure sha bash -o pipefail -c "pg_dump -Fc -Z0 -d '$SRC' | openssl sha256 > /dev/null"
  measure fast3 bash -o pipefail -c "pg_dump -Fc -Z0 -d '$SRC' | zstd --fast=3 -q > /dev/null"
  measure zstd1 bash -o pipefail -c "pg_dump -Fc -Z0 -d '$SRC' | zstd -1 -q > /dev/null"
  measure zstd3 bash -o pipefail -c "pg_dump -Fc -Z0 -d '$SRC' | zstd -3 -q > /dev/null"
  rm -rf "$OUT"/repo*
  measure lb_adaptive "${LB[@]}" --repo "$OUT/repo_a"
  measure lb_1 "${LB[@]}" --repo "$OUT/repo_1" --compression-level 1
  measure lb_3 "${LB[@]}" --repo "$OUT/repo_3" --compression-level 3
done
LOAD="$LOAD / $(cut -d' ' -f1 /proc/loadavg)"

row() { echo "| $1 (runs: ${RUNS[$2]}) | ${WALL[$2]} | ${CPU[$2]} | $(ratio "${WALL[$2]}" "${WALL[floor]}")x |"; }
REPORT="$(cat <<MD
### PostgreSQL backups under one competing CPU-bound process, $(date -u +%F), $(nproc) cores, database $DB

\`stress-ng --cpu 1\` throughout; load average $LOAD at start / end; $ROUNDS rounds, every command once per round.

| command | median wall (s) | CPU of the command (s) | vs the floor |
| --- | ---: | ---: | ---: |
$(row '`pg_dump -Fc -Z0 > /dev/null` (the floor)' floor)
$(row '`pg_dump -Fc -Z0 \| openssl sha256`' sha)
$(row '`pg_dump -Fc -Z0 \| zstd --fast=3 > /dev/null`' fast3)
$(row '`pg_dump -Fc -Z0 \| zstd -1 > /dev/null`' zstd1)
$(row '`pg_dump -Fc -Z0 \| zstd -3 > /dev/null`' zstd3)
$(row '`lifeboat-backup` (default: adaptive zstd)' lb_adaptive)
$(row '`lifeboat-backup --compression-level 1`' lb_1)
$(row '`lifeboat-backup --compression-level 3`' lb_3)

- target: a backup <= 1.25x the floor under the same load
MD
)"
echo "$REPORT"
echo "$REPORT" > benches/last-run-load.md
