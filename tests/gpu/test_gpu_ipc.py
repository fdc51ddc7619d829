"""GPU-only: CUDA IPC between a torch caller and workers of other
frameworks, through the real daemon and the real driver.  Run by
tests/gpu/run.sh (which skips without a GPU); never part of ctest.

- a torch tensor at a non-zero offset of its caching-allocator block goes
  through a cupy worker and back bit-exact, the output written in place;
- one producer (torch), consumers in cupy and jax, each seeing its data;
- 10,000 calls with the same tensors open each handle once in the worker;
- a worker killed while it holds a mapping leaves the producer's tensor
  and later calls working;
- a VMM allocation (cuMemCreate with a POSIX-descriptor handle type) goes
  as a descriptor, at an offset, and is mapped once over 1000 calls;
- PyTorch's expandable segments (VMM memory) go as descriptors in "auto"
  mode, from a process of their own (the allocator reads its setting once);
- a kernel still running on a side stream when the call goes is waited for
  by the worker through the IPC event (no host synchronisation here), and
  the same with the stream synchronised instead;
- a TensorFlow worker reads the tensor through DLPack.
"""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import harness
import torch

from omnipkg import DaemonClient

CUPY = os.environ.get("OMNIPKG_GPU_CUPY_SPEC", "cupy-cuda12x")
TORCH = os.environ.get("OMNIPKG_GPU_TORCH_SPEC", "torch")
# the worker bridges to jax through cupy's DLPack, so the jax worker has both
JAX = os.environ.get("OMNIPKG_GPU_JAX_SPEC", "jax[cuda12],cupy-cuda12x")
TF = os.environ.get("OMNIPKG_GPU_TF_SPEC", "tensorflow[and-cuda]")


class VmmBuffer:
    """nbytes of VMM device memory that allows a POSIX descriptor, made with
    the driver API (cuMemCreate, cuMemAddressReserve, cuMemMap,
    cuMemSetAccess) in torch's current context, as
    __cuda_array_interface__ float32 at an offset."""

    class Prop(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int),
                    ("loc_type", ctypes.c_int), ("loc_id", ctypes.c_int),
                    ("win32", ctypes.c_void_p), ("flags", ctypes.c_ubyte * 8)]

    class Access(ctypes.Structure):
        _fields_ = [("loc_type", ctypes.c_int), ("loc_id", ctypes.c_int),
                    ("flags", ctypes.c_int)]

    def __init__(self, nbytes, device=0):
        torch.cuda.init()
        torch.zeros(1, device="cuda:%d" % device)       # its context, current
        cu = self.cu = ctypes.CDLL("libcuda.so.1")
        prop = self.Prop(1, 1, 1, device)                # PINNED, POSIX fd, DEVICE
        gran = ctypes.c_size_t()
        self.check(cu.cuMemGetAllocationGranularity(ctypes.byref(gran), ctypes.byref(prop), 0))
        self.size = (nbytes + gran.value - 1) // gran.value * gran.value
        self.h = ctypes.c_ulonglong()
        self.check(cu.cuMemCreate(ctypes.byref(self.h), ctypes.c_size_t(self.size),
                                  ctypes.byref(prop), ctypes.c_ulonglong(0)))
        self.ptr = ctypes.c_ulonglong()
        self.check(cu.cuMemAddressReserve(ctypes.byref(self.ptr), ctypes.c_size_t(self.size),
                                          ctypes.c_size_t(0), ctypes.c_ulonglong(0),
                                          ctypes.c_ulonglong(0)))
        self.check(cu.cuMemMap(self.ptr, ctypes.c_size_t(self.size), ctypes.c_size_t(0),
                               self.h, ctypes.c_ulonglong(0)))
        acc = self.Access(1, device, 3)                  # DEVICE, PROT_READWRITE
        self.check(cu.cuMemSetAccess(self.ptr, ctypes.c_size_t(self.size), ctypes.byref(acc),
                                     ctypes.c_size_t(1)))

    @staticmethod
    def check(rc):
        if rc:
            raise unittest.SkipTest("VMM with POSIX descriptors not available (CUDA error %d)" % rc)

    def tensor(self, offset, n):
        class View:
            __cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "version": 3,
                                        "data": (self.ptr.value + offset, False),
                                        "strides": None, "stream": 1}
        return torch.as_tensor(View(), device="cuda")

    def free(self):
        torch.cuda.synchronize()
        self.cu.cuMemUnmap(self.ptr, ctypes.c_size_t(self.size))
        self.cu.cuMemAddressFree(self.ptr, ctypes.c_size_t(self.size))
        self.cu.cuMemRelease(self.h)


