"""Shared-memory arrays of a job: the worker's side of the data plane.

A segment is a file on the daemon's tmpfs.  A worker maps each one once
(MAP_SHARED, read-write) and keeps the mapping for later jobs, so an array
given to a job is a view of the very pages the client sees, never a copy.
This module binds an exec's "arrays" and "bind" as globals, turns a numpy
`result` into "result_array", serves `omnipkg.array()` to job code and
drops mappings on "unmap".  numpy is imported only by a job that needs it;
the zygote never maps anything, so a worker it forks starts with an empty
cache (one Arrays per Worker).

A mapping is never closed explicitly: numpy keeps a reference to the mmap
but no buffer export, so close() would unmap pages under a live array.
Dropping the cache's reference unmaps at once when nothing views it, and
with the last view otherwise.
"""

import mmap
import os
import re
import sys

from omniworker.execute import error_text

_np = None                  # numpy once a job needed it; False: not importable

# numpy kind + item size -> the struct code of a memoryview (no numpy).
_CODES = {("b", 1): "?", ("i", 1): "b", ("u", 1): "B", ("i", 2): "h", ("u", 2): "H",
          ("i", 4): "i", ("u", 4): "I", ("i", 8): "q", ("u", 8): "Q",
          ("f", 2): "e", ("f", 4): "f", ("f", 8): "d"}
_NAMES = {"bool": "b1", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2",
          "int32": "i4", "uint32": "u4", "int64": "i8", "uint64": "u8",
          "float16": "f2", "float32": "f4", "float64": "f8",
          "complex64": "c8", "complex128": "c16"}
_TYPESTR = re.compile(r"([<>=|]?)([biufc])(\d+)\Z")
_NATIVE = "<" if sys.byteorder == "little" else ">"


def numpy_or_none():
    global _np
    if _np is None:
        try:
            import numpy
            _np = numpy
        except ImportError:
            _np = False
    return _np or None


def _ints(v, what, n=None):
    if not isinstance(v, (list, tuple)) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise TypeError("%s must be a list of integers" % what)
    if n is not None and len(v) != n:
        raise ValueError("%s has %d entries for %d dimensions" % (what, len(v), n))
    return tuple(v)


def _int(v, what):
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("%s must be an integer" % what)
    return v


class _Map:
    """One mapped segment file; the cache owns it."""
    __slots__ = ("mm", "size", "gen", "addr")

    def __init__(self, path, size, gen=None):
        if size <= 0:
            raise ValueError("segment size must be positive, not %d" % size)
        fd = os.open(path, os.O_RDWR)
        try:
            # Raises when the file is shorter than size.
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.size = size
        self.gen = gen
        self.addr = None

    def address(self, np):
        if self.addr is None:
            probe = np.frombuffer(self.mm, np.uint8, 1)
            self.addr = probe.__array_interface__["data"][0]
        return self.addr


class Segments:
    """The worker's mappings: by segment id (exec "arrays", one generation
    each) and by (path, inode, size) for omnipkg.array()."""

    def __init__(self):
        self.by_id = {}
        self.by_file = {}

    def segment(self, sid, gen, path, size):
        m = self.by_id.get(sid)
        if m is not None and m.gen == gen and m.size == size:
            return m
        self.by_id.pop(sid, None)      # an older generation is gone for good
        m = _Map(path, size, gen)
        self.by_id[sid] = m
        return m

    def file(self, path):
        st = os.stat(path)
        key = (path, st.st_ino, st.st_size)
        m = self.by_file.get(key)
        if m is None:
            for k in [k for k in self.by_file if k[0] == path]:
                del self.by_file[k]    # the file at that name was replaced
            m = _Map(path, st.st_size)
            self.by_file[key] = m
        return m

    def unmap(self, ids):
        for sid in ids:
            if isinstance(sid, int):
                self.by_id.pop(sid, None)
        # Mappings made by name: drop those whose file went with the segments.
        for key in list(self.by_file):
            try:
                gone = os.stat(key[0]).st_ino != key[1]
            except OSError:
                gone = True
            if gone:
                del self.by_file[key]


def _memoryview(m, dtype, shape, offset, strides, readonly):
    """A typed memoryview: what a worker without numpy gets."""
    t = _NAMES.get(dtype, dtype)
    match = _TYPESTR.match(t) if isinstance(t, str) else None
    code = match and _CODES.get((match.group(2), int(match.group(3))))
    if not code:
        raise TypeError("dtype %r has no memoryview format (numpy is not in this "
                        "worker's spec)" % (dtype,))
    size = int(match.group(3))
    if size > 1 and match.group(1) not in ("", "=", "|", _NATIVE):
        raise TypeError("dtype %r is not in native byte order: a memoryview cannot "
                        "read it (numpy is not in this worker's spec)" % (dtype,))
    want, step = [], size
    for n in reversed(shape):
        want.append(step)
        step *= n
    want.reverse()
    if strides is not None and any(n > 1 and s != w for n, s, w in zip(shape, strides, want)):
        raise ValueError("strides %s are not C order: a memoryview cannot show them "
                         "(numpy is not in this worker's spec)" % (list(strides),))
    if offset < 0 or offset + step > m.size:
        raise ValueError("%d bytes at offset %d do not fit in a %d-byte segment"
                         % (step, offset, m.size))
    mv = memoryview(m.mm)
    if readonly:
        mv = mv.toreadonly()
    return mv[offset:offset + step].cast(code, shape)


