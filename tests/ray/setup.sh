#!/usr/bin/env bash
# tests/ray/setup.sh - the Python 3.11 virtual environment that
# tests/integration/test_ray.py and bench/py/ray_rows.py run Ray in,
# fetched from the package registry (never kept in this repository):
#
#   $DIR/bin/python      Python 3.11 with ray, numpy==1.26.4 (the
#                        driver's and Ray workers' numpy; omnipkgd's
#                        workers take theirs from the bubbles) and
#                        virtualenv (what Ray's runtime_env "pip" needs,
#                        for the benchmark's comparison)
#
# DIR is $OMNI_RAY_VENV, else <repo>/.venv-ray.  Idempotent (a stamp file);
# quiet unless it fails; prints DIR on success.  Needs the registry only
# the first time.  Exit status 2 means the registry or a wheel for this
# machine could not be had (the callers skip, saying why); 1 anything else.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DIR=${OMNI_RAY_VENV:-$PWD/.venv-ray}
STAMP="ray==2.49.2 numpy==1.26.4 virtualenv==21.15.11"

python311() {
	local best="" d
	for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*; do
		[[ $(basename "$d") =~ ^3\.11\.[0-9]+$ ]] && [ -x "$d/bin/python3" ] && best=$d/bin/python3
	done
	[ -n "$best" ] || best=$(command -v python3.11) || { echo "ray: no Python 3.11" >&2; exit 1; }
	printf '%s\n' "$best"
}

if [ -x "$DIR/bin/python" ] && [ "$(cat "$DIR/.stamp" 2>/dev/null)" = "$STAMP" ]; then
	printf '%s\n' "$DIR"
	exit 0
fi
log=$(mktemp "${TMPDIR:-/tmp}/omnipkg-ray.XXXXXX")
trap 'rm -f "$log"' EXIT
rm -rf "$DIR"
if ! "$(python311)" -m venv "$DIR" </dev/null >"$log" 2>&1; then
	tail -n 20 "$log" >&2
	echo "ray: python3.11 -m venv $DIR failed" >&2
	exit 1
fi
if ! timeout 900 "$DIR/bin/python" -m pip install --disable-pip-version-check -q \
		$STAMP </dev/null >"$log" 2>&1; then
	tail -n 20 "$log" >&2
	rm -rf "$DIR"
	# What pip says when it cannot reach the registry or finds no wheel.
	if grep -qE "No matching distribution|Could not find a version|NewConnectionError|Network is unreachable|Temporary failure in name resolution|ConnectTimeout|ReadTimeout" "$log"; then
		echo "ray: pip install $STAMP failed: no registry or no wheel for this machine" >&2
		exit 2
	fi
	echo "ray: pip install $STAMP failed" >&2
	exit 1
fi
echo "$STAMP" >"$DIR/.stamp"
printf '%s\n' "$DIR"
