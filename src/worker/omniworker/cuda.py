"""CUDA buffers handed to a job: a bound value {"__cuda_ipc__": desc} is
mapped through libomnipkg-cuda (loaded with ctypes, so no build per
interpreter) and bound as a tensor of the framework the job uses, without
a copy: cupy and torch take __cuda_array_interface__, jax takes DLPack
(through cupy; without cupy, jax.numpy.asarray of the interface, which
may copy), TensorFlow takes DLPack (tf.experimental.dlpack.from_dlpack)
made by cupy or torch when the job has loaded one, else built here with
ctypes (omniworker.dlpack).  The mapping is opened once per process (the
library keeps it cached by handle) and released when the job ends, after a
device sync so the job's writes are done before its reply.  A handle that
carries the producer's event is waited for before the job runs.

desc: {"handle": hex of the library's wire form, "shape": [...],
"dtype": numpy typestr ("<f4"), "strides": bytes per dimension or null,
"lib": the client's libomnipkg-cuda path or null, "framework": "auto",
"cupy", "torch", "jax", "tensorflow" or "raw", "readonly": bool}.  A
handle of a VMM allocation (kind fd) comes with its POSIX descriptor,
sent with the exec (its "fds" names the global it is for).

Nothing here runs before a job binds such a value: the zygote never loads
the driver.
"""
import ctypes
import os
import sys

_lib = None
_held = []          # handles imported for the running job


KIND_IPC, KIND_FD = 1, 2           # enum ocu_kind
FRAMEWORKS = ("auto", "cupy", "torch", "jax", "tensorflow", "raw")


class _Handle(ctypes.Structure):
    """struct ocu_handle (omnicuda.h)."""
    _fields_ = [("kind", ctypes.c_uint32), ("device", ctypes.c_int32),
                ("alloc_size", ctypes.c_uint64), ("offset", ctypes.c_uint64),
                ("nbytes", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("fd", ctypes.c_int32), ("ipc", ctypes.c_ubyte * 64),
                ("event", ctypes.c_ubyte * 64)]


def library(path=None):
    """The loaded libomnipkg-cuda (path, $OMNIPKG_CUDA_LIB, or the system's)."""
    global _lib
    if _lib is None:
        name = path or os.environ.get("OMNIPKG_CUDA_LIB") or "libomnipkg-cuda.so.0"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise RuntimeError("no CUDA support library (%s): %s" % (name, e)) from None
        P = ctypes.POINTER(_Handle)
        for fn, args in (("ocu_load", [ctypes.c_char_p, ctypes.c_size_t]),
                         ("ocu_handle_unhex", [ctypes.c_char_p, P, ctypes.c_char_p,
                                               ctypes.c_size_t]),
                         ("ocu_import", [P, ctypes.POINTER(ctypes.c_uint64), ctypes.c_char_p,
                                         ctypes.c_size_t]),
                         ("ocu_release", [P]), ("ocu_refs", [P]),
                         ("ocu_sync", [ctypes.c_char_p, ctypes.c_size_t])):
            getattr(lib, fn).argtypes = args
            getattr(lib, fn).restype = ctypes.c_int
        _lib = lib
    return _lib


def _check(rc, err):
    if rc:
        raise RuntimeError(err.value.decode(errors="replace") or "CUDA error %d" % rc)


class DeviceArray:
    """A device buffer as __cuda_array_interface__ (version 3)."""

    def __init__(self, ptr, shape, typestr, strides, readonly, nbytes, device=0):
        self.ptr, self.shape, self.typestr = ptr, tuple(shape), typestr
        self.strides, self.readonly, self.nbytes = strides, readonly, nbytes
        self.device = device

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.typestr,
                "data": (self.ptr, self.readonly), "version": 3,
                "strides": tuple(self.strides) if self.strides is not None else None,
                "stream": None}

    def __repr__(self):
        return "DeviceArray(ptr=%#x, shape=%r, typestr=%r)" % (self.ptr, self.shape,
                                                                self.typestr)


def _span(shape, strides, itemsize):
    """Bytes from the first element to past the last; strides >= 0."""
    if any(n == 0 for n in shape):
        return 0
    if strides is None:
        n = itemsize
        for d in shape:
            n *= d
        return n
    return sum((d - 1) * s for d, s in zip(shape, strides)) + itemsize


def _itemsize(typestr):
    if not (isinstance(typestr, str) and len(typestr) >= 3 and typestr[0] in "<>|="
            and typestr[1] in "biufc" and typestr[2:].isdigit()):
        raise ValueError("dtype %r is not a typestr such as \"<f4\"" % (typestr,))
    return int(typestr[2:])


