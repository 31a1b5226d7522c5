#!/usr/bin/env bash
# One command on a fresh machine: installs what is missing, starts a throwaway PostgreSQL on a
# loopback port, fills a sample database, backs it up with lifeboat-backup into a local
# directory store, verifies it (--level content), restores it into a new database with
# lifeboat-restore, and shows that the data came back (tables, rows, digests).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lifeboat/target}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the demo PostgreSQL (scripts/services.sh; nothing else is installed)"
# `eval "$(...)"` alone would hide services.sh's exit status and go on without servers.
if ! service_env="$(scripts/services.sh start postgres)"; then
  echo "demo.sh: the test servers did not start (services.sh's message is above); nothing was run" >&2
  exit 1
fi
eval "$service_env"
export PATH="$LIFEBOAT_TEST_PG_BIN:$PATH"

say "Building Lifeboat"
cargo build --workspace --bins --locked --quiet
BIN="$CARGO_TARGET_DIR/debug"

WORK="$(mktemp -d /tmp/lifeboat-demo.XXXXXX)"
REPO="$WORK/repo"
SERVER="${LIFEBOAT_TEST_PG_URL%/*}"
SRC_URL="$SERVER/lifeboat_demo"
DST_URL="$SERVER/lifeboat_demo_restored"
export PGOPTIONS="-c client_min_messages=warning"
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

say "Creating the sample database lifeboat_demo"
psql_q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS lifeboat_demo" -c "DROP DATABASE IF EXISTS lifeboat_demo_restored" \
  -c "CREATE DATABASE lifeboat_demo" -c "CREATE DATABASE lifeboat_demo_restored"
psql_q "$SRC_URL" <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(12,2), items jsonb, placed_at timestamptz);
CREATE INDEX orders_customer_idx ON orders (customer_id);
INSERT INTO customers (name, email, created_at)
  SELECT 'Customer ' || g || ' — Zoë', 'c' || g || '@example.com', timestamptz '2026-01-01' + g * interval '1 hour'
  FROM generate_series(1, 2000) g;
INSERT INTO orders (customer_id, total, items, placed_at)
  SELECT 1 + g % 2000, (g % 997) * 1.37, jsonb_build_object('sku', 'SKU-' || g % 50, 'qty', 1 + g % 5), timestamptz '2026-02-01' + g * interval '1 minute'
  FROM generate_series(1, 50000) g;
SQL

say "lifeboat-backup (local directory store: $REPO)"
# --url-env names the variable that holds the URL, so no password shows in `ps`.
export DEMO_DATABASE_URL="$SRC_URL" DEMO_RESTORE_URL="$DST_URL"
"$BIN/lifeboat-backup" --engine postgres --url-env DEMO_DATABASE_URL --job demo --repo "$REPO"

say "lifeboat-verify --level content"
"$BIN/lifeboat-verify" --repo "$REPO" --job demo --level content

say "lifeboat-restore list"
"$BIN/lifeboat-restore" list --repo "$REPO"

say "lifeboat-restore --latest into lifeboat_demo_restored"
"$BIN/lifeboat-restore" --repo "$REPO" --job demo --latest --to-env DEMO_RESTORE_URL --yes

say "Did the data come back?"
digest_sql="SELECT c.relname, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', c.relname), false, true, '')))[1]::text,
  (xpath('/row/d/text()', query_to_xml(format('SELECT md5(string_agg(t::text, %L ORDER BY t::text)) AS d FROM %I t', chr(10), c.relname), false, true, '')))[1]::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1"
src="$(psql -X -A -t -F ' ' "$SRC_URL" -c "$digest_sql")"
dst="$(psql -X -A -t -F ' ' "$DST_URL" -c "$digest_sql")"
printf '%-12s %10s %10s  %-32s %s\n' TABLE "ROWS(src)" "ROWS(dst)" "MD5 OF ORDERED ROWS (src)" MATCH
ok=1
while read -r table rows digest; do
  read -r _ drows ddigest < <(grep "^$table " <<<"$dst" || echo "$table - -")
  match="yes"; [ "$rows $digest" = "$drows $ddigest" ] || { match="NO"; ok=0; }
  printf '%-12s %10s %10s  %-32s %s\n' "$table" "$rows" "$drows" "$digest" "$match"
done <<<"$src"
manifest="$(find "$REPO" -name manifest.json | head -n 1)"
echo
echo "Manifest: $manifest"
grep -E '"(raw|stored)_(size|sha256)"' "$manifest" | sed 's/^ */  /'
if [ "$ok" = 1 ]; then
  echo; echo "Demo OK: every table came back identical. Files are in $WORK."
else
  echo; echo "Demo FAILED: the restored data differs." >&2; exit 1
fi
