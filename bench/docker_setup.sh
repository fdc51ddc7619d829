#!/usr/bin/env bash
# bench/docker_setup.sh - prepares Docker for the seed table's third column
# (bench/py/docker_rows.py), offline: no registry is used.
#
#   bash bench/docker_setup.sh [STATE_DIR]          (default: results/tmp/docker)
#   bash bench/docker_setup.sh --stop [STATE_DIR]   stops what the first form started
#
# 1. Installs from apt what is missing: docker.io (dockerd, containerd,
#    runc, the CLI), debootstrap, and python3-numpy for the host's
#    /usr/bin/python3 (our side of the comparison runs on that interpreter
#    with that numpy, the same packages as inside the image).
# 2. Uses a dockerd that already answers on /var/run/docker.sock and leaves
#    it alone; else starts one (overlay2, no bridge, no iptables rules: every
#    container of the bench runs with --network none, and the host's firewall
#    and interfaces stay as they were) and writes its pid to
#    STATE_DIR/dockerd.pid, so that bench/run.sh stops exactly what was
#    started, by pid.
# 3. Builds, unless it exists, the image omnibench-py:bookworm: debootstrap
#    --variant=minbase --include=python3,python3-numpy bookworm from the
#    Debian mirror apt already uses, imported with `docker import`.
#
# Every step is time-limited.  When Docker cannot run here (a package that
# does not install, no overlay file system, a dockerd that does not come up,
# an image that cannot be built), the reason goes to STATE_DIR/unavailable
# (one line) and the script exits 0: the suite then marks the Docker rows
# unavailable with that line.  Idempotent: run it again and it reuses what
# is there.  STATE_DIR/env tells the driver the socket, the CLI and the image.
#
# --stop: the dockerd whose pid is in STATE_DIR/dockerd.pid (if it is still
# that dockerd) gets SIGTERM, which stops its containers and its containerd,
# and, if it is still there 30 s later, SIGKILL with its process tree; then
# any containerd-shim listed in STATE_DIR/shims.pid (written by the driver
# for the containers it made) that outlived its container.  Nothing else is
# touched: a dockerd that was already running stays as it was.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
STOP=""
[ "${1:-}" = --stop ] && { STOP=1; shift; }
STATE=${1:-${OMNI_RESULTS_DIR:-results}/tmp/docker}
IMAGE=omnibench-py:bookworm
SOCK=/var/run/docker.sock
RELEASE=bookworm

say() { printf 'docker_setup: %s\n' "$*"; }

# alive PID [COMM]: the process exists, is not a zombie and (if given) its
# command name is COMM or starts with it.
alive() {
	local st c
	st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [ "${st:0:1}" != Z ] || return 1
	[ -z "${2:-}" ] && return 0
	c=$(cat "/proc/$1/comm" 2>/dev/null) && [ "${c#"$2"}" != "$c" ]
}
tree() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		tree "$c"
		echo "$c"
	done
}
stop() {
	local p q
	if [ -f "$STATE/dockerd.pid" ]; then
		p=$(cat "$STATE/dockerd.pid")
		if alive "$p" dockerd; then
			say "stopping dockerd $p (started by the bench)"
			kill -TERM "$p" 2>/dev/null
			for _ in $(seq 60); do alive "$p" || break; sleep 0.5; done
			if alive "$p"; then
				say "dockerd $p still running after 30 s: SIGKILL to it and its children"
				for q in $(tree "$p") "$p"; do kill -KILL "$q" 2>/dev/null; done
			fi
		fi
		rm -f "$STATE/dockerd.pid"
	fi
	if [ -f "$STATE/shims.pid" ]; then
		for q in $(sort -u "$STATE/shims.pid"); do
			alive "$q" containerd-shim && { say "containerd-shim $q outlived its container: SIGKILL"; kill -KILL "$q" 2>/dev/null; }
		done
		rm -f "$STATE/shims.pid"
	fi
	return 0
}
if [ -n "$STOP" ]; then
	[ -d "$STATE" ] && stop
	exit 0
fi

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
rm -f "$STATE/unavailable"
# give_up REASON: Docker cannot run here; the rows will say why.
give_up() {
	say "Docker column unavailable: $*"
	printf '%s\n' "$*" >"$STATE/unavailable"
	exit 0
}

# The docker.io CLI (the same release as its dockerd), before any other
# `docker` on PATH.
cli() {
	if [ -x /usr/bin/docker ]; then printf '/usr/bin/docker\n'; else command -v docker; fi
}

