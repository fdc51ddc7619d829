#!/usr/bin/env bash
# build_ext.sh PYTHON OMNIPKG_HOME
#
# Builds the lockdemo fixture (tests/ext/v1, tests/ext/v2) for one
# interpreter, offline and without setuptools, and lays it out as two
# bubbles in the omnipkg layout:
#
#   $OMNIPKG_HOME/bubbles/cp3XY/lockdemo-1.0/lockdemo/{__init__.py,_core<EXT_SUFFIX>}
#   $OMNIPKG_HOME/bubbles/cp3XY/lockdemo-2.0/...
#
# PYTHON is an interpreter path or command, or a version such as 3.11
# (looked up under $PYENV_ROOT/versions).  Each bubble is built in a
# temporary directory and renamed into place, so it is whole or absent.
# Prints the bubble directories it wrote, one a line.
set -euo pipefail

die() { echo "build_ext.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: build_ext.sh PYTHON OMNIPKG_HOME"
py=$1
home=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ $py =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
	root=${PYENV_ROOT:-$HOME/.pyenv}
	found=
	while IFS= read -r d; do
		ver=$(basename "$d")
		# 3.1 must not match 3.11: accept exact, or $py followed by a dot.
		if [ "$ver" = "$py" ] || [[ $ver == "$py".* ]]; then
			if [ -x "$d/bin/python3" ]; then found=$d/bin/python3; break; fi
		fi
	done < <(printf '%s\n' "$root/versions/$py"* | sort -V -r)
	[ -n "$found" ] || die "no interpreter $py under $root/versions"
	py=$found
fi
command -v "$py" >/dev/null 2>&1 || die "interpreter not found: $py"
command -v cc >/dev/null 2>&1 || die "no C compiler (cc); install build-essential"

# include dir, EXT_SUFFIX, bubble tag: all from the interpreter itself.
read -r inc suffix tag < <("$py" -E -s -c '
import sys, sysconfig
ft = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
print(sysconfig.get_paths()["include"], sysconfig.get_config_var("EXT_SUFFIX"),
      "cp%d%d%s" % (sys.version_info[0], sys.version_info[1], ft))
') || die "cannot query $py"
[ -f "$inc/Python.h" ] || die "no Python.h in $inc (headers of $py missing)"

mkdir -p "$home/bubbles/$tag"
for v in 1 2; do
	src=$here/v$v/lockdemo
	dest=$home/bubbles/$tag/lockdemo-$v.0
	tmp=$(mktemp -d "$home/bubbles/$tag/.lockdemo-$v.0.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/lockdemo" "$tmp/lockdemo-$v.0.dist-info"
	cp "$src/__init__.py" "$tmp/lockdemo/"
	# -fPIC with default visibility and no -Bsymbolic: calls to exported
	# functions go through the PLT, as in any ordinary extension build.
	cc -shared -fPIC -O2 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
		-I"$inc" -o "$tmp/lockdemo/_core$suffix" "$src/_core.c" \
		|| die "compiling $src/_core.c for $py failed"
	printf 'Metadata-Version: 2.1\nName: lockdemo\nVersion: %s\n' "$v.0" \
		>"$tmp/lockdemo-$v.0.dist-info/METADATA"
	printf 'omnipkg-test\n' >"$tmp/lockdemo-$v.0.dist-info/INSTALLER"
	chmod 755 "$tmp"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	trap - EXIT
	echo "$dest"
done
