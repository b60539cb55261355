#!/usr/bin/env bash
# make fuzz: every Fuzz target in every package, one after another, for
# FUZZTIME each (go test -fuzz takes one target in one package at a time).
# New failing inputs land in the package's testdata/fuzz: commit them.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FUZZTIME=${FUZZTIME:-10s}
scripts/services.sh redis

pkgs=$(go list ./...)
count=0
for pkg in $pkgs; do
	# Assigned on its own line so a package that fails to build stops the run.
	listing=$(go test -list '^Fuzz' "$pkg")
	for target in $(grep '^Fuzz' <<<"$listing" || true); do
		echo "== $pkg $target ($FUZZTIME)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg"
		count=$((count + 1))
	done
done
echo "fuzzed $count target(s)"
