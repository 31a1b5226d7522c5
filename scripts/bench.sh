#!/usr/bin/env bash
# Benchmark: Lifeboat vs the baselines it replaces, on the same ~1 GB PostgreSQL database, in one
# run. Prints a markdown report and writes it to benches/last-run.md. Not a test: machines here
# are shared and noisy, so compare the ratios within one run, not absolute times across runs.
#
#   scripts/bench.sh                 # ~1 GB database (reused if it already exists)
#   LIFEBOAT_BENCH_ROWS=500000 scripts/bench.sh   # smaller, for a quick look
#   LIFEBOAT_BENCH_ROUNDS=5 scripts/bench.sh      # more alternating rounds
#
# The backups, the restores and their baselines run in alternating rounds (3 by default) and the
# report gives the median and every run: on a shared machine one sample can be 30% off.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
ROWS="${LIFEBOAT_BENCH_ROWS:-3600000}"
ROUNDS="${LIFEBOAT_BENCH_ROUNDS:-3}"
DB="lifeboat_bench_${ROWS}"

eval "$(scripts/services.sh start)"
export PATH="$LIFEBOAT_TEST_PG_BIN:$PATH"
export PGOPTIONS="-c client_min_messages=warning"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

cargo build --release --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/release"
SERVER="${LIFEBOAT_TEST_PG_URL%/*}"
SRC="$SERVER/$DB"
OUT="$(mktemp -d /tmp/lifeboat-bench.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

if [ "$(psql -X -A -t "$SERVER/postgres" -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  echo "Creating $DB with $ROWS rows (realistic mixed rows: text, jsonb, numbers, timestamps)..." >&2
  psql -X -q -v ON_ERROR_STOP=1 "$SERVER/postgres" -c "CREATE DATABASE $DB"
  psql -X -q -v ON_ERROR_STOP=1 "$SRC" <<SQL
CREATE TABLE accounts (id serial PRIMARY KEY, name text, email text, plan text, created_at timestamptz);
INSERT INTO accounts (name, email, plan, created_at)
  SELECT 'Account ' || g, 'user' || g || '@example.com', (ARRAY['free','pro','team'])[1 + g % 3],
         timestamptz '2024-01-01' + g * interval '13 minutes'
  FROM generate_series(1, 50000) g;
CREATE TABLE events (
  id bigserial PRIMARY KEY, account_id int REFERENCES accounts, kind text, amount numeric(12,2),
  payload jsonb, note text, created_at timestamptz);
INSERT INTO events (account_id, kind, amount, payload, note, created_at)
  SELECT 1 + g % 50000,
         (ARRAY['signup','login','purchase','refund','page_view','logout'])[1 + g % 6],
         (g % 100000) / 100.0,
         jsonb_build_object('ip', '10.' || g % 255 || '.' || (g / 255) % 255 || '.7', 'ua', 'Mozilla/5.0 (X11; Linux x86_64) build ' || g % 977,
                            'path', '/app/' || md5((g % 5000)::text), 'ms', g % 1500),
         CASE WHEN g % 4 = 0 THEN 'customer wrote: ' || md5(g::text) || ' ' || md5((g * 3)::text) ELSE NULL END,
         timestamptz '2025-01-01' + g * interval '7 seconds'
  FROM generate_series(1, $ROWS) g;
CREATE INDEX events_account_idx ON events (account_id);
VACUUM ANALYZE;
SQL
fi
DB_SIZE="$(psql -X -A -t "$SRC" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"

source scripts/bench-measure.sh
size_of() { du -sb "$1" | cut -f1; }
# The data object's size and the zstd levels used, of the one snapshot in a repository.
stored_size() { find "$1" -name 'data.*' -exec du -b {} + | cut -f1; }
levels_used() {
  python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['compression']; print(c.get('levels_used', c['level']))" "$(find "$1" -name manifest.json)"
}
fresh_db() { psql -X -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }

# The same backup encrypted to an age recipient (issue: encryption costs <= 1.05x, no memory).
"$BIN/lifeboat-backup" keygen --output "$OUT/identity.txt" > "$OUT/recipient.txt" 2>/dev/null
cat > "$OUT/encrypted.toml" <<TOML
[store]
url = "$OUT/repo_enc"
[encryption]
recipients = ["$(cat "$OUT/recipient.txt")"]
[[job]]
name = "bench"
engine = "postgres"
url = "$SRC"
TOML

echo "Backups of $DB ($DB_SIZE):" >&2
# Warm-up, not measured: the first dump after the database was created or evicted from the
# page cache reads from disk, which would make the floor look slow.
pg_dump -Fc -Z0 -d "$SRC" > /dev/null
for round in $(seq 1 "$ROUNDS"); do
  measure floor bash -c "pg_dump -Fc -Z0 -d '$SRC' > /dev/null"
  rm -rf "$OUT/repo"
  measure lifeboat "$BIN/lifeboat-backup" --engine postgres --url "$SRC" --job bench --repo "$OUT/repo"
  rm -rf "$OUT/repo_enc"
  measure lb_encrypted "$BIN/lifeboat-backup" --config "$OUT/encrypted.toml"
done
LEVELS="$(levels_used "$OUT/repo")"
LEVELS_ENC="$(levels_used "$OUT/repo_enc")"
ENC_SIZE="$(stored_size "$OUT/repo_enc")"

# Under one competing CPU-bound process: the floor, the default (adaptive) level and a fixed
# level 3 (the default before it adapted), alternating, the load running throughout.
command -v stress-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq stress-ng >/dev/null; }
echo "Backups under one competing CPU-bound process (stress-ng --cpu 1):" >&2
stress-ng --cpu 1 --quiet &
STRESS_PID=$!
sleep 1
LOAD_UNDER="$(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  measure floor_load bash -c "pg_dump -Fc -Z0 -d '$SRC' > /dev/null"
  rm -rf "$OUT/repo_load" "$OUT/repo_fixed"
  measure lb_load "$BIN/lifeboat-backup" --engine postgres --url "$SRC" --job bench --repo "$OUT/repo_load"
  measure lb_fixed "$BIN/lifeboat-backup" --engine postgres --url "$SRC" --job bench --repo "$OUT/repo_fixed" --compression-level 3
