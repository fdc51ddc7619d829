#!/usr/bin/env bash
# scripts/setup.sh - makes this machine able to build and test omnipkgd,
# then configures and builds it into build/.
#
# Idempotent: Debian packages are installed only when missing (apt-get
# update only then), cmake reconfigures incrementally.  Needs no stdin.
#
# Environment:
#   CI=true         configure with -DOMNI_WERROR=ON
#   BUILD_DIR       build directory (default: build)
#   JOBS            parallel build jobs (default: 2)
#   CMAKE_ARGS      extra arguments for the configure step
#   OMNI_NO_FUSE=1  do not require a usable /dev/fuse (FUSE tests will fail)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-2}

say() { printf 'setup: %s\n' "$*"; }
die() { printf '\nsetup: ERROR: %s\n\n' "$*" >&2; exit 1; }

# clang and its runtime (libFuzzer, sanitizers; only a recommendation of
# clang, so named) build the fuzzing harnesses of tests/fuzz; python3-yaml
# reads the Kubernetes manifest in tests/integration/test_deploy.py.
PACKAGES=(build-essential cmake pkg-config libfuse3-dev fuse3 libcjson-dev libcunit1-dev
	  hyperfine gnuplot-nox clang libclang-rt-14-dev python3-yaml)

# --- Debian packages --------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 ||
	die "dpkg-query not found: this script supports Debian/Ubuntu only; install by hand: ${PACKAGES[*]}"

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	say "packages: all ${#PACKAGES[@]} present, skipping apt"
else
	say "packages: missing ${missing[*]}"
	if [ "$(id -u)" -eq 0 ]; then
		SUDO=()
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
	else
		die "need root to install: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
	fi
	log=$(mktemp /tmp/omnipkg-apt.XXXXXX)
	apt_run() {
		# Output goes to a log (shown on failure), so a run stays short.
		if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@" </dev/null >>"$log" 2>&1; then
			tail -n 40 "$log" >&2
			die "'$*' failed (full log: $log)"
		fi
	}
	say "apt-get update"
	apt_run apt-get -q update
	say "apt-get install ${missing[*]}"
	apt_run apt-get -q -y -o Dpkg::Use-Pty=0 --no-install-recommends install "${missing[@]}"
	rm -f "$log"
	for p in "${missing[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		[ "$status" = "install ok installed" ] || die "package $p still not installed after apt-get"
	done
	say "packages: installed ${missing[*]}"
fi

# --- FUSE -------------------------------------------------------------------
if [ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ]; then
	say "fuse: /dev/fuse usable"
elif [ "${OMNI_NO_FUSE:-0}" = 1 ]; then
	say "fuse: WARNING: /dev/fuse missing or not usable; continuing (OMNI_NO_FUSE=1), mount tests will fail"
else
	if [ -e /dev/fuse ]; then
		why="/dev/fuse exists but is not a read-write character device for $(id -un)"
	else
		why="/dev/fuse does not exist"
	fi
	die "$why. Load the module (modprobe fuse) or, in a container, pass --device /dev/fuse --cap-add SYS_ADMIN. Set OMNI_NO_FUSE=1 to build anyway."
fi
command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 not found (package fuse3)"

# --- configure and build ----------------------------------------------------
cfg=(-S . -B "$BUILD_DIR")
if [ "${CI:-}" = true ]; then
	cfg+=(-DOMNI_WERROR=ON)
fi
if [ -n "${CMAKE_ARGS:-}" ]; then
	# shellcheck disable=SC2206  # CMAKE_ARGS is meant to be split
	cfg+=(${CMAKE_ARGS})
fi

say "cmake ${cfg[*]}"
cmake "${cfg[@]}" || die "cmake configure failed (see above)"
say "cmake --build $BUILD_DIR -j$JOBS"
cmake --build "$BUILD_DIR" -j"$JOBS" || die "build failed (see the compiler output above)"
say "ok: $(cd "$BUILD_DIR" && pwd)"
