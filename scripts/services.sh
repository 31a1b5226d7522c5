#!/usr/bin/env bash
# Installs (if missing) and starts the servers Lifeboat's tests and demo use, on loopback ports
# that do not clash with default installs. Idempotent: running it again leaves running servers be.
#
#   scripts/services.sh start [SERVICE...]   install + start (default: all of them)
#   scripts/services.sh stop                 stop what this script started
#   scripts/services.sh env                  print the variables the tests read
#
# SERVICE is postgres, pg-tls, s3 (moto), s3s (s3s-fs), redis, mongo or pushgateway: the demo
# starts only postgres.
#
# PostgreSQL: superuser "lifeboat", password "lifeboat-test-password", 127.0.0.1:${LIFEBOAT_PG_PORT:-24329}.
# PostgreSQL over TLS only (service pg-tls): a second cluster on localhost:${LIFEBOAT_PG_TLS_PORT:-24332}
#     with ssl = on and only hostssl lines (scram, and `cert` for the user lbt_cert), a private
#     CA and certificates made with openssl in $LIFEBOAT_SERVICES_DIR/pg-tls/certs (the server's
#     is for the name localhost only; a second CA signs nothing the server uses).
# S3: moto server 5.1.22 (pinned: 5.2.x fails to complete multipart uploads from the Rust SDK) in
#     its own Python venv, http://127.0.0.1:${LIFEBOAT_S3_PORT:-24390}, any access key.
# Redis: redis-server from Debian packages, two instances (a source and a restore target) on
#     127.0.0.1:${LIFEBOAT_REDIS_PORT:-24379} and :${LIFEBOAT_REDIS_TARGET_PORT:-24380}, with
#     DEBUG enabled (DEBUG DIGEST compares data sets) and no persistence of their own.
# S3 on disk: s3s-fs 0.14.1 (pinned: newer versions need a newer Rust), built with cargo into
#     ~/.cache/lifeboat, http://127.0.0.1:${LIFEBOAT_S3S_PORT:-24391}, for large streams (moto
#     keeps objects in memory). It lists no multipart uploads and has no versioning or object
#     lock: the tests use moto for those.
# Prometheus Pushgateway: Debian's prometheus-pushgateway on 127.0.0.1:${LIFEBOAT_PUSHGATEWAY_PORT:-24393},
#     started by this script (not the package's service), keeping nothing on disk.
# MongoDB: SecantusDB $SECANTUS_VERSION (a MongoDB-wire-compatible server on WiredTiger, GPL-2.0,
#     used only as a test server: nothing links it) in its own Python venv with pymongo, three
#     in-memory servers: a source that reports itself as a single-node replica set with an oplog
#     on 127.0.0.1:${LIFEBOAT_MONGO_PORT:-24317}, a standalone restore target on
#     :${LIFEBOAT_MONGO_TARGET_PORT:-24318}, and a replica set whose oplog keeps only 200 entries
#     on :${LIFEBOAT_MONGO_SMALL_OPLOG_PORT:-24319}, where an oplog rolls over during a dump.
set -euo pipefail

