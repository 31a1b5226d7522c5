#!/usr/bin/env bash
# Benchmark of configuration loading: `lifeboat-backup --print-config` of generated files with
# 5,000 to 40,000 jobs, wall time and peak memory each; the cost must grow linearly with the
# number of jobs (it grew with its square: 20,000 jobs took 37 s and 430 MB). Prints a markdown
# report and writes it to benches/last-run-config.md. Not a test: compare within one run.
#
#   scripts/bench-config.sh                     # the debug build the tests use (no release build)
#   LIFEBOAT_BENCH_PROFILE=release scripts/bench-config.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
PROFILE="${LIFEBOAT_BENCH_PROFILE:-debug}"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
if [ "$PROFILE" = release ]; then
  cargo build --release -p lifeboat-backup --locked --quiet
else
  cargo build -p lifeboat-backup --locked --quiet
fi
BIN="$CARGO_TARGET_DIR/$PROFILE/lifeboat-backup"
OUT="$(mktemp -d /tmp/lifeboat-bench-config.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

report="$OUT/report.md"
{
  echo "# Configuration loading ($(date -u +%Y-%m-%dT%H:%MZ), $PROFILE build, load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "| jobs | wall s | peak RSS MiB | µs per job |"
  echo "| ---: | ---: | ---: | ---: |"
} >"$report"
for jobs in 5000 10000 20000 40000; do
  file="$OUT/jobs-$jobs.toml"
  python3 - "$file" "$jobs" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write('[store]\nurl = "/tmp/lifeboat-bench-config-repo"\n')
    for i in range(n):
        f.write(f'\n[[job]]\nname = "job-{i}"\nengine = "postgres"\nurl = "postgres://app@db-{i}.internal:5432/app_{i}"\nretention = "gfs"\nschedule = "{i % 60} 3 * * *"\n')
PY
  /usr/bin/time -f '%e %M' -o "$OUT/time" "$BIN" --config "$file" --print-config >/dev/null
  read -r secs kib <"$OUT/time"
  printf '| %d | %s | %d | %.0f |\n' "$jobs" "$secs" "$((kib / 1024))" \
    "$(python3 -c "print($secs * 1e6 / $jobs)")" >>"$report"
done
cat "$report"
cp "$report" benches/last-run-config.md
