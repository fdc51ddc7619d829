"""Shared helpers for the integration tests (stdlib only).

DaemonFixture runs the real omnipkgd on a private runtime dir and home,
in its own process group, and takes everything down afterwards.  stop()
reports as problems what a clean run never shows: a sanitizer report in
the daemon's log, a nonzero exit, and any process the daemon started that
outlives it (workers call setsid, so killing the daemon's group misses
them; they are found by ancestry and by their environment, then killed):

    d = DaemonFixture()
    d.start()
    try:
        r = d.cli("exec", "--spec", "base", "-c", "print(1)")
    finally:
        d.stop()

Environment:
    OMNIPKG_TEST_BUILD   the CMake build dir holding omnipkgd and omnipkg
                         (default: <repo>/build)
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# What ASan, LSan and UBSan print when they find something (the daemon's
# stderr goes to its log).
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer",
                   "SUMMARY: AddressSanitizer")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXT_DIR = os.path.join(REPO, "tests", "ext")


def build_dir():
    return os.environ.get("OMNIPKG_TEST_BUILD") or os.path.join(REPO, "build")


def find_pythons(wanted=("3.9", "3.11", "3.13")):
    """{"3.11": "/root/.pyenv/versions/3.11.7/bin/python3", ...} for every
    wanted X.Y found under $PYENV_ROOT/versions (newest micro wins), else
    on PATH as pythonX.Y."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = {}
    for xy in wanted:
        cands = []
        for d in glob.glob(os.path.join(root, "versions", xy + ".*")):
            m = re.fullmatch(re.escape(xy) + r"\.(\d+)", os.path.basename(d))
            exe = os.path.join(d, "bin", "python3")
            if m and os.access(exe, os.X_OK):
                cands.append((int(m.group(1)), exe))
        if cands:
            found[xy] = max(cands)[1]
            continue
        exe = shutil.which("python" + xy)
        if exe and "/shims/" not in exe:
            found[xy] = exe
    return found


