#!/usr/bin/env bash
# Make sure the servers the integration tests use are up, on loopback only:
# PostgreSQL on 127.0.0.1:5432. Installs it from Debian's packages when missing and we
# may (root with apt-get); otherwise says so, and the PostgreSQL tests skip (or fail
# under CI=true, where a skipped store backend would hide a regression).
set -uo pipefail

pg_ready() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

if pg_ready; then
  echo "postgresql: running on 127.0.0.1:5432"
  exit 0
fi

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "postgresql: installing from Debian packages"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "postgresql: not installed and cannot install it here; its tests will skip"
    exit 0
  fi
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
conf=/etc/postgresql/$version/main
# Loopback only, and trust for local test connections (this server holds test data only).
if ! grep -q "modelyard-test" "$conf/pg_hba.conf"; then
  sed -i '1i host all all 127.0.0.1/32 trust # modelyard-test' "$conf/pg_hba.conf"
fi
grep -q "^listen_addresses = '127.0.0.1'" "$conf/postgresql.conf" ||
  echo "listen_addresses = '127.0.0.1'" >> "$conf/postgresql.conf"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  pg_ready && { echo "postgresql: started on 127.0.0.1:5432"; exit 0; }
  sleep 1
done
echo "postgresql: did not start; its tests will skip (and fail under CI=true)"
exit 0
