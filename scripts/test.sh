#!/usr/bin/env bash
# `make test`: vet, then the whole suite with -race against real PostgreSQL,
# Redis and a MinIO started for the run, then a short run of each fuzz
# target (scripts/fuzz.sh, about a minute) and a minute of chaos
# (scripts/chaos.sh). Extra arguments replace ./... and skip both.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
scripts/with-services.sh go test -race -count=1 -timeout 14m "${@:-./...}"
if [ $# -eq 0 ]; then
	scripts/with-services.sh scripts/fuzz.sh
	# A minute of `make chaos`: the binaries under load and faults, then the
	# invariant checker (about 3 minutes with the settling).
	CHAOS_DURATION=${CHAOS_DURATION:-60s} scripts/chaos.sh
fi
