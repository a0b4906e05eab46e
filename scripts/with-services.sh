#!/usr/bin/env bash
# Runs a command with the test services up: checks PostgreSQL and Redis,
# starts a MinIO for this run only (its own port and wiped data), exports the
# DOCUVAULT_TEST_* settings the test helpers read, and stops MinIO after.
#   scripts/with-services.sh go test ./...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/check-services.sh

# Each run has its own data directory, so runs in one checkout (a test and
# a benchmark, say) do not stop or wipe each other's MinIO. Directories of
# runs that died without cleaning up are removed.
for old in "$root"/.data/minio-test.*; do
	[ -d "$old" ] || continue
	pid=$(cat "$old/minio.pid" 2>/dev/null || true)
	if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
		rm -rf "$old"
	fi
done
data="$root/.data/minio-test.$$"
# The first free port from 19000 (another checkout's run may hold one).
addr=${DOCUVAULT_TEST_MINIO_ADDR:-}
if [ -z "$addr" ]; then
	for port in $(seq 19000 19019); do
		if ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
			addr=127.0.0.1:$port
			break
		fi
	done
	[ -n "$addr" ] || { echo "no free port in 127.0.0.1:19000-19019 for the test MinIO" >&2; exit 1; }
fi
export MINIO_ROOT_USER=dvtest-minio MINIO_ROOT_PASSWORD=dvtest-minio-password
scripts/minio.sh start "$data" "$addr"
trap 'scripts/minio.sh stop "$data"; rm -rf "$data"' EXIT

export DOCUVAULT_TEST_MINIO_ENDPOINT=$addr
export DOCUVAULT_TEST_MINIO_USER=$MINIO_ROOT_USER
export DOCUVAULT_TEST_MINIO_PASSWORD=$MINIO_ROOT_PASSWORD
export DOCUVAULT_TEST_ADMIN_URL=${DOCUVAULT_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
export DOCUVAULT_TEST_REDIS_URL=${DOCUVAULT_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}

"$@"
