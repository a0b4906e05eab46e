#!/usr/bin/env bash
# `make test`: the whole suite, with -race, against real PostgreSQL, Redis
# and a MinIO server started here for the run (its own port and data).
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
trap 'scripts/minio.sh stop "$data"' EXIT

export DOCUVAULT_TEST_MINIO_ENDPOINT=$addr
export DOCUVAULT_TEST_MINIO_USER=$MINIO_ROOT_USER
export DOCUVAULT_TEST_MINIO_PASSWORD=$MINIO_ROOT_PASSWORD
export DOCUVAULT_TEST_ADMIN_URL=${DOCUVAULT_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
export DOCUVAULT_TEST_REDIS_URL=${DOCUVAULT_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}

go vet ./...
go test -race -count=1 -timeout 14m "${@:-./...}"
