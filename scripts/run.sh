#!/usr/bin/env bash
# make run: Redis and PostgreSQL (started if needed), the demo upstream in the background and
# Tollgate in the foreground. Ctrl-C stops both.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_LISTEN=${DEMO_LISTEN:-127.0.0.1:9000}
CONFIG=${TOLLGATE_CONFIG:-examples/pingback/tollgate.yaml}
export TOLLGATE_ADMIN_TOKEN=${TOLLGATE_ADMIN_TOKEN:-dev-admin-token}
# Point the proxy at the demo this script starts, whatever the file says.
export TOLLGATE_UPSTREAM_URL=${TOLLGATE_UPSTREAM_URL:-http://$DEMO_LISTEN}

# tollgate serve reads TOLLGATE_REDIS_URL and TOLLGATE_DATABASE_URL, not the tests' variables.
SERVICES_FOR=run scripts/services.sh
go build -o bin/tollgate ./cmd/tollgate

echo "admin token: $TOLLGATE_ADMIN_TOKEN (set TOLLGATE_ADMIN_TOKEN to change it)"
echo "demo upstream: $TOLLGATE_UPSTREAM_URL   config: $CONFIG   Ctrl-C stops both"

bin/tollgate demo --listen "$DEMO_LISTEN" &
demo_pid=$!
stop_demo() {
	# Background jobs of a non-interactive shell ignore SIGINT, so Ctrl-C
	# alone would leave the demo running; TERM makes it shut down cleanly.
	kill -TERM "$demo_pid" 2>/dev/null || true
	wait "$demo_pid" 2>/dev/null || true
}
trap stop_demo EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bin/tollgate serve --config "$CONFIG"
