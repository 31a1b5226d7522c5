#!/usr/bin/env bash
# Redis benchmark (not a test): capture of a ~1 GB data set by lifeboat-backup vs
# `redis-cli --rdb /dev/null` on the same server, and the replay rate of lifeboat-restore into a
# live server. Prints a markdown report and writes it to benches/last-run-redis.md.
#
#   scripts/bench-redis.sh                       # ~1 GB of random values
#   LIFEBOAT_BENCH_REDIS_KEYS=200000 scripts/bench-redis.sh   # smaller, for a quick look
#   LIFEBOAT_BENCH_ROUNDS=5 scripts/bench-redis.sh             # more alternating rounds
#
# The captures run in alternating rounds (3 by default); the report gives the median and every
# run, because one sample of each can differ by 30% from noise on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
KEYS="${LIFEBOAT_BENCH_REDIS_KEYS:-1000000}"
SMALL_KEYS="${LIFEBOAT_BENCH_REDIS_SMALL_KEYS:-1000000}"
ROUNDS="${LIFEBOAT_BENCH_ROUNDS:-3}"

eval "$(scripts/services.sh start)"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d /tmp/lifeboat-bench-redis.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

# A private server, so the test servers keep their data and settings.
PORT=24399
redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --dir "$OUT" --save "" \
  --appendonly no --pidfile "$OUT/redis.pid" --logfile "$OUT/redis.log" \
  --repl-diskless-sync yes --repl-diskless-sync-delay 0 --enable-debug-command local
trap 'kill "$(cat "$OUT/redis.pid")" 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 1 40); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.25; done
URL="redis://127.0.0.1:$PORT"

source scripts/bench-measure.sh

echo "Loading $KEYS keys of random bytes (200..1800 bytes each)..." >&2
python3 - "$KEYS" <<'PY' | redis-cli -p "$PORT" --pipe >/dev/null
import os, random, sys
random.seed(7)
out = sys.stdout.buffer
n = int(sys.argv[1])
for i in range(n):
    key = b"user:%d:profile" % i
    value = os.urandom(random.randint(200, 1800))
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
PY
USED="$(redis-cli -p "$PORT" info memory | awk -F: '/^used_memory_human/ {print $2}' | tr -d '\r')"
echo "Capture of $KEYS keys ($USED):" >&2
# redis-cli 7.0 completes the transfer, then fails to fsync /dev/null: its exit status is not
# the measure, its "Transfer finished with success" line is.
SHM="$(mktemp -d /dev/shm/lifeboat-bench.XXXXXX)"
for round in $(seq 1 "$ROUNDS"); do
  measure rediscli bash -c "redis-cli -p $PORT --rdb /dev/null 2>&1 | grep -q 'Transfer finished with success'"
  rm -rf "$OUT/repo-none" "$OUT/repo-zstd" "$SHM/repo"
  measure lb_none "$BIN/lifeboat-backup" --engine redis --url "$URL" --repo "$OUT/repo-none" --job raw --compression none
  measure lb_zstd "$BIN/lifeboat-backup" --engine redis --url "$URL" --repo "$OUT/repo-zstd" --job zstd
  # The same into a store in memory (/dev/shm): no disk, but tmpfs copies every byte into its
  # pages, the cost that the disk store's O_DIRECT writes avoid (redis-cli writes to /dev/null).
  measure lb_shm "$BIN/lifeboat-backup" --engine redis --url "$URL" --repo "$SHM/repo" --job shm --compression none
done
rm -rf "$SHM"
RDB_SIZE="$(find "$OUT/repo-none" -name 'data.*' -exec du -b {} + | cut -f1)"

echo "Replay of $SMALL_KEYS small keys:" >&2
redis-cli -p "$PORT" flushall >/dev/null
redis-cli -p "$PORT" debug populate "$SMALL_KEYS" small 16 >/dev/null
"$BIN/lifeboat-backup" --engine redis --url "$URL" --repo "$OUT/repo-small" --job small >/dev/null
redis-cli -p "$PORT" flushall >/dev/null
measure lb_restore "$BIN/lifeboat-restore" --repo "$OUT/repo-small" --job small --latest --to "$URL" --yes
RESTORED="$(redis-cli -p "$PORT" dbsize | tr -d '\r')"

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
REPORT="$(cat <<MD
### Redis, $(date -u +%Y-%m-%d), $(nproc) cores, redis-server $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/'), $KEYS keys of random bytes ($USED in memory), RDB $((RDB_SIZE / 1048576)) MiB

| what | wall (s) | peak RSS (MiB) |
| --- | ---: | ---: |
| \`redis-cli --rdb /dev/null\` (the floor; median of ${RUNS[rediscli]}) | ${WALL[rediscli]} | $((${RSS[rediscli]} / 1024)) |
| \`lifeboat-backup\`, uncompressed (median of ${RUNS[lb_none]}) | ${WALL[lb_none]} | $((${RSS[lb_none]} / 1024)) |
| \`lifeboat-backup\`, zstd 3 (default; median of ${RUNS[lb_zstd]}) | ${WALL[lb_zstd]} | $((${RSS[lb_zstd]} / 1024)) |
| \`lifeboat-backup\`, uncompressed, store in /dev/shm (median of ${RUNS[lb_shm]}) | ${WALL[lb_shm]} | $((${RSS[lb_shm]} / 1024)) |
| \`lifeboat-restore\` of $SMALL_KEYS small keys (check pass + load) | ${WALL[lb_restore]} | $((${RSS[lb_restore]} / 1024)) |

- capture speed vs redis-cli (medians of $ROUNDS alternating rounds): uncompressed **$(ratio "${WALL[rediscli]}" "${WALL[lb_none]}")x**, zstd **$(ratio "${WALL[rediscli]}" "${WALL[lb_zstd]}")x**, store in memory **$(ratio "${WALL[rediscli]}" "${WALL[lb_shm]}")x** (target >= 0.95x)
- replay: **$(rate "$RESTORED" "${WALL[lb_restore]}") keys/s** ($RESTORED keys restored; target >= 200,000 keys/s)
MD
)"
echo "$REPORT" | tee benches/last-run-redis.md
