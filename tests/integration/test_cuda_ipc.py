"""CUDA IPC through the real daemon with the stand-in driver
(tests/cuda_stub): its "device memory" is POSIX shared memory, so a
worker's in-place writes are visible to the test as they would be on a GPU.

- without a driver, execute_cuda_ipc and execute_smart say "no CUDA";
- a buffer at a non-zero offset of its allocation reaches the worker at the
  right address, and the worker's writes land in the caller's buffer;
- repeated calls open each allocation once in the worker;
- the zygote never loads the driver: only forked workers call cuInit, and
  the zygote maps neither the driver nor libomnipkg-cuda.
The real driver and frameworks are tests/gpu/'s.
"""
import ctypes
import os
import struct
import subprocess
import sys
import textwrap
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


class FakeTensor:
    """A device buffer of the stand-in driver, as __cuda_array_interface__."""

    def __init__(self, ptr, shape, typestr="<f4"):
        self.ptr, self.shape, self.typestr = ptr, shape, typestr

    @property
    def __cuda_array_interface__(self):
        return {"shape": tuple(self.shape), "typestr": self.typestr,
                "data": (self.ptr, False), "version": 3, "strides": None}


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
        self.stub = ctypes.CDLL(STUB)
        self.stub.stub_alloc.restype = ctypes.c_uint64
        self.stub.stub_alloc.argtypes = [ctypes.c_size_t]
        self.stub.stub_free.argtypes = [ctypes.c_uint64]
        self.a = self.stub.stub_alloc(1024)
        self.addCleanup(self.stub.stub_free, self.a)

    def desc(self, **kw):
        d = ocuda.describe(FakeTensor(self.a + 64, [16]), framework="raw")["__cuda_ipc__"]
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


if __name__ == "__main__":
    unittest.main()
