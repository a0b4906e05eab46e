#!/usr/bin/env bash
# A short run of every fuzz target, FUZZTIME each (default 10s); `make test`
# runs it after the suite. Go fuzzes one target per `go test`, hence the
# loop. FuzzUpload needs the test services, so run this under
# scripts/with-services.sh, e.g. for a longer session:
#   FUZZTIME=5m scripts/with-services.sh scripts/fuzz.sh
# A failing input is written to the package's testdata/fuzz/<target>/:
# commit it with the fix, as a regression seed. The seed corpora also run
# in the plain suite.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(
	./internal/httpapi:FuzzSanitizeFilename
	./internal/httpapi:FuzzCursor
	./internal/httpapi:FuzzUpload
	./internal/events:FuzzEnvelope
	./cmd/consumer:FuzzStreamEntry
)
for t in "${targets[@]}"; do
	pkg=${t%%:*} target=${t#*:}
	echo "fuzz: $target in $pkg for ${FUZZTIME:-10s}"
	go test -run '^$' -fuzz "^$target\$" -fuzztime "${FUZZTIME:-10s}" -fuzzminimizetime 2s "$pkg"
done
