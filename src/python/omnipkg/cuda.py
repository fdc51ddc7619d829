"""The client side of CUDA IPC: a device tensor described for a worker.

A tensor (torch, cupy, or anything with __cuda_array_interface__) is
exported through libomnipkg-cuda, loaded with ctypes from $OMNIPKG_CUDA_LIB
or the system's library path: what names its allocation, its offset, and
an interprocess event recorded on the stream it was written on (the worker
waits for it; where the driver has none, the stream is synchronised
first).  The allocation is named by the IPC handle of its base, or, for a
VMM allocation that allows one (PyTorch's expandable segments), by a POSIX
descriptor that goes with the request (SCM_RIGHTS).  The worker maps the
same memory, so what it writes into tensor_out lands in the caller's
tensor, with no copy either way.

mode: "auto" (a descriptor where the allocation allows one, else the IPC
handle), "ipc" or "fd".

Without a driver or a device every call raises CudaUnavailable
("no CUDA driver (libcuda.so.1 not found)" / "no CUDA device").
"""
import ctypes
import os


class CudaUnavailable(RuntimeError):
    """No CUDA here: no support library, no driver or no device."""


class _Handle(ctypes.Structure):
    """struct ocu_handle (omnicuda.h)."""
    _fields_ = [("kind", ctypes.c_uint32), ("device", ctypes.c_int32),
                ("alloc_size", ctypes.c_uint64), ("offset", ctypes.c_uint64),
                ("nbytes", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("fd", ctypes.c_int32), ("ipc", ctypes.c_ubyte * 64),
                ("event", ctypes.c_ubyte * 64)]


_lib = None
_lib_path = None
WIRE_SIZE = 176
MODES = {"auto": 0, "ipc": 0x1, "fd": 0x2}     # OCU_EXPORT_* flags
EXPORT_SYNC = 0x4

_TORCH_TYPESTR = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "int8": "|i1",
                  "int16": "<i2", "int32": "<i4", "int64": "<i8", "uint8": "|u1",
                  "bool": "|b1", "complex64": "<c8", "complex128": "<c16"}


def library():
    """(ctypes library, the path it was loaded by)."""
    global _lib, _lib_path
    if _lib is None:
        name = os.environ.get("OMNIPKG_CUDA_LIB") or "libomnipkg-cuda.so.0"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise CudaUnavailable("no CUDA: libomnipkg-cuda not found (%s)" % e) from None
        P = ctypes.POINTER(_Handle)
        lib.ocu_load.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.ocu_export_with.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p,
                                        ctypes.c_uint, P, ctypes.c_char_p, ctypes.c_size_t]
        lib.ocu_handle_hex.argtypes = [P, ctypes.c_char_p]
        lib.ocu_handle_hex.restype = None
        for fn in (lib.ocu_load, lib.ocu_export_with):
            fn.restype = ctypes.c_int
        _lib = lib
        _lib_path = os.path.abspath(name) if os.sep in name else name
    return _lib, _lib_path


def check():
    """Raises CudaUnavailable unless a driver and a device are there."""
    lib, _ = library()
    err = ctypes.create_string_buffer(512)
    if lib.ocu_load(err, len(err)):
        raise CudaUnavailable("no CUDA: " + err.value.decode(errors="replace"))


def is_device_tensor(x):
    if getattr(x, "is_cuda", False) is True:
        return True
    try:
        return isinstance(x.__cuda_array_interface__, dict)
    except Exception:
        return False


def interface(t):
    """(ptr, shape, typestr, strides in bytes or None, stream handle)."""
    if getattr(t, "is_cuda", False) is True and hasattr(t, "data_ptr"):    # torch
        import torch
        name = str(t.dtype).replace("torch.", "")
        if name not in _TORCH_TYPESTR:
            raise TypeError("a %s tensor has no CUDA array interface type" % t.dtype)
        item = t.element_size()
        strides = [s * item for s in t.stride()]
        stream = torch.cuda.current_stream(t.device).cuda_stream
        return t.data_ptr(), list(t.shape), _TORCH_TYPESTR[name], strides, stream
    cai = t.__cuda_array_interface__
    stream = cai.get("stream")
    if stream in (None, 1, 2):
        stream = 0 if stream in (None, 1) else 2    # legacy or per-thread default
    st = cai.get("strides")
    return cai["data"][0], list(cai["shape"]), cai["typestr"], \
        list(st) if st is not None else None, stream


def _span(shape, strides, item):
    if any(n == 0 for n in shape):
        return 0
    if strides is None:
        n = item
        for d in shape:
            n *= d
        return n
    if any(s < 0 for s in strides):
        raise ValueError("tensors with negative strides cannot be shared")
    return sum((d - 1) * s for d, s in zip(shape, strides)) + item


def describe(t, framework="auto", readonly=False, mode="auto", sync=False):
    """(the bound value for a worker, {"__cuda_ipc__": {...}}; the POSIX
    descriptor that must go with it, the caller's to close, or None).
    sync: synchronise the stream instead of recording an event."""
    if mode not in MODES:
        raise ValueError("mode %r: one of %s" % (mode, ", ".join(MODES)))
    lib, path = library()
    ptr, shape, typestr, strides, stream = interface(t)
    nbytes = _span(shape, strides, int(typestr[2:]))
    h = _Handle()
    err = ctypes.create_string_buffer(512)
    rc = lib.ocu_export_with(ptr, max(nbytes, 1) if ptr else 0, ctypes.c_void_p(stream or None),
                             MODES[mode] | (EXPORT_SYNC if sync else 0), ctypes.byref(h), err,
                             len(err))
    if rc:
        msg = err.value.decode(errors="replace")
        if msg.startswith("no CUDA"):
            raise CudaUnavailable("no CUDA: " + msg)
        raise RuntimeError("CUDA export: " + msg)
    hexs = ctypes.create_string_buffer(2 * WIRE_SIZE + 1)
    lib.ocu_handle_hex(ctypes.byref(h), hexs)
    return ({"__cuda_ipc__": {"handle": hexs.value.decode(), "shape": shape,
                              "dtype": typestr, "strides": strides, "lib": path,
                              "framework": framework, "readonly": bool(readonly)}},
            h.fd if h.fd >= 0 else None)


def fd_entry(name, fd):
    """The exec request's "fds" entry for fd, bound as global name."""
    st = os.fstat(fd)
    return {"for": name, "kind": "cuda", "dev": st.st_dev, "ino": st.st_ino}


def empty_like_framework(t, shape, dtype):
    """A new device tensor of t's framework and device."""
    if getattr(t, "is_cuda", False) is True and hasattr(t, "data_ptr"):
        import torch
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype.replace("torch.", ""))
        return torch.empty(tuple(shape), dtype=dtype, device=t.device)
    import cupy
    with cupy.cuda.Device(getattr(getattr(t, "device", None), "id", 0)):
        return cupy.empty(tuple(shape), dtype=dtype)
