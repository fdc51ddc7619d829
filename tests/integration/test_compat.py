"""Drop-in compatibility with omnipkg 3.4.1's daemon client, against the
real daemon: code written for omnipkg.isolation.worker_daemon, called the
way omnipkg's own tests, examples and demos call it, with the exact reply
keys and types omnipkg's callers read.

omnipkg's own test file runs against ours in test_omnipkg_suite.py.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness
from test_daemon import PY, REAL_HOME, link_bubble
from test_python_client_unit import need_numpy

import omnipkg
from omnipkg import client as omc
from omnipkg.isolation import worker_daemon as wd
from omnipkg.isolation.worker_daemon import DaemonClient, DaemonProxy

NP_OLD, NP_NEW = "numpy==1.26.4", "numpy==2.2.6"
# (python, numpy version) bubbles linked into the daemon's home
BUBBLES = (("3.11", "1.26.4"), ("3.11", "2.2.6"), ("3.9", "1.26.4"), ("3.13", "2.2.6"))
REPO = harness.REPO


def link(d, py, name, version):
    link_bubble(None, d, py, name, version)


class CompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = harness.DaemonFixture.available()
        if why:
            raise unittest.SkipTest(why)
        for py in ("3.9", "3.11", "3.13"):
            if py not in PY:
                raise unittest.SkipTest("python %s not installed" % py)
        cls.d = harness.DaemonFixture()
        for py, v in BUBBLES:
            link(cls.d, py, "numpy", v)
        cls.d.start()
        cls.old_env = dict(os.environ)
        # As a user whose daemon runs at the default place: the module-level
        # names and the no-argument DaemonClient() must find this one.
        os.environ["OMNIPKG_RUNTIME_DIR"] = cls.d.runtime
        os.environ["OMNIPKGD"] = cls.d.daemon_bin
        cls.c = DaemonClient(socket_path=cls.d.socket, timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        os.environ.clear()
        os.environ.update(cls.old_env)
        left = cls.d.stop()
        if left:
            raise AssertionError("left behind: %r" % (left,))

    # ----------------------------------------------------------- surface

    def test_module_names(self):
        for name in ("DaemonClient", "DaemonProxy", "WorkerPoolDaemon", "DEFAULT_SOCKET",
                     "PID_FILE", "DAEMON_LOG_FILE", "cli_start", "cli_stop", "cli_status"):
            self.assertTrue(hasattr(wd, name), name)
        # imported after OMNIPKG_RUNTIME_DIR was set in another test process,
        # the names point at the runtime dir the daemon uses
        r = subprocess.run([sys.executable, "-c",
                            "from omnipkg.isolation.worker_daemon import *; "
                            "print(DEFAULT_SOCKET); print(PID_FILE); "
                            "print(WorkerPoolDaemon.is_running())"],
                           env=self.env(), capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout.split(), [self.d.socket,
                                            os.path.join(self.d.runtime, "omnipkgd.pid"),
                                            "True"], r.stderr)
        self.assertTrue(os.path.exists(r.stdout.split()[1]), "PID_FILE names the pid file")

    def env(self, **kw):
        e = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src", "python"))
        e.update(kw)
        return e

    # ----------------------------------------------------------- replies

    def test_proxy_replies_as_omnipkgs(self):
        p = DaemonProxy(self.c, NP_OLD, python_exe="3.11")
        r = p.execute("import numpy as np; print(np.__version__)")
        self.assertEqual(set(r), {"success", "stdout", "stderr", "locals"})
        self.assertEqual((r["success"], r["stdout"].strip()), (True, "1.26.4"))
        bad = p.execute("raise ValueError('intentional test error')")
        self.assertEqual(set(bad), {"success", "error", "traceback"})
        self.assertFalse(bad["success"])
        self.assertEqual(bad["error"], "ValueError: intentional test error")
        self.assertIn("intentional test error", bad["traceback"])
        good = p.execute("import numpy as np; print(np.__version__)")
        self.assertEqual(good["stdout"].strip(), "1.26.4")
        v = p.get_version("numpy")
        self.assertEqual((v["success"], v["version"]), (True, "1.26.4"))
        self.assertIn("numpy-1.26.4", v["path"])

    def test_exec_reply_shape(self):
        r = self.c.execute(NP_NEW, "result = {'a': 1, 'stdout': 'not this'}; print('hi')",
                           python_exe="3.11")
        self.assertEqual((r["status"], r["success"], r["a"], r["stdout"]),
                         ("COMPLETED", True, 1, "hi\n"))
        self.assertIsInstance(r["task_id"], str)
        self.assertEqual(r["stderr"], "")
        self.assertNotIn("result", r)
        # a float result: no "result" key (omnipkg's callers read
        # r.get("result", {}).get("stdout")), ours under job_result
        r = self.c.execute(NP_NEW, "result = 2.5", python_exe="3.11")
        self.assertNotIn("result", r)
        self.assertEqual(r["job_result"], 2.5)
        self.assertEqual(DaemonProxy(self.c, NP_NEW, "3.11").execute("result = 2.5")["success"],
                         True)
        r = self.c.execute(NP_NEW, "raise KeyError('k')", python_exe="3.11")
        self.assertEqual((r["status"], r["success"], r["error"], r["reason"]),
                         ("ERROR", False, "KeyError: 'k'", "exception"))
        self.assertIn("Traceback", r["traceback"])
        r = self.c.execute("numpy==0.0.1", "pass", python_exe="3.11")
        self.assertEqual((r["status"], r["success"], r["reason"]), ("ERROR", False, "nobubble"))

    def test_state_kept_and_exception_then_good_call(self):
        p = DaemonProxy(self.c, NP_OLD, "3.11")
        self.assertTrue(p.execute("_SENTINEL = 42")["success"])
        self.assertEqual(p.execute("print(globals().get('_SENTINEL', 'MISSING'))")["stdout"],
                         "42\n")
        self.assertFalse(p.execute("1/0")["success"])
        self.assertEqual(p.execute("print(_SENTINEL)")["stdout"], "42\n")

    def test_threads_on_several_numpy_versions(self):
        errors, lock = [], threading.Lock()

        def run(spec):
            p = DaemonProxy(self.c, spec, "3.11")
            for _ in range(5):
                r = p.execute("import numpy as np; print(np.__version__, "
                              "int(np.sum(np.array([1, 2, 3]))))")
                got = r["stdout"].split() if r["success"] else [r.get("error")]
                if got != [spec.split("==")[1], "6"]:
                    with lock:
                        errors.append((spec, got))
        ts = [threading.Thread(target=run, args=(s,)) for s in (NP_OLD, NP_NEW) * 2]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        self.assertEqual(errors, [])

    def test_execute_shm_on_three_pythons_at_once(self):
        res = {}

        def run(py, spec):
            res[py] = self.c.execute_shm(spec, "import sys, numpy; print(sys.version_info[0], "
                                         "sys.version_info[1], numpy.__version__)",
                                         shm_in={}, shm_out={}, python_exe=PY[py])
        ts = [threading.Thread(target=run, args=a)
              for a in (("3.9", NP_OLD), ("3.11", NP_OLD), ("3.13", NP_NEW))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        for py, spec in (("3.9", NP_OLD), ("3.11", NP_OLD), ("3.13", NP_NEW)):
            r = res[py]
            self.assertEqual(r["status"], "COMPLETED", r)
            self.assertEqual(r["stdout"].split(), py.split(".") + [spec.split("==")[1]])

    # ----------------------------------------------------- interpreters

    def test_default_python_is_the_callers(self):
        r = self.c.execute("base", "import sys; print(sys.executable)")
        self.assertTrue(r["success"], r)
        self.assertEqual(os.path.realpath(r["stdout"].strip()), os.path.realpath(sys.executable))
        self.assertEqual(os.path.realpath(r["python"]), os.path.realpath(sys.executable))

    def test_short_python_names(self):
        want = "%d.%d" % sys.version_info[:2]
        micro = "%d.%d.%d" % sys.version_info[:3]
        for name in (want, micro, "py" + want.replace(".", ""), "python" + want):
            r = self.c.execute("base", "import sys; print('%d.%d' % sys.version_info[:2])",
                               python_exe=name)
            self.assertEqual((r["success"], r["stdout"].strip()), (True, want), (name, r))

    # ------------------------------------------------------------ status

    def test_status_fields(self):
        r = self.c.execute(NP_OLD, "pass", python_exe="3.11")
        self.assertTrue(r["success"], r)
        s = self.c.status()
        self.assertEqual((s["success"], s["running"]), (True, True))
        self.assertIsInstance(s["workers"], int)
        self.assertGreaterEqual(s["workers"], 1)
        self.assertEqual(set(s["stats"]) >= {"total_requests", "cache_hits", "workers_created",
                                             "errors"}, True)
        for v in s["stats"].values():
            self.assertIsInstance(v, int)
        self.assertGreaterEqual(s["stats"]["total_requests"], 1)
        self.assertIsInstance(s["memory_percent"], float)
        self.assertTrue(0 < s["memory_percent"] < 100)
        self.assertIsInstance(s["idle_pool_info"], dict)
        key = "%s::%s" % (NP_OLD, r["python"])     # the daemon's path of the interpreter
        self.assertIn(key, s["worker_details"])
        w = s["worker_details"][key]
        for k, t in (("pid", int), ("pkg_spec", str), ("python_exe", str),
                     ("request_count", int), ("last_used", float), ("health_failures", int),
                     ("pinned", bool)):
            self.assertIsInstance(w[k], t, k)
        self.assertEqual((w["pkg_spec"], w["python_exe"], w["pid"]),
                         (NP_OLD, r["python"], r["worker_pid"]))
        self.assertLess(abs(time.time() - w["last_used"]), 120)
        os.kill(w["pid"], 0)

    # ----------------------------------------------- failure, no exceptions

    def test_daemon_down_is_a_reply(self):
        with tempfile.TemporaryDirectory() as t:
            sock = os.path.join(t, "omnipkgd.sock")
            os.chmod(t, 0o700)
            c = DaemonClient(socket_path=sock, auto_start=False)
            for r in (c.execute("base", "pass"), c.execute_shm("base", "pass", {}, {}),
                      c.run_once("base", "pass"), c.workers(),
                      DaemonProxy(c, "base").execute("pass")):
                self.assertFalse(r["success"])
                self.assertTrue(r["error"].startswith("Daemon not running"), r["error"])
            # status() never starts a daemon, even with auto_start
            s = DaemonClient(socket_path=sock, auto_start=True).status()
            self.assertEqual((s["success"], s["running"]), (False, False))
            self.assertTrue(s["error"].startswith("Daemon not running"))
            self.assertFalse(os.path.exists(sock))
            with self.assertRaises(omc.DaemonNotRunning):
                DaemonClient(socket_path=sock, auto_start=False, raise_errors=True).execute(
                    "base", "pass")

    # ------------------------------------------------------- low level

    def test_send_dicts(self):
        r = self.c._send({"type": "execute", "spec": NP_OLD, "code": "print(7)",
                          "shm_in": {}, "shm_out": {}, "python_exe": "3.11"})
        self.assertEqual((r["status"], r["stdout"]), ("COMPLETED", "7\n"))
        self.assertTrue(self.c._send({"type": "status"})["running"])
        self.assertEqual(self.c._send({"type": "start_omnipkg_op"}), {"success": True})
        self.assertEqual(self.c._send({"type": "end_omnipkg_op", "installed": [],
                                       "removed": []}), {"success": True})
        r = self.c._send({"type": "no_such"})
        self.assertEqual(r, {"success": False, "error": "Unknown type: no_such"})
        r = self.c._send({"type": "set_idle_config"})
        self.assertEqual(r, {"success": False, "error": "python_exe required"})

    def test_worker_management(self):
        r = self.c.execute(NP_OLD, "import os; result = {'pid': os.getpid()}", python_exe="3.11",
                           worker_tag="evictme")
        pid = r["pid"]
        e = self.c.evict_worker(NP_OLD, "3.11", "evictme")
        self.assertEqual((e["success"], e["pids"]), (True, [pid]))
        self.assertEqual(e["evicted"], "%s#evictme::3.11" % NP_OLD)
        deadline = time.monotonic() + 10
        while harness.proc_stat(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertIsNone(harness.proc_stat(pid), "the evicted worker is gone")
        e = self.c._send({"type": "evict_worker", "spec": NP_OLD, "python_exe": "3.11",
                          "worker_tag": "evictme"})
        self.assertEqual((e["success"], e["evicted"]), (True, None))
        # omnipkg's DaemonProxy.shutdown evicts its worker
        p = DaemonProxy(self.c, NP_OLD, "3.11")
        pid = int(p.execute("import os; print(os.getpid())")["stdout"])
        p.shutdown()
        r = p.execute("import os; print(os.getpid())")
        self.assertNotEqual(int(r["stdout"]), pid)
        # idle pool configuration
        g = self.c.get_idle_config()
        self.assertEqual((g["success"], g["config"]), (True, {}))
        s = self.c.set_idle_config(PY["3.13"], 1)
        self.assertTrue(s["success"], s)
        g = self.c.get_idle_config()
        self.assertEqual(list(g["config"].values()), [1])
        info = self.c.status()["idle_pool_info"]
        self.assertEqual(list(info.values()), [1])
        self.assertTrue(self.c._send({"type": "set_idle_config", "python_exe": PY["3.13"],
                                      "count": 0})["success"])
        self.assertEqual(self.c.get_idle_config()["config"], {})

    def test_pin_and_memory_limit(self):
        r = self.c.execute_shm("base", "import os; result = {'pid': os.getpid()}", {}, {},
                               python_exe="3.11", worker_tag="pinned", pin=True)
        self.assertTrue(r["success"], r)
        w = [v for k, v in self.c.status()["worker_details"].items() if "#pinned::" in k]
        self.assertEqual((len(w), w[0]["pinned"], w[0]["pid"]), (1, True, r["pid"]))
        r = self.c.execute_shm("base", "b = bytearray(512 << 20)", {}, {}, python_exe="3.11",
                               worker_tag="small", max_memory_mb=128)
        self.assertEqual((r["status"], r["reason"]), ("ERROR", "memory"), r)
        self.assertIn("128 MiB", r["error"])
        r = self.c.execute_shm("base", "b = bytearray(1 << 20); print('fits')", {}, {},
                               python_exe="3.11", worker_tag="small", max_memory_mb=128)
        self.assertEqual(r["stdout"], "fits\n", r)

    # ------------------------------------------------- worker environment

    def test_worker_globals_and_env(self):
        r = self.c.execute("base", "print(json.dumps([sys.version_info[0], os.getpid(), "
                           "os.environ.get('OMNIPKG_IS_DAEMON_WORKER'), "
                           "os.environ.get('OMNIPKG_DAEMON_CHILD'), 'np' in globals()]))",
                           python_exe=PY["3.11"])
        self.assertTrue(r["success"], r)
        major, pid, is_worker, child, has_np = json.loads(r["stdout"])
        self.assertEqual((major, pid, is_worker, child), (3, r["worker_pid"], "1", "1"))
        self.assertFalse(has_np, "no numpy for the base 3.11: no np")

    def test_np_bound_but_imported_on_first_use(self):
        code = ("import sys\nbefore = 'numpy' in sys.modules\n"
                "v = np.__version__\n"
                "result = {'before': before, 'v': v, 'same': np is sys.modules['numpy']}")
        r = self.c.execute(NP_OLD, code, python_exe="3.11", worker_tag="lazy-np")
        self.assertTrue(r["success"], r)
        self.assertEqual((r["before"], r["v"], r["same"]), (False, "1.26.4", True))

    def test_input_data_as_omnipkg_binds_it(self):
        code = "print(json.dumps(input_data, sort_keys=True))"
        r = self.c.execute(NP_OLD, code, python_exe="3.11")
        d = json.loads(r["stdout"])
        self.assertEqual(set(d), {"type", "task_id", "code", "shm_in", "shm_out"})
        self.assertEqual((d["type"], d["code"], d["shm_in"], d["shm_out"]),
                         ("execute", code, {}, {}))
        r = self.c.execute(NP_OLD, "_kept = input_data", python_exe="3.11")
        r2 = self.c.execute(NP_OLD, "print(input_data is _kept, input_data['task_id'] == "
                            "_kept['task_id'])", python_exe="3.11")
        self.assertEqual(r2["stdout"], "False False\n", "input_data is per job")

    def test_omnipkg_importable_and_nested_calls(self):
        code = ("import omnipkg\n"
                "from omnipkg.isolation.worker_daemon import DaemonClient\n"
                "c = DaemonClient()\n"
                "r = c.execute('numpy==2.2.6', 'import numpy; print(numpy.__version__)', "
                "python_exe='3.11')\n"
                "bad = DaemonClient(socket_path='/nonexistent/omnipkgd.sock').execute('base', 'x')\n"
                "result = {'file': omnipkg.__file__, 'inner': r['stdout'], "
                "'inner_pid': r.get('worker_pid'), 'bad': bad['error']}")
        r = self.c.execute(NP_OLD, code, python_exe="3.11")
        self.assertTrue(r["success"], r)
        self.assertTrue(r["file"].startswith(self.d.runtime), r["file"])
        self.assertEqual(r["inner"], "2.2.6\n")
        self.assertNotEqual(r["inner_pid"], r["worker_pid"])
        # the recursion guard: a worker never starts a daemon
        self.assertIn("OMNIPKG_DAEMON_CHILD", r["bad"])

    # ------------------------------------------------------------ data

    def test_posix_shared_memory_by_name(self):
        np = need_numpy(self)
        from multiprocessing import shared_memory
        a = shared_memory.SharedMemory(create=True, size=8 * 16)
        b = shared_memory.SharedMemory(create=True, size=8 * 16)
        try:
            x = np.ndarray((16,), "float64", buffer=a.buf)
            x[:] = np.arange(16)
            r = self.c.execute_shm(NP_NEW, "arr_out[:] = arr_in * 2",
                                   {"name": a.name, "shape": (16,), "dtype": "float64"},
                                   {"name": b.name, "shape": (16,), "dtype": "float64"},
                                   python_exe="3.11")
            self.assertEqual(r["status"], "COMPLETED", r)
            y = np.ndarray((16,), "float64", buffer=b.buf)
            self.assertEqual(y.tolist(), (np.arange(16) * 2.0).tolist())
            del x, y
        finally:
            for s in (a, b):
                s.close()
                s.unlink()

    def test_smart_and_zero_copy_shapes(self):
        np = need_numpy(self)
        s = self.c.execute_smart(NP_NEW, "print(sum(arr_in))", data=[1, 2, 3],
                                 python_exe="3.11")
        self.assertEqual(set(s), {"success", "result", "meta", "transport"})
        self.assertEqual((s["success"], s["result"], s["transport"]), (True, "6", "JSON"))
        s = self.c.execute_smart(NP_NEW, "1/0", data=[1], python_exe="3.11")
        self.assertEqual((s["success"], s["status"]), (False, "ERROR"))
        a = np.arange(1.0, 101.0)
        out, meta = self.c.execute_zero_copy(NP_OLD, "arr_out[0] = np.sum(arr_in)\n"
                                             "arr_out[1] = np.mean(arr_in)", input_array=a,
                                             output_shape=(2,), output_dtype="float64",
                                             python_exe="3.11")
        self.assertEqual(out.tolist(), [5050.0, 50.5])
        self.assertEqual(meta["status"], "COMPLETED")
        big = np.ones(1 << 14)
        s = self.c.execute_smart(NP_NEW, "arr_out[:] = arr_in + 1", data=big, python_exe="3.11")
        self.assertEqual((s["transport"], float(s["result"].sum())), ("SHM", 2.0 * big.size))


class ModuleCliTest(unittest.TestCase):
    """python -m omnipkg.isolation.worker_daemon start|status|stop on a
    runtime dir of its own."""

    def test_start_status_stop(self):
        why = harness.DaemonFixture.available()
        if why:
            self.skipTest(why)
        d = harness.DaemonFixture()          # only for its dirs and binaries
        env = dict(d.env, OMNIPKGD=d.daemon_bin,
                   PYTHONPATH=os.path.join(REPO, "src", "python"))
        pidfile = os.path.join(d.runtime, "omnipkgd.pid")

        def m(*args):
            return subprocess.run([sys.executable, "-m", "omnipkg.isolation.worker_daemon"]
                                  + list(args), env=env, capture_output=True, text=True,
                                  timeout=120, stdin=subprocess.DEVNULL)
        try:
            r = m("status")
            self.assertEqual((r.returncode, r.stdout.strip()), (1, "Daemon not running"), r)
            r = m()
            self.assertEqual(r.returncode, 2)
            self.assertIn("usage", r.stderr)
            r = m("start")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with open(pidfile) as f:
                pid = int(f.read())
            os.kill(pid, 0)
            r = m("status")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("Workers: 0", r.stdout)
            r = m("start")
            self.assertIn("already running", r.stdout)
            r = m("stop")
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "Daemon stopped."), r)
            self.assertIsNone(harness.proc_stat(pid), "the daemon is gone")
            r = m("status")
            self.assertEqual(r.returncode, 1)
        finally:
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read()), 9)
            except (OSError, ValueError):
                pass
            shutil.rmtree(d.tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