SERVICES_DIR="${LIFEBOAT_SERVICES_DIR:-/tmp/lifeboat-services}"
PG_PORT="${LIFEBOAT_PG_PORT:-24329}"
PG_USER=lifeboat
PG_PASSWORD=lifeboat-test-password
PG_DATA="$SERVICES_DIR/pg/data"
PG_LOG="$SERVICES_DIR/pg/server.log"
PG_TLS_PORT="${LIFEBOAT_PG_TLS_PORT:-24332}"
PG_TLS_DIR="$SERVICES_DIR/pg-tls"
PG_TLS_DATA="$PG_TLS_DIR/data"
PG_TLS_CERTS="$PG_TLS_DIR/certs"
# The server refuses to run as root; it runs as this system user.
PG_OS_USER=postgres
S3_PORT="${LIFEBOAT_S3_PORT:-24390}"
MOTO_VERSION=5.1.22
MOTO_VENV="${LIFEBOAT_MOTO_VENV:-$HOME/.cache/lifeboat/moto-$MOTO_VERSION}"
S3_LOG="$SERVICES_DIR/s3/moto.log"
REDIS_PORT="${LIFEBOAT_REDIS_PORT:-24379}"
REDIS_TARGET_PORT="${LIFEBOAT_REDIS_TARGET_PORT:-24380}"
S3S_PORT="${LIFEBOAT_S3S_PORT:-24391}"
S3S_VERSION=0.14.1
S3S_ROOT="${LIFEBOAT_S3S_ROOT:-$HOME/.cache/lifeboat/s3s-fs-$S3S_VERSION}"
S3S_DATA="$SERVICES_DIR/s3s-fs/data"
PUSHGATEWAY_PORT="${LIFEBOAT_PUSHGATEWAY_PORT:-24393}"
MONGO_PORT="${LIFEBOAT_MONGO_PORT:-24317}"
MONGO_TARGET_PORT="${LIFEBOAT_MONGO_TARGET_PORT:-24318}"
MONGO_SMALL_OPLOG_PORT="${LIFEBOAT_MONGO_SMALL_OPLOG_PORT:-24319}"
SECANTUS_VERSION=0.7.0b3
SECANTUS_VENV="${LIFEBOAT_SECANTUS_VENV:-$HOME/.cache/lifeboat/secantusdb-$SECANTUS_VERSION}"
# The same test credentials the tests give the AWS SDK.
S3_ACCESS_KEY=lifeboat-test
S3_SECRET_KEY=lifeboat-test-secret

log() { echo "services: $*" >&2; }

# The servers outlive this script and inherit its working directory: run from a directory that
# stays (a server whose working directory was a deleted clone fails on relative paths: s3s-fs
# answered every request with InternalError once the CI clone it was started from was gone).
mkdir -p "$SERVICES_DIR"
cd "$SERVICES_DIR"

