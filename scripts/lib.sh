# shellcheck shell=bash
# Sourced by the other scripts: run from the repository root with a Go
# toolchain on PATH (/usr/local/go/bin is where these machines install it, and
# it is often missing from PATH in non-login shells and CI).
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || {
	echo "$(basename "$0"): Go is not installed (need Go 1.26: https://go.dev/dl/)" >&2
	exit 1
}
