"""Control blocks: shared state that clients and workers, on any
interpreter, read and write without the daemon in the loop and without a
lock.  src/omnipkg.h describes the layout and the protocol once; this is
their Python side (stdlib only, Python 3.8+).

    cb = client.control_block("state", record_size=64)   # a segment of the daemon
    with cb.writing() as w:              # claim: one CAS; publish on leaving
        struct.pack_into("<q", w.record, 0, 42)
    snap = cb.read()                     # never blocks a writer
    snap.data, snap.seq, snap.generation, snap.torn

A block is a persistent segment (it shows in `omnipkg shm ls` and the
mount's shm/ directory) whose first 128 bytes are the header; the rest is
the record.  Its mode is fixed when it is formatted:

  "atomic"    the seqlock of omnipkg.h, through omnipkg_atomic (the same C
              code as libomnipkg's omni_ctl_*): readers copy the record
              between two reads of seq and try again on a change; a writer
              claims with one compare-and-swap and publishes the next even
              seq.  A writer that dies holding the block (pid gone, a
              zombie, or the pid reused) is recovered by whoever waits on
              it next, within a millisecond or two, and by the daemon when
              the writer was one of its workers: the record is marked torn.
  "filelock"  "standard mode", for comparison (omnipkg 3.4.1's fallback):
              writers hold an exclusive flock on the segment's file and
              readers a shared one.  Same header, pure Python: a writer that
              died leaves seq odd, and the next writer marks its write torn.

A write that raises is still published, marked torn: no claim outlives
the code that made it.
"""

import collections
import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
import time

HEADER_SIZE = 128
MAGIC = 0x314C5443494E4D4F          # "OMNICTL1"
MAGIC_INIT = 0x304C5443494E4D4F     # "OMNICTL0": being formatted
VERSION = 1
PID_SHIFT = 40
SEQ_MASK = (1 << PID_SHIFT) - 1
FILELOCK = 0x1
DEFAULT_RECORD = 4096

# omni_ctl_header of src/omnipkg.h: field -> (offset, size).  A test checks
# it against the extension's CTL_LAYOUT, compiled from the header.
LAYOUT = {
    "magic": (0, 8), "version": (8, 4), "flags": (12, 4), "record_size": (16, 8),
    "seq": (24, 8), "owner_pid": (32, 8), "owner_start": (40, 8), "generation": (48, 8),
    "torn": (56, 8), "torn_count": (64, 8), "reserved": (72, 56),
}
_FIELDS = ("magic", "version", "flags", "record_size", "seq", "owner_pid", "owner_start",
           "generation", "torn", "torn_count")
_HEADER = struct.Struct("=QIIQQQQQQQ")
_WORD = struct.Struct("=Q")

Snapshot = collections.namedtuple("Snapshot", "data seq generation torn torn_count")
Snapshot.__doc__ = """A copy of a record as of one stable seq: data (bytes), seq
(even), generation (whole writes so far), torn (the last write did not
complete: data is what it left), torn_count (writes torn so far)."""


class ControlBlockError(RuntimeError):
    """A control block could not be used as asked."""


class ControlBlockConflict(ControlBlockError):
    """The block's seq moved on from the one a claim expected: another
    writer got there first.  .seq is what it found (when known)."""

    def __init__(self, msg, seq=None):
        ControlBlockError.__init__(self, msg)
        self.seq = seq


def _atomic():
    from . import atomics
    return atomics.load()


def _self_start():
    """(pid, start time) of this process (0 when /proc says nothing)."""
    pid = os.getpid()
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            text = f.read().decode("ascii", "replace")
        return pid, int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return pid, 0


class Write:
    """A claim on a control block, from begin() or writing() until end().

    record: a writable memoryview of the record (released by end());
    seq: the odd seq word claimed; prev_torn: the write before this one
    was torn, so the record may hold what a dead writer left."""

    __slots__ = ("block", "record", "seq", "prev_torn", "_done")

    def __init__(self, block, seq, prev_torn):
        self.block = block
        self.seq = seq
        self.prev_torn = prev_torn
        self._done = False
        self.record = memoryview(block._map)[HEADER_SIZE:HEADER_SIZE + block.record_size]

    def end(self, torn=False):
        """Publishes the write (the next even seq); torn: it did not
        complete.  Always releases; a second call does nothing.  Returns
        the seq published."""
        if self._done:
            return None
        self._done = True
        try:
            self.record.release()
        except BufferError:
            pass        # the caller still exports a view of it; it lapses later
        self.block._end(self.seq, torn)
        return ((self.seq & SEQ_MASK) + 1) & SEQ_MASK

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        self.end(torn=etype is not None)
        return False


