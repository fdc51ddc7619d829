"""The zygote: a warm fork template.  It imports everything a worker
needs, then forks one worker per "fork" request, each on the socket that
came with the request.  A worker is double-forked (the middle child exits
at once) so that it is re-parented to the daemon, a child subreaper, which
then sees its exit.  The zygote itself answers only failures."""

import os
import sys
import signal
import time
import traceback

from omniworker import serve
from omniworker.frame import read_with_fds, send_msg

PR_SET_PDEATHSIG = 1

try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)   # loaded once, before any fork
    _prctl = _libc.prctl
except (ImportError, OSError, AttributeError):
    _prctl = None


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def zygote_main(fd):
    sock = serve.private_channel(fd)
    serve.ensure_std_fds()
    daemon = os.getppid()
    send_msg(sock, {"op": "ready", "pid": os.getpid(), "python": serve.PYVER,
                    "executable": sys.executable, "zygote": True})
    while True:
        fds = []
        msg = read_with_fds(sock, fds)
        if msg is None or msg.get("op") == "exit":
            _close_all(fds)
            os._exit(0)
        err = _fork_worker(sock, msg, fds, daemon)
        if err:
            send_msg(sock, {"op": "error", "id": msg.get("id"), "error": err})


def _fork_worker(sock, msg, fds, daemon):
    """Double-forks a worker for one "fork" request; returns an error text
    or None.  The zygote always closes its copies of the passed fds."""
    try:
        if msg.get("op") != "fork":
            return msg.get("_bad") or "unknown op %r (expected \"fork\")" % (msg.get("op"),)
        if len(fds) != 1:
            return "a fork request carries exactly one fd; got %d" % len(fds)
        paths = msg.get("paths", [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return "\"paths\" must be a list of strings"
        try:
            pid = os.fork()
        except OSError as e:
            return "fork failed: %s" % e
        if pid == 0:
            # Middle child: fork the worker and leave at once, so the worker
            # is re-parented to the daemon, not to us.
            code = 1
            try:
                middle = os.getpid()
                if os.fork() == 0:
                    _become_worker(sock, fds[0], paths, middle, daemon)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            return "fork of the worker failed (status %d)" % status
        return None
    finally:
        _close_all(fds)


def _die_with_daemon(middle, daemon):
    """Once re-parented to the daemon, die with it.  A busy worker never
    sees its channel close, and the parent-death signal set by the daemon
    for the zygote is not inherited across fork.  The kernel sends it when
    the current parent dies, so it must be set after the re-parenting;
    if the daemon died before that, we are someone else's child: go."""
    delay, deadline = 50e-6, time.monotonic() + 5.0
    while os.getppid() == middle:     # the middle child is still exiting
        if time.monotonic() > deadline:
            os._exit(1)
        time.sleep(delay)
        delay = min(delay * 2, 0.005)
    if _prctl is not None:
        _prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL),
               ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if os.getppid() != daemon:
        os._exit(1)


def _become_worker(zsock, fd, paths, middle, daemon):
    try:
        _die_with_daemon(middle, daemon)
        os.setsid()
        zsock.close()             # the worker must not hold the zygote channel
        sock = serve.private_channel(fd)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    serve.serve_or_die(sock, paths)
