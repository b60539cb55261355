#!/usr/bin/env bash
# make bench: the load benchmark (bench/README.md). Starts on loopback a
# private Redis, the bench upstream, Tollgate and, when installed, nginx;
# loads them with wrk when installed, else the Go load generator; writes
# bench/results/<date>-<scenario>.json and bench/results/latest.md.
#
#   BENCH_DURATION=3s BENCH_SCENARIOS=passthrough,metered scripts/bench.sh
#
# Needs Redis: a private redis-server when the binary exists, else the
# shared one (started here if needed).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# PostgreSQL always (Tollgate keeps tenants there); Redis too, used only when
# no redis-server binary can give the run a private instance.
scripts/services.sh
go build -o bin/benchrun ./bench/cmd/benchrun
exec bin/benchrun "$(pwd)"
