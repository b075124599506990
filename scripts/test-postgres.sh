#!/usr/bin/env bash
# Makes a PostgreSQL server available for the test suite on 127.0.0.1:5432 and prints
# the URL the tests use (STRATUS_TEST_POSTGRES_URL). Installs Debian's postgresql when
# missing and starts its cluster (package scripts do not start daemons on this machine).
# Fails loudly when the server cannot be started: the DB tests must not pass without it.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >&2
fi
ver="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$ver main$"; then
  pg_createcluster "$ver" main >&2
fi
if ! pg_lsclusters -h | grep -q "^$ver main .* online"; then
  # The server outlives this script: it must not inherit the caller's descriptors beyond
  # stdio. One may be a lock (`flock /tmp/stratus-heavy.lock scripts/test.sh`), which the
  # server would otherwise hold for as long as it runs.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    pg_ctlcluster "$ver" main start >&2
  )
fi
for _ in $(seq 1 50); do
  su postgres -c "psql -qtAc 'SELECT 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='stratus'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE stratus LOGIN SUPERUSER PASSWORD 'stratus'\"" >&2
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='stratus_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O stratus stratus_test" >&2
echo "postgres://stratus:stratus@127.0.0.1:5432/stratus_test"