def view(m, dtype, shape, offset=0, strides=None, readonly=False):
    """An array over mapping m: numpy when the worker has it."""
    np = numpy_or_none()
    if np is None:
        return _memoryview(m, dtype, shape, offset, strides, readonly)
    buf = m.mm
    if readonly:
        # Over a read-only memoryview numpy keeps the mmap as the base, whose
        # buffer is writable, so job code could set WRITEABLE back; a byte
        # array over that memoryview keeps it read-only for good.
        buf = np.frombuffer(memoryview(buf).toreadonly(), np.uint8)
    return np.ndarray(shape, dtype=np.dtype(dtype), buffer=buf, offset=offset,
                      strides=strides)


class Api:
    """The `omnipkg` global of job code."""

    def __init__(self, segs):
        self._segs = segs
        self.shm_dir = None      # the daemon's segment directory, per job

    def array(self, name, dtype, shape, offset=0, strides=None):
        """A view of the segment file `name` in shm_dir, mapped once."""
        if not self.shm_dir:
            raise RuntimeError("no shared memory directory in this job")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ValueError("segment name %r is not a file name" % (name,))
        if isinstance(shape, int):
            shape = (shape,)
        shape = _ints(shape, "shape")
        if strides is not None:
            strides = _ints(strides, "strides", len(shape))
        m = self._segs.file(os.path.join(self.shm_dir, name))
        return view(m, dtype, shape, _int(offset, "offset"), strides)


