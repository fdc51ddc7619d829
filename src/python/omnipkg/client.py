"""DaemonClient: the Python client of omnipkgd (stdlib only, Python 3.8+).

It speaks the protocol of src/proto.h on the daemon's Unix socket: frames of
a 4-byte big-endian length and a UTF-8 JSON object; requests
{"v":1, "id":n, "op":...}, replies {"v":1, "id":n, "ok":bool, ...} matched
by id, in any order.  One persistent connection per client, shared by
threads: each call sends under a lock, and whichever waiting thread is free
reads the socket and hands every reply to the thread whose id it carries.

Method names and reply fields follow omnipkg 3.4.1's DaemonClient, so code
written for it keeps working:

    reply = DaemonClient().execute("numpy==1.26.4", "import numpy; result = {'v': numpy.__version__}")
    reply["success"], reply["stdout"], reply["v"], reply["result"]

Arrays travel in shared segments (omnipkg.shm): empty/zeros/array make
ndarrays in pooled segments; execute_shm, execute_zero_copy and
execute_smart name them in the request ("arrays"), so the worker maps the
same pages; small values travel as JSON globals ("bind"), never as source.

Nothing raises by default, as in omnipkg: a failed job, a bad spec, a
missing bubble and a daemon that cannot be reached are all replies with
success False and "error" ("Daemon not running: ..." when nothing answers).
DaemonClient(raise_errors=True) raises the ConnectionError subclasses below
for the last kind instead.  reason_class(reply["reason"]) says whether a job
failed ("job"), was turned down ("refused") or the system failed ("system").

Requests carry code, so a socket is used only when nobody else could have
put it there: before a byte is sent, its directory must be a real directory
of the caller's uid with no group or other bits, the socket the caller's,
and the process listening on it (SO_PEERCRED) the caller's; otherwise
DaemonTrustError, and nothing is sent or started.
"""

import array
import json
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

from . import shm as _shm
from .shm import DaemonShmError

PROTO_VERSION = 1
MAX_FRAME = 16 << 20            # PROTO_MAX_FRAME in proto.h
MAX_ID = 1 << 53
START_TIMEOUT = 30.0            # `omnipkgd --daemon` until its socket accepts
REDIAL_TIMEOUT = 2.0            # dialling again after a start
HELLO_TIMEOUT = 10.0            # a daemon that accepts but never says hello
CALL_GRACE = 10.0               # waited beyond a job's own timeout
SMART_SHM_BYTES = 65536         # execute_smart: an ndarray this large goes by SHM

_HDR = struct.Struct(">I")
_UCRED = struct.Struct("3i")    # struct ucred: pid, uid, gid
_FIX = "; remove it, or choose a directory of your own with $OMNIPKG_RUNTIME_DIR"

# The reason table of src/omnipkg.h (OMNI_REASONS): name -> class.  A test
# checks that the two agree row for row.
REASONS = {
    "exception": "job",
    "timeout": "job",
    "signal": "job",
    "exit": "job",
    "cancelled": "job",
    "badspec": "refused",
    "nopython": "refused",
    "nobubble": "refused",
    "busy": "refused",
    "badarg": "refused",
    "toolarge": "refused",
    "badcode": "refused",
    "proto": "refused",
    "nosegment": "refused",
    "quota": "refused",
    "spawn": "system",
    "shutdown": "system",
    "nomem": "system",
    "leased": "refused",
    "memory": "job",
}


def reason_class(reason):
    """"job", "refused" or "system" for a reply's reason; None when unknown."""
    return REASONS.get(reason)
# Fields of an exec reply as this client returns it.  omnipkg's own are
# success, status ("COMPLETED" or "ERROR"), task_id, stdout, stderr and, on
# failure, error and traceback; the rest are ours.  The keys of a dict
# `result` are merged beside them (as omnipkg does) but never replace one,
# and the job's `result` itself, whatever its type, is "job_result" (omnipkg
# has no `result` key in exec replies: a key "result" is the user's own).
_REPLY_FIELDS = frozenset((
    "ok", "success", "status", "task_id", "stdout", "stderr", "stdout_truncated",
    "stderr_truncated", "stdout_bytes", "stderr_bytes", "job_result", "error",
    "errno", "traceback", "reason", "duration", "worker_pid", "spec", "python",
    "result_array",
))


class DaemonConnectionError(ConnectionError):
    """The daemon could not be reached, or the connection broke."""


class DaemonNotRunning(DaemonConnectionError):
    """Nothing answers on the socket and the daemon was not started."""


class DaemonStartError(DaemonConnectionError):
    """Starting omnipkgd failed."""


class DaemonTrustError(DaemonConnectionError):
    """The socket, its directory or the process behind it is not the caller's
    own: refused before anything was sent."""


class DaemonProtocolError(DaemonConnectionError):
    """The peer sent something that is not a protocol-1 frame."""


class DaemonTimeout(DaemonConnectionError, TimeoutError):
    """No reply within the client's timeout."""


def default_socket_path():
    """$OMNIPKG_RUNTIME_DIR/omnipkgd.sock, else $XDG_RUNTIME_DIR/omnipkg/
    omnipkgd.sock, else /tmp/omnipkg-<uid>/omnipkgd.sock (as the daemon)."""
    rt = os.environ.get("OMNIPKG_RUNTIME_DIR")
    if not rt:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        rt = os.path.join(xdg, "omnipkg") if xdg else "/tmp/omnipkg-%d" % os.getuid()
    return os.path.join(rt, "omnipkgd.sock")


def in_worker():
    return os.environ.get("OMNIPKG_DAEMON_CHILD") == "1"


def find_daemon():
    """The omnipkgd binary: $OMNIPKGD, else omnipkgd on PATH; None if absent."""
    env = os.environ.get("OMNIPKGD")
    if env:
        return env
    return shutil.which("omnipkgd")


