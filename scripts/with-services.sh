#!/usr/bin/env bash
# Runs a command with the test services up: checks PostgreSQL and Redis,
# starts a MinIO for this run only (its own port and wiped data), exports the
# DOCUVAULT_TEST_* settings the test helpers read, and stops MinIO after.
#   scripts/with-services.sh go test ./...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/check-services.sh

data="$root/.data/minio-test"
addr=${DOCUVAULT_TEST_MINIO_ADDR:-127.0.0.1:19000}
scripts/minio.sh stop "$data"
rm -rf "$data"
export MINIO_ROOT_USER=dvtest-minio MINIO_ROOT_PASSWORD=dvtest-minio-password
scripts/minio.sh start "$data" "$addr"
trap 'scripts/minio.sh stop "$data"; rm -rf "$data"' EXIT

export DOCUVAULT_TEST_MINIO_ENDPOINT=$addr
export DOCUVAULT_TEST_MINIO_USER=$MINIO_ROOT_USER
export DOCUVAULT_TEST_MINIO_PASSWORD=$MINIO_ROOT_PASSWORD
export DOCUVAULT_TEST_ADMIN_URL=${DOCUVAULT_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
export DOCUVAULT_TEST_REDIS_URL=${DOCUVAULT_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}

"$@"