done
LOAD_UNDER="$LOAD_UNDER / $(cut -d' ' -f1 /proc/loadavg)"
kill "$STRESS_PID"; wait "$STRESS_PID" 2>/dev/null || true
LEVELS_LOAD="$(levels_used "$OUT/repo_load")"
LOAD_SIZE="$(stored_size "$OUT/repo_load")"
FIXED_SIZE="$(stored_size "$OUT/repo_fixed")"

measure oldway bash -o pipefail -c "pg_dump -d '$SRC' | gzip > '$OUT/old.sql.gz'"
pg_dump -Fc -Z0 -d "$SRC" > "$OUT/local.dump"
GZ_SIZE="$(size_of "$OUT/old.sql.gz")"
LB_SIZE="$(stored_size "$OUT/repo")"
RAW_SIZE="$(size_of "$OUT/local.dump")"

echo "Verify:" >&2
measure verify "$BIN/lifeboat-verify" --repo "$OUT/repo" --job bench --level content --no-record
measure rawread bash -c "cat '$(find "$OUT/repo" -name 'data.*')' > /dev/null"

echo "Restores:" >&2
for round in $(seq 1 "$ROUNDS"); do
  fresh_db bench_restore_a
  measure pg_restore pg_restore --single-transaction -d "$SERVER/bench_restore_a" "$OUT/local.dump"
  fresh_db bench_restore_b
  measure gunzip_psql bash -o pipefail -c "gunzip -c '$OUT/old.sql.gz' | psql -X -q -v ON_ERROR_STOP=1 --single-transaction -d '$SERVER/bench_restore_b' > /dev/null"
  fresh_db bench_restore_c
  measure lb_restore "$BIN/lifeboat-restore" --repo "$OUT/repo" --job bench --latest --to "$SERVER/bench_restore_c" --yes
done
psql -X -q "$SERVER/postgres" -c "DROP DATABASE bench_restore_a" -c "DROP DATABASE bench_restore_b" -c "DROP DATABASE bench_restore_c"

echo "S3 (s3s-fs on loopback, objects on local disk):" >&2
# The old way uploads with the AWS CLI; it and boto3 (for a raw GET) live in their own venv.
AWSCLI_VENV="$HOME/.cache/lifeboat/awscli"
if [ ! -x "$AWSCLI_VENV/bin/aws" ]; then
  python3 -m venv "$AWSCLI_VENV"
  "$AWSCLI_VENV/bin/pip" install -q --disable-pip-version-check awscli boto3
