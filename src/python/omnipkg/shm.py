"""Shared segments on the client side: a pool of segments and the numpy
arrays that live in them (stdlib only; numpy is imported by the calls that
make arrays, so only callers that have it pay for it).

A segment is a file in the daemon's shared-memory directory, created with
shm_create (op 9) and mapped here once; every array handed out is a view of
that one mapping, so client, daemon and workers all see the same pages.

Lifetime: each allocation wraps its bytes in a fresh ctypes buffer, the
object every view of the allocation (numpy collapses or not) keeps alive.
When that buffer is garbage, a finalizer queues the segment, and the next
pool operation puts it back on the free list: later allocations of a size
that fits reuse it.  Finalizers only append to a deque, because they may
run inside the client's own locks (the garbage collector runs anywhere).
Free segments beyond max_count or max_bytes are removed with shm_remove.

Segments belong to the daemon connection that created them (the daemon
removes them when it closes), so a segment remembers its connection's
generation: one from an earlier connection is never named again, and an
array in it is copied like any foreign array.
"""

import collections
import ctypes
import mmap
import os
import threading
import weakref

PAGE = mmap.PAGESIZE
POOL_BYTES = 1 << 30           # free segments kept, in bytes ...
POOL_COUNT = 64                # ... and in number


class DaemonShmError(RuntimeError):
    """The daemon refused a segment operation; .reason (OMNI_REASONS name)
    and .reply (the raw reply) say why."""

    def __init__(self, reply):
        self.reply = reply
        self.reason = reply.get("reason")
        RuntimeError.__init__(self, reply.get("error") or "shared segment request failed")


def np():
    import numpy
    return numpy


