# DocuVault. `make run` and `make test` are the two commands; see README.md.
GO ?= go
BINARIES := api relay consumer

.PHONY: run test build bench chaos fmt vet clean minio

## run: set everything up (MinIO, roles, schema, bucket) and run api, relay and consumer
run: build
	scripts/run.sh

## test: the whole suite (-race) against real PostgreSQL, Redis and MinIO, then a short run of each fuzz target (scripts/fuzz.sh)
test:
	scripts/test.sh

## bench: upload throughput vs a raw baseline, upload->ready latency, API peak RSS; finalisation vs raw server-side copies (and vs copy + removal of the staged object); the relay vs the watermill-sql Forwarder; replay of 1M audit rows (about 11 minutes)
bench:
	scripts/with-services.sh $(GO) test -run '^$$' -bench 'Pipeline|Finalize|Relay|Replay' -benchtime 1x -timeout 30m ./e2e/

## chaos: the real binaries under mixed load while processes are killed, Redis restarts empty, MinIO and WebDAV fail; then the invariant checker (CHAOS_DURATION, default 3m, plus a few minutes to settle)
chaos:
	scripts/chaos.sh

## build: bin/api, bin/relay and bin/consumer
build:
	@mkdir -p bin
	$(GO) build -trimpath -o bin/ $(addprefix ./cmd/,$(BINARIES))

## minio: install the local MinIO server into bin/ (cached)
minio:
	scripts/minio.sh install

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin .data