def start_daemon(socket_path=None):
    """Runs `omnipkgd --daemon` (it returns once its socket accepts), then
    waits briefly until socket_path answers.  The daemon listens on
    <runtime dir>/omnipkgd.sock: a socket path elsewhere is started by
    giving the daemon its directory as $OMNIPKG_RUNTIME_DIR, and a socket
    of another name cannot be.  Raises DaemonStartError."""
    if in_worker():
        raise DaemonStartError("not starting omnipkgd from inside a worker "
                               "(OMNIPKG_DAEMON_CHILD=1)")
    default = default_socket_path()
    path = socket_path or default
    if path != default and os.path.basename(path) != "omnipkgd.sock":
        raise DaemonStartError("omnipkgd listens on <runtime dir>/omnipkgd.sock, not %s: "
                               "set $OMNIPKG_RUNTIME_DIR instead" % path)
    try:
        _trust_dir(path)     # never start a daemon into a directory not ours
    except FileNotFoundError:
        pass
    binary = find_daemon()
    if not binary:
        raise DaemonStartError("omnipkgd not found: set $OMNIPKGD or put omnipkgd on PATH")
    env = dict(os.environ)
    if path != default:
        env["OMNIPKG_RUNTIME_DIR"] = os.path.dirname(os.path.abspath(path))
    try:
        # The daemon's own error messages still reach our stderr.
        r = subprocess.run([binary, "--daemon"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, env=env, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DaemonStartError("%s --daemon did not get ready within %gs"
                               % (binary, START_TIMEOUT)) from None
    except OSError as e:
        raise DaemonStartError("cannot execute %s: %s" % (binary, e)) from None
    # A daemon started beside ours at the same moment also counts.  Status 1
    # (already running) says one holds the runtime dir: it may still be
    # starting, and answers once its own `--daemon` would return.
    failed = r.returncode not in (0, 1)
    deadline = time.monotonic() + (START_TIMEOUT if r.returncode == 1 else REDIAL_TIMEOUT)
    while True:
        try:
            _dial(path, 1.0).close()
            return
        except DaemonTrustError:
            raise
        except OSError:
            pass
        if failed:
            raise DaemonStartError("%s --daemon failed with status %d (see its messages above)"
                                   % (binary, r.returncode))
        if time.monotonic() >= deadline:
            raise DaemonStartError("%s --daemon %s but %s does not answer"
                                   % (binary, "said one is already running" if r.returncode
                                      else "succeeded", path))
        time.sleep(0.02)


def _trust_dir(path):
    """Raises DaemonTrustError unless the directory of socket path is the
    caller's alone; FileNotFoundError when it does not exist."""
    d = os.path.dirname(path).rstrip("/") or ("/" if path.startswith("/") else ".")
    st = os.lstat(d)       # lstat: a planted symlink must not redirect us
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise DaemonTrustError("refusing the socket %s: its directory %s is a symlink "
                               "(owned by uid %d)%s" % (path, d, st.st_uid, _FIX))
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != me or st.st_mode & 0o077:
        raise DaemonTrustError(
            "refusing the socket %s: its directory %s is %s owned by uid %d with mode %04o, "
            "not a directory of uid %d with mode 0700%s"
            % (path, d, "a directory" if stat.S_ISDIR(st.st_mode) else "a file", st.st_uid,
               stat.S_IMODE(st.st_mode), me, _FIX))


def _trust_sock(path):
    st = os.lstat(path)
    me = os.geteuid()
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != me:
        raise DaemonTrustError("refusing %s: it is %s owned by uid %d, not a socket of uid %d%s"
                               % (path, "a socket" if stat.S_ISSOCK(st.st_mode) else "a file",
                                  st.st_uid, me, _FIX))


def _trust_peer(s, path):
    pid, uid, _ = _UCRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                             _UCRED.size))
    if uid != os.geteuid():
        raise DaemonTrustError(
            "refusing %s: the process listening there (pid %d) runs as uid %d, not as uid %d; "
            "stop it, or choose a directory of your own with $OMNIPKG_RUNTIME_DIR"
            % (path, pid, uid, os.geteuid()))