# A port another program holds makes a server fail to start with "Address already in use", far
# from here; say at once which port and who holds it. Ports are below 32768, outside the
# kernel's range of ephemeral ports, so an outgoing connection never takes one.
require_free_port() {
  local port="$1" what="$2"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    local holder=""
    if command -v ss >/dev/null 2>&1; then
      holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\),pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n 1)"
    fi
    log "cannot start $what: port $port is already in use${holder:+ by $holder}, and not by a server this script started"
    log "stop that program, or pick another port for $what (the LIFEBOAT_*_PORT variables at the top of this script)"
    exit 1
  fi
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $* (Debian packages)"
  if [ -z "${APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bin_dir() {
  # The newest installed server version.
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install_postgres() {
  local bin
  bin="$(pg_bin_dir || true)"
  if [ -z "$bin" ] || [ ! -x "$bin/postgres" ] || [ ! -x "$bin/pg_dump" ]; then
    # Debian would create and start a default cluster on 5432; we run our own instead.
    as_root mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    apt_install postgresql postgresql-client
  fi
  if ! id "$PG_OS_USER" >/dev/null 2>&1; then
    as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
}

run_as_pg() {
  if [ "$(id -un)" = "$PG_OS_USER" ]; then "$@"; else as_root runuser -u "$PG_OS_USER" -- "$@"; fi
}

pg_ready() {
  "$(pg_bin_dir)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1
}

start_postgres() {
  install_postgres
  local bin; bin="$(pg_bin_dir)"
  if pg_ready; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    return
  fi
  as_root mkdir -p "$SERVICES_DIR/pg"
  as_root chmod 755 "$SERVICES_DIR"
  as_root chown -R "$PG_OS_USER" "$SERVICES_DIR/pg"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $PG_DATA"
    local pwfile="$SERVICES_DIR/pg/pwfile"
    echo "$PG_PASSWORD" | as_root tee "$pwfile" >/dev/null
    as_root chown "$PG_OS_USER" "$pwfile"
    run_as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --pwfile="$pwfile" \
      --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_root rm -f "$pwfile"
  fi
  require_free_port "$PG_PORT" PostgreSQL
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  run_as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start \
    -o "-h 127.0.0.1 -p $PG_PORT -k $SERVICES_DIR/pg -c max_connections=200 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" >/dev/null
  for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
  pg_ready || { log "PostgreSQL did not start; see $PG_LOG"; tail -n 20 "$PG_LOG" >&2 || true; exit 1; }
}

stop_postgres() {
  local bin; bin="$(pg_bin_dir || true)"
  if [ -n "$bin" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    run_as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || true
  fi
}

pg_tls_ready() {
  "$(pg_bin_dir)/pg_isready" -q -h localhost -p "$PG_TLS_PORT" >/dev/null 2>&1
}

make_pg_tls_certs() {
  [ -f "$PG_TLS_CERTS/server.crt" ] && return
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  mkdir -p "$PG_TLS_CERTS"
  (
    cd "$PG_TLS_CERTS"
    openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -subj "/CN=Lifeboat Test CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -subj "/CN=Another CA" \
      -keyout wrong-ca.key -out wrong-ca.crt 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl req -new -nodes -newkey rsa:2048 -subj "/CN=localhost" \
      -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl req -new -nodes -newkey rsa:2048 -subj "/CN=lbt_cert" \
      -keyout client.key -out client.csr 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.crt 2>/dev/null
    chmod 600 ./*.key
  )
}

start_pg_tls() {
  install_postgres
  local bin; bin="$(pg_bin_dir)"
  if pg_tls_ready; then
    log "PostgreSQL (TLS only) already running on localhost:$PG_TLS_PORT"
    return
  fi
  make_pg_tls_certs
  as_root mkdir -p "$PG_TLS_DIR"
  as_root chmod 755 "$SERVICES_DIR" "$PG_TLS_DIR"
  if [ ! -f "$PG_TLS_DATA/PG_VERSION" ]; then
    log "creating a TLS-only PostgreSQL cluster in $PG_TLS_DATA"
    local pwfile="$PG_TLS_DIR/pwfile"
    echo "$PG_PASSWORD" > "$pwfile"
    as_root chown -R "$PG_OS_USER" "$PG_TLS_DIR"
    run_as_pg "$bin/initdb" -D "$PG_TLS_DATA" -U "$PG_USER" --pwfile="$pwfile" \
      --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    # The server's key and certificate, readable by the server only.
    cp "$PG_TLS_CERTS/server.crt" "$PG_TLS_CERTS/server.key" "$PG_TLS_CERTS/ca.crt" "$PG_TLS_DATA/"
    cat > "$PG_TLS_DATA/pg_hba.conf" <<HBA
local     all  all                 trust
hostssl   all  lbt_cert  127.0.0.1/32  cert
hostssl   all  lbt_cert  ::1/128       cert
hostssl   all  all       127.0.0.1/32  scram-sha-256
hostssl   all  all       ::1/128       scram-sha-256
HBA
    as_root chown -R "$PG_OS_USER" "$PG_TLS_DIR"
    as_root chmod 600 "$PG_TLS_DATA/server.key"
  fi
  require_free_port "$PG_TLS_PORT" "PostgreSQL (TLS only)"
  log "starting PostgreSQL (TLS only) on localhost:$PG_TLS_PORT"
  run_as_pg "$bin/pg_ctl" -D "$PG_TLS_DATA" -l "$PG_TLS_DIR/server.log" -w -t 60 start \
    -o "-h localhost -p $PG_TLS_PORT -k $PG_TLS_DIR -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=ca.crt -c fsync=off" >/dev/null
  for _ in $(seq 1 60); do pg_tls_ready && break; sleep 0.5; done
  pg_tls_ready || { log "the TLS PostgreSQL did not start; see $PG_TLS_DIR/server.log"; tail -n 20 "$PG_TLS_DIR/server.log" >&2 || true; exit 1; }
  # The user of the client-certificate test.
  run_as_pg "$bin/psql" -X -q -h "$PG_TLS_DIR" -p "$PG_TLS_PORT" -U "$PG_USER" -d postgres \
    -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lbt_cert') THEN CREATE ROLE lbt_cert LOGIN SUPERUSER; END IF; END \$\$" >/dev/null
}

stop_pg_tls() {
  local bin; bin="$(pg_bin_dir || true)"
  if [ -n "$bin" ] && [ -f "$PG_TLS_DATA/postmaster.pid" ]; then
    run_as_pg "$bin/pg_ctl" -D "$PG_TLS_DATA" -m fast -w stop >/dev/null || true
  fi
}

s3_ready() {
  (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null
}

install_moto() {
  if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
    log "installing moto[server]==$MOTO_VERSION into $MOTO_VENV (Python packages)"
    if ! python3 -m venv "$MOTO_VENV" >/dev/null 2>&1; then
      apt_install python3-venv
      python3 -m venv "$MOTO_VENV"
    fi
    "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
}

start_s3() {
  install_moto
  if s3_ready; then
    log "S3 (moto) already running on 127.0.0.1:$S3_PORT"
    return
  fi
  mkdir -p "$SERVICES_DIR/s3"
  require_free_port "$S3_PORT" "S3 (moto)"
  log "starting S3 (moto $MOTO_VERSION) on 127.0.0.1:$S3_PORT"
  nohup "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$S3_LOG" 2>&1 &
  echo $! >"$SERVICES_DIR/s3/pid"
  for _ in $(seq 1 60); do s3_ready && break; sleep 0.5; done
  s3_ready || { log "moto did not start; see $S3_LOG"; tail -n 20 "$S3_LOG" >&2 || true; exit 1; }
}

stop_s3() {
  if [ -f "$SERVICES_DIR/s3/pid" ]; then
    kill "$(cat "$SERVICES_DIR/s3/pid")" 2>/dev/null || true
    rm -f "$SERVICES_DIR/s3/pid"
  fi
}

s3s_ready() {
  (exec 3<>"/dev/tcp/127.0.0.1/$S3S_PORT") 2>/dev/null
}

install_s3s_fs() {
  if [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
    log "building s3s-fs $S3S_VERSION into $S3S_ROOT (Rust crates; a few minutes)"
    cargo install -q "s3s-fs@$S3S_VERSION" --features binary --locked --root "$S3S_ROOT"
  fi
}

start_s3s_fs() {
  install_s3s_fs
  if s3s_ready; then
    log "S3 (s3s-fs) already running on 127.0.0.1:$S3S_PORT"
    return
  fi
  mkdir -p "$S3S_DATA"
  require_free_port "$S3S_PORT" "S3 (s3s-fs)"
  log "starting S3 (s3s-fs $S3S_VERSION) on 127.0.0.1:$S3S_PORT, data in $S3S_DATA"
  nohup "$S3S_ROOT/bin/s3s-fs" --host 127.0.0.1 --port "$S3S_PORT" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$S3S_DATA" \
    >"$SERVICES_DIR/s3s-fs/s3s-fs.log" 2>&1 &
  echo $! >"$SERVICES_DIR/s3s-fs/pid"
  for _ in $(seq 1 60); do s3s_ready && break; sleep 0.5; done
  s3s_ready || { log "s3s-fs did not start; see $SERVICES_DIR/s3s-fs/s3s-fs.log"; exit 1; }
}

stop_s3s_fs() {
  if [ -f "$SERVICES_DIR/s3s-fs/pid" ]; then
    kill "$(cat "$SERVICES_DIR/s3s-fs/pid")" 2>/dev/null || true
    rm -f "$SERVICES_DIR/s3s-fs/pid"
  fi
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

redis_ready() {
  # A Redis that answers PING, not just any program listening on the port.
  [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
  fi
  # The TLS test makes its certificates with openssl.
  if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
  fi
  # The full-disk tests format small ext4 images.
  if ! command -v mkfs.ext4 >/dev/null 2>&1; then
    apt_install e2fsprogs
  fi
  local port
  for port in "$REDIS_PORT" "$REDIS_TARGET_PORT"; do
    if redis_ready "$port"; then
      log "Redis already running on 127.0.0.1:$port"
      continue
    fi
    mkdir -p "$SERVICES_DIR/redis-$port"
    require_free_port "$port" Redis
    log "starting Redis on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
      --dir "$SERVICES_DIR/redis-$port" --pidfile "$SERVICES_DIR/redis-$port/pid" \
      --logfile "$SERVICES_DIR/redis-$port/redis.log" --save "" --appendonly no \
      --enable-debug-command yes --protected-mode no
    for _ in $(seq 1 40); do redis_ready "$port" && break; sleep 0.25; done
    redis_ready "$port" || { log "Redis did not start; see $SERVICES_DIR/redis-$port/redis.log"; exit 1; }
  done
}

stop_redis() {
  local port
  for port in "$REDIS_PORT" "$REDIS_TARGET_PORT"; do
    if [ -f "$SERVICES_DIR/redis-$port/pid" ]; then
      kill "$(cat "$SERVICES_DIR/redis-$port/pid")" 2>/dev/null || true
    fi
  done
}

start_pushgateway() {
  local bin=/usr/bin/prometheus-pushgateway
  [ -x "$bin" ] || apt_install prometheus-pushgateway
  if port_open "$PUSHGATEWAY_PORT"; then
    log "Pushgateway already running on 127.0.0.1:$PUSHGATEWAY_PORT"
    return
  fi
  mkdir -p "$SERVICES_DIR/pushgateway"
  require_free_port "$PUSHGATEWAY_PORT" Pushgateway
  log "starting the Pushgateway on 127.0.0.1:$PUSHGATEWAY_PORT"
  nohup "$bin" --web.listen-address="127.0.0.1:$PUSHGATEWAY_PORT" \
    >"$SERVICES_DIR/pushgateway/log" 2>&1 &
  echo $! >"$SERVICES_DIR/pushgateway/pid"
  for _ in $(seq 1 40); do port_open "$PUSHGATEWAY_PORT" && break; sleep 0.25; done
  port_open "$PUSHGATEWAY_PORT" || { log "the Pushgateway did not start; see $SERVICES_DIR/pushgateway/log"; exit 1; }
}

stop_pushgateway() {
  if [ -f "$SERVICES_DIR/pushgateway/pid" ]; then
    kill "$(cat "$SERVICES_DIR/pushgateway/pid")" 2>/dev/null || true
  fi
}

install_secantus() {
  if [ ! -x "$SECANTUS_VENV/bin/secantusd-py" ] || ! "$SECANTUS_VENV/bin/python" -c 'import pymongo' 2>/dev/null; then
    log "installing SecantusDB $SECANTUS_VERSION and pymongo into $SECANTUS_VENV (Python packages)"
    if ! python3 -m venv "$SECANTUS_VENV" >/dev/null 2>&1; then
      apt_install python3-venv
      python3 -m venv "$SECANTUS_VENV"
    fi
    "$SECANTUS_VENV/bin/pip" install -q --disable-pip-version-check --pre "secantusdb==$SECANTUS_VERSION" pymongo
  fi
}

start_one_mongo() {
  local port="$1"
  shift
  if port_open "$port"; then
    log "MongoDB (SecantusDB) already running on 127.0.0.1:$port"
    return
  fi
  mkdir -p "$SERVICES_DIR/mongo-$port"
  require_free_port "$port" "MongoDB (SecantusDB)"
  log "starting MongoDB (SecantusDB $SECANTUS_VERSION) on 127.0.0.1:$port $*"
  nohup "$SECANTUS_VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path :memory: \
    --log-level WARNING "$@" >"$SERVICES_DIR/mongo-$port/log" 2>&1 &
  echo $! >"$SERVICES_DIR/mongo-$port/pid"
}

start_mongo() {
  install_secantus
  start_one_mongo "$MONGO_PORT"
  start_one_mongo "$MONGO_TARGET_PORT" --standalone
  start_one_mongo "$MONGO_SMALL_OPLOG_PORT" --oplog-max-entries 200
  local port
  for port in "$MONGO_PORT" "$MONGO_TARGET_PORT" "$MONGO_SMALL_OPLOG_PORT"; do
    for _ in $(seq 1 120); do port_open "$port" && break; sleep 0.25; done
    port_open "$port" || { log "SecantusDB did not start on $port; see $SERVICES_DIR/mongo-$port/log"; tail -n 20 "$SERVICES_DIR/mongo-$port/log" >&2 || true; exit 1; }
  done
}

stop_mongo() {
  local port
  for port in "$MONGO_PORT" "$MONGO_TARGET_PORT" "$MONGO_SMALL_OPLOG_PORT"; do
    if [ -f "$SERVICES_DIR/mongo-$port/pid" ]; then
      kill "$(cat "$SERVICES_DIR/mongo-$port/pid")" 2>/dev/null || true
      rm -f "$SERVICES_DIR/mongo-$port/pid"
    fi
  done
}

print_env() {
  echo "export LIFEBOAT_TEST_PG_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
  echo "export LIFEBOAT_TEST_PG_BIN=$(pg_bin_dir)"
  echo "export LIFEBOAT_TEST_PG_TLS_URL=postgres://$PG_USER:$PG_PASSWORD@localhost:$PG_TLS_PORT/postgres"
  echo "export LIFEBOAT_TEST_PG_TLS_CERTS=$PG_TLS_CERTS"
  echo "export LIFEBOAT_TEST_PG_TLS_SOCKET_DIR=$PG_TLS_DIR"
  echo "export LIFEBOAT_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
  echo "export LIFEBOAT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  echo "export LIFEBOAT_TEST_REDIS_TARGET_URL=redis://127.0.0.1:$REDIS_TARGET_PORT"
  echo "export LIFEBOAT_TEST_S3S_ENDPOINT=http://127.0.0.1:$S3S_PORT"
  echo "export LIFEBOAT_TEST_S3S_DATA=$S3S_DATA"
  echo "export LIFEBOAT_TEST_S3S_FS=$S3S_ROOT/bin/s3s-fs"
  echo "export LIFEBOAT_TEST_PUSHGATEWAY=http://127.0.0.1:$PUSHGATEWAY_PORT"
  echo "export LIFEBOAT_TEST_MONGO_URL=mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true"
  echo "export LIFEBOAT_TEST_MONGO_TARGET_URL=mongodb://127.0.0.1:$MONGO_TARGET_PORT/?directConnection=true"
  echo "export LIFEBOAT_TEST_MONGO_SMALL_OPLOG_URL=mongodb://127.0.0.1:$MONGO_SMALL_OPLOG_PORT/?directConnection=true"
  echo "export LIFEBOAT_TEST_MONGO_PYTHON=$SECANTUS_VENV/bin/python"
}

# Tools the tests call besides the servers: ssh-keygen makes the ssh-ed25519 keys of the
# encryption tests; systemd-analyze checks the generated units, man renders the man pages, and
# PyYAML reads the generated Kubernetes files, prometheus_client's parser the metrics files.
install_tools() {
  command -v ssh-keygen >/dev/null 2>&1 || apt_install openssh-client
  command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
  command -v man >/dev/null 2>&1 || apt_install man-db
  python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml >&2 \
    || apt_install python3-yaml
  # tmux runs a backup on a terminal to see its progress line.
  command -v tmux >/dev/null 2>&1 || apt_install tmux
  # faketime runs a backup whose clock is wrong (the lock tests).
  command -v faketime >/dev/null 2>&1 || apt_install faketime
  # Headless Chromium renders the HTML DR report as a person would see it.
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  # promtool checks deploy/'s example alert rules.
  command -v promtool >/dev/null 2>&1 || apt_install prometheus
  python3 -c 'import prometheus_client' 2>/dev/null \
    || python3 -m pip install --quiet prometheus-client >&2 \
    || apt_install python3-prometheus-client
}

start_services() {
  local service
  [ "$#" -gt 0 ] || set -- postgres pg-tls s3 s3s redis mongo pushgateway
  install_tools
  for service in "$@"; do
    case "$service" in
      postgres) start_postgres ;;
      pg-tls) start_pg_tls ;;
      s3) start_s3 ;;
      s3s) start_s3s_fs ;;
      redis) start_redis ;;
      mongo) start_mongo ;;
      pushgateway) start_pushgateway ;;
      *) echo "services.sh: unknown service $service (postgres, pg-tls, s3, s3s, redis, mongo, pushgateway)" >&2; exit 2 ;;
    esac
  done
}

case "${1:-start}" in
  start) shift || true; start_services "$@"; print_env ;;
  stop) stop_postgres; stop_pg_tls; stop_s3; stop_s3s_fs; stop_redis; stop_mongo; stop_pushgateway ;;
  env) print_env ;;
  *) echo "usage: $0 [start|stop|env]" >&2; exit 2 ;;
esac
