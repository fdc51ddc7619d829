#!/usr/bin/env bash
# bench/setup_peers.sh - prepares the peers the benchmark suite runs beside
# omnipkgd: omnipkg 3.4.1 from the package registry in virtual environments
# of their own under .venv-bench/ (one per interpreter it is driven on).
#
#   .venv-bench/py311   omnipkg==3.4.1 + numpy==1.26.4   (its daemon and client),
#                       and numpy==2.2.6 as one of its bubbles: a `pip install
#                       --target` tree in its site-packages/.omnipkg_versions/,
#                       where its loader looks, so it never installs at run time
#   .venv-bench/py39    omnipkg==3.4.1 + numpy==1.26.4   (cross-interpreter hop)
#   .venv-bench/py313   omnipkg==3.4.1 + numpy==2.2.6    (cross-interpreter hop)
#
# Idempotent: an environment whose stamp file matches is left alone.  A
# failure is reported and recorded in .venv-bench/<name>.failed (the suite
# then marks the rows that need it unavailable, with the reason); the
# script itself only fails when nothing at all could be set up.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENVS=.venv-bench
OMNIPKG_PIN=omnipkg==3.4.1
PYENV=${PYENV_ROOT:-$HOME/.pyenv}/versions

say() { printf 'setup_peers: %s\n' "$*"; }

# python_for X.Y: the newest pyenv interpreter of that minor version.
python_for() {
	local best="" d
	for d in "$PYENV/$1".*; do
		[[ $(basename "$d") =~ ^$1\.[0-9]+$ ]] && [ -x "$d/bin/python3" ] && best=$d/bin/python3
	done
	[ -n "$best" ] || best=$(command -v "python$1" 2>/dev/null) || return 1
	printf '%s\n' "$best"
}

# make_venv NAME X.Y PACKAGES...
make_venv() {
	local name=$1 xy=$2 dir=$VENVS/$1 py stamp log
	shift 2
	stamp="$xy $*"
	if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] && [ -x "$dir/bin/python" ]; then
		say "have $name ($stamp)"
		rm -f "$VENVS/$name.failed"
		return 0
	fi
	if ! py=$(python_for "$xy"); then
		say "no Python $xy: $name not made"
		echo "no Python $xy interpreter installed" >"$VENVS/$name.failed"
		return 1
	fi
	say "make $name with $py: $*"
	rm -rf "$dir"
	log=$(mktemp "${TMPDIR:-/tmp}/omnibench-pip.XXXXXX")
	if "$py" -m venv "$dir" >"$log" 2>&1 &&
	   timeout 600 "$dir/bin/python" -m pip install --disable-pip-version-check -q "$@" </dev/null >>"$log" 2>&1; then
		echo "$stamp" >"$dir/.stamp"
		rm -f "$VENVS/$name.failed" "$log"
		return 0
	fi
	tail -n 15 "$log" >&2
	say "FAILED $name (log: $log)"
	printf 'pip install %s for Python %s failed: %s\n' "$*" "$xy" "$(tail -n 1 "$log")" >"$VENVS/$name.failed"
	return 1
}

mkdir -p "$VENVS"
ok=0
make_venv py311 3.11 "$OMNIPKG_PIN" numpy==1.26.4 && ok=1
# make_bubble VENV SPEC: SPEC as an omnipkg bubble of VENV.
make_bubble() {
	local py=$VENVS/$1/bin/python sp dir log
	sp=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
	dir=$sp/.omnipkg_versions/${2%%==*}-${2#*==}
	if [ -d "$dir/${2%%==*}" ]; then
		say "have bubble $2 in $1"
		return 0
	fi
	say "bubble $2 in $1"
	log=$(mktemp "${TMPDIR:-/tmp}/omnibench-pip.XXXXXX")
	if timeout 600 "$py" -m pip install --disable-pip-version-check -q --no-deps --target "$dir" "$2" \
		</dev/null >"$log" 2>&1; then
		rm -f "$log"
		return 0
	fi
	tail -n 15 "$log" >&2
	rm -rf "$dir"
	say "FAILED bubble $2 in $1 (log: $log); its swap rows will say why"
	return 1
}
[ "$ok" = 1 ] && make_bubble py311 numpy==2.2.6
make_venv py39 3.9 "$OMNIPKG_PIN" numpy==1.26.4
make_venv py313 3.13 "$OMNIPKG_PIN" numpy==2.2.6
[ "$ok" = 1 ] || { say "omnipkg 3.4.1 could not be installed; its rows will be marked unavailable"; }
say "ok"