class GpuIpcTest(unittest.TestCase):
    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        self.d = harness.DaemonFixture()
        self.d.env["OMNIPKG_CUDA_LIB"] = os.environ["OMNIPKG_CUDA_LIB"]
        self.d.env.pop("OMNIPKG_CUDA_DRIVER", None)
        self.d.start()
        self.addCleanup(self.d.stop)
        self.c = DaemonClient(socket_path=self.d.socket, auto_start=False)
        self.addCleanup(self.c.close)

    def ipc(self, spec, code, x, out, framework, **kw):
        try:
            return self.c.execute_cuda_ipc(spec, code, x, None, None, out=out,
                                           framework=framework, **kw)
        except RuntimeError as e:
            if "install" in str(e) or "No module named" in str(e):
                self.skipTest("%s not available to the daemon: %s" % (spec, e))
            raise

    def offset_pair(self, n):
        # both sub-allocated inside bigger blocks: the offset must travel
        a = torch.randn(3 * n, device="cuda")
        b = torch.zeros(3 * n, device="cuda")
        return a, b, a[n + 7:2 * n + 7], b[n + 13:2 * n + 13]

    def test_offset_round_trip_through_cupy(self):
        a, b, x, out = self.offset_pair(1 << 16)
        ptr = out.data_ptr()
        before = b.clone()
        got, rep = self.ipc(CUPY, "import cupy\ntensor_out[...] = tensor_in\n"
                            "result = type(tensor_in).__module__", x, out, "cupy")
        torch.cuda.synchronize()
        self.assertIs(got, out)
        self.assertEqual(out.data_ptr(), ptr)
        self.assertTrue(rep["success"], rep)
        self.assertTrue(torch.equal(out.view(torch.int32), x.view(torch.int32)))
        # nothing outside the output slice was touched
        n = 1 << 16
        self.assertTrue(torch.equal(b[:n + 13], before[:n + 13]))
        self.assertTrue(torch.equal(b[2 * n + 13:], before[2 * n + 13:]))

    def test_one_producer_two_frameworks(self):
        x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)[5:]
        want = float(x.double().sum())
        o1 = torch.zeros(1, device="cuda", dtype=torch.float64)
        self.ipc(CUPY, "tensor_out[0] = tensor_in.astype('float64').sum()", x, o1, "cupy")
        o2 = torch.zeros(1, device="cuda", dtype=torch.float64)
        # jax arrays are immutable: it reads, and the sum comes back by value
        _, rep = self.ipc(JAX, "import jax.numpy as jnp\n"
                          "result = {'s': float(jnp.sum(tensor_in))}",
                          x, o2, "jax")
        torch.cuda.synchronize()
        self.assertEqual(float(o1[0]), want)
        self.assertAlmostEqual(rep["s"], want, delta=abs(want) * 1e-3)   # float32 sum

    def test_ten_thousand_calls_open_once(self):
        a, b, x, out = self.offset_pair(1024)
        code = "tensor_out[...] = tensor_in + 1\n" \
               "from omniworker import cuda as _c\nresult = {'opens': _c.opens()}"
        for _ in range(10000):
            _, rep = self.ipc(CUPY, code, x, out, "cupy")
        torch.cuda.synchronize()
        self.assertEqual(rep["opens"], 2)      # two allocations, each opened once
        self.assertTrue(torch.equal(out, x + 1))

    def test_worker_killed_holding_a_mapping(self):
        a, b, x, out = self.offset_pair(1 << 20)
        code = "import os, time\ntensor_out[...] = 1\nopen(%r, 'w').write(str(os.getpid()))\n" \
               "time.sleep(120)"
        mark = os.path.join(self.d.tmp, "holder.pid")
        t = threading.Thread(target=lambda: self._swallow(code % mark, x, out), daemon=True)
        t.start()
        deadline = time.monotonic() + 120
        while not os.path.exists(mark) or not open(mark).read():
            self.assertLess(time.monotonic(), deadline, "the holding job never started")
            time.sleep(0.05)
        os.kill(int(open(mark).read()), signal.SIGKILL)
        t.join(60)
        # the producer's memory is its own: still readable and writable
        x.add_(1)
        torch.cuda.synchronize()
        self.assertTrue(torch.isfinite(x).all())
        _, rep = self.ipc(CUPY, "tensor_out[...] = tensor_in * 2", x, out, "cupy")
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(out, x * 2))

    def test_vmm_descriptor_round_trip_and_mapped_once(self):
        n = 1 << 16
        a, b = VmmBuffer(4 * 3 * n), VmmBuffer(4 * 3 * n)
        self.addCleanup(a.free)
        self.addCleanup(b.free)
        x, out = a.tensor(4 * (n + 7), n), b.tensor(4 * (n + 13), n)
        x.copy_(torch.randn(n, device="cuda"))
        out.zero_()
        code = "tensor_out[...] = tensor_in + 1\n" \
               "from omniworker import cuda as _c\nresult = {'opens': _c.opens()}"
        for _ in range(1000):
            _, rep = self.ipc(CUPY, code, x, out, "cupy", ipc_mode="fd")
        torch.cuda.synchronize()
        self.assertTrue(torch.equal(out, x + 1))
        self.assertEqual(rep["opens"], 2)      # two allocations, each mapped once

    def test_expandable_segments_go_as_descriptors(self):
        code = textwrap.dedent("""
            import os, sys, torch
            from omnipkg import DaemonClient, cuda
            x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)[3:]
            out = torch.zeros_like(x)
            d, fd = cuda.describe(x)
            assert fd is not None, "an expandable segment went as an IPC handle"
            os.close(fd)
            c = DaemonClient(socket_path=sys.argv[1], auto_start=False)
            _, rep = c.execute_cuda_ipc(sys.argv[2], "tensor_out[...] = tensor_in * 2", x, None,
                                        None, out=out, framework="cupy", ipc_mode="auto")
            torch.cuda.synchronize()
            assert torch.equal(out, x * 2)
            print("ok")
            """)
        env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
        r = subprocess.run([sys.executable, "-c", code, self.d.socket, CUPY], env=env,
                           capture_output=True, text=True, timeout=600)
        if "No module named" in r.stderr or "install" in r.stderr:
            self.skipTest("%s not available to the daemon: %s" % (CUPY, r.stderr[-300:]))
        self.assertEqual(r.stdout.strip(), "ok", r.stderr)

    def side_stream_kernel(self, sync):
        """x written by a kernel on a side stream that is still sleeping
        when the call goes."""
        n = 1 << 20
        x = torch.zeros(n, device="cuda")
        out = torch.zeros(1, device="cuda", dtype=torch.float64)
        torch.cuda.synchronize()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            torch.cuda._sleep(int(5e8))          # ~0.3 s on current parts
            x.fill_(3.0)
            # the handle carries an event recorded on s (current here)
            _, rep = self.ipc(CUPY, "tensor_out[0] = tensor_in.astype('float64').sum()",
                              x, out, "cupy", sync=sync)
        torch.cuda.synchronize()
        self.assertEqual(float(out[0]), 3.0 * n)

    def test_worker_waits_for_the_producer_event(self):
        self.side_stream_kernel(False)

    def test_stream_synchronised_instead(self):
        self.side_stream_kernel(True)

    def test_tensorflow_reads_through_dlpack(self):
        x = torch.arange(1 << 16, device="cuda", dtype=torch.float32)[9:]
        out = torch.zeros(1, device="cuda")
        _, rep = self.ipc(TF, "import tensorflow as tf\n"
                          "result = {'s': float(tf.reduce_sum(tf.cast(tensor_in, tf.float64))),"
                          " 'dev': tensor_in.device}", x, out, "tensorflow")
        self.assertEqual(rep["s"], float(x.double().sum()))
        self.assertIn("GPU", rep["dev"])

    def _swallow(self, code, x, out):
        c = DaemonClient(socket_path=self.d.socket, auto_start=False)   # its own connection
        try:
            c.execute_cuda_ipc(CUPY, code, x, None, None, out=out, framework="cupy")
        except Exception:
            pass        # the worker was killed: the call fails, as it should
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
