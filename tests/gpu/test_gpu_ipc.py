"""GPU-only: CUDA IPC between a torch caller and workers of other
frameworks, through the real daemon and the real driver.  Run by
tests/gpu/run.sh (which skips without a GPU); never part of ctest.

- a torch tensor at a non-zero offset of its caching-allocator block goes
  through a cupy worker and back bit-exact, the output written in place;
- one producer (torch), consumers in cupy and jax, each seeing its data;
- 10,000 calls with the same tensors open each handle once in the worker;
- a worker killed while it holds a mapping leaves the producer's tensor
  and later calls working.
"""
import os
import signal
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

    def ipc(self, spec, code, x, out, framework):
        try:
            return self.c.execute_cuda_ipc(spec, code, x, None, None, out=out,
                                           framework=framework)
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