def proc_stat(pid):
    """(ppid, pgrp, state, starttime) of a live pid, or None when it is gone
    or a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()   # comm may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), fields[0], int(fields[19])


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def proc_environ(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def mounts_below(path):
    """Mount points at or below path (deepest first)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 2:
                continue
            mp = fields[1].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def unmount_below(path):
    """Detaches every mount at or below path; returns the mount points."""
    found = mounts_below(path)
    for mp in found:
        subprocess.run(["umount", "-l", mp], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return found


def build_lockdemo(python, home):
    """Builds the lockdemo-1.0 and lockdemo-2.0 bubbles for python under
    home (tests/ext/build_ext.sh); returns their two directories."""
    r = subprocess.run(["bash", os.path.join(EXT_DIR, "build_ext.sh"), python, home],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("build_ext.sh %s failed (%d):\n%s%s"
                           % (python, r.returncode, r.stdout, r.stderr))
    dirs = r.stdout.split()
    if len(dirs) != 2:
        raise RuntimeError("build_ext.sh printed %r, expected two dirs" % r.stdout)
    return dirs


class DaemonFixture:
    """One omnipkgd on a private runtime dir and home.

    mount: a FUSE mount point, or None for no mount.  config: extra keys
    for the daemon's config.json (written to <home>/config.json and passed
    as OMNIPKG_CONFIG).  Attributes: tmp, runtime, home, socket, env,
    log_path, proc (the daemon's Popen while running), socket_handed_over
    (set by a subclass that hands the daemon its socket: the socket must
    then outlive the daemon, not go with it)."""

    socket_handed_over = False

    def __init__(self, build=None, mount=None, config=None, extra_args=()):
        self.build = build or build_dir()
        self.daemon_bin = os.path.join(self.build, "omnipkgd")
        self.cli_bin = os.path.join(self.build, "omnipkg")
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-it-")
        self.runtime = os.path.join(self.tmp, "run")
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.runtime, 0o700)
        os.mkdir(self.home, 0o700)
        self.socket = os.path.join(self.runtime, "omnipkgd.sock")
        self.log_path = os.path.join(self.tmp, "omnipkgd.log")
        self.mount = mount
        self.extra_args = list(extra_args)
        self.proc = None
        self._log = None
        self._seen = {}   # pid -> starttime of every process the daemon started

        cfg = {"mount": mount or ""}
        cfg.update(config or {})
        self.config_path = os.path.join(self.home, "config.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)

        env = dict(os.environ)
        for k in ("OMNIPKG_DAEMON_CHILD", "OMNIPKG_SOCKET"):
            env.pop(k, None)
        env.update(OMNIPKG_RUNTIME_DIR=self.runtime, OMNIPKG_HOME=self.home,
                   OMNIPKG_CONFIG=self.config_path)
        self.env = env

    @staticmethod
    def available(build=None):
        """None if the binaries exist, else why not (for skipTest)."""
        b = build or build_dir()
        for name in ("omnipkgd", "omnipkg"):
            p = os.path.join(b, name)
            if not os.access(p, os.X_OK):
                return "%s not built (OMNIPKG_TEST_BUILD=%s)" % (name, b)
        return None

    # -- lifetime ---------------------------------------------------------

    def start(self, timeout=30.0):
        """Starts omnipkgd --foreground and waits (bounded) until its
        socket accepts.  Raises RuntimeError with the log on failure."""
        if self.proc is not None:
            raise RuntimeError("daemon already started")
        argv = [self.daemon_bin, "--foreground"]
        if self.mount:
            try:
                os.makedirs(self.mount, exist_ok=True)
            except OSError:
                pass  # a dead daemon's stale mount: omnipkgd cleans it up itself
            argv += ["--mount", self.mount]
        argv += self.extra_args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("omnipkgd exited with %s before accepting:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            if self._accepts():
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("omnipkgd socket %s not accepting after %.0fs:\n%s"
                                   % (self.socket, timeout, self.log_tail()))
            time.sleep(0.05)

    def _accepts(self):
        if not os.path.exists(self.socket):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, timeout=15.0):
        """`omnipkg daemon stop`, then kills the whole process group and any
        process the daemon left behind, pass or fail.  Returns a list of
        problems (empty when the daemon went cleanly, exited 0, left no
        socket, no process and no sanitizer report behind); removes the
        temp dir when so."""
        problems = []
        if self.proc is None:
            return problems
        self.descendants()
        try:
            r = self.cli("daemon", "stop", timeout=timeout)
            if r.returncode != 0:
                problems.append("`omnipkg daemon stop` exited %d: %s"
                                % (r.returncode, (r.stderr or r.stdout).strip()))
        except subprocess.TimeoutExpired:
            problems.append("`omnipkg daemon stop` hung for %.0fs" % timeout)
        try:
            status = self.proc.wait(timeout=timeout)
            if status != 0:
                problems.append("omnipkgd exited with status %d" % status)
        except subprocess.TimeoutExpired:
            problems.append("omnipkgd still running %.0fs after stop" % timeout)
        if self.proc.poll() is None:
            self._kill_group()   # it hung: already a problem
        problems += self.reap_leftovers()
        self._kill_group()
        if self.mount:
            subprocess.run(["fusermount3", "-u", "-z", self.mount],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if self.socket_handed_over:
            if not os.path.exists(self.socket):
                problems.append("socket %s, handed to the daemon, was removed" % self.socket)
        elif os.path.exists(self.socket):
            problems.append("socket %s left behind" % self.socket)
        # The daemon's own tmpfs for shared segments goes with it.
        for mp in unmount_below(self.runtime):
            problems.append("mount %s left behind" % mp)
        if self._log:
            self._log.close()
            self._log = None
        problems += self.sanitizer_reports()
        if problems:
            problems.append("daemon log (%s):\n%s" % (self.log_path, self.log_tail()))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.proc = None
        return problems

    def crash(self):
        """SIGKILLs the daemon's process group, as a crash would, and waits
        for the daemon.  What it started is checked by the next stop() or
        reap_leftovers()."""
        self.descendants()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        # A killed daemon cannot unmount its shared memory tmpfs; the next
        # one on this runtime dir would, but a test's dir has no next one.
        unmount_below(self.runtime)
        if self._log:
            self._log.close()
            self._log = None

    def descendants(self):
        """Records and returns {pid: starttime} of every live process this
        daemon started: its descendants by parent pid, and any process whose
        environment says it is a daemon child of this runtime dir (one that
        outlived its parent is re-parented elsewhere)."""
        me = os.getpid()
        mark_child = b"OMNIPKG_DAEMON_CHILD=1"
        mark_rt = ("OMNIPKG_RUNTIME_DIR=" + self.runtime).encode()
        stats = {}
        for pid in all_pids():
            st = proc_stat(pid)
            if st:
                stats[pid] = st
        found = {}
        root = self.proc.pid if self.proc is not None else None
        for pid, st in stats.items():
            if pid in (me, root):
                continue
            if pid in self._seen and self._seen[pid] == st[3]:
                found[pid] = st[3]
                continue
            p, hops = pid, 0
            while p in stats and p > 1 and hops < 64:
                p = stats[p][0]
                hops += 1
                if p == root:
                    found[pid] = st[3]
                    break
            else:
                env = proc_environ(pid)
                if mark_child in env and mark_rt in env:
                    found[pid] = st[3]
        self._seen.update(found)
        return found

    def reap_leftovers(self, grace=5.0):
        """After the daemon is gone: waits up to grace seconds for what it
        started to exit, then SIGKILLs the rest.  Returns one problem per
        process that had to be killed (empty list when none)."""
        left = {}
        deadline = time.monotonic() + grace
        while True:
            left = {pid: (t, proc_cmdline(pid)) for pid, t in self.descendants().items()}
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        problems, killed = [], []
        for pid, (t, cmd) in sorted(left.items()):
            st = proc_stat(pid)
            if st is None or st[3] != t:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.append((pid, t))
            problems.append("pid %d outlived the daemon and was killed: %s" % (pid, cmd))
        # SIGKILL is delivered, not done: wait until they are really gone.
        deadline = time.monotonic() + grace
        while any((proc_stat(pid) or (0, 0, 0, None))[3] == t for pid, t in killed) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        self._seen.clear()
        return problems

    def sanitizer_reports(self):
        """Problems for each sanitizer report in the daemon's log."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        hits = [i for i, line in enumerate(lines) if any(m in line for m in SANITIZER_MARKS)]
        if not hits:
            return []
        first = hits[0]
        return ["sanitizer report in the daemon log (%d lines match):\n%s"
                % (len(hits), "\n".join(lines[max(0, first - 2):first + 40]))]

    def _kill_group(self):
        pgid = self.proc.pid  # start_new_session: the daemon leads its group
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, n=60):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    # -- the CLI ----------------------------------------------------------

    def cli(self, *args, timeout=120.0, input=None):
        """Runs `omnipkg ARGS` against this daemon; CompletedProcess with
        text stdout and stderr (never raises on a nonzero exit)."""
        return subprocess.run([self.cli_bin] + [str(a) for a in args], env=self.env,
                              input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)

    def cli_popen(self, *args):
        """Starts `omnipkg ARGS` without waiting (for concurrent requests);
        collect with .communicate()."""
        return subprocess.Popen([self.cli_bin] + [str(a) for a in args], env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        problems = self.stop()
        if problems and exc[0] is None:
            raise AssertionError("\n".join(problems))
        return False


if __name__ == "__main__":
    print(json.dumps({"build": build_dir(), "pythons": find_pythons()}, indent=1))
    sys.exit(0)