def _dial(path, timeout):
    """A connection to path once it is trusted; nothing is sent.  A missing
    directory or socket raises FileNotFoundError, as a dead one raises
    ConnectionRefusedError."""
    _trust_dir(path)
    _trust_sock(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        _trust_peer(s, path)
    except BaseException:
        s.close()
        raise
    return s


def _encode(obj):
    body = json.dumps(obj, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ValueError("request of %d bytes exceeds the %d-byte frame limit"
                         % (len(body), MAX_FRAME))
    return _HDR.pack(len(body)) + body


class DaemonClient:
    """A connection to omnipkgd.  Thread-safe; one socket, opened on first
    use and opened again after a failure.

    socket_path: None for the default (see default_socket_path).
    timeout:     seconds to wait for a reply (a call's own `timeout`, sent to
                 the daemon as the job's limit, extends it when longer).
    auto_start:  start omnipkgd when nothing answers; never done inside a
                 worker (OMNIPKG_DAEMON_CHILD=1), where this is an error.
                 status() never starts it.
    raise_errors: raise DaemonConnectionError subclasses when the daemon
                 cannot be reached (or is not trusted), instead of
                 returning {"success": False, "error": ...} as omnipkg does.
    """

    def __init__(self, socket_path=None, timeout=300.0, auto_start=True, raise_errors=False):
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.auto_start = auto_start
        self.raise_errors = raise_errors
        self._sock = None
        self._gen = 0                  # bumped at each (re)connection
        self._poller = None            # (socket, its select.poll) for _read_one
        self._conn_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._cv = threading.Condition()
        self._next_id = 0
        self._pending = {}             # id -> connection generation it was
                                       # sent on (0: not yet), for waiting callers
        self._replies = {}             # id -> reply, or an exception to raise
        self._reading = False          # one thread reads the socket at a time
        self._rbuf = bytearray()       # bytes of a frame not yet complete
        self.shm_pool = _shm.SegmentPool(self)

    # ------------------------------------------------------------ connection

    def _connect(self, start=True):
        """The open socket and its generation, connecting (and starting the
        daemon, when start and auto_start) when needed."""
        with self._conn_lock:
            if self._sock is not None:
                return self._sock, self._gen
            try:
                s = _dial(self.socket_path, HELLO_TIMEOUT)
            except DaemonTrustError:
                raise
            except OSError as e:
                if not (self.auto_start and start):
                    raise DaemonNotRunning("omnipkgd is not answering at %s (%s); start it with "
                                           "`omnipkg daemon start`" % (self.socket_path, e)) from None
                if in_worker():
                    raise DaemonNotRunning(
                        "omnipkgd is not answering at %s (%s), and code running inside an "
                        "omnipkg worker (OMNIPKG_DAEMON_CHILD=1) never starts one"
                        % (self.socket_path, e)) from None
                start_daemon(self.socket_path)
                try:
                    s = _dial(self.socket_path, HELLO_TIMEOUT)
                except DaemonTrustError:
                    raise
                except OSError as e2:
                    raise DaemonNotRunning("omnipkgd started but %s does not answer: %s"
                                           % (self.socket_path, e2)) from None
            s.settimeout(None)
            self._sock = s
            self._rbuf = bytearray()
            self._gen += 1
            gen = self._gen
        try:
            hello = self._call({"op": "hello"}, HELLO_TIMEOUT)
        except DaemonConnectionError:
            self._drop(gen)
            raise
        if not hello.get("ok") or hello.get("proto") != PROTO_VERSION:
            self._drop(gen)
            raise DaemonProtocolError("the daemon at %s speaks protocol %r, not %d: %s"
                                      % (self.socket_path, hello.get("proto"), PROTO_VERSION,
                                         hello.get("error", "")))
        return s, gen

    def _drop(self, gen, exc=None):
        """Closes connection generation gen; callers still waiting on it get exc."""
        with self._conn_lock:
            if self._gen != gen or self._sock is None:
                return
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        with self._cv:
            if exc is not None:
                for rid, g in self._pending.items():
                    if g == gen:
                        self._replies.setdefault(rid, exc)
            self._cv.notify_all()

    def close(self):
        """Closes the connection; the next call opens a new one.  The daemon
        removes this connection's segments; arrays in them stay readable
        here, and are copied when passed to a later call."""
        self._drop(self._gen, DaemonConnectionError("the client was closed"))
        self.shm_pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ requests

    def call(self, op, wait=None, start=True, _send_fds=None, **args):
        """Sends one request {"op": op, **args} and returns the daemon's raw
        reply dict, waiting at most `wait` seconds (None: the client's
        timeout); start=False never starts a daemon.  Arguments whose value
        is None are left out.  _send_fds: descriptors sent with the request
        (SCM_RIGHTS; borrowed), which its "fds" describes.  Raises
        DaemonConnectionError subclasses."""
        msg = {k: v for k, v in args.items() if v is not None}
        msg["op"] = op
        return self._call(msg, self.timeout if wait is None else wait, start, _send_fds)

    def _call(self, msg, wait, start=True, fds=None):
        return self._call_gen(msg, wait, start, fds)[0]

    def _call_gen(self, msg, wait, start=True, fds=None):
        """The reply to msg and the generation of the connection it went on."""
        with self._cv:
            self._next_id = self._next_id % MAX_ID + 1
            rid = self._next_id
            self._pending[rid] = 0
        try:
            self._put(rid, dict(msg, v=PROTO_VERSION, id=rid), start, fds)
            with self._cv:
                gen = self._pending.get(rid)
            return self._wait(rid, wait), gen
        finally:
            with self._cv:
                self._pending.pop(rid, None)
                self._replies.pop(rid, None)

    def _put(self, rid, msg, start, fds=None):
        data = _encode(msg)
        for attempt in (0, 1):
            s, gen = self._current()
            if s is None:
                s, gen = self._connect(start)
            try:
                with self._send_lock:
                    with self._cv:
                        self._pending[rid] = gen
                    if fds:
                        # the descriptors go with the frame's first byte
                        n = s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                array.array("i", fds))])
                        if n < len(data):
                            s.sendall(data[n:])
                    else:
                        s.sendall(data)
                return
            except OSError as e:
                # A Unix socket refuses the write at once when the daemon has
                # gone, so nothing was delivered: safe to try a fresh connection.
                self._drop(gen, DaemonConnectionError("connection to omnipkgd lost: %s" % e))
                with self._cv:
                    self._replies.pop(rid, None)
                if attempt:
                    raise DaemonConnectionError("cannot send to omnipkgd at %s: %s"
                                                % (self.socket_path, e)) from None

    def _current(self):
        with self._conn_lock:
            return self._sock, self._gen

    def _wait(self, rid, wait):
        deadline = time.monotonic() + wait
        while True:
            with self._cv:
                while rid not in self._replies and self._reading:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DaemonTimeout("no reply from omnipkgd within %gs" % wait)
                    self._cv.wait(left)
                if rid in self._replies:
                    r = self._replies.pop(rid)
                    if isinstance(r, BaseException):
                        raise r
                    return r
                self._reading = True      # our turn to read for everyone
            try:
                self._read_one(deadline, wait)
            finally:
                with self._cv:
                    self._reading = False
                    self._cv.notify_all()

    def _read_one(self, deadline, wait):
        """Reads until one whole frame has arrived and files it under its id.
        A partial frame stays in _rbuf for the next reader, so a timeout never
        desynchronises the stream."""
        s, gen = self._current()
        if s is None:
            raise DaemonConnectionError("connection to omnipkgd lost")
        while True:
            if len(self._rbuf) >= 4:
                n = _HDR.unpack_from(self._rbuf)[0]
                if n == 0 or n > MAX_FRAME:
                    err = DaemonProtocolError("bad frame length %d from omnipkgd" % n)
                    self._drop(gen, err)
                    raise err
                if len(self._rbuf) >= 4 + n:
                    body = bytes(self._rbuf[4:4 + n])
                    del self._rbuf[:4 + n]
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonTimeout("no reply from omnipkgd within %gs" % wait)
            try:
                # poll, not a socket timeout: that would also bound the
                # sendall of other threads on this same socket.  One poll
                # object per socket: making one is a good part of a hot call.
                sp = self._poller
                if sp is None or sp[0] is not s:
                    sp = self._poller = (s, select.poll())
                    sp[1].register(s, select.POLLIN)
                p = sp[1]
                if not p.poll(max(1, int(left * 1000 + 0.999))):
                    raise DaemonTimeout("no reply from omnipkgd within %gs" % wait)
                chunk = s.recv(1 << 16)
            except DaemonTimeout:
                raise
            except (OSError, ValueError) as e:   # ValueError: closed meanwhile
                err = DaemonConnectionError("connection to omnipkgd lost: %s" % e)
                self._drop(gen, err)
                raise err from None
            if not chunk:
                err = DaemonConnectionError("omnipkgd closed the connection")
                self._drop(gen, err)
                raise err
            self._rbuf += chunk
        try:
            reply = json.loads(body.decode("utf-8"))
            rid = reply["id"]
        except (ValueError, TypeError, KeyError) as e:
            err = DaemonProtocolError("unreadable reply from omnipkgd: %s" % e)
            self._drop(gen, err)
            raise err from None
        with self._cv:
            if rid in self._pending:      # else its caller gave up: dropped
                self._replies[rid] = reply

    # --------------------------------------------------- omnipkg 3.4.1 API

    def _exec(self, spec, code, python_exe, timeout, tag, once, arrays=None, bind=None,
              known=(), pin=False, max_memory_mb=None, fds=None):
        """One exec; the reply in omnipkg's shape.  known: the segments the
        request named (a result_array in another one is a new segment).
        fds: [(bind name, descriptor)] sent with it (borrowed).  Raises
        DaemonConnectionError subclasses."""
        wait = self.timeout
        if timeout is not None:
            wait = max(wait, timeout + CALL_GRACE)
        if fds:
            from . import cuda
            desc = [cuda.fd_entry(name, fd) for name, fd in fds]
        raw = self.call("exec", wait=wait, spec=spec, code=code,
                        python=resolve_python_exe(python_exe),
                        tag=tag or None, once=True if once else None, timeout=timeout,
                        arrays=arrays or None, bind=bind or None,
                        pin=True if pin else None, max_memory_mb=max_memory_mb,
                        fds=desc if fds else None,
                        _send_fds=[fd for _, fd in fds] if fds else None)
        out = to_omnipkg_reply(raw)
        ra = raw.get("result_array")
        if isinstance(ra, dict):
            try:
                out["job_result"] = self.shm_pool.view(ra["segment"], ra["dtype"], ra["shape"],
                                                       ra.get("strides"), ra.get("offset", 0),
                                                       result=ra["segment"] not in known)
            except ImportError:
                # No numpy here: the descriptor; the segment goes with the connection.
                out["job_result"] = ra
        return out

    def _guard(self, fn, *args, **kw):
        """fn's value, or (unless raise_errors) a failed reply when the
        daemon cannot be reached or trusted: omnipkg's clients never raise."""
        try:
            return fn(*args, **kw)
        except DaemonConnectionError as e:
            if self.raise_errors:
                raise
            return connection_failure(e)

    def execute(self, spec, code, python_exe=None, *, timeout=None, worker_tag=None):
        """Runs code in the worker of (spec, python_exe); a reply dict.
        python_exe None is this process's own interpreter (a venv's python
        runs with the venv's site-packages); "3.11", "3.11.7", "py311",
        "python3.11" or a path name another.  A `result` that is a numpy
        array comes back as "job_result", an ndarray view of a shared
        segment (never JSON)."""
        return self._guard(self._exec, spec, code, python_exe, timeout, worker_tag, False)

    # ------------------------------------------------------- shared arrays

    def empty(self, shape, dtype="float64"):
        """An ndarray (contents undefined) backed by a pooled shared segment:
        passed to a job, it is mapped by the worker, never copied.  Its
        segment goes back to the pool when it and every view are garbage."""
        return self.shm_pool.empty(shape, dtype)

    def zeros(self, shape, dtype="float64"):
        a = self.shm_pool.empty(shape, dtype)
        a[...] = 0
        return a

    def array(self, obj, dtype=None):
        """A copy of obj (anything numpy.asarray takes) in a pooled segment."""
        src = _shm.np().asarray(obj, dtype=dtype)
        a = self.shm_pool.empty(src.shape, src.dtype)
        a[...] = src
        return a

    def _place(self, value, access, keep, copyback):
        """The arrays-entry fields (segment, dtype, shape...) for value, an
        ndarray or an omnipkg descriptor, and its JSON descriptor.  An
        ndarray outside our segments, or a descriptor naming a POSIX shared
        memory block of the caller's (/dev/shm, as omnipkg's clients make
        with multiprocessing.shared_memory), is copied into one of ours (and
        copied back after the job when the job may write it)."""
        if isinstance(value, dict):
            access = value.get("access", access)
            name = value.get("name", value.get("shm_name"))
            if name is None:
                if access == "in":
                    raise ValueError("an input descriptor names its segment (\"name\")")
                value = self.shm_pool.empty(value["shape"], value["dtype"])
            elif _posix_shm_path(name):
                keep.append(value)
                value = _posix_shm_view(_posix_shm_path(name), value, keep)
            else:
                shape = value["shape"]
                f = {"segment": name, "dtype": _dtype_name(value["dtype"]),
                     "shape": [int(shape)] if isinstance(shape, int) else [int(x) for x in shape]}
                for k in ("offset", "strides"):
                    if value.get(k) is not None:
                        f[k] = int(value[k]) if k == "offset" else [int(x) for x in value[k]]
                desc = _jsonable(value)
                desc.update(name=name, shape=f["shape"], dtype=f["dtype"])
                return dict(f, access=access), desc, None
        if not _is_ndarray(value):
            raise TypeError("an array argument is an ndarray or a descriptor dict, not %s"
                            % type(value).__name__)
        a = value
        dt = _shm.dtype_of(a.dtype)
        loc = self.shm_pool.locate(a)
        if loc is None:
            copy = self.shm_pool.empty(a.shape, a.dtype)
            if access != "out":
                copy[...] = a
            if access != "in":
                copyback.append((a, copy))
            keep.append(copy)
            a, loc = copy, self.shm_pool.locate(copy)
        f = {"segment": loc[0], "dtype": dt, "shape": list(a.shape), "strides": list(a.strides),
             "offset": loc[1]}
        desc = {"name": loc[0], "shape": f["shape"], "dtype": dt, "offset": loc[1],
                "strides": f["strides"]}
        return dict(f, access=access), desc, value

    def _shm_exec(self, spec, code, sides, python_exe, tag, timeout, pin=False,
                  max_memory_mb=None):
        """Runs code with arrays.  sides: [(side, single, [(names, value,
        access)])] with side "shm_in"/"shm_out"; every name of a group is
        bound to the same view.  Returns (reply, {output name: ndarray}).
        A refused segment operation is a failed reply; not reaching the
        daemon raises."""
        arrays, keep, copyback, known = [], [], [], set()
        input_data, outputs, views = {}, [], {}
        try:
            for side, single, groups in sides:
                descs = {}
                for names, value, access in groups:
                    f, desc, arr = self._place(value, access, keep, copyback)
                    known.add(f["segment"])
                    for nm in names:
                        arrays.append(dict(f, name=nm))
                    descs[names[0]] = desc
                    if side == "shm_out":
                        outputs.append((names, f, arr))
                input_data[side] = descs[groups[0][0][0]] if single and groups else descs
            r = self._exec(spec, code, python_exe, timeout, tag, False, arrays,
                           {"input_data": input_data}, known, pin, max_memory_mb)
        except DaemonShmError as e:
            return {"success": False, "ok": False, "status": "ERROR", "error": str(e),
                    "reason": e.reason, "stdout": "", "stderr": "", "traceback": ""}, {}
        for user, copy in copyback:
            user[...] = copy
        for names, f, arr in outputs:
            if arr is None:
                try:
                    arr = self.shm_pool.view(f["segment"], f["dtype"], f["shape"],
                                             f.get("strides"), f.get("offset", 0))
                except ImportError:
                    continue      # no numpy here: the caller has the segment itself
            for nm in names:
                views[nm] = arr
        if views:
            r["outputs"] = views
        return r, views

    def execute_shm(self, spec, code, shm_in, shm_out, python_exe=None, worker_tag=None,
                    pin=False, max_memory_mb=None, *, timeout=None):
        """Like execute, with arrays in shared segments.  shm_in and shm_out
        map names to ndarrays or omnipkg descriptors {"name"|"shm_name",
        "shape", "dtype"} (of our segments, or of the caller's POSIX shared
        memory); a single descriptor is bound as arr_in/tensor_in
        (arr_out/tensor_out); an shm_out descriptor without a name gets a
        new pooled segment.  The worker sees numpy views of the same pages
        and `input_data` as omnipkg's workers do; outputs are written in
        place.  The reply is omnipkg's; "outputs" maps each output name to
        its ndarray here.  pin keeps the worker from idle eviction;
        max_memory_mb limits its memory (a job beyond it fails, reason
        "memory")."""
        sides = []
        for side, arg, single in (("shm_in", shm_in, ("arr_in", "tensor_in")),
                                  ("shm_out", shm_out, ("arr_out", "tensor_out"))):
            if _is_descriptor(arg):
                sides.append((side, True, [(single, arg, _access(side, arg))]))
            else:
                sides.append((side, False, [((k,), v, _access(side, v))
                                            for k, v in (arg or {}).items()]))

        return self._guard(lambda: self._shm_exec(spec, code, sides, python_exe, worker_tag,
                                                  timeout, pin, max_memory_mb)[0])

    def execute_zero_copy(self, spec, code, input_array, output_shape, output_dtype,
                          python_exe=None, worker_tag=None, pin=False, max_memory_mb=None):
        """omnipkg's array in, array out: the worker sees arr_in/tensor_in and
        writes arr_out/tensor_out in place.  Returns (output ndarray, reply):
        the output is a view of a pooled shared segment, not a copy.  Raises
        RuntimeError("Worker Error: ...") when the job or the call fails."""
        return self._zero_copy(spec, code, input_array, output_shape, output_dtype,
                               python_exe, worker_tag, pin, max_memory_mb)

    def _zero_copy(self, spec, code, input_array, output_shape, output_dtype, python_exe,
                   worker_tag, pin, max_memory_mb):
        try:
            r, views = self._shm_exec(spec, code, [
                ("shm_in", True, [(("arr_in", "tensor_in"), input_array, "in")]),
                ("shm_out", True, [(("arr_out", "tensor_out"),
                                    {"shape": output_shape, "dtype": output_dtype}, "out")])],
                python_exe, worker_tag, None, pin, max_memory_mb)
        except DaemonConnectionError as e:
            if self.raise_errors:
                raise
            r, views = connection_failure(e), {}
        if not r["success"]:
            raise RuntimeError("Worker Error: %s" % r.get("error"))
        return views["arr_out"], r

    # ipc_mode -> how a buffer is exported (omnipkg.cuda.MODES); omnipkg's
    # own mode names all mean "auto" here.
    CUDA_IPC_MODES = {"auto": "auto", "ipc": "ipc", "fd": "fd", "universal": "auto",
                      "pytorch_native": "auto", "torch_mp_queue": "auto", "hybrid": "auto"}

    def execute_cuda_ipc(self, spec, code, input_tensor, output_shape, output_dtype,
                         python_exe=None, ipc_mode="auto", pin=False, worker_tag=None,
                         max_memory_mb=None, *, out=None, framework="auto", sync=False):
        """omnipkg's GPU lane: the worker sees tensor_in (input_tensor) and
        tensor_out as tensors of its own framework over the same device
        memory (no copy) and writes tensor_out in place.  Returns (output
        tensor, reply); the output is `out` when given, else a new tensor
        of input_tensor's framework and device (output_shape and
        output_dtype default to input_tensor's).  ipc_mode: "ipc" (the
        driver's legacy IPC handles), "fd" (a VMM allocation's POSIX
        descriptor, sent with the request), or "auto" (and omnipkg's
        names: "universal", "pytorch_native", ...): each tensor as its
        allocation allows; "cpu_shm" is execute_zero_copy's.  The worker
        waits for an event recorded on each tensor's stream (sync=True:
        the streams are synchronised here instead).  Raises
        cuda.CudaUnavailable without a driver or device,
        RuntimeError("Worker Error: ...") when the job fails."""
        from . import cuda
        if ipc_mode not in self.CUDA_IPC_MODES:
            raise ValueError("ipc_mode %r: one of %s (cpu_shm is execute_zero_copy)"
                             % (ipc_mode, ", ".join(self.CUDA_IPC_MODES)))
        mode = self.CUDA_IPC_MODES[ipc_mode]
        if not cuda.is_device_tensor(input_tensor):
            raise TypeError("execute_cuda_ipc needs a CUDA tensor; for host arrays "
                            "use execute_zero_copy")
        cuda.check()
        if out is None:
            _, shape, typestr, _, _ = cuda.interface(input_tensor)
            out = cuda.empty_like_framework(
                input_tensor, shape if output_shape is None else output_shape,
                (input_tensor.dtype if output_dtype is None else output_dtype))
        bind, fds = {}, []
        try:
            for name, t, ro in (("tensor_in", input_tensor, True), ("tensor_out", out, False)):
                bind[name], fd = cuda.describe(t, framework, readonly=ro, mode=mode, sync=sync)
                if fd is not None:
                    fds.append((name, fd))
            r = self._exec(spec, code, python_exe, None, worker_tag, False, bind=bind,
                           pin=pin, max_memory_mb=max_memory_mb, fds=fds)
        except DaemonConnectionError as e:
            if self.raise_errors:
                raise
            r = connection_failure(e)
        finally:
            for _, fd in fds:
                os.close(fd)
        if not r["success"]:
            raise RuntimeError("Worker Error: %s" % r.get("error"))
        return out, r

    def execute_smart(self, spec, code, data=None, output_shape=None, output_dtype=None,
                      python_exe=None, worker_tag=None, max_memory_mb=None, pin=False):
        """Picks the transport by data, as omnipkg does:
          - an ndarray of >= 64 KiB (or one JSON cannot carry exactly, as
            complex or NaN): "SHM", as execute_zero_copy with arr_in = data
            and arr_out of output_shape/output_dtype (default: data's);
            `result` is arr_out; a failure raises RuntimeError.
          - anything else: "JSON", data bound as arr_in (as a value, never
            pasted into source; small ndarrays keep their dtype); `result`
            is the stripped stdout; a failure returns the failed reply.
          - a CUDA tensor (torch, or anything with __cuda_array_interface__):
            "CUDA_IPC", as execute_cuda_ipc with tensor_in = data; `result`
            is tensor_out, of data's framework and device.
        -> {"success", "result", "meta" (the reply), "transport"}"""
        from . import cuda
        if cuda.is_device_tensor(data):
            out, r = self.execute_cuda_ipc(
                spec, code, data, output_shape, output_dtype, python_exe=python_exe,
                pin=pin, worker_tag=worker_tag, max_memory_mb=max_memory_mb)
            return {"success": True, "result": out, "meta": r, "transport": "CUDA_IPC"}
        if _is_ndarray(data) and (data.nbytes >= SMART_SHM_BYTES or not _json_exact(data)):
            out, r = self._zero_copy(
                spec, code, data, data.shape if output_shape is None else output_shape,
                data.dtype if output_dtype is None else output_dtype,
                python_exe, worker_tag, pin, max_memory_mb)
            return {"success": True, "result": out, "meta": r, "transport": "SHM"}
        bind = None if data is None else {"arr_in": _to_json(data)}
        r = self._guard(self._exec, spec, code, python_exe, None, worker_tag, False,
                        bind=bind, pin=pin, max_memory_mb=max_memory_mb)
        if not r["success"]:
            return r
        return {"success": True, "result": (r.get("stdout") or "").strip(), "meta": r,
                "transport": "JSON"}

    def run_once(self, spec, code, python_exe=None, worker_tag=None, *, timeout=None):
        """Runs code in a fresh worker that is gone afterwards."""
        return self._guard(self._exec, spec, code, python_exe, timeout, worker_tag, True)

    def status(self):
        """omnipkg's status: success, running, workers (a count), stats,
        worker_details {key: {pid, pkg_spec, python_exe, request_count,
        last_used, health_failures, pinned, ...}} (key "spec::python" or
        "spec#tag::python"), memory_percent, idle_pool_info {python: count};
        and ours beside them (pid, version, uptime, jobs, zygotes, shm...).
        Never starts a daemon: {"success": False, "running": False,
        "error": "Daemon not running: ..."} when none answers."""
        def run():
            raw = self.call("status", start=False)
            wk = self.call("workers", start=False)
            return compose_status(raw, wk)
        r = self._guard(run)
        r.setdefault("running", False)
        return r

    def shutdown(self):
        """Asks the daemon to stop; the connection is closed afterwards."""
        try:
            return self._guard(lambda: _with_success(self.call("shutdown", start=False)))
        finally:
            self.close()

    def evict_worker(self, spec, python_exe=None, worker_tag=None):
        """Stops the worker of (spec, python_exe, worker_tag): an idle one now,
        a busy one when its job ends.  -> {"success", "evicted": its key or
        None, "pids": [...]}"""
        def run():
            r = _with_success(self.call("evict", start=False, spec=spec,
                                        python=resolve_python_exe(python_exe),
                                        tag=worker_tag or None))
            pids = r.get("evicted") or []
            r["pids"] = pids
            r["evicted"] = worker_key(spec, worker_tag, python_exe) if pids else None
            return r
        return self._guard(run)

    def get_idle_config(self):
        """{"success", "config": {python path: count}}: the interpreters whose
        warm zygote is kept started (see set_idle_config)."""
        return self._guard(lambda: _with_success(self.call("idle_config")))

    def set_idle_config(self, python_exe, count):
        """count >= 1 keeps python_exe's zygote, a pre-warmed interpreter
        that forks a worker for any spec in milliseconds, started at all
        times; 0 lets it start on demand.  One zygote serves any number of
        workers, so the count is recorded as given."""
        return self._guard(lambda: _with_success(self.call(
            "idle_config", python=resolve_python_exe(python_exe), count=int(count))))

    def is_daemon_running(self):
        """Whether a daemon of ours answers on socket_path (never starts one)."""
        try:
            _dial(self.socket_path, 0.5).close()
            return True
        except (OSError, DaemonConnectionError):
            return False

    def start_omnipkg_op(self):
        """Accepted for omnipkg code; omnipkgd watches no installs."""
        return {"success": True}

    def end_omnipkg_op(self, installed, removed):
        return {"success": True}

    def _send(self, req):
        """omnipkg's low-level request: a dict with "type" ("execute",
        "status", "shutdown", "evict_worker", "get_idle_config",
        "set_idle_config", "configure_idle", "start_omnipkg_op",
        "end_omnipkg_op"), answered as omnipkg's daemon answers it."""
        if not isinstance(req, dict):
            return {"success": False, "error": "a request is a dict with \"type\""}
        t = req.get("type")
        py = req.get("python_exe")
        if t == "execute":
            if not isinstance(req.get("spec"), str) or not isinstance(req.get("code"), str):
                return {"success": False, "status": "ERROR",
                        "error": "execute needs \"spec\" and \"code\" strings"}
            return self.execute_shm(req["spec"], req["code"], req.get("shm_in") or {},
                                    req.get("shm_out") or {}, py, req.get("worker_tag"),
                                    bool(req.get("pin")), req.get("max_memory_mb"))
        if t == "status":
            return self.status()
        if t == "shutdown":
            return self.shutdown()
        if t == "evict_worker":
            return self.evict_worker(req.get("spec", ""), py, req.get("worker_tag"))
        if t == "get_idle_config":
            return self.get_idle_config()
        if t in ("set_idle_config", "configure_idle"):
            if t == "set_idle_config" and not py:
                return {"success": False, "error": "python_exe required"}
            return self.set_idle_config(py, req.get("count", 0 if t == "set_idle_config" else 3))
        if t == "start_omnipkg_op":
            return self.start_omnipkg_op()
        if t == "end_omnipkg_op":
            return self.end_omnipkg_op(req.get("installed", []), req.get("removed", []))
        return {"success": False, "error": "Unknown type: %s" % (t,)}

    # ------------------------------------------------------------ extras

    def hello(self):
        return self._guard(lambda: _with_success(self.call("hello")))

    def workers(self):
        return self._guard(lambda: _with_success(self.call("workers")))

    def pythons(self):
        return self._guard(lambda: _with_success(self.call("pythons")))

    def list_bubbles(self):
        return self._guard(lambda: _with_success(self.call("list")))

    def shm_list(self):
        return self._guard(lambda: _with_success(self.call("shm_list")))

    # ------------------------------------------------------ control blocks

    def control_block(self, name, record_size=None, create=True, mode=None):
        """The control block (omnipkg.ctlblock.ControlBlock) in segment
        name: shared state read and written by clients and workers without
        the daemon and without locks.  Missing and create: made persistent
        with a record of record_size bytes (default 4096) in mode "atomic"
        (default) or "filelock", and formatted."""
        from . import ctlblock
        return ctlblock.open_block(self, name, record_size, create, mode)

    def execute_optimistic_write(self, spec, code_template, control_block_name, tensor_in,
                                 python_exe=None, max_retries=100):
        """omnipkg's optimistic write, for real: reads the seq of control
        block control_block_name (made if missing), then runs code_template
        in the worker, which claims the block only if nobody wrote since
        (one CAS) and publishes when the code ends, marked torn if it
        raised: a claim never outlives its job, and one whose worker died
        is recovered by the daemon or the next writer.  The code sees
        tensor_in/arr_in, a float32 tensor_out/arr_out of its shape (none
        when tensor_in is None) and control_block (.record: the record, a
        writable memoryview).  A conflict is retried, backing off as
        omnipkg does, up to max_retries times, then RuntimeError("Max
        retries exceeded: ..."); a failed job raises RuntimeError("Worker
        Error: ...").  -> (output ndarray or None, reply, retries)"""
        from . import ctlblock
        return ctlblock.optimistic_write(self, spec, code_template, control_block_name,
                                         tensor_in, python_exe, max_retries)


