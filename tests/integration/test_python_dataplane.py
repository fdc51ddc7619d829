"""The Python client's data plane against the real daemon: arrays in shared
segments, mapped by the test process and by workers of other numpy
versions and interpreters, never copied.

numpy for the test process itself comes from the numpy bubble of its own
interpreter in the omnipkg home (scripts/bubbles.sh); the workers' numpy
bubbles are linked into each daemon's private home.  Missing bubbles skip,
and fail under CI=true.
"""

import gc
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import unittest

import harness
from test_daemon import PY, link_bubble, wait_until
from test_python_client_unit import find_numpy, need_numpy

from omnipkg import DaemonClient

K1, K2, K3 = 0xA5A5A5A5, 0x01234567, 0x5A5A5A5A


def stage_code(op, k):
    """Job code: the sha256 of arr_in as the worker sees it, then arr_out =
    arr_in <op> k in place."""
    return textwrap.dedent("""
        import hashlib
        import numpy as np
        seen = hashlib.sha256(arr_in).hexdigest()
        np.%s(arr_in, np.uint32(%d), out=arr_out)
        result = {"seen": seen, "numpy": np.__version__}
        """ % (op, k))


def mapped_paths(pid):
    """The files mapped by process pid."""
    with open("/proc/%d/maps" % pid) as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


class DataPlaneTest(unittest.TestCase):
    bubbles = ()           # (python, numpy version) linked into the daemon's home

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)
        self.np = need_numpy(self)
        for py, _ in self.bubbles:
            if py not in PY:
                self.skipTest("python %s not installed" % py)
        self.d = harness.DaemonFixture()
        for py, v in self.bubbles:
            link_bubble(self, self.d, py, "numpy", v)
        self.d.start()
        self.c = DaemonClient(socket_path=self.d.socket, timeout=300, auto_start=False)

    def tearDown(self):
        self.c.close()
        self.assertEqual(self.d.stop(), [])

    def segments(self):
        r = self.c.shm_list()
        self.assertTrue(r["success"], r)
        return r["segments"]

    def seg_path(self, a):
        name, _ = self.c.shm_pool.locate(a)
        (path,) = [s["path"] for s in self.segments() if s["name"] == name]
        return path


class TestPipeline(DataPlaneTest):
    bubbles = (("3.11", "1.26.4"), ("3.11", "2.2.6"), ("3.13", "2.2.6"))

    def test_64mb_through_three_workers_bit_exact_without_a_copy(self):
        np = self.np
        n = 16 << 20                                   # 64 MiB of uint32
        x = self.c.empty(n, "uint32")
        y = self.c.empty(n, "uint32")
        x[:] = np.arange(n, dtype=np.uint32) * np.uint32(2654435761)
        want = [x.copy()]
        stages = [("numpy==1.26.4", "3.11", "bitwise_xor", K1, x, y),
                  ("numpy==2.2.6", "3.11", "add", K2, y, x),
                  ("numpy==2.2.6", "3.13", "bitwise_xor", K3, x, y)]
        for spec, py, op, k, src, dst in stages:
            want.append(getattr(np, op)(want[-1], np.uint32(k)))
        paths = {self.seg_path(x), self.seg_path(y)}
        self.assertEqual(len(paths), 2)
        pids = []
        for i, (spec, py, op, k, src, dst) in enumerate(stages):
            r = self.c.execute_shm(spec, stage_code(op, k), {"arr_in": src},
                                   {"arr_out": dst}, python_exe=py)
            self.assertTrue(r["success"], r)
            self.assertEqual(r["numpy"], spec.split("==")[1])
            self.assertEqual(r["seen"], hashlib.sha256(want[i]).hexdigest())
            self.assertIs(r["outputs"]["arr_out"], dst)           # written in place, here too
            self.assertTrue(np.array_equal(dst, want[i + 1]), "stage %d" % (i + 1))
            pids.append(r["worker_pid"])
            for p in paths:
                self.assertIn(p, mapped_paths(r["worker_pid"]),
                              "worker of %s/%s maps %s" % (spec, py, p))
        self.assertEqual(len(set(pids)), 3)
        self.assertTrue(paths <= mapped_paths(os.getpid()))
        self.assertEqual(self.c.shm_pool.created, 2)   # nothing copied into a segment


