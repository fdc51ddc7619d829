"""omnipkgd worker runtime.

The daemon runs this file as

    python -E -s <rtdir>/worker.py worker FD [PATH...]   one worker
    python -E -s <rtdir>/worker.py zygote FD             a warm fork template

FD is this process's end of a private socketpair (never fd 0/1/2).  Each
message on it is one frame: a 4-byte big-endian length N, then N bytes of
UTF-8 JSON holding one object (src/proto.h).  PATHs are bubble directories;
they go first on sys.path, in the order given.

Messages (worker channel):

    worker -> daemon  {"op":"ready", "pid":n, "python":"X.Y.Z", "executable":s}
    daemon -> worker  {"op":"exec", "id":n, "code":s, "cap":bytes}
    worker -> daemon  {"op":"done", "id":n, "ok":b, "stdout":s, "stderr":s,
                       "stdout_bytes":n, "stderr_bytes":n,
                       "stdout_truncated":b, "stderr_truncated":b,
                       "result":any (only when the job set `result`),
                       "error":"Type: message", "traceback":s (when not ok),
                       "duration":seconds}
    daemon -> worker  {"op":"exit"}         -> the worker (or zygote) exits 0
    worker -> daemon  {"op":"error", "id":n, "error":s}   to a message that
                      is not an exec request (the worker goes on)

    zygote -> daemon  {"op":"ready", "pid":n, "python":"X.Y.Z",
                       "executable":s, "zygote":true}
    daemon -> zygote  {"op":"fork", "id":n, "paths":[dir...], "tag":s}
                      carrying exactly one fd (SCM_RIGHTS): the new worker's
                      end of a fresh socketpair.  The worker it forks says
                      "ready" on that fd; the zygote itself replies only on
                      failure:
    zygote -> daemon  {"op":"error", "id":n, "error":s}

EOF on the channel makes either process exit 0.  A frame that cannot be
read as a frame (length 0 or over the maximum) is fatal (exit 2): the
stream can no longer be trusted.
"""

import array
import atexit
import builtins
import fcntl
import importlib
import io
import json
import os
import socket
import struct
import sys
import time
import traceback

MAX_FRAME = 16 << 20          # PROTO_MAX_FRAME in proto.h
DEFAULT_CAP = 1 << 20         # bytes of stdout / stderr kept when "cap" is absent
PYVER = "%d.%d.%d" % tuple(sys.version_info[:3])
_HDR = struct.Struct(">I")


# ---------------------------------------------------------------- framing

def _check_len(n):
    if n == 0 or n > MAX_FRAME:
        _fatal("bad frame length %d" % n)


class FrameReader:
    """Buffered reading of frames: usually one recv() per message."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def read(self):
        """The next message as a dict, None on EOF."""
        buf = self.buf
        while True:
            want = 1 << 16
            if len(buf) >= 4:
                n = _HDR.unpack_from(buf)[0]
                _check_len(n)
                if len(buf) >= 4 + n:
                    payload = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    return _decode(payload)
                want = max(want, 4 + n - len(buf))
            chunk = self.sock.recv(want)
            if not chunk:
                if buf:
                    _fatal("channel closed in the middle of a frame")
                return None
            buf += chunk


def _decode(payload):
    try:
        msg = json.loads(payload.decode("utf-8"))
    except ValueError as e:   # UnicodeDecodeError and JSONDecodeError
        return {"op": "?", "_bad": "payload is not UTF-8 JSON: %s" % e}
    if not isinstance(msg, dict):
        return {"op": "?", "_bad": "payload is not a JSON object"}
    return msg


# allow_nan=False: NaN/Infinity are not JSON and the daemon's parser rejects
# them.  One encoder, made once: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _dumps(obj):
    # Lone surrogates (possible in user strings) cannot be encoded as UTF-8;
    # they become "?" instead of breaking the frame.
    return _ENCODER.encode(obj).encode("utf-8", "replace")


def send_frame(sock, payload):
    # One sendall of header + body: a frame is never interleaved.
    sock.sendall(_HDR.pack(len(payload)) + payload)


def send_msg(sock, obj):
    send_frame(sock, _dumps(obj))


def _fatal(why):
    try:
        os.write(2, ("omnipkgd worker %d: %s\n" % (os.getpid(), why)).encode())
    finally:
        os._exit(2)


# ------------------------------------------------------- process set-up

def _ensure_std_fds():
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


def _private_channel(fd):
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


def _capture_file(name):
    """An anonymous file to hold one stream's output for a job."""
    if hasattr(os, "memfd_create"):
        try:
            return os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 1))
        except OSError:
            pass
    import tempfile
    f = tempfile.TemporaryFile()
    fd = os.dup(f.fileno())       # dup is non-inheritable; the file is unlinked
    f.close()
    return fd


def _text_stream(fd):
    # Line-buffered text over fd 1/2: a print() reaches the fd at its newline,
    # in order with os.write() and C-level writes to the same fd.
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                            errors="backslashreplace", line_buffering=True)