class ControlBlock:
    """The control block in a segment's file, mapped shared and writable.

    path: the segment's file (from the daemon: DaemonClient.control_block
    finds and creates blocks by name).  mode: None to take the block's
    own, else "atomic" or "filelock" (ControlBlockError when it is the
    other).  timeout: seconds to wait for a block another process is
    formatting.  Thread-safe."""

    def __init__(self, path, name=None, mode=None, timeout=5.0):
        self.path = path
        self.name = name or os.path.basename(path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise ControlBlockError("%s is not a regular file of ours" % path)
            if st.st_size < HEADER_SIZE:
                raise ControlBlockError("%s: %d bytes, smaller than a control block's "
                                        "header (%d)" % (path, st.st_size, HEADER_SIZE))
            self._map = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.ino = st.st_ino
        self._tlock = threading.Lock()
        deadline = time.monotonic() + timeout
        while True:
            magic = _WORD.unpack_from(self._map, 0)[0]
            if magic == MAGIC:
                break
            if magic not in (0, MAGIC_INIT):
                self.close()
                raise ControlBlockError("%s is not a control block (magic %#x)" % (path, magic))
            if time.monotonic() > deadline:
                self.close()
                raise ControlBlockError("%s: not formatted within %gs" % (path, timeout))
            time.sleep(0.001)
        h = self.header()
        if h["version"] != VERSION or h["record_size"] > len(self._map) - HEADER_SIZE:
            self.close()
            raise ControlBlockError("%s: layout version %d, record of %d bytes in a %d-byte "
                                    "file: not a block of this layout" % (
                                        path, h["version"], h["record_size"], len(self._map)))
        self.record_size = h["record_size"]
        self.mode = "filelock" if h["flags"] & FILELOCK else "atomic"
        if mode is not None and mode != self.mode:
            self.close()
            raise ControlBlockError("control block %s is in %s mode, not %s"
                                    % (self.name, self.mode, mode))
        self._oa = _atomic() if self.mode == "atomic" else None

    @classmethod
    def format(cls, path, mode="atomic", name=None, timeout=5.0):
        """Formats the (all zero) segment file at path as an empty block
        of the given mode, unless it already is one, and opens it."""
        if mode not in ("atomic", "filelock"):
            raise ValueError("mode is \"atomic\" or \"filelock\", not %r" % (mode,))
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise ControlBlockError("%s: %d bytes, smaller than a control block's header"
                                        % (path, size))
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                if mode == "atomic":
                    try:
                        _atomic().ctl_format(m)
                    except OSError as e:
                        if e.errno != errno.EAGAIN:   # another process is at it: wait below
                            raise ControlBlockError("%s: %s" % (path, e.strerror)) from None
                else:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    try:
                        if _WORD.unpack_from(m, 0)[0] == 0:
                            m[:HEADER_SIZE] = bytes(HEADER_SIZE)
                            _HEADER.pack_into(m, 0, MAGIC, VERSION, FILELOCK, size - HEADER_SIZE,
                                              0, 0, 0, 0, 0, 0)
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                m.close()
        finally:
            os.close(fd)
        return cls(path, name=name, timeout=timeout)

    # ------------------------------------------------------------ state

    def header(self):
        """The header's fields as they are now (not one consistent
        snapshot: for display), with "holder", the pid in an odd seq."""
        h = dict(zip(_FIELDS, _HEADER.unpack_from(self._map, 0)))
        h["holder"] = h["seq"] >> PID_SHIFT if h["seq"] & 1 else 0
        return h

    def version(self):
        """seq now: even when stable, odd while a writer holds it."""
        if self._oa is not None:
            return self._oa.load64_buf(self._map, 24) & ((1 << 64) - 1)
        return _WORD.unpack_from(self._map, 24)[0]

    # ------------------------------------------------------------ reading

    def read(self, offset=0, length=None, timeout=None):
        """A Snapshot of length bytes of the record from offset (None: to
        its end).  Waits while a writer holds the block (timeout seconds;
        None: no limit; 0: BlockingIOError at once), recovering a dead
        writer's claim; TimeoutError when a live one held it too long.
        IndexError past the record."""
        if self._oa is not None:
            try:
                return Snapshot(*self._oa.ctl_read(self._map, offset,
                                                   -1 if length is None else length, timeout))
            except OSError as e:
                raise _error(e, self.name) from None
        return self._fl_read(offset, length, timeout)

    # ------------------------------------------------------------ writing

    def begin(self, expected=None, timeout=None):
        """Claims the block: a Write, held until its end().  expected None
        waits for a live writer (timeout seconds; None: no limit);
        otherwise the claim is made only if seq is still expected (a seq
        read before), else ControlBlockConflict at once.  A dead writer's
        claim is recovered first.  TimeoutError when a live writer held
        it past the timeout (BlockingIOError for timeout 0)."""
        if self._oa is not None:
            try:
                word, prev = self._oa.ctl_begin(self._map, -1 if expected is None else expected,
                                                timeout)
            except OSError as e:
                raise _error(e, self.name, expected) from None
        else:
            word, prev = self._fl_begin(expected, timeout)
        return Write(self, word, prev)

    def writing(self, expected=None, timeout=None):
        """begin() for a with-statement: published on leaving, marked torn
        when the block raised."""
        return self.begin(expected, timeout)

    def write(self, data, offset=0, timeout=None):
        """Writes bytes data into the record at offset as one write;
        returns the seq it published."""
        data = memoryview(data).cast("B")
        if offset < 0 or offset + len(data) > self.record_size:
            raise IndexError("%d bytes at %d: past the record's %d bytes"
                             % (len(data), offset, self.record_size))
        with self.begin(timeout=timeout) as w:
            w.record[offset:offset + len(data)] = data
        return ((w.seq & SEQ_MASK) + 1) & SEQ_MASK

    def _end(self, word, torn):
        if self._oa is not None:
            try:
                self._oa.ctl_end(self._map, word, torn)
            except OSError as e:
                raise _error(e, self.name) from None
        else:
            self._fl_end(word, torn)

    def recover(self):
        """Recovers the block now if a dead writer holds it; True if so."""
        if self._oa is not None:
            return self._oa.ctl_recover(self._map)
        if not self._tlock.acquire(False):
            return False
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False       # a live writer holds it
            try:
                return self._fl_mend()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._tlock.release()

    # ------------------------------------------------------------ file-lock mode

    def _get(self, field):
        return _WORD.unpack_from(self._map, LAYOUT[field][0])[0]

    def _put(self, field, value):
        _WORD.pack_into(self._map, LAYOUT[field][0], value)

    def _lock(self, kind, timeout):
        """This process's lock, then the file's (kind: LOCK_SH/LOCK_EX).
        One open file holds one flock, so threads of one process take
        turns on _tlock first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._tlock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError("control block %s: held past %gs" % (self.name, timeout))
        try:
            if deadline is None:
                fcntl.flock(self._fd, kind)
                return
            while True:
                try:
                    fcntl.flock(self._fd, kind | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        if timeout == 0:
                            raise BlockingIOError(errno.EAGAIN, "control block %s: a writer "
                                                  "holds it" % self.name) from None
                        raise TimeoutError("control block %s: held past %gs"
                                           % (self.name, timeout)) from None
                    time.sleep(0.0002)
        except BaseException:
            self._tlock.release()
            raise

    def _unlock(self):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._tlock.release()

    def _fl_mend(self):
        """Under the exclusive lock: a seq left odd is a writer that died
        holding the lock (the kernel dropped it); its write is torn."""
        seq = self._get("seq")
        if not seq & 1:
            return False
        self._put("owner_pid", 0)
        self._put("owner_start", 0)
        self._put("torn", 1)
        self._put("torn_count", self._get("torn_count") + 1)
        self._put("seq", ((seq & SEQ_MASK) + 1) & SEQ_MASK)
        return True

    def _fl_begin(self, expected, timeout):
        self._lock(fcntl.LOCK_EX, timeout)
        try:
            self._fl_mend()
            seq = self._get("seq")
            if expected is not None and seq != expected:
                raise ControlBlockConflict("control block %s: seq is %d, not %d"
                                           % (self.name, seq, expected), seq)
            pid, start = _self_start()
            word = (pid << PID_SHIFT) | ((seq & SEQ_MASK) + 1)
            prev = bool(self._get("torn"))
            self._put("seq", word)
            self._put("owner_start", start)
            self._put("owner_pid", pid)
            return word, prev
        except BaseException:
            self._unlock()
            raise

    def _fl_end(self, word, torn):
        try:
            if self._get("seq") != word:
                raise ControlBlockError("control block %s: not held by this write" % self.name)
            self._put("owner_pid", 0)
            self._put("owner_start", 0)
            if torn:
                self._put("torn", 1)
                self._put("torn_count", self._get("torn_count") + 1)
            else:
                self._put("torn", 0)
                self._put("generation", self._get("generation") + 1)
            self._put("seq", ((word & SEQ_MASK) + 1) & SEQ_MASK)
        finally:
            self._unlock()

    def _fl_read(self, offset, length, timeout):
        if length is None:
            length = self.record_size - offset
        if offset < 0 or length < 0 or offset + length > self.record_size:
            raise IndexError("past the end of the control block's record")
        self._lock(fcntl.LOCK_SH, timeout)
        try:
            if self._get("seq") & 1:
                # odd under a shared lock: its writer died mid-write (the
                # kernel dropped its lock); mend it under the exclusive one
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                self._fl_mend()
            data = self._map[HEADER_SIZE + offset:HEADER_SIZE + offset + length]
            return Snapshot(data, self._get("seq"), self._get("generation"),
                            bool(self._get("torn")), self._get("torn_count"))
        finally:
            self._unlock()

    # ------------------------------------------------------------ lifetime

    def close(self):
        """Unmaps the block (a Write still open keeps its mapping)."""
        try:
            self._map.close()
        except BufferError:
            pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<ControlBlock %s (%s, %d-byte record)>" % (self.name, self.mode, self.record_size)


def _error(e, name, expected=None):
    """An OSError of omnipkg_atomic as this module raises it."""
    if e.errno == errno.ESTALE:
        return ControlBlockConflict("control block %s: seq moved on from %s" % (name, expected))
    if e.errno == errno.ETIMEDOUT:
        return TimeoutError(errno.ETIMEDOUT, "control block %s: %s" % (name, e.strerror))
    if e.errno == errno.EAGAIN:
        return BlockingIOError(errno.EAGAIN, "control block %s: %s" % (name, e.strerror))
    return ControlBlockError("control block %s: %s" % (name, e.strerror or e))


# ---------------------------------------------------------------- the daemon's blocks

def open_block(client, name, record_size=None, create=True, mode=None, timeout=5.0):
    """The ControlBlock in the daemon's segment name.  A missing one is
    created when create (persistent: it outlives the connection; remove it
    with shm_remove), with a record of record_size bytes (default 4096) in
    mode (default "atomic"), and formatted.  Two processes that create the
    same name at once get the same block."""
    from .shm import DaemonShmError
    from . import atomics
    if mode != "filelock":
        try:       # found beside the daemon in use, if nowhere else
            atomics.load(client.socket_path)
        except ImportError:
            if mode == "atomic":
                raise
    try:
        return ControlBlock(client.shm_pool.path(name), name, mode, timeout)
    except DaemonShmError as e:
        if e.reason != "nosegment" or not create:
            raise
    size = HEADER_SIZE + (DEFAULT_RECORD if record_size is None else int(record_size))
    r = client.call("shm_create", name=name, size=size, persist=True)
    if r.get("ok"):
        return ControlBlock.format(r["segment"]["path"], mode or "atomic", name, timeout)
    if r.get("errno") == errno.EEXIST:     # made by another process just now
        return ControlBlock(client.shm_pool.path(name), name, mode, timeout)
    raise DaemonShmError(r)


# ---------------------------------------------------------------- execute_optimistic_write

# What the worker runs: the job's own code comes as a bound value, never
# pasted into source, so this text (and its compiled code) never changes.
_WORKER_CODE = "import omnipkg.ctlblock as _omni_ctl\n_omni_ctl.run_guarded(globals())\n"
_CONFLICT = "ControlBlockConflict:"


def optimistic_write(client, spec, code, name, tensor_in, python_exe=None, max_retries=100):
    """DaemonClient.execute_optimistic_write: runs code in the worker of
    (spec, python_exe) as a write to control block name, claimed there
    only if nobody wrote since this call read the block's seq.  On a
    conflict it reads the new seq and runs the code again, backing off as
    omnipkg does, up to max_retries times.  -> (out, reply, retries)."""
    cb = open_block(client, name)
    try:
        retries = 0
        while True:
            # a stable seq (a dead writer's claim is recovered on the way)
            seq = cb.read(0, 0, timeout=client.timeout).seq
            guard = {"path": cb.path, "expected": seq, "code": code}
            r, out = _guarded_exec(client, spec, guard, tensor_in, python_exe)
            if r.get("success"):
                return out, r, retries
            if not str(r.get("error", "")).startswith(_CONFLICT):
                raise RuntimeError("Worker Error: %s" % r.get("error"))
            retries += 1
            if retries > max_retries:
                raise RuntimeError("Max retries exceeded: control block %s changed under "
                                   "%d attempts" % (name, retries))
            time.sleep(0.001 * (2 ** min(retries, 5)))
    finally:
        cb.close()


def _guarded_exec(client, spec, guard, tensor_in, python_exe):
    """One guarded job; tensor_in (an ndarray, or anything numpy.asarray
    takes; None: no arrays) is bound as tensor_in/arr_in and a float32
    output of its shape as tensor_out/arr_out, as omnipkg does.
    -> (reply, output ndarray or None)."""
    from .client import DaemonConnectionError, connection_failure
    from . import shm
    arrays, keep, copyback, known, bind, out = [], [], [], set(), {"_omni_ctl_job": guard}, None
    try:
        if tensor_in is not None:
            if getattr(tensor_in, "is_cuda", False) is True:
                raise RuntimeError("execute_optimistic_write: CUDA tensors have no transport "
                                   "in this omnipkgd yet; pass tensor.cpu().numpy()")
            np = shm.np()
            a = tensor_in if isinstance(tensor_in, np.ndarray) else np.asarray(tensor_in)
            f_in, d_in, _ = client._place(a, "in", keep, copyback)
            f_out, d_out, out = client._place({"shape": list(a.shape), "dtype": "float32"},
                                              "out", keep, copyback)
            for f, names in ((f_in, ("arr_in", "tensor_in")), (f_out, ("arr_out", "tensor_out"))):
                known.add(f["segment"])
                arrays += [dict(f, name=nm) for nm in names]
            bind["input_data"] = {"shm_in": d_in, "shm_out": d_out}
        r = client._exec(spec, _WORKER_CODE, python_exe, None, None, False, arrays, bind, known)
    except shm.DaemonShmError as e:
        raise RuntimeError("Worker Error: %s" % e) from None
    except DaemonConnectionError as e:
        if client.raise_errors:
            raise
        r = connection_failure(e)
    return r, out


_worker_blocks = {}      # in a worker: path -> ControlBlock, kept mapped between jobs
_worker_codes = {}


def run_guarded(G):
    """In the worker: claims the block the job names (G["_omni_ctl_job"]: path,
    expected seq, code) or raises ControlBlockConflict; runs the code in G
    with `control_block` bound to the Write (its .record is the record);
    publishes, marked torn when the code raised."""
    job = G.pop("_omni_ctl_job")
    path = job["path"]
    cb = _worker_blocks.get(path)
    if cb is None or os.stat(path).st_ino != cb.ino:     # new, or made again since
        if cb is not None:
            cb.close()
        cb = _worker_blocks[path] = ControlBlock(path)
    code = _worker_codes.get(job["code"])
    if code is None:
        code = compile(job["code"], "<omnipkg>", "exec")
        if len(_worker_codes) >= 64:
            _worker_codes.clear()
        _worker_codes[job["code"]] = code
    try:
        w = cb.begin(expected=job["expected"], timeout=0)
    except (ControlBlockConflict, BlockingIOError):
        # BlockingIOError: a file-lock block's writer holds it, so seq moves on too
        raise ControlBlockConflict("control block %s: seq is %d, not %d"
                                   % (cb.name, cb.version(), job["expected"])) from None
    G["control_block"] = w
    ok = False
    try:
        exec(code, G)
        ok = True
    finally:
        G.pop("control_block", None)
        w.end(torn=not ok)
