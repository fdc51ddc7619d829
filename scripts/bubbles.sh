#!/usr/bin/env bash
# scripts/bubbles.sh - installs the bubbles the demo, tests and benchmarks
# use, with the built CLI:
#
#   numpy==1.26.4 for 3.11, 3.10 and 3.9,  numpy==2.2.6 for 3.11 and 3.13,
#   numpy==1.24.3 and 2.3.5 for 3.11 (the versions omnipkg 3.4.1's own
#   daemon tests ask for: tests/integration/test_omnipkg_suite.py)
#
# Idempotent: a bubble that exists is left alone (and the CLI skips it too).
# An interpreter that is not installed is skipped with a message.  pip's
# output goes to a log that is shown when an install fails.
#
# Environment:
#   OMNIPKG_HOME    where bubbles live (default: $XDG_DATA_HOME/omnipkg,
#                   else ~/.local/share/omnipkg)
#   BUILD_DIR       the build directory holding omnipkg (default: build)
#   VERBOSE=1       show pip's output as it runs
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
OMNIPKG=$BUILD_DIR/omnipkg

say() { printf 'bubbles: %s\n' "$*"; }
die() { printf '\nbubbles: ERROR: %s\n\n' "$*" >&2; exit 1; }

[ -x "$OMNIPKG" ] || die "$OMNIPKG not built; run scripts/setup.sh (make setup) first"

export OMNIPKG_HOME=${OMNIPKG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/omnipkg}
say "home $OMNIPKG_HOME"

WANT=(
	"numpy==1.26.4 3.11"
	"numpy==2.2.6 3.11"
	"numpy==1.26.4 3.9"
	"numpy==2.2.6 3.13"
	"numpy==1.26.4 3.10"
	"numpy==1.24.3 3.11"
	"numpy==2.3.5 3.11"
)

# has_python X.Y: an interpreter of that minor version exists (pyenv first,
# as the daemon looks there first; then pythonX.Y on PATH, shims excluded).
has_python() {
	local d root=${PYENV_ROOT:-$HOME/.pyenv} exe
	for d in "$root/versions/$1".*; do
		[[ $(basename "$d") =~ ^$1\.[0-9]+$ ]] && [ -x "$d/bin/python3" ] && return 0
	done
	exe=$(command -v "python$1" 2>/dev/null) || return 1
	[[ $exe != */shims/* ]]
}

failed=0
for w in "${WANT[@]}"; do
	read -r spec py <<<"$w"
	name=${spec%%==*}
	ver=${spec#*==}
	if ! has_python "$py"; then
		say "skip $spec for $py: no Python $py installed"
		continue
	fi
	dir=$OMNIPKG_HOME/bubbles/cp${py/./}/$name-$ver
	if [ -d "$dir" ]; then
		say "have $spec for $py ($dir)"
		continue
	fi
	say "install $spec for $py"
	if [ "${VERBOSE:-0}" = 1 ]; then
		"$OMNIPKG" install "$spec" --python "$py" </dev/null || { say "FAILED $spec for $py"; failed=1; }
	else
		log=$(mktemp /tmp/omnipkg-bubble.XXXXXX)
		if "$OMNIPKG" install "$spec" --python "$py" </dev/null >"$log" 2>&1; then
			rm -f "$log"
		else
			tail -n 30 "$log" >&2
			say "FAILED $spec for $py (full log: $log)"
			failed=1
		fi
	fi
done
[ "$failed" = 0 ] || die "some bubbles could not be installed (see above)"
say "ok"
