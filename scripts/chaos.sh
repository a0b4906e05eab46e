#!/usr/bin/env bash
# `make chaos`: TestChaos (e2e/chaos_test.go) with the test services up.
# CHAOS_DURATION (default 3m) bounds the faults and load; CHAOS_SEED
# replays a run's fault schedule. The last line is the verdict; the exit
# status is non-zero on any broken invariant.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .data
log=.data/chaos.log
DOCUVAULT_CHAOS=1 scripts/with-services.sh go test -run '^TestChaos$' -count=1 -v -timeout 60m ./e2e/ 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
verdict=$(grep -m1 '^chaos: ' "$log" || echo "chaos: no verdict (the run stopped early; see $log)")
echo "$verdict"
exit "$status"
