#!/usr/bin/env bash
# Regenerates the deployment files under deploy/ from deploy/lifeboat.toml, with the paths of a
# standard install (/usr/local/bin, /etc/lifeboat). tests/deploy.rs checks they are in step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
cargo build --quiet --locked -p lifeboat-backup
BIN="$CARGO_TARGET_DIR/debug/lifeboat-backup"
# The sample's ${VAR}s, so the file loads; their values appear in no generated file.
export S3_ENDPOINT=https://example.invalid DATABASE_URL=postgres://example.invalid/app \
  REDIS_URL=redis://example.invalid LIFEBOAT_SCRATCH_URL=postgres://example.invalid/postgres
for format in crontab systemd kubernetes railway; do
  case "$format" in
    crontab) dir=deploy ;;
    *) dir="deploy/$format"; rm -f "$dir"/*; mkdir -p "$dir" ;;
  esac
  "$BIN" --config deploy/lifeboat.toml schedule --print "$format" --output-dir "$dir" \
    --config-path /etc/lifeboat/lifeboat.toml --bin-dir /usr/local/bin
done
