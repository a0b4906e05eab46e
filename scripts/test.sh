#!/usr/bin/env bash
# `make test`: vet, then the whole suite with -race against real PostgreSQL,
# Redis and a MinIO started for the run. Extra arguments replace ./...
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
exec scripts/with-services.sh go test -race -count=1 -timeout 14m "${@:-./...}"
