#!/usr/bin/env bash
# `make run`: everything a fresh machine needs, then the api, relay and
# consumer in the foreground. Ctrl-C stops all of them (and the local MinIO).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/check-services.sh

# A local .env with random secrets, created once and then reused.
if [ ! -f .env ]; then
	umask 077
	while IFS= read -r line; do
		if [[ $line == *change-me* ]]; then
			line=${line//change-me/$(openssl rand -hex 24)}
		fi
		printf '%s\n' "$line"
	done < .env.example > .env
	chmod 600 .env
	echo "Created .env with random passwords (git-ignored)."
fi
set -a
# shellcheck disable=SC1091
. ./.env
set +a

scripts/minio.sh start "$root/.data/minio" "${MINIO_ENDPOINT#http://}"

bin/api --env-file .env init-db
bin/api --env-file .env migrate
bin/api --env-file .env init-bucket

pids=()
stop() {
	trap - INT TERM EXIT
	echo "Stopping..."
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	wait "${pids[@]}" 2>/dev/null || true
	scripts/minio.sh stop "$root/.data/minio"
}
trap stop INT TERM EXIT

bin/api --env-file .env & pids+=($!)
METRICS_ADDR=127.0.0.1:9101 bin/relay --env-file .env & pids+=($!)
METRICS_ADDR=127.0.0.1:9102 bin/consumer --env-file .env & pids+=($!)
echo "DocuVault API on http://${HTTP_ADDR:-127.0.0.1:8080} (Ctrl-C stops everything)"
echo "Every request needs a token: register first (the first account is the administrator), then log in:"
echo "  POST /api/v1/auth/register and /api/v1/auth/login with {\"email\",\"password\"}; send Authorization: Bearer <access_token> (README.md, Using it)"
# Any process exiting stops the others.
wait -n "${pids[@]}" || true