class DaemonProxy:
    """omnipkg's handle on one (spec, python) worker:

        DaemonProxy(client, "numpy==1.26.4").execute("import numpy; print(numpy.__version__)")
        -> {"success": True, "stdout": "1.26.4\\n", "stderr": "", "locals": ""}

    A failure is {"success": False, "error", "traceback"}."""

    def __init__(self, client, package_spec, python_exe=None):
        self.client = client
        self.spec = package_spec
        self.python_exe = python_exe
        self.process = "DAEMON_MANAGED"

    def execute(self, code):
        r = self.client.execute_shm(self.spec, code, shm_in={}, shm_out={},
                                    python_exe=self.python_exe)
        if r.get("status") == "COMPLETED":
            return {"success": True, "stdout": r.get("stdout", ""),
                    "stderr": r.get("stderr", ""), "locals": r.get("locals", "")}
        return {"success": False, "error": r.get("error", "Unknown daemon error"),
                "traceback": r.get("traceback", "")}

    def get_version(self, package_name):
        """{"success", "version", "path"} of package_name in the worker."""
        code = ("import json, sys, importlib\n"
                "try:\n    import importlib.metadata as _m\n"
                "except ImportError:\n    import importlib_metadata as _m\n"
                "_mod = importlib.import_module(%r)\n"
                "sys.stdout.write(json.dumps({'version': _m.version(%r), "
                "'path': getattr(_mod, '__file__', '') or ''}) + '\\n')\n"
                % (package_name, package_name))
        r = self.execute(code)
        if r.get("success") and r.get("stdout", "").strip():
            try:
                d = json.loads(r["stdout"].strip().splitlines()[-1])
                return {"success": True, "version": d.get("version", "unknown"),
                        "path": d.get("path", "daemon")}
            except ValueError:
                pass
        return {"success": False, "error": r.get("error", "parse error")}

    def shutdown(self):
        """Stops this proxy's worker (idle now, busy after its job)."""
        try:
            self.client.evict_worker(self.spec, self.python_exe)
        except DaemonConnectionError:
            pass


