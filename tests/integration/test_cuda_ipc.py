"""CUDA IPC through the real daemon with the stand-in driver
(tests/cuda_stub): its "device memory" is POSIX shared memory, so a
worker's in-place writes are visible to the test as they would be on a GPU.

- without a driver, execute_cuda_ipc and execute_smart say "no CUDA";
- a buffer at a non-zero offset of its allocation reaches the worker at the
  right address, and the worker's writes land in the caller's buffer;
- repeated calls open each allocation once in the worker;
- the zygote never loads the driver: only forked workers call cuInit, and
  the zygote maps neither the driver nor libomnipkg-cuda;
- a VMM buffer goes as a POSIX descriptor (SCM_RIGHTS: client -> daemon ->
  worker), is mapped once by the worker however many calls bring it, and
  the worker's writes land in the caller's buffer;
- the worker waits for the producer's event: a "kernel" still writing
  when the call goes (the stub defers it) is finished before the job reads;
- a request whose descriptors do not match what it says (count, file,
  kind, owner) is refused with a clear error, the daemon goes on, and
  neither the daemon nor the worker holds a descriptor more after 100 calls;
- DLPack capsules built with ctypes (the worker's TensorFlow path) are read
  by numpy.from_dlpack without a copy, and give their memory back.
The real driver and frameworks are tests/gpu/'s.
"""
import ctypes
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import harness
from test_daemon import PY

BUILD = harness.build_dir()
STUB = os.path.join(BUILD, "tests", "cuda_stub", "libcuda_stub.so")
LIB = os.path.join(BUILD, "libomnipkg-cuda.so")
os.environ.setdefault("OMNIPKG_CUDA_DRIVER", STUB)
os.environ.setdefault("OMNIPKG_CUDA_LIB", LIB)

# A sanitized build's libomnipkg-cuda cannot load into an uninstrumented
# Python; its C side runs under ASan in unit_cuda and unit_cuda_capi.
SANITIZED = os.environ.get("OMNIPKG_TEST_SANITIZED") == "1"

from omnipkg import DaemonClient            # noqa: E402
from omnipkg import cuda as ocuda          # noqa: E402
from test_daemon import REAL_HOME          # noqa: E402

POSIX_FD = 1        # CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR


class FakeTensor:
    """A device buffer of the stand-in driver, as __cuda_array_interface__."""

    def __init__(self, ptr, shape, typestr="<f4", stream=None):
        self.ptr, self.shape, self.typestr, self.stream = ptr, shape, typestr, stream

    @property
    def __cuda_array_interface__(self):
        return {"shape": tuple(self.shape), "typestr": self.typestr,
                "data": (self.ptr, False), "version": 3, "strides": None,
                "stream": self.stream}


def load_stub():
    stub = ctypes.CDLL(STUB)
    stub.stub_alloc.restype = ctypes.c_uint64
    stub.stub_alloc.argtypes = [ctypes.c_size_t]
    stub.stub_free.argtypes = [ctypes.c_uint64]
    stub.stub_vmm_alloc.restype = ctypes.c_uint64
    stub.stub_vmm_alloc.argtypes = [ctypes.c_size_t, ctypes.c_uint]
    stub.stub_vmm_free.argtypes = [ctypes.c_uint64]
    stub.stub_stream_defer.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                       ctypes.c_size_t]
    stub.stub_stream_run.argtypes = [ctypes.c_void_p]
    return stub


def producer_context(stub):
    """A current context in this process, as a producer that allocated has
    (without one, exports synchronise the stream: no event)."""
    ctx = ctypes.c_void_p()
    assert stub.cuInit(0) == 0
    assert stub.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
    assert stub.cuCtxSetCurrent(ctx) == 0


def fd_targets(pid):
    out = []
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, n)))
        except OSError:
            pass        # closed meanwhile
    return out


def fd_count(pid, sockets=True):
    return len([t for t in fd_targets(pid) if sockets or not t.startswith("socket:")])


def passed(pid):
    """Descriptors of pid that look like ones a test sent (memory files,
    pipes): a daemon holds none of its own."""
    return [t for t in fd_targets(pid) if t.startswith("/memfd:") or t.startswith("pipe:")]