answers() {
	local c
	c=$(cli) || return 1
	timeout 10 "$c" -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# --- packages -----------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 && [ -x /usr/bin/docker ] || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
dpkg-query -W -f '${Status}\n' python3-numpy 2>/dev/null | grep -q '^install ok installed' || need+=(python3-numpy)
if [ ${#need[@]} -gt 0 ]; then
	say "apt-get install ${need[*]}"
	command -v apt-get >/dev/null 2>&1 || give_up "apt-get not found: cannot install ${need[*]}"
	# No service is started by the packages' scripts: a dockerd this script
	# did not start itself would be one it cannot account for.
	policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
	fi
	log=$STATE/apt.log
	install() {
		DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
			"${need[@]}" </dev/null >>"$log" 2>&1
	}
	install || { timeout 300 apt-get update -q </dev/null >>"$log" 2>&1; install; }
	rc=$?
	[ -n "$policy" ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] || give_up "apt-get install ${need[*]} failed (status $rc): $(tail -n 1 "$log")"
fi

# --- dockerd ------------------------------------------------------------------
if answers; then
	if [ -f "$STATE/dockerd.pid" ] && alive "$(cat "$STATE/dockerd.pid")" dockerd; then
		say "dockerd $(cat "$STATE/dockerd.pid"), started by an earlier call with this state dir, answers on $SOCK"
	else
		say "a dockerd already answers on $SOCK: using it, leaving it running"
		rm -f "$STATE/dockerd.pid"
	fi
else
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null
	grep -qw overlay /proc/filesystems || give_up "the kernel has no overlay file system (overlay2 storage driver)"
	grep -q cgroup /proc/filesystems || give_up "the kernel has no cgroups"
	[ -d /sys/fs/cgroup ] && [ -n "$(ls -A /sys/fs/cgroup 2>/dev/null)" ] ||
		give_up "no cgroup hierarchy is mounted at /sys/fs/cgroup"
	dockerd=$(command -v dockerd) || give_up "dockerd not found after installing docker.io"
	say "starting $dockerd (overlay2, --bridge=none --iptables=false)"
	: >"$STATE/dockerd.log"
	setsid "$dockerd" --host "unix://$SOCK" --storage-driver overlay2 \
		--bridge none --iptables=false --ip-forward=false --ip-masq=false \
		</dev/null >>"$STATE/dockerd.log" 2>&1 &
	pid=$!
	echo "$pid" >"$STATE/dockerd.pid"
	for _ in $(seq 120); do
		answers && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if ! answers; then
		why=$(grep -E 'level=(error|fatal)|failed|Error' "$STATE/dockerd.log" | tail -n 1 | cut -c1-300)
		if kill -0 "$pid" 2>/dev/null; then
			why="dockerd did not answer within 60 s${why:+: $why}"
		else
			rm -f "$STATE/dockerd.pid"
			why="dockerd exited at start${why:+: $why}"
		fi
		give_up "$why (log: $STATE/dockerd.log)"
	fi
	say "dockerd $pid answers on $SOCK"
fi
CLI=$(cli)
D=("$CLI" -H "unix://$SOCK")
driver=$(timeout 10 "${D[@]}" info --format '{{.Driver}}' 2>/dev/null)

# --- the image ----------------------------------------------------------------
# The Debian mirror apt already uses for $RELEASE: one-line sources
# ("deb [opts] URI SUITE ...") or deb822 paragraphs (Types/URIs/Suites).
mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v rel="$RELEASE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
			if ($(i + 1) == rel) { print $i; exit } }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v rel="$RELEASE" 'BEGIN { RS = ""; FS = "\n" }
			{ t = u = s = ""; on = 1
			  for (i = 1; i <= NF; i++) {
				if ($i ~ /^Types:/) t = $i; else if ($i ~ /^URIs:/) u = $i
				else if ($i ~ /^Suites:/) s = $i; else if ($i ~ /^Enabled: *no/) on = 0 }
			  if (on && t ~ /[ \t]deb([ \t]|$)/ && (s " ") ~ ("[ \t]" rel "[ \t]")) {
				sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); print a[1]; exit } }' "$f"
	done
}

if timeout 30 "${D[@]}" image inspect "$IMAGE" >/dev/null 2>&1; then
	say "have image $IMAGE"
else
	MIRROR=$(mirror | head -n 1)
	[ -n "$MIRROR" ] || give_up "no apt source for Debian $RELEASE found in /etc/apt/sources.list{,.d}: no mirror for debootstrap"
	ROOT=$(mktemp -d "${TMPDIR:-/var/tmp}/omnibench-rootfs.XXXXXX")
	trap 'rm -rf "$ROOT"' EXIT
	say "debootstrap --variant=minbase --include=python3,python3-numpy $RELEASE from $MIRROR (a minute or two)"
	t0=$(date +%s)
	if ! timeout 1200 debootstrap --variant=minbase --include=python3,python3-numpy \
		"$RELEASE" "$ROOT" "$MIRROR" </dev/null >"$STATE/debootstrap.log" 2>&1; then
		give_up "debootstrap $RELEASE from $MIRROR failed: $(tail -n 1 "$STATE/debootstrap.log" | cut -c1-300)"
	fi
	rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/debootstrap
	pyv=$(chroot "$ROOT" python3 -c 'import sys, numpy; print(sys.version.split()[0], numpy.__version__)' 2>&1)
	say "rootfs built in $(( $(date +%s) - t0 )) s ($(du -sh "$ROOT" | cut -f1)): python3 + numpy $pyv"
	if ! tar -C "$ROOT" -c . | timeout 600 "${D[@]}" import \
		--change 'CMD ["python3"]' \
		--change "LABEL org.omnipkg.bench.source=\"debootstrap --variant=minbase --include=python3,python3-numpy $RELEASE $MIRROR\"" \
		- "$IMAGE" >"$STATE/import.log" 2>&1; then
		give_up "docker import of the $RELEASE rootfs failed: $(tail -n 1 "$STATE/import.log" | cut -c1-300)"
	fi
	rm -rf "$ROOT"
	trap - EXIT
	say "imported $IMAGE"
fi

{
	printf 'DOCKER_SOCK=%s\n' "$SOCK"
	printf 'DOCKER_CLI=%s\n' "$CLI"
	printf 'DOCKER_IMAGE=%s\n' "$IMAGE"
	printf 'DOCKER_DRIVER=%s\n' "$driver"
	printf 'DOCKER_STARTED=%s\n' "$([ -f "$STATE/dockerd.pid" ] && echo 1 || echo 0)"
} >"$STATE/env"
say "ok (storage driver ${driver:-?})"