class TestCalls(DataPlaneTest):
    bubbles = (("3.11", "2.2.6"),)

    def test_smart_json_keeps_true_none_and_nesting(self):
        data = {"t": True, "n": None, "nested": {"a": [1, {"b": False}], "s": "it's \"q\""}}
        s = self.c.execute_smart("numpy==2.2.6", "result = {'same': arr_in == %r}" % (data,),
                                 data=data, python_exe="3.11")
        self.assertEqual((s["transport"], s["success"]), ("JSON", True), s)
        self.assertEqual(s["meta"]["same"], True)
        s = self.c.execute_smart("base", "print('  %d  ' % len(arr_in))", data=[1, True, None],
                                 python_exe="3.11")
        self.assertEqual((s["transport"], s["result"]), ("JSON", "3"))

    def test_smart_small_array_keeps_its_dtype(self):
        a = self.np.array([[-1, 2], [3, 127]], dtype=self.np.int8)
        s = self.c.execute_smart("numpy==2.2.6", "result = [arr_in.dtype.str, arr_in.tolist()]",
                                 data=a, python_exe="3.11")
        self.assertEqual(s["transport"], "JSON")
        self.assertEqual(s["meta"]["job_result"], ["|i1", [[-1, 2], [3, 127]]])

    def test_smart_large_array_goes_shm(self):
        np = self.np
        a = np.arange(8192, dtype=np.float64)          # 64 KiB
        s = self.c.execute_smart("numpy==2.2.6", "arr_out[:] = arr_in[::-1] * 2", data=a,
                                 output_shape=a.shape, output_dtype="float64", python_exe="3.11")
        self.assertEqual(s["transport"], "SHM")
        self.assertTrue(s["success"], s["meta"])
        self.assertTrue(np.array_equal(s["result"], a[::-1] * 2))
        s = self.c.execute_smart("numpy==2.2.6", "result = {'sum': float(arr_in.sum())}; "
                                 "arr_out[:] = 1", data=a, python_exe="3.11")
        self.assertEqual((s["transport"], s["meta"]["sum"]), ("SHM", float(a.sum())))
        self.assertTrue(np.all(s["result"] == 1))      # omnipkg's: arr_out, shaped as data
        with self.assertRaises(RuntimeError):           # as execute_zero_copy
            self.c.execute_smart("numpy==2.2.6", "1/0", data=a, python_exe="3.11")

    def test_zero_copy_returns_array_and_reply(self):
        np = self.np
        a = np.arange(1e6)
        out, meta = self.c.execute_zero_copy("numpy==2.2.6", "arr_out[:] = arr_in.sum()",
                                             a, (1,), "float64", python_exe="3.11")
        self.assertEqual((out.shape, out.dtype, out[0]), ((1,), np.float64, a.sum()))
        self.assertTrue(meta["success"])
        out, _ = self.c.execute_zero_copy("numpy==2.2.6", "tensor_out[:] = tensor_in[:3]",
                                          a, (3,), "float64", python_exe="3.11")
        self.assertEqual(out.tolist(), [0.0, 1.0, 2.0])
        with self.assertRaises(RuntimeError) as cm:
            self.c.execute_zero_copy("numpy==2.2.6", "raise ValueError('no')", a, (1,),
                                     "float64", python_exe="3.11")
        self.assertEqual(str(cm.exception), "Worker Error: ValueError: no")

    def test_result_array_is_a_view_removed_when_garbage(self):
        np = self.np
        x = self.c.array(np.arange(10, dtype=np.int64))
        before = len(self.segments())
        r = self.c.execute_shm("numpy==2.2.6", "result = arr_in[::2]", {"arr_in": x}, {},
                               python_exe="3.11")
        self.assertTrue(np.shares_memory(r["job_result"], x))
        self.assertEqual(r["job_result"].tolist(), [0, 2, 4, 6, 8])
        r = self.c.execute("numpy==2.2.6", "import numpy as np; result = np.arange(5) * 3",
                           python_exe="3.11")
        res = r["job_result"]
        self.assertEqual(res.tolist(), [0, 3, 6, 9, 12])
        self.assertEqual(len(self.segments()), before + 1)
        del r, res
        gc.collect()
        self.c.shm_pool.collect()
        self.assertEqual(len(self.segments()), before)

    def test_ten_thousand_calls_keep_the_segment_count_bounded(self):
        np = self.np
        for i in range(10000):
            x = self.c.empty(256, "float32")
            x[:] = i
            r = self.c.execute_shm("numpy==2.2.6", "arr_out[:] = arr_in + 1", {"arr_in": x},
                                   {"arr_out": {"shape": (256,), "dtype": "float32"}},
                                   python_exe="3.11")
            self.assertTrue(r["success"], r)
            self.assertEqual(float(r["outputs"]["arr_out"][255]), i + 1.0)
            if i % 1000 == 0:
                self.assertLessEqual(len(self.segments()), 4)
        self.assertLessEqual(len(self.segments()), 4)
        self.assertLessEqual(self.c.shm_pool.created, 4)
        self.assertTrue(np.all(r["outputs"]["arr_out"] == 10000.0))


class TestKilledClient(DataPlaneTest):
    CHILD = textwrap.dedent("""
        import gc, sys
        from omnipkg import DaemonClient
        sock, code = sys.argv[1], sys.argv[2]
        c = DaemonClient(socket_path=sock, timeout=300, auto_start=False)
        x = c.empty(1 << 20, "uint8")
        spare = c.empty(1 << 22, "uint8")
        del spare                                  # one free segment in the pool
        gc.collect()
        c.execute_shm("base", code, {"arr_in": x}, {"arr_out": {"shape": [4096], "dtype": "f8"}},
                      python_exe="3.11")
        """)

    def test_segments_go_once_the_killed_clients_jobs_end(self):
        started = os.path.join(self.d.tmp, "started")
        release = os.path.join(self.d.tmp, "release")
        code = ("import os, time\nopen(%r, 'w').close()\n_end = time.monotonic() + 120\n"
                "while not os.path.exists(%r) and time.monotonic() < _end:\n"
                "    time.sleep(0.01)\n" % (started, release))
        np_dir = os.path.dirname(os.path.dirname(find_numpy().__file__))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([
            os.path.join(harness.REPO, "src", "python"), np_dir]))
        child = subprocess.Popen([sys.executable, "-c", self.CHILD, self.d.socket, code],
                                 env=env, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: child.poll() is None and child.kill())
        wait_until(self, "the child's job to start",
                   lambda: os.path.exists(started) or child.poll() is not None)
        self.assertIsNone(child.poll(), "the child client exited early")
        shm_dir = self.c.status()["shm"]["dir"]
        self.assertEqual(len(self.segments()), 3)     # input, output, the spare
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        # The free one goes with the connection; the two the job leases stay
        # until it ends.
        wait_until(self, "the spare segment to go", lambda: len(self.segments()) <= 2)
        open(release, "w").close()
        wait_until(self, "every segment of the killed client to go",
                   lambda: self.segments() == [] and os.listdir(shm_dir) == [])


if __name__ == "__main__":
    unittest.main()