fi
export AWS_ACCESS_KEY_ID=lifeboat-test AWS_SECRET_ACCESS_KEY=lifeboat-test-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
S3_ENDPOINT="$LIFEBOAT_TEST_S3S_ENDPOINT"
AWS=("$AWSCLI_VENV/bin/aws" --endpoint-url "$S3_ENDPOINT")
S3_BUCKET="lifeboat-bench-$$"
"${AWS[@]}" s3 mb "s3://$S3_BUCKET" >/dev/null
S3FLAGS=(--s3-endpoint "$S3_ENDPOINT" --s3-path-style)
# The test server's own CPU (user + system seconds, from /proc/PID/stat) during the S3 backups:
# on loopback it shares the backup host's cores, which a real S3 does not.
S3_SERVER_PID="$(pgrep -f "s3s-fs.*${S3_ENDPOINT##*:}" | head -1)"
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$S3_SERVER_PID/stat"; }
S3_SERVER_CPU=0
for round in $(seq 1 "$ROUNDS"); do
  measure floor_s3 bash -c "pg_dump -Fc -Z0 -d '$SRC' > /dev/null"
  before="$(server_cpu)"
  measure s3_backup "$BIN/lifeboat-backup" --engine postgres --url "$SRC" --job bench --repo "s3://$S3_BUCKET/z$round" "${S3FLAGS[@]}"
  S3_SERVER_CPU="$(python3 -c "print($S3_SERVER_CPU + $(server_cpu) - $before)")"
done
S3_SERVER_CPU="$(python3 -c "print(f'{$S3_SERVER_CPU / $ROUNDS:.2f}')")"
measure s3_oldway bash -o pipefail -c "pg_dump -d '$SRC' | gzip > '$OUT/old2.sql.gz' && ${AWS[*]} s3 cp --only-show-errors '$OUT/old2.sql.gz' s3://$S3_BUCKET/old/old.sql.gz"
measure s3_raw_stream "$BIN/lifeboat-backup" --engine postgres --url "$SRC" --job raw --repo "s3://$S3_BUCKET/n" --compression none "${S3FLAGS[@]}"
measure s3_verify "$BIN/lifeboat-verify" --repo "s3://$S3_BUCKET/n" --job raw --level content --no-record "${S3FLAGS[@]}"
RAW_KEY="$("${AWS[@]}" s3api list-objects-v2 --bucket "$S3_BUCKET" --prefix n/jobs/raw/snapshots/ --query "Contents[?contains(Key, '/data.')].Key | [0]" --output text)"
measure s3_rawget "$AWSCLI_VENV/bin/python" -c "import boto3; c=boto3.client('s3', endpoint_url='$S3_ENDPOINT'); b=c.get_object(Bucket='$S3_BUCKET', Key='$RAW_KEY')['Body']
while b.read(1<<20): pass"
cargo build --release -p lifeboat-core --example s3_stream --locked --quiet
measure s3_2gib "$BIN/examples/s3_stream" "s3://$S3_BUCKET/stream" "$S3_ENDPOINT" 2048 16 4
"${AWS[@]}" s3 rb --force "s3://$S3_BUCKET" >/dev/null

best_restore="$(python3 -c "print(min(${WALL[pg_restore]}, ${WALL[gunzip_psql]}))")"
REPORT="$(cat <<MD
### PostgreSQL, $(date -u +%Y-%m-%d), $(nproc) cores, database of $DB_SIZE ($ROWS event rows), pg_dump -Fc -Z0 output $((RAW_SIZE / 1048576)) MiB

| what | wall (s) | peak RSS (MiB) | stored (MiB) |
| --- | ---: | ---: | ---: |
| \`pg_dump -Fc -Z0 > /dev/null\` (the floor; median of ${RUNS[floor]}) | ${WALL[floor]} | $((${RSS[floor]} / 1024)) | - |
| \`pg_dump \| gzip > f.sql.gz\` (the old way) | ${WALL[oldway]} | - | $((GZ_SIZE / 1048576)) |
| \`lifeboat-backup\` (zstd, default adaptive level: used $LEVELS; local store; median of ${RUNS[lifeboat]}) | ${WALL[lifeboat]} | $((${RSS[lifeboat]} / 1024)) | $((LB_SIZE / 1048576)) |
| \`lifeboat-backup\` encrypted to one age recipient (used $LEVELS_ENC; median of ${RUNS[lb_encrypted]}) | ${WALL[lb_encrypted]} | $((${RSS[lb_encrypted]} / 1024)) | $((ENC_SIZE / 1048576)) |
| \`lifeboat-verify --level content\` | ${WALL[verify]} | $((${RSS[verify]} / 1024)) | - |
| \`cat object > /dev/null\` (raw read) | ${WALL[rawread]} | - | - |
| \`pg_restore --single-transaction\` of a local uncompressed dump (median of ${RUNS[pg_restore]}) | ${WALL[pg_restore]} | - | - |
| \`gunzip -c f.sql.gz \| psql --single-transaction\` (median of ${RUNS[gunzip_psql]}) | ${WALL[gunzip_psql]} | - | - |
| \`lifeboat-restore\` (median of ${RUNS[lb_restore]}) | ${WALL[lb_restore]} | $((${RSS[lb_restore]} / 1024)) | - |

- backup vs floor (medians of $ROUNDS alternating rounds): **$(ratio "${WALL[lifeboat]}" "${WALL[floor]}")x** (target <= 1.15x); vs the old way: $(ratio "${WALL[lifeboat]}" "${WALL[oldway]}")x
- lifeboat-backup peak RSS: **$((${RSS[lifeboat]} / 1024)) MiB** (target <= 64 MiB)
- encrypted vs unencrypted backup (medians of the same rounds): **$(ratio "${WALL[lb_encrypted]}" "${WALL[lifeboat]}")x** wall (target <= 1.05x), peak RSS $((${RSS[lb_encrypted]} / 1024)) vs $((${RSS[lifeboat]} / 1024)) MiB
- stored size vs gzip file: **$(ratio "$LB_SIZE" "$GZ_SIZE")x** (target <= 0.9x)
- restore vs the faster baseline (medians; $best_restore s): **$(ratio "${WALL[lb_restore]}" "$best_restore")x** (target <= 1.10x)

#### Under one competing CPU-bound process (\`stress-ng --cpu 1\`; load average $LOAD_UNDER at start / end)

| what | wall (s) | CPU of the command (s) | stored (MiB) |
| --- | ---: | ---: | ---: |
| \`pg_dump -Fc -Z0 > /dev/null\` (the floor under the same load; median of ${RUNS[floor_load]}) | ${WALL[floor_load]} | ${CPU[floor_load]} | - |
| \`lifeboat-backup\`, default adaptive level (used $LEVELS_LOAD; median of ${RUNS[lb_load]}) | ${WALL[lb_load]} | ${CPU[lb_load]} | $((LOAD_SIZE / 1048576)) |
| \`lifeboat-backup --compression-level 3\` (fixed; median of ${RUNS[lb_fixed]}) | ${WALL[lb_fixed]} | ${CPU[lb_fixed]} | $((FIXED_SIZE / 1048576)) |

- adaptive backup vs the floor under load: **$(ratio "${WALL[lb_load]}" "${WALL[floor_load]}")x** (target <= 1.25x); fixed level 3: $(ratio "${WALL[lb_fixed]}" "${WALL[floor_load]}")x

#### S3 (s3s-fs 0.14.1 on loopback, objects on local disk; 6 MiB parts, 4 in flight)

| what | wall (s) | peak RSS (MiB) |
| --- | ---: | ---: |
| \`pg_dump -Fc -Z0 > /dev/null\` (the floor, measured again; median of ${RUNS[floor_s3]}) | ${WALL[floor_s3]} | $((${RSS[floor_s3]} / 1024)) |
| \`lifeboat-backup\` to S3 (default zstd; median of ${RUNS[s3_backup]}) | ${WALL[s3_backup]} | $((${RSS[s3_backup]} / 1024)) |
| \`pg_dump \| gzip > f && aws s3 cp f s3://...\` (the old way) | ${WALL[s3_oldway]} | - |
| \`lifeboat-backup\` to S3, uncompressed ($((RAW_SIZE / 1048576)) MiB stream) | ${WALL[s3_raw_stream]} | $((${RSS[s3_raw_stream]} / 1024)) |
| \`lifeboat-verify --level content\` of that object | ${WALL[s3_verify]} | $((${RSS[s3_verify]} / 1024)) |
| raw GET of the same object (boto3, 1 MiB reads) | ${WALL[s3_rawget]} | - |
| 2 GiB generated stream: multipart upload + download (\`examples/s3_stream\`) | ${WALL[s3_2gib]} | $((${RSS[s3_2gib]} / 1024)) |

- where the S3 backup's CPU goes (medians; user + system seconds): Lifeboat (with pg_dump, its child) ${CPU[s3_backup]} s to S3 against ${CPU[lifeboat]} s to the directory store; the S3 test server $S3_SERVER_CPU s per backup (on loopback it shares these cores; a real S3 does not)
- S3 backup vs floor (medians of $ROUNDS alternating rounds): **$(ratio "${WALL[s3_backup]}" "${WALL[floor_s3]}")x** (target <= 1.15x); the old way vs Lifeboat: **$(ratio "${WALL[s3_oldway]}" "${WALL[s3_backup]}")x** (target >= 3x)
- peak RSS of a 2 GiB stream: **$((${RSS[s3_2gib]} / 1024)) MiB** (16 MiB parts: bound 16 x (4 + 1) + 32 = 112 MiB)
- verify throughput vs raw GET: **$(ratio "${WALL[s3_rawget]}" "${WALL[s3_verify]}")x** (target >= 0.8x)
MD
)"
echo "$REPORT" | tee benches/last-run.md
