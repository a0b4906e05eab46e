#!/usr/bin/env bash
# Installs and runs the local MinIO server used by `make run` and `make test`.
#
#   scripts/minio.sh install                  build bin/minio once (cached)
#   scripts/minio.sh start DATA_DIR ADDR      start in the background unless it already runs;
#                                             MINIO_ROOT_USER / MINIO_ROOT_PASSWORD from the environment
#   scripts/minio.sh stop DATA_DIR            stop the server started with DATA_DIR
#
# Community MinIO is no longer maintained upstream; DocuVault only speaks S3,
# so any S3-compatible server can replace it (see README).
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin/minio"
# A copy outside the work tree survives fresh clones on the same machine.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/docuvault/minio-$MINIO_VERSION"

install() {
	if [ -x "$bin" ] && [ "$(cat "$bin.version" 2>/dev/null)" = "$MINIO_VERSION" ]; then
		return 0
	fi
	mkdir -p "$root/bin"
	if [ ! -x "$cache" ]; then
		echo "Installing MinIO $MINIO_VERSION with go install (once; a few minutes)..." >&2
		tmp=$(mktemp -d)
		GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "$MINIO_MODULE@$MINIO_VERSION"
		mkdir -p "$(dirname "$cache")"
		mv "$tmp/minio" "$cache"
		rmdir "$tmp"
	fi
	cp "$cache" "$bin"
	echo "$MINIO_VERSION" > "$bin.version"
}

wait_ready() {
	local addr=$1 log=$2
	for _ in $(seq 1 150); do
		if curl -fsS -o /dev/null "http://$addr/minio/health/live" 2>/dev/null; then
			return 0
		fi
		sleep 0.2
	done
	echo "MinIO did not become ready on $addr within 30 s; last lines of $log:" >&2
	tail -n 20 "$log" >&2 || true
	return 1
}

start() {
	local data=$1 addr=$2
	: "${MINIO_ROOT_USER:?MINIO_ROOT_USER must be set}" "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD must be set}"
	install
	mkdir -p "$data/objects"
	local pidfile="$data/minio.pid" log="$data/minio.log"
	if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		wait_ready "$addr" "$log"
		return 0
	fi
	if curl -fsS -o /dev/null "http://$addr/minio/health/live" 2>/dev/null; then
		echo "Something else already serves S3 on $addr; stop it or set another address." >&2
		return 1
	fi
	# The console is off: only the S3 API, on loopback.
	MINIO_BROWSER=off MINIO_UPDATE=off \
		nohup "$bin" server --quiet --address "$addr" "$data/objects" >"$log" 2>&1 &
	echo $! > "$pidfile"
	wait_ready "$addr" "$log"
}

stop() {
	local data=$1 pidfile="$1/minio.pid"
	if [ -f "$pidfile" ]; then
		local pid
		pid=$(cat "$pidfile")
		if kill "$pid" 2>/dev/null; then
			for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
		rm -f "$pidfile"
	fi
}

case "${1:-}" in
install) install ;;
start) start "$2" "$3" ;;
stop) stop "$2" ;;
*) echo "usage: $0 install | start DATA_DIR ADDR | stop DATA_DIR" >&2; exit 2 ;;
esac
