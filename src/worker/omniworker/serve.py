"""Process set-up and the request loop of one worker: "ready", then one
"done" per "exec", mappings dropped on "unmap" (no answer), and an "error"
for anything else, until "exit" or EOF."""

import atexit
import fcntl
import os
import socket
import sys
import traceback

from omniworker import bubbles
from omniworker.arrays import Arrays
from omniworker.capture import Capture
from omniworker.execute import Executor, encode_done
from omniworker.frame import FrameReader, close_fds, send_frame, send_msg

DEFAULT_CAP = 1 << 20         # bytes of stdout / stderr kept when "cap" is absent
PYVER = "%d.%d.%d" % tuple(sys.version_info[:3])
# <runtime dir>/worker/omniworker/serve.py: the runtime dir, and the Python
# client package the daemon installs beside us (<runtime dir>/worker/client).
_WORKER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_DIR = os.path.dirname(_WORKER_DIR)
CLIENT_DIR = os.path.join(_WORKER_DIR, "client")


def ensure_std_fds():
    """fds 0/1/2 must exist, or a later open() could land on them and user
    output would go to that file; fd 0 is always /dev/null (jobs get no stdin)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd == null:
            continue
        if fd == 0:
            os.dup2(null, 0)
            continue
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)
    if sys.stdin is None:        # fd 0 was closed when the interpreter started
        sys.stdin = open(0, "r", closefd=False)


def private_channel(fd):
    """The channel as a socket on an fd above 2 that no subprocess inherits."""
    if fd <= 2:
        newfd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, fd)
        os.close(null)
        fd = newfd
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    return sock


class Worker:
    def __init__(self, sock, paths):
        self.sock = sock
        self.pid = os.getpid()
        for s in (sys.stdout, sys.stderr):   # the interpreter's own buffers
            if s is not None:
                try:
                    s.flush()
                except Exception:
                    pass
        # Jobs see that they run in a worker (so the client never starts a
        # daemon from one), and nested calls reach this daemon.
        os.environ["OMNIPKG_DAEMON_CHILD"] = "1"
        os.environ["OMNIPKG_IS_DAEMON_WORKER"] = "1"
        if os.path.exists(os.path.join(RUNTIME_DIR, "omnipkgd.sock")):
            os.environ["OMNIPKG_RUNTIME_DIR"] = RUNTIME_DIR
        # `import omnipkg` is this daemon's client: ahead of site-packages
        # (an omnipkg installed there speaks to another daemon), behind the
        # bubbles.
        if os.path.isdir(CLIENT_DIR) and CLIENT_DIR not in sys.path:
            sys.path.insert(0, CLIENT_DIR)
        bubbles.put_first(paths)
        self.capture = Capture()
        self.capture.begin()      # from here on fds 1 and 2 never reach the daemon's log
        self.executor = Executor()
        self.executor.bind_lazy("np", "numpy")
        self.arrays = Arrays(self.executor.G)

    def serve(self):
        send_msg(self.sock, {"op": "ready", "pid": os.getpid(), "python": PYVER,
                             "executable": sys.executable})
        reader = FrameReader(self.sock)
        while True:
            msg = reader.read()
            fds = reader.fds
            if msg is None or msg.get("op") == "exit":
                close_fds(fds)
                self.exit(0)
            if msg.get("op") == "exec" and isinstance(msg.get("code"), str):
                try:
                    payload = self.run(msg, fds)
                finally:
                    close_fds(fds)     # run() closes them first, unless it failed early
                send_frame(self.sock, payload)
                continue
            close_fds(fds)
            if msg.get("op") == "unmap" and isinstance(msg.get("ids"), list):
                self.arrays.segs.unmap(msg["ids"])
            else:
                send_msg(self.sock, {"op": "error", "id": msg.get("id"),
                                     "error": msg.get("_bad") or
                                     "expected {\"op\":\"exec\",\"code\":str} or "
                                     "{\"op\":\"unmap\",\"ids\":[...]}"})

    def run(self, msg, fds=None):
        """Runs one job with the descriptors that came with it (a list,
        emptied once they are closed: before the job's code runs, which
        could reuse their numbers); returns the encoded "done" payload."""
        fds = [] if fds is None else fds
        cap = msg.get("cap")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            cap = DEFAULT_CAP
        rep = {"op": "done", "id": msg.get("id"), "ok": True}
        self.capture.begin()
        err = self.arrays.begin(msg, fds)
        close_fds(fds)         # imported by now, or not needed
        del fds[:]
        G = self.executor.G
        # omnipkg binds the whole task as input_data; a bound "input_data"
        # (the client's shm_in / shm_out descriptors) fills it in.
        given = G.get("input_data") if "input_data" in (msg.get("bind") or {}) else None
        G["input_data"] = dict({"type": "execute", "task_id": str(msg.get("id")),
                                "code": msg["code"], "shm_in": {}, "shm_out": {}},
                               **(given if isinstance(given, dict) else {}))
        if err is None:
            self.executor.run(msg["code"], rep)
        else:
            rep.update(ok=False, error=err, traceback="", duration=0.0)
        G.pop("input_data", None)    # per job, as in omnipkg
        self.capture.flush()
        if os.getpid() != self.pid:
            # A child that user code forked fell off the end of the job: it
            # must not go on serving this worker's channel.
            os._exit(0)
        self.arrays.end(msg, rep)
        self.capture.collect(rep, cap)
        return encode_done(rep)

    def exit(self, code):
        # atexit handlers run, but non-daemon user threads are not joined:
        # a stray thread must not keep a dismissed worker alive.
        self.capture.flush()
        try:
            atexit._run_exitfuncs()
        except Exception:
            pass
        self.capture.flush()
        os._exit(code)


def worker_main(fd, paths):
    sock = private_channel(fd)   # first: it may sit on fd 0/1/2
    ensure_std_fds()
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)   # own group, so the daemon can signal it whole
    except OSError:
        pass
    serve_or_die(sock, paths)


def serve_or_die(sock, paths):
    # Never a normal interpreter exit: it would wait for the user's
    # non-daemon threads, and a worker whose daemon is gone must just go.
    try:
        Worker(sock, paths).serve()
    except BaseException:
        traceback.print_exc()
    os._exit(1)