def _bubble_names(path):
    """Top-level import names a bubble directory provides."""
    names = set()
    try:
        entries = os.listdir(path)
    except OSError:
        return names
    for e in entries:
        if e.startswith(".") or e in ("__pycache__", "bin") \
                or e.endswith((".dist-info", ".egg-info", ".pth", ".data")):
            continue
        if os.path.isdir(os.path.join(path, e)):
            if e.isidentifier():
                names.add(e)
        else:
            mod = e.split(".", 1)[0]
            if e.endswith((".py", ".pyc", ".so", ".pyd")) and mod.isidentifier():
                names.add(mod)
    return names


def _put_bubbles_first(paths):
    """Bubbles at the front of sys.path, in the given order, and no module
    already imported from elsewhere (site, a .pth file, the zygote) may stand
    in for one the bubble provides."""
    paths = [os.path.abspath(p) for p in paths]
    for p in reversed(paths):
        while p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    provided = set()
    for p in paths:
        provided |= _bubble_names(p)
    for name in list(sys.modules):
        top = name.split(".", 1)[0]
        if top not in provided:
            continue
        f = getattr(sys.modules[name], "__file__", None) or ""
        if not any(f.startswith(p + os.sep) for p in paths):
            del sys.modules[name]
    for p in paths:
        sys.path_importer_cache.pop(p, None)
    importlib.invalidate_caches()


# ------------------------------------------------------------ the worker

class Worker:
    def __init__(self, sock, paths):
        self.sock = sock
        self.pid = os.getpid()
        for s in (sys.stdout, sys.stderr):   # the interpreter's own buffers
            if s is not None:
                s.flush()
        os.environ["OMNIPKG_DAEMON_CHILD"] = "1"
        _put_bubbles_first(paths)
        # Made per worker, never in the zygote: forked workers must not share.
        # They stay on fds 1 and 2 for the worker's life (no dup2 per job on
        # the hot path); output between jobs, from a stray thread, say,
        # is reported with the next job.
        self.cap_fds = (_capture_file("omnipkg-stdout"),
                        _capture_file("omnipkg-stderr"))
        os.dup2(self.cap_fds[0], 1)
        os.dup2(self.cap_fds[1], 2)
        self.out = _text_stream(1)
        self.err = _text_stream(2)
        self._install_streams()
        self.G = {"__name__": "__main__", "__builtins__": builtins}
        self.codes = {}          # source -> code object: repeated jobs skip compile
        self.dirty = [True, True]  # capture file may hold bytes: truncate first

    def _install_streams(self):
        # User code may have replaced or closed them; every job starts clean.
        sys.stdout = sys.__stdout__ = self.out
        sys.stderr = sys.__stderr__ = self.err

    def _flush(self):
        for s in (sys.stdout, sys.stderr, self.out, self.err):
            try:
                s.flush()
            except Exception:
                pass

    def serve(self):
        send_msg(self.sock, {"op": "ready", "pid": os.getpid(), "python": PYVER,
                             "executable": sys.executable})
        reader = FrameReader(self.sock)
        while True:
            msg = reader.read()
            if msg is None or msg.get("op") == "exit":
                self.exit(0)
            if msg.get("op") == "exec" and isinstance(msg.get("code"), str):
                send_frame(self.sock, self.run(msg))
            else:
                send_msg(self.sock, {"op": "error", "id": msg.get("id"),
                                     "error": msg.get("_bad") or
                                     "expected {\"op\":\"exec\",\"code\":str}"})

    def run(self, msg):
        """Runs one job; returns the encoded "done" payload."""
        jid = msg.get("id")
        cap = msg.get("cap")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            cap = DEFAULT_CAP
        self.G.pop("result", None)
        self._flush()
        for i in (0, 1):
            if self.dirty[i]:
                cfd = self.cap_fds[i]
                os.ftruncate(cfd, 0)
                os.lseek(cfd, 0, os.SEEK_SET)   # the offset is shared with fd 1/2
        rep = {"op": "done", "id": jid, "ok": True}
        t0 = time.perf_counter()
        try:
            src = msg["code"]
            code = self.codes.get(src)
            if code is None:
                code = compile(src, "<omnipkg>", "exec")
                if len(src) <= 65536:          # small sources only: bounded memory
                    if len(self.codes) >= 64:
                        self.codes.clear()
                    self.codes[src] = code
            exec(code, self.G)
        except BaseException as e:   # SystemExit and KeyboardInterrupt too
            rep["ok"] = False
            rep["error"] = _error_text(e)
            # Drop our own frame (the exec call); keep the <omnipkg> ones.
            tb = e.__traceback__.tb_next if e.__traceback__ else None
            rep["traceback"] = "".join(traceback.format_exception(type(e), e, tb))
            del e, tb
        rep["duration"] = time.perf_counter() - t0
        self._flush()
        if os.getpid() != self.pid:
            # A child that user code forked fell off the end of the job: it
            # must not go on serving this worker's channel.
            os._exit(0)
        self._install_streams()
        for i, name in ((0, "stdout"), (1, "stderr")):
            cfd = self.cap_fds[i]
            total = os.fstat(cfd).st_size
            self.dirty[i] = total > 0
            data = os.pread(cfd, min(total, cap), 0) if total else b""
            rep[name] = data.decode("utf-8", "replace")
            rep[name + "_bytes"] = total
            rep[name + "_truncated"] = total > cap
        if rep["ok"] and "result" in self.G:
            rep["result"] = self.G["result"]
        return self._encode(rep)

    @staticmethod
    def _encode(rep):
        try:
            payload = _dumps(rep)
        except Exception as e:
            # Everything but `result` is plain text and numbers, so it is
            # the result that cannot be encoded.
            rep.pop("result", None)
            rep["ok"] = False
            rep["error"] = "TypeError: result is not JSON-serialisable: %s" % e
            rep["traceback"] = ""
            payload = _dumps(rep)
        if len(payload) > MAX_FRAME and "result" in rep:
            rep.pop("result")
            rep["ok"] = False
            rep["error"] = ("ValueError: result is too large for one message "
                            "(%d bytes; at most %d)" % (len(payload), MAX_FRAME))
            rep["traceback"] = ""
            payload = _dumps(rep)
        while len(payload) > MAX_FRAME:
            # Escaping can grow text past the cap; halve the larger stream.
            k = "stdout" if len(rep["stdout"]) >= len(rep["stderr"]) else "stderr"
            rep[k] = rep[k][:len(rep[k]) // 2]
            rep[k + "_truncated"] = True
            payload = _dumps(rep)
        return payload

    def exit(self, code):
        # atexit handlers run, but non-daemon user threads are not joined:
        # a stray thread must not keep a dismissed worker alive.
        self._flush()
        try:
            atexit._run_exitfuncs()
        except Exception:
            pass
        self._flush()
        os._exit(code)


def _error_text(e):
    name = type(e).__name__
    if isinstance(e, SystemExit):
        return "SystemExit: %s" % (e.code,)
    try:
        msg = str(e)
    except Exception:
        msg = "<str() of the exception failed>"
    return "%s: %s" % (name, msg) if msg else name


def worker_main(fd, paths):
    sock = _private_channel(fd)   # first: it may sit on fd 0/1/2
    _ensure_std_fds()
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)   # own group, so the daemon can signal it whole
    except OSError:
        pass
    _serve_or_die(sock, paths)