def _is_ndarray(x):
    n = sys.modules.get("numpy")        # no numpy imported: no ndarray exists
    return n is not None and isinstance(x, n.ndarray)


def _is_descriptor(d):
    """An omnipkg descriptor at the top level: {"name"|"shm_name", "shape",
    "dtype"} (no name: a new output), not a dict of them."""
    return (isinstance(d, dict) and "shape" in d and "dtype" in d
            and not any(isinstance(v, dict) or _is_ndarray(v) for v in d.values()))


def _access(side, v):
    """An input is read; an output the job may read and write, but a new
    one (a descriptor without a name) holds nothing to read yet."""
    if side == "shm_in":
        return "in"
    if isinstance(v, dict) and v.get("name", v.get("shm_name")) is None:
        return "out"
    return "inout"


def _dtype_name(dt):
    return dt if isinstance(dt, str) else _shm.np().dtype(dt).str


def _json_exact(a):
    """Whether JSON carries ndarray a exactly (as numbers or booleans)."""
    k = a.dtype.kind
    return k in "biu" or (k == "f" and bool(_shm.np().isfinite(a).all()))


def _to_json(x):
    """x with ndarrays as {"__ndarray__": ...} and numpy scalars as Python ones."""
    if _is_ndarray(x):
        return {"__ndarray__": {"dtype": x.dtype.str, "shape": list(x.shape),
                                "data": x.ravel().tolist()}}
    if isinstance(x, dict):
        return {k: _to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_json(v) for v in x]
    n = sys.modules.get("numpy")
    if n is not None and isinstance(x, n.generic):
        return x.item()
    return x


