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

A failed job, a bad spec or a missing bubble is a reply with success False
and "error"; only not reaching the daemon raises (ConnectionError subclasses).
reason_class(reply["reason"]) says whether the job failed ("job"), was
turned down ("refused") or the system failed ("system").

Requests carry code, so a socket is used only when nobody else could have
put it there: before a byte is sent, its directory must be a real directory
of the caller's uid with no group or other bits, the socket the caller's,
and the process listening on it (SO_PEERCRED) the caller's; otherwise
DaemonTrustError, and nothing is sent or started.
"""

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
}


def reason_class(reason):
    """"job", "refused" or "system" for a reply's reason; None when unknown."""
    return REASONS.get(reason)
# Fields of an exec reply; keys of a dict `result` are merged beside them
# (as omnipkg does) but never replace one of them.
_REPLY_FIELDS = frozenset((
    "v", "id", "ok", "success", "stdout", "stderr", "stdout_truncated",
    "stderr_truncated", "stdout_bytes", "stderr_bytes", "result", "error",
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
    failed = r.returncode != 0
    # A daemon started beside ours at the same moment also counts.
    deadline = time.monotonic() + REDIAL_TIMEOUT
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
            raise DaemonStartError("%s --daemon succeeded but %s does not answer"
                                   % (binary, path))
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
    """

    def __init__(self, socket_path=None, timeout=300.0, auto_start=True):
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.auto_start = auto_start
        self._sock = None
        self._gen = 0                  # bumped at each (re)connection
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

    def _connect(self):
        """The open socket and its generation, connecting (and starting the
        daemon) when needed."""
        with self._conn_lock:
            if self._sock is not None:
                return self._sock, self._gen
            try:
                s = _dial(self.socket_path, HELLO_TIMEOUT)
            except DaemonTrustError:
                raise
            except OSError as e:
                if not self.auto_start:
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

    def call(self, op, wait=None, **args):
        """Sends one request {"op": op, **args} and returns the daemon's raw
        reply dict, waiting at most `wait` seconds (None: the client's
        timeout).  Arguments whose value is None are left out."""
        msg = {k: v for k, v in args.items() if v is not None}
        msg["op"] = op
        return self._call(msg, self.timeout if wait is None else wait)

    def _call(self, msg, wait):
        return self._call_gen(msg, wait)[0]

    def _call_gen(self, msg, wait):
        """The reply to msg and the generation of the connection it went on."""
        with self._cv:
            self._next_id = self._next_id % MAX_ID + 1
            rid = self._next_id
            self._pending[rid] = 0
        try:
            self._send(rid, dict(msg, v=PROTO_VERSION, id=rid))
            with self._cv:
                gen = self._pending.get(rid)
            return self._wait(rid, wait), gen
        finally:
            with self._cv:
                self._pending.pop(rid, None)
                self._replies.pop(rid, None)

    def _send(self, rid, msg):
        data = _encode(msg)
        for attempt in (0, 1):
            s, gen = self._current()
            if s is None:
                s, gen = self._connect()
            try:
                with self._send_lock:
                    with self._cv:
                        self._pending[rid] = gen
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
                # sendall of other threads on this same socket.
                p = select.poll()
                p.register(s, select.POLLIN)
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
              known=()):
        """One exec; the reply in omnipkg's shape.  known: the segments the
        request named (a result_array in another one is a new segment)."""
        wait = self.timeout
        if timeout is not None:
            wait = max(wait, timeout + CALL_GRACE)
        raw = self.call("exec", wait=wait, spec=spec, code=code,
                        python=None if python_exe is None else os.fspath(python_exe),
                        tag=tag or None, once=True if once else None, timeout=timeout,
                        arrays=arrays or None, bind=bind or None)
        out = to_omnipkg_reply(raw)
        ra = raw.get("result_array")
        if isinstance(ra, dict):
            try:
                out["result"] = self.shm_pool.view(ra["segment"], ra["dtype"], ra["shape"],
                                                   ra.get("strides"), ra.get("offset", 0),
                                                   result=ra["segment"] not in known)
            except ImportError:
                # No numpy here: the descriptor; the segment goes with the connection.
                out["result"] = ra
        return out

    def execute(self, spec, code, python_exe=None, *, timeout=None, worker_tag=None):
        """Runs code in the worker of (spec, python_exe); a reply dict.  A
        `result` that is a numpy array comes back as an ndarray view of a
        shared segment (never JSON)."""
        return self._exec(spec, code, python_exe, timeout, worker_tag, False)

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
        ndarray outside our segments is copied into one (and copied back
        after the job when the job may write it)."""
        if isinstance(value, dict):
            access = value.get("access", access)
            name = value.get("name", value.get("shm_name"))
            if name is None:
                if access == "in":
                    raise ValueError("an input descriptor names its segment (\"name\")")
                value = self.shm_pool.empty(value["shape"], value["dtype"])
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

    def _shm_exec(self, spec, code, sides, python_exe, tag, timeout):
        """Runs code with arrays.  sides: [(side, single, [(names, value,
        access)])] with side "shm_in"/"shm_out"; every name of a group is
        bound to the same view.  The reply gains each output name -> its
        ndarray.  A refused segment operation is a failed reply."""
        arrays, keep, copyback, known = [], [], [], set()
        input_data, outputs = {}, []
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
                           {"input_data": input_data}, known)
        except DaemonShmError as e:
            return {"success": False, "ok": False, "error": str(e), "reason": e.reason,
                    "stdout": "", "stderr": "", "traceback": ""}
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
                r[nm] = arr
        return r

    def execute_shm(self, spec, code, shm_in, shm_out, python_exe=None, worker_tag=None,
                    pin=False, max_memory_mb=None, *, timeout=None):
        """Like execute, with arrays in shared segments.  shm_in and shm_out
        map names to ndarrays or omnipkg descriptors {"name"|"shm_name",
        "shape", "dtype"} of existing segments (an shm_out descriptor
        without a name gets a new pooled segment); a single descriptor is
        bound as arr_in/tensor_in (arr_out/tensor_out).  The worker sees
        numpy views of the same pages, and `input_data` {"shm_in",
        "shm_out"} as omnipkg's workers do; outputs are written in place and
        the reply maps each output name to its ndarray here.  pin and
        max_memory_mb are accepted for compatibility and not enforced."""
        sides = []
        for side, arg, single in (("shm_in", shm_in, ("arr_in", "tensor_in")),
                                  ("shm_out", shm_out, ("arr_out", "tensor_out"))):
            if _is_descriptor(arg):
                sides.append((side, True, [(single, arg, _access(side, arg))]))
            else:
                sides.append((side, False, [((k,), v, _access(side, v))
                                            for k, v in (arg or {}).items()]))
        return self._shm_exec(spec, code, sides, python_exe, worker_tag, timeout)

    def execute_zero_copy(self, spec, code, input_array, output_shape, output_dtype,
                          python_exe=None, worker_tag=None, pin=False, max_memory_mb=None):
        """omnipkg's array in, array out: the worker sees arr_in/tensor_in and
        writes arr_out/tensor_out in place.  Returns (output ndarray, reply);
        raises RuntimeError("Worker Error: ...") when the job fails."""
        r = self._shm_exec(spec, code, [
            ("shm_in", True, [(("arr_in", "tensor_in"), input_array, "in")]),
            ("shm_out", True, [(("arr_out", "tensor_out"),
                                {"shape": output_shape, "dtype": output_dtype}, "out")])],
            python_exe, worker_tag, None)
        if not r["success"]:
            raise RuntimeError("Worker Error: %s" % r.get("error"))
        return r["arr_out"], r

    def execute_smart(self, spec, code, data=None, output_shape=None, output_dtype=None,
                      python_exe=None, worker_tag=None, max_memory_mb=None, pin=False):
        """Picks the transport by data: an ndarray of >= 64 KiB (or one JSON
        cannot carry exactly, as complex or NaN) goes "SHM" as arr_in, with
        arr_out of output_shape when given (then `result` is that array);
        anything else goes "JSON", bound as arr_in (never pasted into
        source; small ndarrays keep their dtype).  `result` is otherwise the
        job's result, else its stripped stdout.  -> {"success", "result",
        "meta" (the reply), "transport"}"""
        if _is_ndarray(data) and (data.nbytes >= SMART_SHM_BYTES or not _json_exact(data)):
            sides = [("shm_in", True, [(("arr_in", "tensor_in"), data, "in")])]
            if output_shape is not None:
                sides.append(("shm_out", True, [(("arr_out", "tensor_out"), {
                    "shape": output_shape,
                    "dtype": data.dtype if output_dtype is None else output_dtype}, "out")]))
            r = self._shm_exec(spec, code, sides, python_exe, worker_tag, None)
            transport = "SHM"
            result = r.get("arr_out") if output_shape is not None else _job_result(r)
        else:
            r = self._exec(spec, code, python_exe, None, worker_tag, False,
                           bind={"arr_in": _to_json(data)})
            transport = "JSON"
            result = _job_result(r)
        return {"success": r["success"], "result": result, "meta": r, "transport": transport}

    def run_once(self, spec, code, python_exe=None, worker_tag=None, *, timeout=None):
        """Runs code in a fresh worker that is gone afterwards."""
        return self._exec(spec, code, python_exe, timeout, worker_tag, True)

    def status(self):
        """The daemon's state (pid, version, uptime, workers, jobs, ...)."""
        return _with_success(self.call("status"))

    def shutdown(self):
        """Asks the daemon to stop; the connection is closed afterwards."""
        try:
            return _with_success(self.call("shutdown"))
        finally:
            self.close()

    # ------------------------------------------------------------ extras

    def hello(self):
        return _with_success(self.call("hello"))

    def workers(self):
        return _with_success(self.call("workers"))

    def pythons(self):
        return _with_success(self.call("pythons"))

    def list_bubbles(self):
        return _with_success(self.call("list"))

    def shm_list(self):
        return _with_success(self.call("shm_list"))


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


def _job_result(r):
    """omnipkg's `result` of execute_smart: the job's, else its stripped stdout."""
    return r["result"] if "result" in r else (r.get("stdout") or "").strip()


def _with_success(raw):
    out = dict(raw)
    out.pop("v", None)
    out["success"] = bool(out.get("ok"))
    return out


def to_omnipkg_reply(raw):
    """A daemon exec reply in omnipkg's shape: "success", "stdout", "stderr",
    on failure "error" and "traceback", the keys of a dict `result` at the top
    level (those that do not collide with a reply field), the raw value under
    "result", and every other field of ours (worker_pid, duration, reason...)."""
    out = _with_success(raw)
    out.setdefault("stdout", "")
    out.setdefault("stderr", "")
    if not out["success"]:
        out.setdefault("error", "unknown error")
        out.setdefault("traceback", "")
    res = out.get("result")
    if isinstance(res, dict):
        for k, v in res.items():
            if k not in _REPLY_FIELDS:
                out[k] = v
    return out
