#!/usr/bin/env bash
# bench/run.sh - runs the benchmark suite and regenerates BENCHMARKS.md.
#
#   make bench            # the full suite (a few minutes)
#   make bench QUICK=1    # a short smoke run
#
# Builds nothing (make bench has already configured, built and made the
# bubbles); prepares the peers (bench/setup_peers.sh, idempotent), then runs
# the C runner, the Python drivers (ours, the stdlib floor, omnipkg 3.4.1
# in a private sandbox), Docker beside ours (bench/docker_setup.sh, then
# bench/py/docker_rows.py), Ray's runtime_env beside omnipkg.ray (Ray from
# tests/ray/setup.sh, then bench/py/ray_rows.py; OMNI_BENCH_SKIP_RAY=1 skips
# it), hyperfine over whole commands, and bench/report.py.
# Every stage is time-limited; a stage that fails leaves its rows marked
# unavailable and the suite goes on.  All results share one run id
# ($OMNI_BENCH_RUN), which the report checks.
#
# Environment: BUILD_DIR (default build), QUICK=1, OMNI_RESULTS_DIR (default results).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BUILD_DIR=${BUILD_DIR:-build}
BUILD=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || { echo "bench: no build dir $BUILD_DIR; run make bench" >&2; exit 1; }
RESULTS=${OMNI_RESULTS_DIR:-results}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
export OMNI_RESULTS_DIR=$RESULTS OMNI_BUILD=$BUILD
export OMNI_BENCH_RUN=${OMNI_BENCH_RUN:-$(date -u +%Y%m%dT%H%M%SZ)}
export QUICK=${QUICK:-}
export HYPERFINE_VERSION=$(hyperfine --version 2>/dev/null | awk '{print $2}')

say() { printf '\nbench: %s\n' "$*"; }

# python_for X.Y: the newest pyenv interpreter of that minor version.
python_for() {
	local best="" d
	for d in "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*; do
		[[ $(basename "$d") =~ ^$1\.[0-9]+$ ]] && [ -x "$d/bin/python3" ] && best=$d/bin/python3
	done
	[ -n "$best" ] || best=$(command -v "python$1" 2>/dev/null) || return 1
	printf '%s\n' "$best"
}

PY=$(python_for 3.11) || { echo "bench: Python 3.11 not found" >&2; exit 1; }
for b in omnipkgd omnipkg bench/omnibench; do
	[ -x "$BUILD/$b" ] || { echo "bench: $BUILD/$b not built; run make bench (or make build)" >&2; exit 1; }
done
if [ -n "$QUICK" ] && [ "$QUICK" != 0 ]; then LIMIT=240; else LIMIT=600; fi

