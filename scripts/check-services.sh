#!/usr/bin/env bash
# Checks that PostgreSQL and Redis answer on loopback and says what to do
# when they do not. Usage: scripts/check-services.sh [PG_HOST:PORT] [REDIS_HOST:PORT]
set -uo pipefail
pg=${1:-127.0.0.1:5432}
redis=${2:-127.0.0.1:6379}
ok=0

reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/${1%:*}/${1##*:}" 2>/dev/null; }

if ! reachable "$pg"; then
	ok=1
	cat >&2 <<MSG
PostgreSQL is not reachable on $pg.
  Install it:  apt-get install -y postgresql   (version 15 or newer)
  Start it:    pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start
  DocuVault's set-up connects as the superuser in DATABASE_ADMIN_URL (default postgres on 127.0.0.1:5432).
MSG
fi
if ! reachable "$redis"; then
	ok=1
	cat >&2 <<MSG
Redis is not reachable on $redis.
  Install it:  apt-get install -y redis-server   (version 7 or newer)
  Start it:    redis-server --daemonize yes --bind 127.0.0.1 --port ${redis##*:}
MSG
fi
exit $ok
