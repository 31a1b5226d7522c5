#!/usr/bin/env bash
# MongoDB benchmark (not a test): a backup of DOCS documents of about 1 KB (mixed types, in 4
# collections) by lifeboat-backup to a local directory vs a plain pymongo find() of the same
# data as raw BSON written to /dev/null, and a restore by lifeboat-restore vs pymongo
# insert_many of raw BSON batches, on a private SecantusDB server (the test server). Prints a
# markdown report and writes it to benches/last-run-mongo.md.
#
#   scripts/bench-mongo.sh                                   # 1,000,000 documents
#   LIFEBOAT_BENCH_MONGO_DOCS=100000 scripts/bench-mongo.sh  # smaller, for a quick look
#   LIFEBOAT_BENCH_ROUNDS=5 scripts/bench-mongo.sh           # more alternating rounds
#
# The runs alternate (3 rounds by default); the report gives medians and every run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"
DOCS="${LIFEBOAT_BENCH_MONGO_DOCS:-1000000}"
ROUNDS="${LIFEBOAT_BENCH_ROUNDS:-3}"

eval "$(scripts/services.sh start mongo)"
PY="$LIFEBOAT_TEST_MONGO_PYTHON"
SECANTUS="${PY%/python}/secantusd-py"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/release"
OUT="$(mktemp -d /tmp/lifeboat-bench-mongo.XXXXXX)"

# A private replica-set server, so the test servers keep their data. Its oplog keeps 10,000
# entries: this server reads its oplog by scanning it (0.5 s per query for 30,000 entries),
# which a MongoDB server does not, so the load's million inserts must not stay in it.
PORT=24398
"$SECANTUS" --host 127.0.0.1 --port "$PORT" --storage-path "$OUT/data" --log-level WARNING \
  --cache-size 4G --oplog-max-entries 10000 >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 1 120); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.25; done
URL="mongodb://127.0.0.1:$PORT/?directConnection=true"

source scripts/bench-measure.sh

echo "Loading $DOCS documents of about 1 KB into 4 collections..." >&2
"$PY" - "$URL" "$DOCS" <<'PY'
import datetime, random, sys
import pymongo
from bson import Binary, Decimal128, Int64, ObjectId
url, n = sys.argv[1], int(sys.argv[2])
db = pymongo.MongoClient(url).bench
rnd = random.Random(7)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
for c in range(4):
    coll = db[f"c{c}"]
    batch = []
    for i in range(n // 4):
        batch.append({
            "_id": ObjectId(),
            "n": i,
            "big": Int64(i * 1_000_003),
            "price": Decimal128(f"{i % 1000}.{i % 100:02}"),
            "ratio": rnd.random(),
            "when": datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i),
            "tags": rnd.sample(words, 3),
            "address": {"street": f"{i} {rnd.choice(words)} road", "zip": f"{i % 99999:05}"},
            "note": " ".join(rnd.choice(words) for _ in range(60)),
            "blob": Binary(rnd.randbytes(256)),
            "active": i % 3 == 0,
        })
        if len(batch) == 2000:
            coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        coll.insert_many(batch, ordered=False)
    coll.create_index("n")
PY

cat >"$OUT/raw_find.py" <<'PY'
import sys
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
db = pymongo.MongoClient(sys.argv[1]).bench
with open("/dev/null", "wb") as out:
    for c in range(4):
        for doc in db.get_collection(f"c{c}", codec_options=CodecOptions(document_class=RawBSONDocument)).find():
            out.write(doc.raw)
PY
cat >"$OUT/raw_copy.py" <<'PY'
import sys
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
client = pymongo.MongoClient(sys.argv[1])
raw = CodecOptions(document_class=RawBSONDocument)
target = client[sys.argv[2]]
for c in range(4):
    batch = []
    for doc in client.bench.get_collection(f"c{c}", codec_options=raw).find():
        batch.append(doc)
        if len(batch) == 1000:
            target[f"c{c}"].insert_many(batch, ordered=True, bypass_document_validation=True)
            batch = []
    if batch:
        target[f"c{c}"].insert_many(batch, ordered=True, bypass_document_validation=True)
    target[f"c{c}"].create_index("n")
PY
cat >"$OUT/server_costs.py" <<'PY'
# What lifeboat-backup asks this server for besides the documents: each collection's size (the
# progress total and the upload's part size) and the oplog's newest entry, twice. MongoDB
# answers these from metadata and the oplog's order; this server scans for them.
import sys, time
import pymongo
client = pymongo.MongoClient(sys.argv[1])
start = time.monotonic()
for c in range(4):
    client.bench.command("collStats", f"c{c}")
