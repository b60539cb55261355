#!/usr/bin/env bash
# make test (and .ci/run): Redis and PostgreSQL up, go vet, then the whole
# suite with the race detector. With CI=true, unformatted files fail the run.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

scripts/services.sh

echo "go vet ./..."
go vet ./...

if [ "${CI:-}" = true ]; then
	# testdata may hold deliberately odd inputs; vendor is not ours.
	unformatted=$(find . -name '*.go' -not -path './vendor/*' -not -path '*/testdata/*' -print0 |
		xargs -0 -r gofmt -l)
	if [ -n "$unformatted" ]; then
		echo "gofmt: these files need formatting (run gofmt -w):" >&2
		echo "$unformatted" >&2
		exit 1
	fi
fi

# Last, so the summary lines CI reads are go test's own.
echo "go test -race -count=1 -timeout 20m ./..."
go test -race -count=1 -timeout 20m ./...
