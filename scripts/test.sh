#!/usr/bin/env bash
# `make test`: vet, then the whole suite with -race against real PostgreSQL,
# Redis and a MinIO started for the run, then a short run of each fuzz
# target (scripts/fuzz.sh, about a minute). Extra arguments replace ./...
# and skip the fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
scripts/with-services.sh go test -race -count=1 -timeout 14m "${@:-./...}"
if [ $# -eq 0 ]; then
	exec scripts/with-services.sh scripts/fuzz.sh
fi