def _map(path, size=None):
    """A read-write shared mapping of path (its whole size by default)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if size is None:
            size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def _buffer(m, size):
    """A new exporter of the first size bytes of mapping m (size >= 1)."""
    return (ctypes.c_char * size).from_buffer(m)


def extent(a):
    """(low, high): the bytes array a can reach, relative to its data pointer."""
    if a.size == 0:
        return 0, 0
    lo = hi = 0
    for n, s in zip(a.shape, a.strides):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    return lo, hi + a.itemsize


def dtype_of(dt):
    """The numpy type string the protocol takes for dtype dt; TypeError for
    a type that is not a plain fixed-size one."""
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None or dt.itemsize == 0:
        raise TypeError("dtype %s cannot live in a shared segment" % dt)
    return dt.str


class Segment:
    """One mapped segment.  kind: "pool" (ours, reused), "result" (ours, a
    job made it: removed when its views are garbage) or "mapped" (someone
    else's: only unmapped).  gen: the connection generation it belongs to."""

    __slots__ = ("name", "size", "path", "gen", "kind", "map", "addr")

    def __init__(self, name, path, gen, kind, size=None):
        self.name, self.path, self.gen, self.kind = name, path, gen, kind
        self.map = _map(path, size)
        self.size = len(self.map)
        b = _buffer(self.map, max(1, self.size))
        self.addr = ctypes.addressof(b)
        del b

    def close(self):
        try:
            self.map.close()
        except BufferError:
            pass        # a view still lives; the mapping goes with it


class SegmentPool:
    """The segments of one DaemonClient.  Thread-safe.

    max_bytes, max_count: what the free list keeps; the rest is removed.
    created, removed: shm_create and shm_remove calls made so far."""

    def __init__(self, client, max_bytes=POOL_BYTES, max_count=POOL_COUNT):
        self.client = client
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.created = 0
        self.removed = 0
        self._lock = threading.Lock()
        self._free = []                # pool Segments ready for reuse, oldest first
        self._live = {}                # name -> (Segment, weakref to its buffer, token)
        self._released = collections.deque()   # from finalizers: (Segment, token)
        self._doomed = []              # names to remove again (a job leased them)
        self._dir = None

    # ------------------------------------------------------------ bookkeeping

    def _valid(self, seg):
        """Whether the daemon still knows seg as ours on this connection."""
        if seg.kind == "mapped":
            return True
        sock, gen = self.client._current()
        return sock is not None and seg.gen == gen

    def _release(self, seg, token):
        self._released.append((seg, token))

    def collect(self, keep_count=None):
        """Takes back what finalizers released and removes the surplus of
        free segments (beyond keep_count, default max_count)."""
        keep_count = self.max_count if keep_count is None else keep_count
        victims = []
        with self._lock:
            while self._released:
                seg, token = self._released.popleft()
                cur = self._live.get(seg.name)
                if cur is not None and cur[2] is token:
                    del self._live[seg.name]
                if seg.kind == "pool" and self._valid(seg):
                    self._free.append(seg)
                else:
                    victims.append(seg)
            total = sum(s.size for s in self._free)
            while self._free and (len(self._free) > keep_count or total > self.max_bytes):
                seg = self._free.pop(0)
                total -= seg.size
                victims.append(seg)
            names, self._doomed = self._doomed, []
        for seg in victims:
            seg.close()
            # A segment of an earlier connection went with it.
            if seg.kind != "mapped" and self._valid(seg):
                names.append(seg.name)
        for name in names:
            r = self.client.call("shm_remove", name=name)
            self.removed += 1
            if not r.get("ok") and r.get("reason") == "leased":
                with self._lock:
                    self._doomed.append(name)

    def trim(self):
        """Removes every free segment."""
        self.collect(keep_count=0)

    def close(self):
        """Forgets every free segment (the connection is going: the daemon
        removes them with it)."""
        with self._lock:
            for seg in self._free:
                seg.close()
            self._free = []
            self._doomed = []

    # ------------------------------------------------------------ allocation

    def _create(self, need):
        r, gen = self.client._call_gen({"op": "shm_create", "size": need}, self.client.timeout)
        if not r.get("ok"):
            raise DaemonShmError(r)
        self.created += 1
        info = r["segment"]
        self._dir = os.path.dirname(info["path"])
        return Segment(info["name"], info["path"], gen, "pool", int(info["size"]))

    def _segment(self, need):
        """A pool Segment of at least need bytes, off the free list."""
        need = max(PAGE, -(-need // PAGE) * PAGE)
        self.collect()
        with self._lock:
            best = None
            for seg in self._free:
                # At most twice the need: a small array never pins a big segment.
                if need <= seg.size <= 2 * need and (best is None or seg.size < best.size):
                    best = seg
            if best is not None:
                self._free.remove(best)
        if best is not None:
            if self._valid(best):
                return best
            best.close()
        try:
            return self._create(need)
        except DaemonShmError as e:
            if e.reason != "quota" or not self._free:
                raise
        self.trim()                    # our free segments count against the quota
        return self._create(need)

    def _hand_out(self, seg):
        """A new buffer over all of seg, whose death gives seg back."""
        buf = _buffer(seg.map, max(1, seg.size))
        token = object()
        with self._lock:
            self._live[seg.name] = (seg, weakref.ref(buf), token)
        weakref.finalize(buf, self._release, seg, token)
        return buf

    def empty(self, shape, dtype):
        """An ndarray (C order, contents undefined) in a pooled segment."""
        n = np()
        dt = n.dtype(dtype)
        dtype_of(dt)
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(x) for x in shape)
        if any(x < 0 for x in shape):
            raise ValueError("negative dimensions are not allowed: %r" % (shape,))
        nbytes = dt.itemsize
        for x in shape:
            nbytes *= x
        return n.ndarray(shape, dt, buffer=self._hand_out(self._segment(nbytes)))

    # ------------------------------------------------------------ lookup

    def locate(self, a):
        """(segment name, offset) when every byte ndarray a can reach lies in
        one segment mapped here that the daemon knows; None otherwise."""
        ptr = a.__array_interface__["data"][0]
        lo, hi = extent(a)
        self.collect()
        with self._lock:
            for seg, ref, _ in self._live.values():
                if seg.addr <= ptr + lo and ptr + hi <= seg.addr + seg.size and ref() is not None:
                    return (seg.name, ptr - seg.addr) if self._valid(seg) else None
        return None

    def view(self, name, dtype, shape, strides=None, offset=0, result=False):
        """An ndarray over segment name: a view of the buffer mapped here
        when there is one, else of a new mapping of its file.  result: the
        segment is a job's new result_array, ours, removed once its views
        are garbage."""
        n = np()
        with self._lock:
            cur = self._live.get(name)
        buf = cur[1]() if cur is not None else None
        if buf is None:
            _, gen = self.client._current()
            seg = Segment(name, self.path(name), gen, "result" if result else "mapped")
            buf = self._hand_out(seg)
        return n.ndarray(tuple(shape), n.dtype(dtype), buffer=buf, offset=int(offset or 0),
                         strides=None if strides is None else tuple(strides))

    def path(self, name):
        """The file of segment name: <the daemon's shm dir>/<name>."""
        if self._dir is None:
            self._dir = (self.client.call("status").get("shm") or {}).get("dir")
        if self._dir:
            p = os.path.join(self._dir, name)
            if os.path.exists(p):
                return p
        for s in self.client.call("shm_list").get("segments", []):
            if s.get("name") == name:
                return s["path"]
        raise DaemonShmError({"error": "no shared segment %r" % name, "reason": "nosegment"})