def dlpack_capsule(arr):
    """A DLPack capsule of arr: made by cupy or torch when the job has
    loaded one (they know their own devices best), else with ctypes."""
    if "cupy" in sys.modules:
        return sys.modules["cupy"].asarray(arr).toDlpack()
    if "torch" in sys.modules:
        import torch.utils.dlpack
        return torch.utils.dlpack.to_dlpack(torch.as_tensor(arr, device="cuda:%d" % arr.device))
    from . import dlpack
    return dlpack.capsule(arr.ptr, arr.shape, arr.typestr, arr.strides, dlpack.KDL_CUDA,
                          arr.device)


def _wrap(arr, framework):
    if framework == "raw":
        return arr
    order = [framework] if framework != "auto" else \
        [m for m in ("cupy", "torch", "jax", "tensorflow") if m in sys.modules] + \
        ["cupy", "torch", "jax", "tensorflow"]
    for name in order:
        try:
            if name == "tensorflow":
                import tensorflow as tf
                return tf.experimental.dlpack.from_dlpack(dlpack_capsule(arr))
            if name == "cupy":
                import cupy
                return cupy.asarray(arr)
            if name == "torch":
                import torch
                return torch.as_tensor(arr, device="cuda")
            if name == "jax":
                import jax.dlpack
                try:
                    import cupy
                except ImportError:
                    # no DLPack bridge: jax reads the interface (may copy)
                    import jax.numpy as jnp
                    return jnp.asarray(arr)
                return jax.dlpack.from_dlpack(cupy.asarray(arr))
        except ImportError:
            if framework != "auto":
                raise
    return arr      # no framework importable: the raw interface


def bind(desc, fd=None):
    """The job-side value of {"__cuda_ipc__": desc}, with the descriptor
    that came for it (borrowed) if any; held until end_job()."""
    if not isinstance(desc, dict):
        raise TypeError("__cuda_ipc__ needs an object")
    shape = desc.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError("shape must be a list of non-negative integers")
    typestr = desc.get("dtype")
    item = _itemsize(typestr)
    strides = desc.get("strides")
    if strides is not None and (not isinstance(strides, list) or len(strides) != len(shape)
                                or not all(isinstance(s, int) and s >= 0 for s in strides)):
        raise ValueError("strides must be a list of non-negative integers, one per dimension")
    hexs = desc.get("handle")
    if not isinstance(hexs, str):
        raise TypeError("handle must be a hex string")
    framework = desc.get("framework", "auto")
    if framework not in FRAMEWORKS:
        raise ValueError("framework %r unknown" % (framework,))
    lib = library(desc.get("lib"))
    err = ctypes.create_string_buffer(512)
    h = _Handle()
    _check(lib.ocu_handle_unhex(hexs.encode(), ctypes.byref(h), err, len(err)), err)
    if (h.kind == KIND_FD) != (fd is not None):
        raise ValueError("a %s handle came %s a descriptor" % (
            "descriptor" if h.kind == KIND_FD else "IPC",
            "without" if fd is None else "with"))
    h.fd = -1 if fd is None else fd
    need = _span(shape, strides, item)
    if need > h.nbytes:
        raise ValueError("shape %r of %s needs %d bytes; the buffer has %d"
                         % (shape, typestr, need, h.nbytes))
    ptr = ctypes.c_uint64()
    _check(lib.ocu_import(ctypes.byref(h), ctypes.byref(ptr), err, len(err)), err)
    _held.append(h)
    arr = DeviceArray(ptr.value, shape, typestr, strides, bool(desc.get("readonly")), need,
                      h.device)
    return _wrap(arr, framework)


def end_job():
    """Waits for the job's device work, then drops its mappings' uses (the
    mappings stay cached).  Returns an error text or None."""
    if not _held:
        return None
    err = ctypes.create_string_buffer(512)
    rc = _lib.ocu_sync(err, len(err))
    while _held:
        _lib.ocu_release(ctypes.byref(_held.pop()))
    if rc:
        return "RuntimeError: CUDA: %s" % err.value.decode(errors="replace")
    return None


def opens():
    """Handles this process has opened (cache misses); 0 before any."""
    if _lib is None:
        return 0
    _lib.ocu_opens.restype = ctypes.c_uint64
    return _lib.ocu_opens()


def refs(hexs):
    """Users of a handle's mapping in this process (-1: not mapped); tests."""
    lib = library()
    err = ctypes.create_string_buffer(256)
    h = _Handle()
    _check(lib.ocu_handle_unhex(hexs.encode(), ctypes.byref(h), err, len(err)), err)
    return lib.ocu_refs(ctypes.byref(h))