def _jsonable(x):
    """The JSON parts of x: what cannot be encoded is left out."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            v = _jsonable(v)
            if isinstance(k, str) and v is not _DROP:
                out[k] = v
        return out
    if isinstance(x, (list, tuple)):
        return [v for v in (_jsonable(v) for v in x) if v is not _DROP]
    if x is None or isinstance(x, (str, bool, int)):
        return x
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else _DROP
    n = sys.modules.get("numpy")
    if n is not None and isinstance(x, n.generic):
        return _jsonable(x.item())
    if n is not None and isinstance(x, n.dtype):
        return x.str
    if isinstance(x, type) and n is not None and issubclass(x, n.generic):
        return n.dtype(x).str
    return _DROP


_DROP = object()


def _with_success(raw):
    out = dict(raw)
    out.pop("v", None)
    out.pop("id", None)
    out["success"] = bool(out.get("ok"))
    return out


def to_omnipkg_reply(raw):
    """A daemon exec reply in omnipkg's shape: the keys of a dict `result`
    first, then "success", "status" ("COMPLETED" or "ERROR"), "task_id",
    "stdout", "stderr", on failure "error" and "traceback", and our fields
    (job_result: the job's `result` of any type, worker_pid, duration,
    reason, spec, python...).  A `result` key that is not the user's own
    never appears."""
    out = {}
    res = raw.get("result")
    if isinstance(res, dict):
        for k, v in res.items():
            if k not in _REPLY_FIELDS:
                out[k] = v
    for k, v in raw.items():
        if k not in ("v", "id", "result"):
            out[k] = v
    if "result" in raw:
        out["job_result"] = res
    ok = bool(raw.get("ok"))
    out["success"] = ok
    out["status"] = "COMPLETED" if ok else "ERROR"
    out["task_id"] = "%s-%s" % (raw.get("spec") or "job", raw.get("id"))
    out.setdefault("stdout", "")
    out.setdefault("stderr", "")
    if not ok:
        out.setdefault("error", "unknown error")
        out.setdefault("traceback", "")
    return out


def connection_failure(e):
    """omnipkg's reply when the daemon cannot be used: it never raises."""
    if isinstance(e, DaemonNotRunning):
        err = "Daemon not running: %s" % e
    elif isinstance(e, DaemonStartError):
        err = "Failed to auto-start daemon: %s" % e
    else:
        err = "Communication error: %s" % e
    return {"success": False, "ok": False, "status": "ERROR", "error": err,
            "exception": type(e).__name__, "stdout": "", "stderr": "", "traceback": ""}


