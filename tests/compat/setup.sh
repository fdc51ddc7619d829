#!/usr/bin/env bash
# tests/compat/setup.sh - what tests/integration/test_omnipkg_suite.py runs
# omnipkg 3.4.1's own daemon tests with, fetched from the package registry
# (never kept in this repository):
#
#   $DIR/venv            Python 3.11 virtual environment: pytest, numpy==1.26.4
#                        (omnipkg's tests import numpy in the test process)
#   $DIR/omnipkg-3.4.1/  the unpacked sdist of omnipkg==3.4.1; its
#                        tests/test_omnipkg_contracts.py is the file run
#
# DIR is $OMNI_COMPAT_DIR, else <repo>/.venv-compat.  Idempotent (stamp
# files); prints DIR on success.  Needs the registry only the first time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DIR=${OMNI_COMPAT_DIR:-$PWD/.venv-compat}
PIN=omnipkg==3.4.1
STAMP="pytest numpy==1.26.4"
mkdir -p "$DIR"

python311() {
	local best="" d
	for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*; do
		[[ $(basename "$d") =~ ^3\.11\.[0-9]+$ ]] && [ -x "$d/bin/python3" ] && best=$d/bin/python3
	done
	[ -n "$best" ] || best=$(command -v python3.11) || { echo "compat: no Python 3.11" >&2; exit 1; }
	printf '%s\n' "$best"
}

log=$(mktemp "${TMPDIR:-/tmp}/omnipkg-compat.XXXXXX")
trap 'rm -f "$log"' EXIT
if [ ! -x "$DIR/venv/bin/python" ] || [ "$(cat "$DIR/venv/.stamp" 2>/dev/null)" != "$STAMP" ]; then
	rm -rf "$DIR/venv"
	if ! { "$(python311)" -m venv "$DIR/venv" &&
	       timeout 600 "$DIR/venv/bin/python" -m pip install --disable-pip-version-check -q \
			$STAMP; } </dev/null >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		echo "compat: making $DIR/venv failed" >&2
		exit 1
	fi
	echo "$STAMP" >"$DIR/venv/.stamp"
fi
if [ ! -f "$DIR/omnipkg-3.4.1/tests/test_omnipkg_contracts.py" ]; then
	rm -rf "$DIR/sdist" "$DIR/omnipkg-3.4.1"
	if ! timeout 300 "$DIR/venv/bin/python" -m pip download --disable-pip-version-check -q \
			--no-deps --no-binary :all: "$PIN" -d "$DIR/sdist" </dev/null >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		echo "compat: pip download $PIN failed" >&2
		exit 1
	fi
	tar -xzf "$DIR"/sdist/omnipkg-3.4.1.tar.gz -C "$DIR"
fi
printf '%s\n' "$DIR"
