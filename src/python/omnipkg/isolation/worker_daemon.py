"""omnipkg 3.4.1's module path for its daemon client, served by omnipkgd:
code written against it runs unchanged.

    from omnipkg.isolation.worker_daemon import DaemonClient, DaemonProxy
    DaemonProxy(DaemonClient(), "numpy==1.26.4").execute("import numpy; print(numpy.__version__)")

    python -m omnipkg.isolation.worker_daemon start|stop|restart|status|logs [-f]

The names omnipkg keeps here are ours: DEFAULT_SOCKET is omnipkgd's socket,
PID_FILE and DAEMON_LOG_FILE are its pid file and log (in its runtime dir),
WorkerPoolDaemon starts omnipkgd, and cli_start/cli_stop/cli_status print
what omnipkg's do.  Everything else is omnipkg.client's.
"""

import os
import sys
import time

from .. import *  # noqa: F401,F403  (re-exports: the same names as omnipkg)
from .. import __all__ as _pkg_all
from ..client import (DaemonClient, DaemonConnectionError, DaemonProxy, _dial,
                      default_socket_path, find_daemon, resolve_python_exe, start_daemon)

DEFAULT_SOCKET = default_socket_path()
_RUNTIME_DIR = os.path.dirname(DEFAULT_SOCKET)
PID_FILE = os.path.join(_RUNTIME_DIR, "omnipkgd.pid")
DAEMON_LOG_FILE = os.path.join(_RUNTIME_DIR, "omnipkgd.log")

__all__ = list(_pkg_all) + ["DEFAULT_SOCKET", "PID_FILE", "DAEMON_LOG_FILE", "WorkerPoolDaemon",
                            "cli_start", "cli_stop", "cli_status", "cli_logs", "cli_idle_config",
                            "main"]


def _read_pid():
    try:
        with open(PID_FILE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class WorkerPoolDaemon:
    """Starts omnipkgd, the daemon omnipkg's WorkerPoolDaemon was.  Its
    pool settings live in omnipkgd's config file; the arguments are
    accepted for compatibility."""

    def __init__(self, max_workers=10, max_idle_time=300, warmup_specs=None):
        self.max_workers = max_workers
        self.max_idle_time = max_idle_time
        self.warmup_specs = list(warmup_specs or [])
        self.socket_path = DEFAULT_SOCKET

    @classmethod
    def is_running(cls):
        """Whether omnipkgd answers on DEFAULT_SOCKET (a trusted socket of
        this user's)."""
        try:
            _dial(DEFAULT_SOCKET, 0.5).close()
            return True
        except (OSError, DaemonConnectionError):
            return False

    def start(self, daemonize=True, wait_for_ready=False):
        """daemonize: `omnipkgd --daemon` (returns once it accepts);
        otherwise runs omnipkgd in the foreground in this process's place."""
        if daemonize:
            start_daemon(self.socket_path)
            if self.warmup_specs:
                c = DaemonClient(self.socket_path, auto_start=False)
                for spec in self.warmup_specs:
                    c.execute(spec, "pass")
                c.close()
            return True
        binary = find_daemon()
        if not binary:
            raise RuntimeError("omnipkgd not found: set $OMNIPKGD or put omnipkgd on PATH")
        os.execv(binary, [binary, "--foreground"])


def cli_start():
    if WorkerPoolDaemon.is_running():
        print("Daemon is already running.")
        cli_status()
        return 0
    print("Starting omnipkgd...", end=" ", flush=True)
    try:
        WorkerPoolDaemon().start(daemonize=True, wait_for_ready=True)
    except Exception as e:
        print("\nFailed to start: %s" % e)
        return 1
    print("running (pid %s, socket %s)" % (_read_pid() or "?", DEFAULT_SOCKET))
    return 0


def cli_stop():
    if not WorkerPoolDaemon.is_running():
        print("Daemon not running")
        return 0
    pid = _read_pid()
    r = DaemonClient(auto_start=False).shutdown()
    if not r.get("success"):
        print("Error: %s" % r.get("error", "Unknown error"))
        return 1
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            break
        time.sleep(0.05)
    print("Daemon stopped.")
    return 0


def cli_status():
    r = DaemonClient(auto_start=False).status()
    if not r.get("success"):
        print("Daemon not running" if not r.get("running") else "Error: %s" % r.get("error"))
        return 1
    print("=" * 60)
    print("OMNIPKGD WORKER DAEMON STATUS (pid %s, %s)" % (r.get("pid"), r.get("version")))
    print("=" * 60)
    print("  Workers: %s" % r.get("workers", 0))
    mp = r.get("memory_percent", -1)
    print("  Memory Usage: %s" % ("%.1f%%" % mp if mp >= 0 else "N/A"))
    st = r["stats"]
    print("  Total Requests: %d" % st["total_requests"])
    print("  Cache Hits: %d" % st["cache_hits"])
    print("  Errors: %d" % st["errors"])
    if r.get("worker_details"):
        print("\n  Active Workers:")
        now = time.time()
        for info in r["worker_details"].values():
            print("    - %s  [%s]  PID %s" % (info["pkg_spec"], info["python_exe"], info["pid"]))
            print("      Requests: %d, Idle: %.0fs, Failures: %d"
                  % (info["request_count"], now - info["last_used"], info["health_failures"]))
    if r.get("idle_pool_info"):
        print("\n  Idle Worker Pool:")
        for py, n in r["idle_pool_info"].items():
            print("    - %s: %d" % (py, n))
    print("=" * 60)
    return 0


def cli_logs(follow=False, tail_lines=50):
    try:
        with open(DAEMON_LOG_FILE, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()[-tail_lines:]
            for line in lines:
                print(line)
            while follow:
                chunk = f.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.25)
    except FileNotFoundError:
        print("No log at %s" % DAEMON_LOG_FILE)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cli_idle_config(python_version=None, count=None):
    c = DaemonClient(auto_start=False)
    if python_version is not None and count is not None:
        r = c.set_idle_config(python_version, count)
    else:
        r = c.get_idle_config()
    if not r.get("success"):
        print("Error: %s" % r.get("error", "Unknown error"))
        return 1
    for py, n in (r.get("config") or {}).items():
        print("%s: %d" % (py, n))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m omnipkg.isolation.worker_daemon "
             "start|stop|restart|status|logs [-f] [-n N]|idle [PYTHON COUNT]")
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "start":
        return cli_start()
    if cmd == "stop":
        return cli_stop()
    if cmd == "restart":
        cli_stop()
        return cli_start()
    if cmd == "status":
        return cli_status()
    if cmd == "logs":
        n = 50
        if "-n" in rest and rest.index("-n") + 1 < len(rest):
            n = int(rest[rest.index("-n") + 1])
        return cli_logs("-f" in rest or "--follow" in rest, n)
    if cmd == "idle":
        if len(rest) == 2:
            return cli_idle_config(resolve_python_exe(rest[0]), int(rest[1]))
        return cli_idle_config()
    print("Unknown command: %s\n%s" % (cmd, usage), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