oplog = client.local["oplog.rs"]
newest = oplog.find_one(sort=[("$natural", -1)])
list(oplog.find({"ts": {"$gte": newest["ts"]}}).sort("$natural", 1))
print(f"{time.monotonic() - start:.2f}")
PY
drop() { "$PY" -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])" "$URL" "$1"; }
CONFIG="$OUT/lifeboat.toml"
printf '[store]\nurl = "file://%s/repo"\n\n[[job]]\nname = "bench"\nengine = "mongodb"\nurl = "%s"\ndatabases = ["bench"]\n' \
  "$OUT" "$URL" >"$CONFIG"

echo "Backup:" >&2
SERVER_COSTS=""
for round in $(seq 1 "$ROUNDS"); do
  SERVER_COSTS="${SERVER_COSTS:+$SERVER_COSTS / }$("$PY" "$OUT/server_costs.py" "$URL")"
  measure find "$PY" "$OUT/raw_find.py" "$URL"
  rm -rf "$OUT/repo"
  measure backup "$BIN/lifeboat-backup" --config "$CONFIG"
done
RAW_SIZE="$(python3 -c "import json,glob; m=json.load(open(glob.glob('$OUT/repo/jobs/bench/snapshots/*/manifest.json')[0])); print(m['object']['raw_size'], m['object']['stored_size'])")"
read -r RAW STORED <<<"$RAW_SIZE"

echo "Restore:" >&2
for round in $(seq 1 "$ROUNDS"); do
  drop copied
  measure copy "$PY" "$OUT/raw_copy.py" "$URL" copied
  drop restored
  measure restore "$BIN/lifeboat-restore" --config "$CONFIG" --job bench --latest --to "$URL" \
    --rename 'bench.*=restored.*' --yes
done
drop copied
drop restored

rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
mib() { python3 -c "print(f'{$1 / 1048576 / $2:,.1f}')"; }
REPORT="$(cat <<MD
### MongoDB, $(date -u +%Y-%m-%d), $(nproc) cores, SecantusDB 0.7.0b3 (the test server, on this machine), $DOCS documents in 4 collections, archive $((RAW / 1048576)) MiB raw, $((STORED / 1048576)) MiB stored (zstd)

| what | wall (s) | CPU (s) | peak RSS (MiB) |
| --- | ---: | ---: | ---: |
| pymongo \`find()\` as raw BSON to /dev/null (runs: ${RUNS[find]}) | ${WALL[find]} | ${CPU[find]} | $((${RSS[find]} / 1024)) |
| \`lifeboat-backup\` to a local directory (runs: ${RUNS[backup]}) | ${WALL[backup]} | ${CPU[backup]} | $((${RSS[backup]} / 1024)) |
| pymongo raw find + \`insert_many\` of 1000-document raw batches, then the index (runs: ${RUNS[copy]}) | ${WALL[copy]} | ${CPU[copy]} | $((${RSS[copy]} / 1024)) |
| \`lifeboat-restore\` (staging, CRCs, index, rename; runs: ${RUNS[restore]}) | ${WALL[restore]} | ${CPU[restore]} | $((${RSS[restore]} / 1024)) |

- backup: **$(rate "$DOCS" "${WALL[backup]}") documents/s**, $(mib "$RAW" "${WALL[backup]}") MiB/s; **$(ratio "${WALL[backup]}" "${WALL[find]}")x** the plain find (target <= 1.2x); peak RSS $((${RSS[backup]} / 1024)) MiB (target <= 64 MiB)
- of the backup's wall time, this server spends $(median "$SERVER_COSTS") s (runs: $SERVER_COSTS) scanning for what MongoDB answers from metadata (4 collStats, the oplog's newest entry and the oplog from it); without it the backup is **$(python3 -c "print(f'{(${WALL[backup]} - $(median "$SERVER_COSTS")) / ${WALL[find]}:.2f}')")x** the plain find
- restore: **$(rate "$DOCS" "${WALL[restore]}") documents/s**; **$(ratio "${WALL[restore]}" "${WALL[copy]}")x** pymongo's raw insert_many
- load on the machine before the runs: $(cut -d' ' -f1-3 /proc/loadavg)
MD
)"
echo "$REPORT" | tee benches/last-run-mongo.md