# Results of an earlier run must not be mixed with this one.
rm -f "$RESULTS"/*.json "$RESULTS"/*.png "$RESULTS"/*.dat
rm -rf "$RESULTS/tmp"
mkdir -p "$RESULTS/tmp"
say "run $OMNI_BENCH_RUN${QUICK:+ (QUICK=$QUICK)}, results in $RESULTS"

# Everything started below is stopped on the way out, by pid.
SANDBOX=""
DAEMON_PID=""
DOCKER_STATE=$RESULTS/tmp/docker
cleanup() {
	local p
	# The dockerd bench/docker_setup.sh started (its pid file), if any.
	[ -d "$DOCKER_STATE" ] && bash bench/docker_setup.sh --stop "$DOCKER_STATE"
	if [ -n "$DAEMON_PID" ]; then
		kill -TERM "$DAEMON_PID" 2>/dev/null
		sleep 0.5
		kill -KILL -- "-$DAEMON_PID" 2>/dev/null
	fi
	if [ -n "$SANDBOX" ] && [ -f "$SANDBOX/daemon.pid" ]; then
		# omnipkg's daemon and its workers (which detach into sessions of
		# their own): its process tree, walked from the pid it ran under.
		p=$(cat "$SANDBOX/daemon.pid")
		for q in $(descendants "$p") "$p"; do kill -KILL "$q" 2>/dev/null; done
	fi
	[ -n "$SANDBOX" ] && rm -rf "$SANDBOX"
}
descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		descendants "$c"
		echo "$c"
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- peers ------------------------------------------------------------------
say "peers: bench/setup_peers.sh"
timeout 1200 bash bench/setup_peers.sh || say "setup_peers failed; peer rows will say why"

# --- C benchmarks -----------------------------------------------------------
say "C benchmarks: $BUILD/bench/omnibench"
timeout "$LIMIT" "$BUILD/bench/omnibench" || say "omnibench failed or timed out (status $?)"

# --- Python drivers: ours and the stdlib floor ------------------------------
say "Python rows: bench/py/ours.py"
timeout "$LIMIT" "$PY" bench/py/ours.py ||
	{ say "ours.py failed (status $?)"; "$PY" bench/py/common.py unavailable python_rows "ours.py failed or timed out" hot_exec_python_client; }
say "shared state: bench/py/atomics.py"
timeout "$LIMIT" "$PY" bench/py/atomics.py ||
	{ say "atomics.py failed (status $?)"; "$PY" bench/py/common.py unavailable atomics "atomics.py failed or timed out" atomic_cas64_python ctl_read_atomic_0w; }
say "floors: bench/py/floors.py"
timeout 120 "$PY" bench/py/floors.py || say "floors.py failed (status $?)"

# --- omnipkg 3.4.1 ----------------------------------------------------------
PEER_PY=.venv-bench/py311/bin/python
say "omnipkg 3.4.1: bench/py/peer_omnipkg.py"
if [ -f .venv-bench/py311.failed ] || [ ! -x "$PEER_PY" ]; then
	why="omnipkg 3.4.1 is not installed: $(cat .venv-bench/py311.failed 2>/dev/null || echo "$PEER_PY missing")"
	"$PY" bench/py/common.py unavailable peer_omnipkg "$why" omnipkg_hot_execute_shm
else
	# A private world: its start-up deletes temporary files it thinks stale
	# and it writes sockets, logs and scripts under $TMPDIR and $HOME.  Its
	# home persists under .venv-bench/ (its package knowledge base, built on
	# first use, takes long); its temp dir is new for every run.
	PEER_HOME=$REPO/.venv-bench/peer-home
	mkdir -p "$PEER_HOME"
	SANDBOX=$(mktemp -d "${TMPDIR:-/tmp}/omnibench-peer.XXXXXX")
	mkdir -p "$SANDBOX/tmp" "$SANDBOX/run"
	chmod 700 "$SANDBOX" "$SANDBOX/run"
	env -u OMNIPKG_RUNTIME_DIR -u OMNIPKG_SOCKET -u OMNIPKG_HOME -u PYTHONPATH \
		HOME="$PEER_HOME" TMPDIR="$SANDBOX/tmp" XDG_RUNTIME_DIR="$SANDBOX/run" \
		XDG_CONFIG_HOME="$PEER_HOME/.config" XDG_DATA_HOME="$PEER_HOME/.local/share" \
		XDG_CACHE_HOME="$PEER_HOME/.cache" XDG_STATE_HOME="$PEER_HOME/.local/state" \
		OMNIPKG_LANG=en OMNI_PEER_PIDFILE="$SANDBOX/daemon.pid" \
		OMNI_OURS_PY="$PY" OMNI_OURS_HOME="${OMNIPKG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/omnipkg}" \
		timeout -k 10 "$((LIMIT + 300))" "$PEER_PY" bench/py/peer_omnipkg.py ||
		{ say "peer_omnipkg.py failed (status $?)"; [ -f "$RESULTS/peer_omnipkg.json" ] ||
		  "$PY" bench/py/common.py unavailable peer_omnipkg "its driver failed or timed out" omnipkg_hot_execute_shm; }
	cleanup
	SANDBOX=""
fi

# --- Docker: the seed table's third column -----------------------------------
# The setup installs docker.io and debootstrap if missing, starts dockerd if
# none answers (its pid in $DOCKER_STATE/dockerd.pid) and builds the image
# once; when Docker cannot run it writes the reason to
# $DOCKER_STATE/unavailable, which the driver turns into unavailable rows.
say "Docker: bench/docker_setup.sh"
timeout -k 10 1500 bash bench/docker_setup.sh "$DOCKER_STATE" ||
	{ rc=$?; say "docker_setup failed (status $rc)"; [ -f "$DOCKER_STATE/unavailable" ] ||
	  echo "bench/docker_setup.sh failed or timed out (status $rc)" >"$DOCKER_STATE/unavailable"; }
say "Docker rows: bench/py/docker_rows.py"
timeout -k 10 "$LIMIT" "$PY" bench/py/docker_rows.py "$DOCKER_STATE" ||
	{ say "docker_rows.py failed (status $?)"; [ -f "$RESULTS/docker_rows.json" ] ||
	  "$PY" bench/py/common.py unavailable docker_rows "its driver failed or timed out" dk_hot_docker_exec_api; }
bash bench/docker_setup.sh --stop "$DOCKER_STATE"

# --- Ray: runtime_env beside omnipkg.ray ------------------------------------
say "Ray: tests/ray/setup.sh, then bench/py/ray_rows.py"
if [ -n "${OMNI_BENCH_SKIP_RAY:-}" ] && [ "$OMNI_BENCH_SKIP_RAY" != 0 ]; then
	say "Ray stage skipped: OMNI_BENCH_SKIP_RAY is set"
	"$PY" bench/py/ray_rows.py --unavailable "skipped: OMNI_BENCH_SKIP_RAY was set"
elif ! RAY_VENV=$(timeout 1200 bash tests/ray/setup.sh 2>"$RESULTS/tmp/ray_setup.err"); then
	why="Ray could not be installed here (tests/ray/setup.sh): $(tail -n 1 "$RESULTS/tmp/ray_setup.err")"
	say "$why"
	"$PY" bench/py/ray_rows.py --unavailable "$why"
else
	timeout -k 10 "$LIMIT" "$RAY_VENV/bin/python" bench/py/ray_rows.py ||
		{ say "ray_rows.py failed (status $?)"; [ -f "$RESULTS/ray.json" ] ||
		  "$PY" bench/py/ray_rows.py --unavailable "its driver failed or timed out"; }
fi

# --- whole commands (hyperfine) ---------------------------------------------
say "whole commands: hyperfine"
RT=$(mktemp -d "${TMPDIR:-/tmp}/omnibench-cmd.XXXXXX")
chmod 700 "$RT"
echo '{"mount": ""}' >"$RT/config.json"
OMNIPKG_RUNTIME_DIR=$RT OMNIPKG_CONFIG=$RT/config.json setsid "$BUILD/omnipkgd" --foreground >"$RT/log" 2>&1 &
DAEMON_PID=$!
export OMNIPKG_RUNTIME_DIR=$RT
OMNI=$BUILD/omnipkg
for _ in $(seq 100); do "$OMNI" daemon status >/dev/null 2>&1 && break; sleep 0.1; done
BUBBLE=${XDG_DATA_HOME:-$HOME/.local/share}/omnipkg/bubbles/cp311/numpy-1.26.4
if [ -n "$QUICK" ] && [ "$QUICK" != 0 ]; then RUNS=(--runs 10 --warmup 2); else RUNS=(--min-runs 40 --warmup 5); fi
pairs=()
if timeout 300 hyperfine -N "${RUNS[@]}" --export-json "$RESULTS/tmp/hf_pass.json" \
	-n "omnipkg exec pass" "$OMNI exec --spec base --python 3.11 -c pass" \
	-n "python -c pass" "$PY -s -c pass"; then :; fi
pairs+=("pass=$RESULTS/tmp/hf_pass.json")
if timeout 300 hyperfine -N "${RUNS[@]}" --export-json "$RESULTS/tmp/hf_numpy.json" \
	-n "omnipkg exec import numpy" "$OMNI exec --spec numpy==1.26.4 --python 3.11 -c \"import numpy; assert numpy.__version__ == '1.26.4'\"" \
	-n "python -c import numpy" "env PYTHONPATH=$BUBBLE $PY -s -c \"import numpy; assert numpy.__version__ == '1.26.4'\""; then :; fi
pairs+=("import_numpy=$RESULTS/tmp/hf_numpy.json")
unset OMNIPKG_RUNTIME_DIR
"$PY" bench/py/hyperfine_rows.py "${pairs[@]}"
kill -TERM "$DAEMON_PID" 2>/dev/null
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=""
rm -rf "$RT"

# --- report -----------------------------------------------------------------
say "report: bench/report.py"
"$PY" bench/report.py --results "$RESULTS" --out BENCHMARKS.md
