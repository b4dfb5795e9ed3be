#!/usr/bin/env bash
# Make sure the servers the tests talk to are running on this machine:
# Redis (6379), Mosquitto (1883) and PostgreSQL (5432), all on loopback.
# Starts a stopped one; installs a missing one with apt-get (needs root or sudo).
# Also makes sure PostgreSQL has the role and database the test suite uses.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
apt_updated=0

log() { printf '[services] %s\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    if port_open "$port"; then return 0; fi
    sleep 0.5
  done
  log "$name did not open port $port within 30 s"; return 1
}

apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"; $SUDO apt-get update -qq; apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  if port_open 6379; then log "redis: up"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 redis && log "redis: started"
}

ensure_mosquitto() {
  if port_open 1883; then log "mosquitto: up"; return; fi
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto mosquitto-clients
  $SUDO mkdir -p /run/mosquitto /var/lib/mosquitto /var/log/mosquitto
  if [ -f /etc/mosquitto/mosquitto.conf ]; then
    $SUDO chown -R mosquitto: /run/mosquitto /var/lib/mosquitto /var/log/mosquitto 2>/dev/null || true
    $SUDO mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    $SUDO mosquitto -d -p 1883
  fi
  wait_port 1883 mosquitto && log "mosquitto: started"
}

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

ensure_postgres() {
  if ! port_open 5432; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    local version; version=$(pg_version)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_port 5432 postgresql && log "postgresql: started"
  else
    log "postgresql: up"
  fi
  # The role and database of the test suite (CREATEDB: pytest-django makes test_v2g).
  local sql="DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='v2g') THEN
      CREATE ROLE v2g LOGIN CREATEDB PASSWORD 'v2g'; END IF; END\$\$;"
  if psql -h 127.0.0.1 -U v2g -d v2g -tAc 'select 1' >/dev/null 2>&1 \
     || PGPASSWORD=v2g psql -h 127.0.0.1 -U v2g -d v2g -tAc 'select 1' >/dev/null 2>&1; then
    return
  fi
  local as_pg=(psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc)
  if ! "${as_pg[@]}" 'select 1' >/dev/null 2>&1; then
    as_pg=($SUDO runuser -u postgres -- psql -d postgres -v ON_ERROR_STOP=1 -tAc)
  fi
  "${as_pg[@]}" "$sql" >/dev/null
  if [ -z "$("${as_pg[@]}" "SELECT 1 FROM pg_database WHERE datname='v2g'")" ]; then
    "${as_pg[@]}" "CREATE DATABASE v2g OWNER v2g" >/dev/null
  fi
  log "postgresql: role and database v2g ready"
}

ensure_redis
ensure_mosquitto
ensure_postgres