class Arrays:
    """A worker's data plane: its mappings and what one job binds."""

    def __init__(self, G):
        self.G = G               # the executor's globals (borrowed)
        self.segs = Segments()
        self.api = Api(self.segs)
        self.given = []          # (segment name, _Map) of this job's arrays
        self.bound = {}          # global name -> view bound for this job only

    def begin(self, msg, fds=()):
        """Binds msg's "bind" and "arrays" as globals, handing each
        descriptor of msg's "fds" ([{for, kind}], one per fd that came with
        it, in order; borrowed) to the bound value it is for; returns an
        error text ("Type: message") when one cannot be, and the job must
        not run."""
        byname, err = _fds_by_name(msg.get("fds"), fds)
        if err:
            return err
        shm_dir = msg.get("shm_dir")
        self.api.shm_dir = shm_dir if isinstance(shm_dir, str) else None
        G = self.G
        # A job that bound its own `omnipkg` keeps it.
        G.setdefault("omnipkg", self.api)
        bind = msg.get("bind")
        if bind is not None:
            if not isinstance(bind, dict):
                return "TypeError: \"bind\" must be an object"
            for k, v in bind.items():
                try:
                    if isinstance(v, dict) and len(v) == 1 and "__cuda_ipc__" in v:
                        from . import cuda      # the driver only for CUDA jobs
                        G[k] = self.bound[k] = cuda.bind(v["__cuda_ipc__"], byname.pop(k, None))
                        continue
                    G[k] = _bind_value(v)
                except Exception as e:
                    return "%s: bind %r: %s" % (type(e).__name__, k, e)
        if byname:
            return "ValueError: descriptors for %s, which bind no CUDA buffer" % \
                ", ".join(sorted(byname))
        arrays = msg.get("arrays")
        if arrays is None:
            return None
        if not isinstance(arrays, list):
            return "TypeError: \"arrays\" must be a list"
        for a in arrays:
            name = a.get("name") if isinstance(a, dict) else None
            try:
                if not isinstance(name, str) or not name.isidentifier():
                    raise ValueError("an array needs an identifier as \"name\"")
                v, m = self._array(a)
            except Exception as e:
                return "%s: array %r: %s" % (type(e).__name__, name, e)
            G[name] = self.bound[name] = v
            self.given.append((a.get("segment"), m))
        return None

    def _array(self, a):
        shape = _ints(a.get("shape"), "shape")
        strides = a.get("strides")
        if strides is not None:
            strides = _ints(strides, "strides", len(shape))
        offset = _int(a.get("offset", 0), "offset")
        access = a.get("access", "inout")
        if access not in ("in", "out", "inout", None):
            raise ValueError("access %r is not in, out or inout" % (access,))
        path = a.get("path")
        if not isinstance(path, str):
            raise TypeError("path must be a string")
        try:
            m = self.segs.segment(a.get("id"), a.get("gen"), path,
                                  _int(a.get("size"), "size"))
        except (OSError, ValueError, OverflowError) as e:
            raise type(e)("cannot map %s: %s" % (path, e)) from None
        return view(m, a.get("dtype"), shape, offset, strides, access == "in"), m

    def end(self, msg, rep):
        """After the job: a numpy `result` becomes "result_array", and the
        job's array globals go (its leases end with it)."""
        np = sys.modules.get("numpy")
        if rep.get("ok") and np is not None and isinstance(rep.get("result"), np.ndarray):
            arr = rep.pop("result")
            if self.G.get("result") is arr:
                del self.G["result"]    # or it would pin the mapping
            try:
                rep["result_array"] = self._result(np, arr, msg)
            except Exception as e:
                rep["ok"] = False
                rep["error"] = error_text(e)
                rep["traceback"] = ""
            del arr
        G = self.G
        for name, v in self.bound.items():
            if G.get(name) is v:
                del G[name]
        self.bound.clear()
        self.given = []
        cuda = sys.modules.get(__package__ + ".cuda")
        if cuda is not None:
            # the job's device writes finish before its reply goes
            cerr = cuda.end_job()
            if cerr and rep.get("ok"):
                rep.update(ok=False, error=cerr, traceback="")

    def _result(self, np, arr, msg):
        dt = arr.dtype
        if dt.hasobject or dt.names is not None or dt.subdtype is not None:
            raise TypeError("a result array of dtype %s cannot be shared" % (dt,))
        ptr = arr.__array_interface__["data"][0]
        if arr.size:
            lo = hi = ptr
            for n, s in zip(arr.shape, arr.strides):
                if s < 0:
                    lo += (n - 1) * s
                else:
                    hi += (n - 1) * s
            hi += dt.itemsize
            for seg, m in self.given:
                base = m.address(np)
                if base <= lo and hi <= base + m.size:
                    return {"segment": seg, "dtype": dt.str, "shape": list(arr.shape),
                            "strides": list(arr.strides), "offset": ptr - base}
        return self._new_segment(np, arr, msg)

    def _new_segment(self, np, arr, msg):
        """Copies arr once, in C order, into a new file the daemon adopts."""
        shm_dir = self.api.shm_dir
        if not shm_dir:
            raise RuntimeError("no shared memory directory for an array result")
        jid = msg.get("id")
        if not isinstance(jid, int) or isinstance(jid, bool) or jid < 0:
            raise ValueError("job id %r cannot name a result segment" % (jid,))
        name = "r%d-%s" % (jid, os.urandom(8).hex())
        path = os.path.join(shm_dir, name)
        n = arr.nbytes
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if n:
                try:
                    os.posix_fallocate(fd, 0, n)   # pages reserved: no SIGBUS later
                except OSError as e:
                    if e.errno in (28, 122):       # ENOSPC, EDQUOT
                        raise OSError(e.errno, "shared memory quota: no room for a "
                                      "%d-byte result array in %s" % (n, shm_dir)) from None
                    raise
                mm = mmap.mmap(fd, n)
                try:
                    dst = np.ndarray(arr.shape, arr.dtype, buffer=mm)
                    dst[...] = arr
                    strides = list(dst.strides)
                    del dst                         # before close: no view left
                finally:
                    mm.close()
            else:
                strides = list(np.empty(arr.shape, arr.dtype).strides)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return {"segment": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                "strides": strides, "offset": 0}


def _fds_by_name(desc, fds):
    """{global name: fd} from an exec's "fds" and the descriptors that
    came with it; (mapping, error text or None)."""
    if desc is None and not fds:
        return {}, None
    n = len(desc) if isinstance(desc, list) else 0
    if n != len(fds):
        return {}, ("ValueError: the job names %d descriptor(s) and %d came with it"
                    % (n, len(fds)))
    byname = {}
    for d, fd in zip(desc, fds):
        name = d.get("for") if isinstance(d, dict) else None
        if not isinstance(name, str) or name in byname or d.get("kind") != "cuda":
            return {}, "ValueError: \"fds\" entries must be {for: a global, kind: \"cuda\"}"
        byname[name] = fd
    return byname, None


def _bind_value(v):
    if not (isinstance(v, dict) and len(v) == 1 and "__ndarray__" in v):
        return v
    d = v["__ndarray__"]
    if not isinstance(d, dict) or not isinstance(d.get("dtype"), str) \
            or not isinstance(d.get("data"), list):
        raise TypeError("__ndarray__ needs a string \"dtype\" and a list \"data\"")
    shape = _ints(d.get("shape"), "shape")
    np = numpy_or_none()
    if np is None:
        return d["data"]
    return np.array(d["data"], dtype=np.dtype(d["dtype"])).reshape(shape)
