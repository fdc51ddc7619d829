"""DLPack capsules built with ctypes, for a framework that takes DLPack and
nothing else (TensorFlow's tf.experimental.dlpack.from_dlpack) when no
other framework is loaded to make one.  The same code serves device
buffers (kDLCUDA) and host ones (kDLCPU, which numpy.from_dlpack reads:
the tests check it there).

A capsule named "dltensor" points at a DLManagedTensor of the DLPack ABI
(dlpack.h, version 0.x: the legacy, unversioned struct every consumer
takes).  The consumer renames the capsule "used_dltensor" and calls the
deleter when it is done with the memory.  Until then the struct, its shape
and strides stay in _live, with the capsule itself.  A capsule nobody took
(a consumer that refused it drops it, often with an exception pending,
when no Python code can run as its destructor) has no destructor: the
next capsule made, or live(), finds it held by _live alone and still
named "dltensor", and forgets it.  The memory itself is the caller's: the
deleter releases nothing but this bookkeeping.
"""
import ctypes
import sys

KDL_CPU = 1
KDL_CUDA = 2
_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}     # kDLInt, kDLUInt, kDLFloat, kDLComplex, kDLBool
_NAME = b"dltensor"


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Managed))
_Managed._fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p),
                     ("deleter", _DELETER)]

_live = {}          # address of a DLManagedTensor -> (it, shape, strides, capsule)

_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]


@_DELETER
def _deleter(managed):
    _live.pop(ctypes.addressof(managed.contents), None)


def _sweep():
    """Forgets the tensors of capsules nobody took and nobody holds."""
    for addr, entry in list(_live.items()):
        cap = entry[3]
        # held here (entry, cap, the argument) and nowhere else, unrenamed
        if sys.getrefcount(cap) <= 3 and _api.PyCapsule_IsValid(cap, _NAME):
            del _live[addr]


def dtype_of(typestr):
    """A numpy typestr ("<f4", "|u1", "|b1") as DLPack's (code, bits)."""
    if not (isinstance(typestr, str) and len(typestr) >= 3 and typestr[1] in _CODES
            and typestr[2:].isdigit()):
        raise ValueError("dtype %r has no DLPack type" % (typestr,))
    if typestr[0] == ">" and typestr[2:] != "1":
        raise ValueError("DLPack has no big-endian types (%r)" % (typestr,))
    return _CODES[typestr[1]], 8 * int(typestr[2:])


def capsule(ptr, shape, typestr, strides=None, device_type=KDL_CUDA, device_id=0):
    """A "dltensor" capsule of the buffer at ptr: shape, numpy typestr,
    strides in bytes (None: C order), on the device given."""
    code, bits = dtype_of(typestr)
    item = bits // 8
    ndim = len(shape)
    m = _Managed()
    dims = (ctypes.c_int64 * max(ndim, 1))(*shape)
    steps = None
    t = m.dl_tensor
    t.data = ptr
    t.device = _Device(device_type, device_id)
    t.ndim = ndim
    t.dtype = _DataType(code, bits, 1)
    t.shape = ctypes.cast(dims, ctypes.POINTER(ctypes.c_int64))
    if strides is not None:
        if any(s % item for s in strides):
            raise ValueError("strides %r are not whole elements of %d bytes" % (strides, item))
        steps = (ctypes.c_int64 * max(ndim, 1))(*[s // item for s in strides])
        t.strides = ctypes.cast(steps, ctypes.POINTER(ctypes.c_int64))
    t.byte_offset = 0
    m.deleter = _deleter
    _sweep()
    cap = _api.PyCapsule_New(ctypes.addressof(m), _NAME, None)
    _live[ctypes.addressof(m)] = (m, dims, steps, cap)
    return cap


class Buffer:
    """An object with __dlpack__ and __dlpack_device__ (what
    numpy.from_dlpack and the array API's from_dlpack take)."""

    def __init__(self, ptr, shape, typestr, strides=None, device_type=KDL_CUDA, device_id=0):
        self.args = (ptr, tuple(shape), typestr, strides, device_type, device_id)

    def __dlpack__(self, stream=None, **_):
        # The producer's work is ordered already (the event was waited on,
        # or the stream synchronised): nothing to order on `stream`.
        return capsule(*self.args)

    def __dlpack_device__(self):
        return (self.args[4], self.args[5])


def live():
    """DLManagedTensors not yet given back by their consumer (tests)."""
    _sweep()
    return len(_live)