def fd_entry(name, fd):
    """A request's "fds" entry (what omnipkg.cuda.fd_entry writes)."""
    st = os.fstat(fd)
    return {"for": name, "kind": "cuda", "dev": st.st_dev, "ino": st.st_ino}


WORKER_CODE = textwrap.dedent("""
    import ctypes, os
    n = tensor_in.shape[0]
    src = (ctypes.c_float * n).from_address(tensor_in.ptr)
    dst = (ctypes.c_float * n).from_address(tensor_out.ptr)
    for i in range(n):
        dst[i] = src[i] * 2 + 1
    stub = ctypes.CDLL(os.environ["OMNIPKG_CUDA_DRIVER"])
    result = {"opens": stub.stub_calls(b"cuIpcOpenMemHandle_v2"), "pid": os.getpid(),
              "in_off": tensor_in.ptr % 4096}
    """)


@unittest.skipIf(SANITIZED, "sanitized libomnipkg-cuda does not load into Python")
@unittest.skipUnless(os.path.exists(STUB) and os.path.exists(LIB),
                     "libomnipkg-cuda or the stand-in driver not built")
class NoCudaTest(unittest.TestCase):
    def run_py(self, code, driver):
        env = dict(os.environ, OMNIPKG_CUDA_DRIVER=driver)
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)

    def test_no_driver(self):
        code = textwrap.dedent("""
            from omnipkg import DaemonClient, cuda
            class T:
                __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4",
                                            "data": (4096, False), "version": 3}
            c = DaemonClient(auto_start=False)
            for call in (lambda: c.execute_cuda_ipc("x", "pass", T(), [4], "float32"),
                         lambda: c.execute_smart("x", "pass", T())):
                try:
                    call()
                except cuda.CudaUnavailable as e:
                    print(e)
            """)
        r = self.run_py(code, "/nonexistent/libcuda.so.1")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        for line in lines:
            self.assertIn("no CUDA driver (/nonexistent/libcuda.so.1 not found)", line)

    def test_no_device(self):
        r = subprocess.run([sys.executable, "-c", "from omnipkg import cuda\n"
                            "try:\n cuda.check()\nexcept cuda.CudaUnavailable as e:\n print(e)"],
                           env=dict(os.environ, STUB_CUDA_NODEVICE="1"),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout.strip(), "no CUDA: no CUDA device", r.stderr)

    def test_not_a_device_tensor(self):
        with self.assertRaises(TypeError):
            DaemonClient(auto_start=False).execute_cuda_ipc("x", "pass", [1.0], [1], "float32")
        with self.assertRaises(ValueError):
            DaemonClient(auto_start=False).execute_cuda_ipc("x", "pass", FakeTensor(1, [1]),
                                                            [1], "float32", ipc_mode="bogus")


@unittest.skipIf(SANITIZED, "sanitized libomnipkg-cuda does not load into Python")
@unittest.skipUnless(os.path.exists(STUB) and os.path.exists(LIB),
                     "libomnipkg-cuda or the stand-in driver not built")