def resolve_python_exe(python_exe):
    """What a request names as its interpreter: python_exe as given (a path,
    "3.11", "py311", "python3.11"; the daemon resolves it), or for None and
    "" this process's own interpreter, as omnipkg does (a venv's python,
    which the daemon runs with that venv's site-packages).  None when this
    process has no executable to name (then the daemon's default)."""
    if python_exe:
        return os.fspath(python_exe)
    return sys.executable or None


def worker_key(spec, tag, python_exe):
    """omnipkg's name of a worker: "spec::python" or "spec#tag::python"."""
    return "%s%s::%s" % (spec, "#" + tag if tag else "", resolve_python_exe(python_exe) or "")


def _memory_percent():
    """Memory in use on this machine, in percent (psutil's virtual_memory()
    .percent); -1 when /proc/meminfo cannot be read."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info[k] = int(v.split()[0])
        total = info["MemTotal"]
        return round(100.0 * (total - info["MemAvailable"]) / total, 1)
    except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError):
        return -1


def compose_status(raw, workers):
    """omnipkg's status dict from our status and workers replies."""
    out = _with_success(raw)
    now = time.time()
    details = {}
    for w in workers.get("workers") or []:
        last = w.get("last_used")
        if not isinstance(last, (int, float)):
            last = now - float(w.get("idle_s") or 0)
        details[worker_key(w.get("spec", ""), w.get("tag"), w.get("python"))] = {
            "pid": w.get("pid"),
            "pkg_spec": w.get("spec"),
            "python_exe": w.get("python"),
            "worker_tag": w.get("tag") or None,
            "request_count": w.get("jobs", 0),
            "last_used": last,
            "health_failures": 0,
            "pinned": bool(w.get("pinned", False)),
            "memory_mb": round((w.get("rss_kb") or 0) / 1024.0, 1),
            "max_memory_mb": w.get("max_memory_mb") or None,
            "state": w.get("state"),
        }
    jobs = int(raw.get("jobs") or 0)
    started = int(raw.get("workers_started") or 0)
    out.update(
        running=bool(raw.get("ok")),
        workers=len(details) if "workers" not in raw else raw["workers"],
        stats={"total_requests": jobs,
               "cache_hits": max(0, jobs - started),   # jobs a running worker took
               "workers_created": started,
               "errors": int(raw.get("jobs_failed") or 0)},
        worker_details=details,
        memory_percent=_memory_percent(),
        idle_pool_info={py: (v.get("count", 0) if isinstance(v, dict) else v)
                        for py, v in (raw.get("idle_pool") or {}).items()})
    return out


def _posix_shm_path(name):
    """/dev/shm/<name> when name is a POSIX shared memory block of this
    user's (as multiprocessing.shared_memory names them), else None."""
    if not isinstance(name, str) or not name or "/" in name.lstrip("/") or name in (".", ".."):
        return None
    path = os.path.join("/dev/shm", name.lstrip("/"))
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return None
    return path


def _posix_shm_view(path, desc, keep):
    """A numpy view of the POSIX shared memory block at path, shaped as
    descriptor desc says; its mapping stays in keep for the call."""
    import mmap
    np = _shm.np()
    shape = desc["shape"]
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(x) for x in shape)
    dt = np.dtype(desc["dtype"])
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    keep.append(m)
    return np.ndarray(shape, dtype=dt, buffer=m, offset=int(desc.get("offset") or 0))
