#!/usr/bin/env bash
# Benchmark of the files engine: `lifeboat-backup --engine files` of a ~1 GiB tree of mixed
# files to the local store, against a baseline doing comparable work in the same run:
# `tar -cf - DIR | zstd -3 | tee FILE | sha256sum`, then `sync`. Prints a markdown report and
# writes it to benches/last-run-files.md. Not a test: compare the ratios within one run.
#
#   scripts/bench-files.sh                          # ~1 GiB tree (made once, then reused)
#   LIFEBOAT_BENCH_FILES_MIB=256 scripts/bench-files.sh   # a smaller tree, for a quick look
#   LIFEBOAT_BENCH_ROUNDS=5 scripts/bench-files.sh        # more alternating rounds
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
MIB="${LIFEBOAT_BENCH_FILES_MIB:-1024}"
ROUNDS="${LIFEBOAT_BENCH_ROUNDS:-3}"
TREE="$HOME/.cache/lifeboat/bench-files-$MIB"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
command -v zstd >/dev/null || { apt-get update -qq && apt-get install -y -qq zstd >/dev/null; }

cargo build --release --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d /tmp/lifeboat-bench-files.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

if [ ! -f "$TREE/.complete" ]; then
  echo "Making a tree of about $MIB MiB under $TREE..." >&2
  rm -rf "$TREE"
  python3 scripts/make-tree.py "$TREE" "$MIB"
  touch "$TREE/.complete"
fi
TREE_SIZE="$(du -sh --exclude=.complete "$TREE" | cut -f1)"
TREE_FILES="$(find "$TREE" -type f ! -name .complete | wc -l)"

source scripts/bench-measure.sh
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "Files backups of $TREE ($TREE_SIZE, $TREE_FILES files):" >&2
# Warm-up, not measured: both sides then read the tree from the page cache.
tar -cf - -C "$TREE" . > /dev/null
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  measure baseline bash -o pipefail -c "tar -cf - -C '$TREE' . | zstd -q -3 | tee '$OUT/tree.tar.zst' | sha256sum > /dev/null && sync"
  BASE_STORED="$(stat -c %s "$OUT/tree.tar.zst")"
  rm -f "$OUT/tree.tar.zst"
  rm -rf "$OUT/repo"
  measure lifeboat "$BIN/lifeboat-backup" --engine files --path "$TREE" --exclude .complete --job files --repo "$OUT/repo"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
STORED="$(find "$OUT/repo" -name 'data.*' -exec du -b {} + | cut -f1)"
echo "Verify and restore:" >&2
measure verify "$BIN/lifeboat-verify" --repo "$OUT/repo" --job files --level content --no-record
measure restore "$BIN/lifeboat-restore" --repo "$OUT/repo" --job files --latest --to "$OUT/restored" --yes

REPORT="$(cat <<MD
### Files, $(date -u +%Y-%m-%d), $(nproc) cores, a tree of $TREE_SIZE in $TREE_FILES files (logs, images, videos, a cache of small files)

| what | wall (s) | peak RSS (MiB) |
| --- | ---: | ---: |
| \`tar -cf - DIR \| zstd -3 \| tee FILE \| sha256sum; sync\` (median of ${RUNS[baseline]}) | ${WALL[baseline]} | $((${RSS[baseline]} / 1024)) |
| \`lifeboat-backup --engine files\` (zstd 3, local store; median of ${RUNS[lifeboat]}) | ${WALL[lifeboat]} | $((${RSS[lifeboat]} / 1024)) |
| \`lifeboat-verify --level content\` | ${WALL[verify]} | $((${RSS[verify]} / 1024)) |
| \`lifeboat-restore\` into a new directory | ${WALL[restore]} | $((${RSS[restore]} / 1024)) |

- backup vs baseline (medians of $ROUNDS alternating rounds): **$(ratio "${WALL[lifeboat]}" "${WALL[baseline]}")x** (target <= 1.25x)
- lifeboat-backup peak RSS: **$((${RSS[lifeboat]} / 1024)) MiB** (target <= 64 MiB)
- stored: $((STORED / 1048576)) MiB (the baseline's file: $((BASE_STORED / 1048576)) MiB)
- load average before / after the backups: $LOAD_BEFORE / $LOAD_AFTER
MD
)"
echo "$REPORT"
echo "$REPORT" > benches/last-run-files.md