class WorkerBindTest(unittest.TestCase):
    """The worker's side of a descriptor, in this process (the stub allows
    opening one's own handles, which a real driver refuses)."""

    def setUp(self):
        sys.path.insert(0, os.path.join(harness.REPO, "src", "worker"))
        self.addCleanup(sys.path.remove, os.path.join(harness.REPO, "src", "worker"))
        from omniworker import cuda as wcuda
        self.w = wcuda
        self.stub = load_stub()
        self.a = self.stub.stub_alloc(1024)
        self.addCleanup(self.stub.stub_free, self.a)

    def desc(self, **kw):
        d, fd = ocuda.describe(FakeTensor(self.a + 64, [16]), framework="raw")
        self.assertIsNone(fd)
        d = d["__cuda_ipc__"]
        d.update(kw)
        return d

    def test_bound_at_offset_and_released(self):
        d = self.desc()
        arr = self.w.bind(d)
        self.assertEqual(arr.ptr, self.a + 64)
        self.assertEqual(arr.__cuda_array_interface__["shape"], (16,))
        self.assertEqual(self.w.refs(d["handle"]), 1)
        self.assertIsNone(self.w.end_job())
        self.assertEqual(self.w.refs(d["handle"]), 0)     # idle, still mapped

    def test_descriptor_where_none_belongs(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        with self.assertRaises(ValueError) as cm:
            self.w.bind(self.desc(), r)
        self.assertIn("IPC handle came with a descriptor", str(cm.exception))
        v = self.stub.stub_vmm_alloc(1 << 16, POSIX_FD)
        self.addCleanup(self.stub.stub_vmm_free, v)
        d, fd = ocuda.describe(FakeTensor(v, [16]), framework="raw")
        os.close(fd)
        with self.assertRaises(ValueError) as cm:
            self.w.bind(d["__cuda_ipc__"])
        self.assertIn("descriptor handle came without", str(cm.exception))

    def test_bad_descriptors(self):
        for kw, word in (({"shape": [17]}, "needs 68 bytes"), ({"dtype": "float32"}, "typestr"),
                         ({"shape": [-1]}, "non-negative"), ({"strides": [4, 4]}, "strides"),
                         ({"framework": "tf"}, "framework"), ({"handle": "00"}, "hex"),
                         ({"handle": 5}, "hex string")):
            with self.assertRaises((ValueError, TypeError, RuntimeError)) as cm:
                self.w.bind(self.desc(**kw))
            self.assertIn(word, str(cm.exception), kw)
        self.assertIsNone(self.w.end_job())


@unittest.skipIf(SANITIZED, "sanitized libomnipkg-cuda does not load into Python")
@unittest.skipUnless(os.path.exists(STUB) and os.path.exists(LIB),
                     "libomnipkg-cuda or the stand-in driver not built")
class StubIpcTest(unittest.TestCase):
    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        if "3.11" not in PY:
            self.skipTest("python 3.11 not installed")
        self.d = harness.DaemonFixture(config={"zygote": True})
        self.log = os.path.join(self.d.tmp, "cuda-calls.log")
        self.d.env.update(OMNIPKG_CUDA_DRIVER=STUB, OMNIPKG_CUDA_LIB=LIB, STUB_CUDA_LOG=self.log)
        self.d.start()
        self.addCleanup(self.d.stop)
        self.c = DaemonClient(socket_path=self.d.socket, auto_start=False)
        self.addCleanup(self.c.close)
        self.stub = ctypes.CDLL(STUB)
        self.stub.stub_alloc.restype = ctypes.c_uint64
        self.stub.stub_alloc.argtypes = [ctypes.c_size_t]
        self.stub.stub_free.argtypes = [ctypes.c_uint64]
        self.a = self.stub.stub_alloc(4096)
        self.b = self.stub.stub_alloc(4096)
        self.addCleanup(self.stub.stub_free, self.a)
        self.addCleanup(self.stub.stub_free, self.b)

    def call(self):
        n = 16
        src = (ctypes.c_float * n).from_address(self.a + 256)
        for i in range(n):
            src[i] = i + 0.5
        out = FakeTensor(self.b + 1024, [n])
        got, rep = self.c.execute_cuda_ipc("base", WORKER_CODE, FakeTensor(self.a + 256, [n]),
                                           None, None, python_exe=PY["3.11"], out=out,
                                           framework="raw")
        self.assertIs(got, out)
        self.assertTrue(rep["success"], rep)
        dst = (ctypes.c_float * n).from_address(self.b + 1024)
        self.assertEqual(list(dst), [(i + 0.5) * 2 + 1 for i in range(n)])
        return rep

    def result(self, rep):
        # omnipkg's shape: a dict result's keys are the reply's
        r = rep.get("job_result")
        return r if isinstance(r, dict) else rep

    def test_offset_in_place_and_cached(self):
        first = self.result(self.call())
        self.assertEqual(first["in_off"], 256)
        self.assertEqual(first["opens"], 2)         # two allocations
        for _ in range(50):
            r = self.result(self.call())
        self.assertEqual(r["pid"], first["pid"])
        self.assertEqual(r["opens"], 2)

    def test_zygote_never_loads_the_driver(self):
        r = self.result(self.call())
        worker = r["pid"]
        with open(self.log) as f:
            init_pids = {int(line.split()[0]) for line in f if line.split()[1] == "cuInit"}
        self.assertIn(worker, init_pids)
        # the zygote and any worker it forked that ran no CUDA job
        zygotes = [p for p in harness.all_pids() if p not in (worker, os.getpid())
                   and self.d.runtime in harness.proc_cmdline(p)
                   and " zygote " in harness.proc_cmdline(p) + " "]
        self.assertTrue(zygotes, "no zygote found")
        for p in zygotes:
            self.assertNotIn(p, init_pids)
            with open("/proc/%d/maps" % p) as f:
                maps = f.read()
            self.assertNotIn("libcuda", maps)
            self.assertNotIn("libomnipkg-cuda", maps)


class FdRequests:
    """Requests carrying descriptors, as a client could send any."""

    def raw(self, fds, desc, bind=None, op="exec"):
        """A request with descriptors as given; the raw reply."""
        args = {}
        if op == "exec":
            args = dict(spec="base", code="result = 7", python=PY["3.11"],
                        bind={"t": 1} if bind is None else bind, fds=desc)
        return self.c.call(op, _send_fds=fds, **args)

    def assertRefused(self, r, word):
        self.assertFalse(r["ok"], r)
        self.assertEqual(r.get("reason"), "badarg", r)
        self.assertIn(word, r["error"])

    def bad_requests(self, fv, fw, bind):
        """Requests whose descriptors (fv, fw: for "t" and "u" of bind) do not
        match what they say, each refused with what was wrong."""
        good = [fd_entry("t", fv), fd_entry("u", fw)]
        for fds, desc, word in (
                ([fv], good, 'names 2 descriptor(s) in "fds" and carries 1'),
                ([fv], None, 'names 0 descriptor(s) in "fds" and carries 1'),
                ([], good[:1], 'names 1 descriptor(s) in "fds" and carries 0'),
                ([fv] * 9, [good[0]] * 9, "more than 8 descriptors"),
                ([fw, fv], good, "is not the file the request describes"),
                ([fv], [dict(good[0], kind="dmabuf")], "kind must be"),
                ([fv], [dict(good[0], **{"for": "nope"})], "must name a global"),
                ([fv, fv], [good[0], good[0]], "a second descriptor"),
                ([fv], [{"for": "t"}], "fds[0] must be")):
            self.assertRefused(self.raw(fds, desc, bind), word)
        r, w = os.pipe()
        try:
            self.assertRefused(self.raw([r], [fd_entry("t", r)], bind), "is a pipe")
        finally:
            os.close(r)
            os.close(w)
        self.assertRefused(self.raw([fv], None, op="status"), "status takes no descriptors")


class DaemonFdTest(FdRequests, unittest.TestCase):
    """Descriptors through the daemon without CUDA (so the sanitized build
    runs it too): memory files stand for a driver's, bound to plain values,
    which the worker refuses after it got them."""

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        if "3.11" not in PY:
            self.skipTest("python 3.11 not installed")
        self.d = harness.DaemonFixture()
        self.d.start()
        self.addCleanup(self.d.stop)
        self.c = DaemonClient(socket_path=self.d.socket, auto_start=False)
        self.addCleanup(self.c.close)
        self.m = [os.memfd_create("fd-test-%d" % i) for i in range(2)]
        for fd in self.m:
            self.addCleanup(os.close, fd)

    def good(self):
        """A request the daemon takes: the worker gets the descriptor."""
        r = self.raw(self.m[:1], [fd_entry("t", self.m[0])])
        self.assertFalse(r["ok"], r)
        self.assertEqual(r.get("reason"), "exception", r)
        self.assertIn("descriptors for t, which bind no CUDA buffer", r["error"])
        return r

    def test_refused_and_the_daemon_goes_on(self):
        self.bad_requests(self.m[0], self.m[1], {"t": 1, "u": 2})
        self.good()
        self.assertEqual(self.c.call("exec", spec="base", code="result = 5",
                                     python=PY["3.11"])["result"], 5)

    def test_no_descriptor_leaks(self):
        worker = self.good()["worker_pid"]
        daemon = self.c.call("status")["pid"]
        before, wbefore = fd_count(daemon, sockets=False), fd_count(worker)
        for _ in range(100):
            self.assertEqual(self.good()["worker_pid"], worker)
        self.bad_requests(self.m[0], self.m[1], {"t": 1, "u": 2})
        # none of what came stays; sockets aside (the daemon may start a
        # zygote or a spare worker meanwhile), nothing else came either
        self.assertEqual(passed(daemon), [])
        self.assertEqual(fd_count(daemon, sockets=False), before)
        self.assertEqual(fd_count(worker), wbefore)


FD_CODE = textwrap.dedent("""
    import ctypes, os
    n = tensor_in.shape[0]
    src = (ctypes.c_float * n).from_address(tensor_in.ptr)
    dst = (ctypes.c_float * n).from_address(tensor_out.ptr)
    for i in range(n):
        dst[i] = src[i] * 2 + 1
    stub = ctypes.CDLL(os.environ["OMNIPKG_CUDA_DRIVER"])
    result = {name: stub.stub_calls(name.encode()) for name in (
        "cuMemImportFromShareableHandle", "cuMemMap", "cuMemSetAccess", "cuIpcOpenMemHandle_v2",
        "cuIpcOpenEventHandle", "cuEventSynchronize")}
    result.update(pid=os.getpid(), fds=len(os.listdir("/proc/self/fd")),
                  ptrs=[tensor_in.ptr, tensor_out.ptr], first=src[0])
    """)


@unittest.skipIf(SANITIZED, "sanitized libomnipkg-cuda does not load into Python")
@unittest.skipUnless(os.path.exists(STUB) and os.path.exists(LIB),
                     "libomnipkg-cuda or the stand-in driver not built")
class StubFdTest(FdRequests, unittest.TestCase):
    """VMM buffers as descriptors, and events, through the real daemon."""

    @classmethod
    def setUpClass(cls):
        cls.stub = load_stub()
        producer_context(cls.stub)

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        if "3.11" not in PY:
            self.skipTest("python 3.11 not installed")
        self.d = harness.DaemonFixture()
        self.d.env.update(OMNIPKG_CUDA_DRIVER=STUB, OMNIPKG_CUDA_LIB=LIB)
        self.d.start()
        self.addCleanup(self.d.stop)
        self.c = DaemonClient(socket_path=self.d.socket, auto_start=False)
        self.addCleanup(self.c.close)
        self.a = self.stub.stub_vmm_alloc(1 << 16, POSIX_FD)
        self.b = self.stub.stub_vmm_alloc(1 << 16, POSIX_FD)
        self.assertTrue(self.a and self.b)
        self.addCleanup(self.stub.stub_vmm_free, self.a)
        self.addCleanup(self.stub.stub_vmm_free, self.b)

    def fill(self, ptr, n):
        src = (ctypes.c_float * n).from_address(ptr)
        for i in range(n):
            src[i] = i + 0.5
        return src

    def call(self, x, out, n=16, mode="fd", **kw):
        got, rep = self.c.execute_cuda_ipc("base", FD_CODE, x, None, None, python_exe=PY["3.11"],
                                           out=out, framework="raw", ipc_mode=mode, **kw)
        self.assertIs(got, out)
        self.assertTrue(rep["success"], rep)
        return rep.get("job_result") if isinstance(rep.get("job_result"), dict) else rep

    def test_descriptor_in_place_and_mapped_once(self):
        n = 16
        self.fill(self.a + 4096, n)
        x, out = FakeTensor(self.a + 4096, [n]), FakeTensor(self.b + 8192, [n])
        first = self.call(x, out)
        mine = fd_count(os.getpid())                # connected now
        dst = (ctypes.c_float * n).from_address(self.b + 8192)
        self.assertEqual(list(dst), [(i + 0.5) * 2 + 1 for i in range(n)])
        # the worker mapped both allocations from their descriptors, at
        # addresses of its own, the offsets kept
        self.assertEqual(first["cuMemImportFromShareableHandle"], 2)
        self.assertEqual(first["cuMemMap"], 2)
        self.assertEqual(first["cuMemSetAccess"], 2)
        self.assertEqual(first["cuIpcOpenMemHandle_v2"], 0)
        self.assertEqual(first["ptrs"][0] % 65536, 4096)
        self.assertEqual(first["ptrs"][1] % 65536, 8192)
        self.assertNotEqual(first["ptrs"][0], self.a + 4096)
        for i in range(30):
            self.fill(self.a + 4096, n)[0] = i
            r = self.call(x, out)
            self.assertEqual(r["first"], i)
        self.assertEqual(r["pid"], first["pid"])
        self.assertEqual(r["cuMemImportFromShareableHandle"], 2)     # cached
        self.assertEqual(r["cuIpcOpenEventHandle"], 1)               # one stream, one event
        self.assertEqual(r["cuEventSynchronize"], 2 * 31)            # waited on every import
        self.assertEqual(r["fds"], first["fds"])                     # the worker closed them
        self.assertEqual(fd_count(os.getpid()), mine)                # and so did we

    def test_auto_mixes_kinds(self):
        legacy = self.stub.stub_alloc(4096)
        self.addCleanup(self.stub.stub_free, legacy)
        self.fill(legacy, 16)
        r = self.call(FakeTensor(legacy, [16]), FakeTensor(self.b, [16]), mode="auto")
        self.assertEqual(r["cuIpcOpenMemHandle_v2"], 1)
        self.assertEqual(r["cuMemImportFromShareableHandle"], 1)
        # ipc asked of a VMM buffer: the driver has no IPC handle for it
        with self.assertRaises(RuntimeError) as cm:
            self.call(FakeTensor(self.a, [16]), FakeTensor(self.b, [16]), mode="ipc")
        self.assertIn("cuIpcGetMemHandle", str(cm.exception))
        with self.assertRaises(RuntimeError) as cm:
            self.call(FakeTensor(legacy, [16]), FakeTensor(self.b, [16]), mode="fd")
        self.assertIn("POSIX descriptor", str(cm.exception))

    def deferred(self, sync):
        """A "kernel" on stream s writes tensor_in after the call went."""
        s = 0x7000
        n = 16
        self.fill(self.a, n)
        self.assertEqual(self.stub.stub_stream_defer(s, self.a, 0x41, 4 * n), 0)
        later = threading.Timer(0.3, self.stub.stub_stream_run, (s,))
        later.start()
        self.addCleanup(later.cancel)
        t0 = time.monotonic()
        r = self.call(FakeTensor(self.a, [n], stream=s), FakeTensor(self.b, [n]), sync=sync)
        # synchronised, the stream finished here; else the worker waited
        if not sync:
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        # 0x41414141 as a float: what the kernel wrote, not what was there
        self.assertEqual(r["first"], struct.unpack("<f", b"AAAA")[0])
        return r

    def test_worker_waits_for_the_event(self):
        r = self.deferred(False)
        self.assertEqual(r["cuIpcOpenEventHandle"], 2)    # the deferred stream's and the default's
        self.assertEqual(r["cuEventSynchronize"], 2)

    def test_stream_synchronised_instead(self):
        r = self.deferred(True)
        self.assertEqual(r["cuIpcOpenEventHandle"], 0)
        self.assertEqual(r["cuEventSynchronize"], 0)

    def test_mismatched_descriptors_refused(self):
        v, w = [ocuda.describe(FakeTensor(p, [16]), framework="raw") for p in (self.a, self.b)]
        try:
            self.bad_requests(v[1], w[1], {"t": v[0], "u": w[0]})
        finally:
            os.close(v[1])
            os.close(w[1])
        # the daemon and this connection go on
        self.assertTrue(self.c.call("status")["ok"])
        self.fill(self.a, 16)
        self.call(FakeTensor(self.a, [16]), FakeTensor(self.b, [16]))

    def test_worker_dies_holding_descriptors(self):
        x, out = FakeTensor(self.a, [16]), FakeTensor(self.b, [16])
        self.fill(self.a, 16)
        first = self.call(x, out)["pid"]
        daemon = self.c.call("status")["pid"]
        before = fd_count(daemon)
        with self.assertRaises(RuntimeError) as cm:
            self.c.execute_cuda_ipc("base", "import os\nos._exit(3)", x, None, None,
                                    python_exe=PY["3.11"], out=out, framework="raw",
                                    ipc_mode="fd")
        self.assertIn("exit", str(cm.exception))
        self.assertNotEqual(self.call(x, out)["pid"], first)     # a new worker
        # the dead worker's channel and cgroup go once it is reaped
        deadline = time.monotonic() + 10
        while fd_count(daemon) != before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(passed(daemon), [])
        self.assertEqual(fd_count(daemon), before)

    def test_no_descriptor_leaks(self):
        x, out = FakeTensor(self.a, [16]), FakeTensor(self.b, [16])
        self.fill(self.a, 16)
        worker = self.call(x, out)["pid"]          # the worker started, its mappings made
        daemon = self.c.call("status")["pid"]
        before, wbefore = fd_count(daemon), fd_count(worker)
        for _ in range(100):
            r = self.call(x, out)
        self.assertEqual(r["pid"], worker)
        self.assertEqual(passed(daemon), [])
        self.assertEqual(fd_count(daemon), before)
        self.assertEqual(fd_count(worker), wbefore)


class DlpackTest(unittest.TestCase):
    """omniworker.dlpack's capsules, read by numpy.from_dlpack (host
    memory, kDLCPU): the same capsule code the worker hands TensorFlow for
    device memory (kDLCUDA)."""

    CODE = textwrap.dedent("""
        import ctypes, gc, numpy as np
        from omniworker import dlpack
        buf = (ctypes.c_float * 12)(*range(12))
        addr = ctypes.addressof(buf)
        a = np.from_dlpack(dlpack.Buffer(addr, [3, 4], "<f4", device_type=dlpack.KDL_CPU))
        assert a.shape == (3, 4) and a.dtype == np.float32, (a.shape, a.dtype)
        assert a.__array_interface__["data"][0] == addr       # no copy
        assert a[2, 3] == 11.0
        buf[1] = 42.0                                          # the same memory
        assert a[0, 1] == 42.0
        # strides (bytes here, elements in DLPack): a transposed view
        t = np.from_dlpack(dlpack.Buffer(addr, [4, 3], "<f4", strides=[4, 16],
                                         device_type=dlpack.KDL_CPU))
        assert t[1, 0] == 42.0 and t[3, 2] == 11.0, t
        for typestr, dt in (("<i8", np.int64), ("|u1", np.uint8), ("|b1", np.bool_),
                            ("<c8", np.complex64)):
            x = np.from_dlpack(dlpack.Buffer(addr, [2], typestr, device_type=dlpack.KDL_CPU))
            assert x.dtype == dt, (typestr, x.dtype)
        assert dlpack.live() > 0
        del a, t, x
        gc.collect()
        assert dlpack.live() == 0, dlpack.live()              # every deleter ran
        cap = dlpack.capsule(addr, [3], "<f4", device_type=dlpack.KDL_CPU)
        assert dlpack.live() == 1
        del cap                                                # never consumed
        assert dlpack.live() == 0
        try:
            np.from_dlpack(dlpack.Buffer(addr, [3], "<f4"))   # kDLCUDA: not numpy's
            raise SystemExit("numpy took a device buffer")
        except (RuntimeError, BufferError, ValueError, TypeError):
            pass
        try:
            dlpack.capsule(addr, [3], "<f4", strides=[6])
            raise SystemExit("a stride of a half element")
        except ValueError:
            pass
        print("ok", np.__version__)
        """)

    def run_with(self, version):
        bubble = os.path.join(REAL_HOME, "bubbles", "cp311", "numpy-" + version)
        if not os.path.isdir(bubble):
            msg = "bubble numpy==%s for 3.11 missing (scripts/bubbles.sh)" % version
            if os.environ.get("CI") == "true":
                self.fail(msg)
            self.skipTest(msg)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [bubble, os.path.join(harness.REPO, "src", "worker")]))
        r = subprocess.run([PY.get("3.11", sys.executable), "-c", self.CODE], env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.strip(), "ok " + version)

    def test_numpy_1(self):
        self.run_with("1.26.4")

    def test_numpy_2(self):
        self.run_with("2.2.6")


if __name__ == "__main__":
    unittest.main()
