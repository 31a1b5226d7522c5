#!/usr/bin/env bash
# Stress run of the files engine, heavier than scripts/test.sh (whose 1 GiB file is sparse): a
# dense tree of about 1 GiB of mixed files plus every awkward case (names over 100 bytes,
# Unicode, symlinks, a hard link, empty folders, odd modes, old mtimes) goes through backup,
# verify content, verify drill and restore, and the restored tree is compared with the source
# entry by entry. Then a flipped byte in the stored object must fail verify and restore with
# exit 3, leaving the target untouched (`--level stored` only checks that the object exists with
# its size, so the flip is for `--level content` to find). Run it before changing the files engine:
#
#   scripts/stress-files.sh                              # ~1 GiB (the tree is made once)
#   LIFEBOAT_STRESS_FILES_MIB=128 scripts/stress-files.sh   # smaller, for a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
MIB="${LIFEBOAT_STRESS_FILES_MIB:-1024}"
TREE="$HOME/.cache/lifeboat/stress-files-$MIB"

cargo build --release --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d /tmp/lifeboat-stress-files.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
step() { echo "stress-files: $*" >&2; }
expect_exit() { # expect_exit CODE command...
  local want="$1" got=0
  shift
  "$@" > "$OUT/last.out" 2>&1 || got=$?
  if [ "$got" != "$want" ]; then
    cat "$OUT/last.out" >&2
    echo "stress-files: FAILED: exit $got, expected $want: $*" >&2
    exit 1
  fi
}

if [ ! -f "$TREE.complete" ]; then
  step "making a tree of about $MIB MiB under $TREE"
  rm -rf "$TREE"
  python3 scripts/make-tree.py --awkward "$TREE" "$MIB"
  touch "$TREE.complete"
fi
REPO="$OUT/repo"
step "backup of $(du -sh "$TREE" | cut -f1)"
expect_exit 0 "$BIN/lifeboat-backup" --engine files --path "$TREE" --job stress --repo "$REPO"
step "verify --level content"
expect_exit 0 "$BIN/lifeboat-verify" --repo "$REPO" --job stress --level content
step "verify --level drill"
expect_exit 0 "$BIN/lifeboat-verify" --repo "$REPO" --job stress --level drill --scratch-dir "$OUT"
step "restore"
expect_exit 0 "$BIN/lifeboat-restore" --repo "$REPO" --job stress --latest --to "$OUT/restored" --yes
python3 scripts/compare-trees.py "$TREE" "$OUT/restored"

step "a flipped byte in the stored object"
DATA="$(find "$REPO" -name 'data.*' | head -1)"
python3 - "$DATA" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(os.path.getsize(sys.argv[1]) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0x01]))
PY
expect_exit 3 "$BIN/lifeboat-verify" --repo "$REPO" --job stress --level content --no-record
mkdir "$OUT/untouched"
expect_exit 3 "$BIN/lifeboat-restore" --repo "$REPO" --job stress --latest --to "$OUT/untouched/target" --yes
if [ -n "$(ls -A "$OUT/untouched")" ]; then
  ls -la "$OUT/untouched" >&2
  echo "stress-files: FAILED: a failed restore left something beside its target" >&2
  exit 1
fi
step "ok"