def _serve_or_die(sock, paths):
    # Never a normal interpreter exit: it would wait for the user's
    # non-daemon threads, and a worker whose daemon is gone must just go.
    try:
        Worker(sock, paths).serve()
    except BaseException:
        traceback.print_exc()
    os._exit(1)


# ------------------------------------------------------------ the zygote

def _recv_with_fds(sock, n, fds):
    """n bytes from sock (None on EOF at a frame boundary), also collecting
    any fds that arrive with them.
    Reading never crosses a frame boundary, so fds that come with a frame's
    bytes belong to that frame."""
    buf = bytearray()
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    while len(buf) < n:
        if hasattr(socket, "recv_fds"):                      # 3.9+
            data, got, _, _ = socket.recv_fds(sock, n - len(buf), 4, flags)
        else:                                                # 3.8
            a = array.array("i")
            data, anc, _, _ = sock.recvmsg(n - len(buf), socket.CMSG_SPACE(4 * a.itemsize), flags)
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
            got = list(a)
        fds.extend(got)
        if not data:
            if buf:
                _fatal("channel closed in the middle of a frame")
            return None
        buf += data
    return bytes(buf)


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def zygote_main(fd):
    sock = _private_channel(fd)
    _ensure_std_fds()
    send_msg(sock, {"op": "ready", "pid": os.getpid(), "python": PYVER,
                    "executable": sys.executable, "zygote": True})
    while True:
        fds = []
        hdr = _recv_with_fds(sock, 4, fds)
        if hdr is None:
            _close_all(fds)
            os._exit(0)
        n = _HDR.unpack(hdr)[0]
        _check_len(n)
        msg = _decode(_recv_with_fds(sock, n, fds))
        if msg.get("op") == "exit":
            _close_all(fds)
            os._exit(0)
        err = _fork_worker(sock, msg, fds)
        if err:
            send_msg(sock, {"op": "error", "id": msg.get("id"), "error": err})


def _fork_worker(sock, msg, fds):
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
            # is re-parented to the daemon (a child subreaper), not to us.
            code = 1
            try:
                if os.fork() == 0:
                    _become_worker(sock, fds[0], paths)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            return "fork of the worker failed (status %d)" % status
        return None
    finally:
        _close_all(fds)


def _become_worker(zsock, fd, paths):
    try:
        os.setsid()
        zsock.close()             # the worker must not hold the zygote channel
        sock = _private_channel(fd)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    _serve_or_die(sock, paths)


def main(argv):
    if len(argv) < 3 or argv[1] not in ("worker", "zygote") or not argv[2].isdigit():
        sys.stderr.write("usage: worker.py worker FD [PATH...] | zygote FD\n")
        return 2
    fd = int(argv[2])
    if argv[1] == "worker":
        worker_main(fd, argv[3:])
    else:
        zygote_main(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
