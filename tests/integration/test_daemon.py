"""The daemon end to end: real omnipkgd, real interpreters, real numpy.

Each test starts its own daemon on a private runtime dir and home
(harness.DaemonFixture) and takes it down, pass or fail.  The numpy tests
link the bubbles prepared by scripts/bubbles.sh (the default home) into
the private home; under CI=true a missing bubble fails instead of skips.

Jobs that must still be running when the test acts are held at a gate:
they say they started by creating one file and wait for another that the
test creates when it is done.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

import harness

PY = harness.find_pythons(("3.9", "3.11", "3.13"))
REAL_HOME = os.environ.get("OMNIPKG_HOME") or os.path.join(
    os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "omnipkg")
TAGS = {"3.9": "cp39", "3.11": "cp311", "3.13": "cp313"}


def link_bubble(test, d, python, name, version):
    """Links <real home>/bubbles/<tag>/<name>-<version> into d's home.  A
    missing bubble skips (fails under CI=true); test may be None (set-up of
    a whole class)."""
    tag = "cp" + python.replace(".", "")
    src = os.path.join(REAL_HOME, "bubbles", tag, "%s-%s" % (name, version))
    if not os.path.isdir(src):
        msg = "bubble %s==%s for %s missing (scripts/bubbles.sh)" % (name, version, python)
        if os.environ.get("CI") == "true":
            raise AssertionError(msg)
        raise unittest.SkipTest(msg)
    dst = os.path.join(d.home, "bubbles", tag)
    os.makedirs(dst, exist_ok=True)
    os.symlink(src, os.path.join(dst, os.path.basename(src)))


def gate(test):
    """(started, release, code): code that creates started, then waits (at
    most 60 s) until release exists."""
    d = test.d.tmp
    n = len([f for f in os.listdir(d) if f.startswith("gate")])
    started = os.path.join(d, "gate%d-started" % n)
    release = os.path.join(d, "gate%d-release" % n)
    code = ("import os, time\nwith open(%r, 'w') as _f: _f.write(str(os.getpid()))\n"
            "_end = time.monotonic() + 60\n"
            "while not os.path.exists(%r) and time.monotonic() < _end:\n"
            "    time.sleep(0.01)\n" % (started, release))
    return started, release, code


def wait_until(test, what, cond, timeout=60.0):
    """Polls cond() until true; fails the test after timeout seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            test.fail("timed out waiting for " + what)
        time.sleep(0.02)


def pid_gone(pid):
    return harness.proc_stat(pid) is None


class Conn:
    """A raw protocol connection: frames in, frames out."""

    def __init__(self, path, timeout=60):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, obj):
        b = json.dumps(obj).encode()
        self.s.sendall(struct.pack(">I", len(b)) + b)

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    m = json.loads(self.buf[4:4 + n])
                    self.buf = self.buf[4 + n:]
                    return m
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise EOFError("daemon closed the connection")
            self.buf += chunk

    def close(self):
        self.s.close()


class DaemonTest(unittest.TestCase):
    config = None

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            if os.environ.get("CI") == "true":
                self.fail(why)
            self.skipTest(why)
        if "3.11" not in PY:
            self.skipTest("python 3.11 not installed")
        self.d = harness.DaemonFixture(config=self.config)

    def tearDown(self):
        problems = self.d.stop()
        self.assertEqual(problems, [])

    def exec_json(self, *args, **kw):
        r = self.d.cli("exec", "--json", *args, **kw)
        self.assertTrue(r.stdout, "no reply: rc %d, stderr %s" % (r.returncode, r.stderr))
        return r.returncode, json.loads(r.stdout)


class TestExec(DaemonTest):
    def test_stdout_stderr_result_and_globals(self):
        self.d.start()
        code = ("import os, sys\nprint('py')\nos.write(1, b'c-level\\n')\n"
                "print('err', file=sys.stderr)\nos.write(2, b'c-err\\n')\n"
                "counter = globals().get('counter', 0) + 1\nresult = {'n': counter}\n")
        rc, r = self.exec_json("--spec", "base", "--python", "3.11", "-c", code)
        self.assertEqual(rc, 0)
        self.assertTrue(r["ok"])
        self.assertEqual(r["stdout"], "py\nc-level\n")
        self.assertEqual(r["stderr"], "err\nc-err\n")
        self.assertEqual(r["result"], {"n": 1})
        rc, r2 = self.exec_json("--spec", "base", "--python", "3.11", "-c", code)
        self.assertEqual(r2["result"], {"n": 2}, "globals persist between jobs")
        self.assertEqual(r2["worker_pid"], r["worker_pid"])

    def test_exception_gives_error_and_traceback(self):
        self.d.start()
        rc, r = self.exec_json("--spec", "base", "--python", "3.11", "-c",
                               "def f():\n    raise KeyError('k')\nf()")
        self.assertEqual(rc, 1)
        self.assertFalse(r["ok"])
        self.assertEqual(r["reason"], "exception")
        self.assertEqual(r["error"], "KeyError: 'k'")
        self.assertIn('File "<omnipkg>", line 2, in f', r["traceback"])

    def test_refusals_name_the_fix(self):
        self.d.start()
        rc, r = self.exec_json("--spec", "numpy==1.26.4", "--python", "3.11", "-c", "pass")
        self.assertEqual(rc, 2)
        self.assertEqual(r["reason"], "nobubble")
        self.assertIn("omnipkg install numpy==1.26.4 --python 3.11", r["error"])
        rc, r = self.exec_json("--spec", "../../etc/passwd", "-c", "pass")
        self.assertEqual((rc, r["reason"]), (2, "badspec"))
        rc, r = self.exec_json("--spec", "base", "--python", "2.1", "-c", "pass")
        self.assertEqual((rc, r["reason"]), (2, "nopython"))

    def test_cross_interpreter(self):
        self.d.start()
        procs = {py: self.d.cli_popen("exec", "--spec", "base", "--python", py, "-c",
                                      "import sys; print('%d.%d' % sys.version_info[:2])")
                 for py in PY}
        for py, p in procs.items():
            out, err = p.communicate(timeout=120)
            self.assertEqual((p.returncode, out.strip()), (0, py), err)

    def test_worker_env_guards_recursion(self):
        self.d.start()
        # The client package jobs import is the daemon's own copy.
        code = ("import os\n"
                "from omnipkg.isolation.worker_daemon import DaemonClient\n"
                "c = DaemonClient(socket_path='/nonexistent/omnipkgd.sock', raise_errors=True)\n"
                "try:\n    c.execute('base', 'pass')\n    result = 'started'\n"
                "except Exception as e:\n    result = [os.environ.get('OMNIPKG_DAEMON_CHILD'), "
                "type(e).__name__, str(e)]\n")
        rc, r = self.exec_json("--spec", "base", "--python", "3.11", "-c", code)
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["result"][:2], ["1", "DaemonNotRunning"])
        self.assertIn("never starts one", r["result"][2])

    def test_once_worker_is_gone_afterwards(self):
        self.d.start()
        rc, r = self.exec_json("--once", "--spec", "base", "--python", "3.11", "-c", "import os; result = os.getpid()")
        self.assertEqual(rc, 0)
        pid = r["result"]
        wait_until(self, "the ephemeral worker %d to exit" % pid, lambda: pid_gone(pid))


class TestNumpy(DaemonTest):
    def test_two_majors_side_by_side_and_across_interpreters(self):
        want = [("3.11", "1.26.4"), ("3.11", "2.2.6"), ("3.9", "1.26.4"), ("3.13", "2.2.6")]
        want = [(py, v) for py, v in want if py in PY]
        for py, v in want:
            link_bubble(self, self.d, py, "numpy", v)
        self.d.start()
        code = "import numpy; result = [numpy.__version__, numpy.__file__, float(numpy.arange(4).sum())]"
        procs = [(py, v, self.d.cli_popen("exec", "--json", "--spec", "numpy==" + v, "--python", py, "-c", code))
                 for py, v in want]
        pids = set()
        for py, v, p in procs:
            out, err = p.communicate(timeout=300)
            self.assertEqual(p.returncode, 0, err + out)
            r = json.loads(out)
            version, path, total = r["result"]
            self.assertEqual(version, v)
            bubble = os.path.join(self.d.home, "bubbles", TAGS[py], "numpy-" + v)
            self.assertTrue(os.path.realpath(path).startswith(os.path.realpath(bubble) + os.sep),
                            "%s not in %s" % (path, bubble))
            self.assertEqual(total, 6.0)
            pids.add(r["worker_pid"])
        self.assertEqual(len(pids), len(want), "one worker per (spec, python)")


class TestFaults(DaemonTest):
    config = {"job_timeout": 300}

    def run_fault(self, code, timeout=None):
        """Runs a faulty job while a healthy job runs on another worker."""
        args = ["exec", "--json", "--spec", "base", "--python", "3.11", "--tag", "victim"]
        if timeout:
            args += ["--timeout", str(timeout)]
        healthy = self.d.cli_popen("exec", "--json", "--spec", "base", "--python", "3.11",
                                   "--tag", "bystander", "-c",
                                   "import time; time.sleep(0.5); result = 'fine'")
        bad = self.d.cli(*(args + ["-c", code]))
        out, err = healthy.communicate(timeout=120)
        self.assertEqual(json.loads(out)["result"], "fine", "the bystander job was disturbed")
        r = json.loads(bad.stdout)
        again = self.d.cli("exec", "--json", "--spec", "base", "--python", "3.11", "--tag", "victim",
                           "-c", "result = 42")
        self.assertEqual(json.loads(again.stdout)["result"], 42, "the next job on the spec failed")
        return bad.returncode, r

    def test_segfault(self):
        self.d.start()
        rc, r = self.run_fault("import ctypes; ctypes.string_at(0)")
        self.assertEqual((rc, r["ok"], r["reason"], r["signal"]), (1, False, "signal", signal.SIGSEGV))
        self.assertIn("signal 11", r["error"])

    def test_exit_code(self):
        self.d.start()
        rc, r = self.run_fault("import os; os._exit(3)")
        self.assertEqual((rc, r["reason"], r["exit_code"]), (1, "exit", 3))

    def test_timeout(self):
        self.d.start()
        rc, r = self.run_fault("while True: pass", timeout=1)
        self.assertEqual((rc, r["reason"]), (1, "timeout"))

    def test_megabytes_on_fd1_are_capped(self):
        self.d.start()
        rc, r = self.run_fault("import os\nfor _ in range(8): os.write(1, b'x' * (1 << 20))\nresult = 'done'")
        self.assertEqual((rc, r["ok"], r["result"]), (0, True, "done"))
        self.assertTrue(r["stdout_truncated"])
        self.assertEqual(r["stdout_bytes"], 8 << 20)
        self.assertEqual(len(r["stdout"]), 1 << 20)


class TestProtocol(DaemonTest):
    def test_eight_clients_five_hundred_interleaved_requests(self):
        self.d.start()
        errors = []

        def client(k):
            try:
                c = Conn(self.d.socket)
                sent = {}
                for i in range(500):
                    rid = 1 + i
                    token = "c%d-r%d" % (k, i)
                    sent[rid] = token
                    c.send({"v": 1, "id": rid, "op": "exec", "spec": "base", "python": "3.11",
                            "tag": "t%d" % (i % 3), "code": "result = %r" % token})
                got = {}
                for _ in range(500):
                    m = c.recv()
                    self.assertTrue(m["ok"], m)
                    self.assertNotIn(m["id"], got, "a reply came twice")
                    got[m["id"]] = m["result"]
                c.close()
                if got != sent:
                    errors.append("client %d: replies do not match requests" % k)
            except Exception as e:  # reported below, in the main thread
                errors.append("client %d: %r" % (k, e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertEqual(errors, [])

    def test_hot_requests_fault_in_no_memory(self):
        # The relay used to grow each connection's read buffer on every
        # request and trim it after: three page faults (and a brk pair) per
        # hot call, a third of the daemon's time on it.
        if os.environ.get("OMNIPKG_TEST_SANITIZED"):
            self.skipTest("the sanitizer's allocator hands out fresh memory by design")
        self.d.start()
        c = Conn(self.d.socket)

        def call(i):
            c.send({"v": 1, "id": i, "op": "exec", "spec": "base", "python": "3.11",
                    "code": "pass"})
            self.assertTrue(c.recv()["ok"])

        def minflt():
            with open("/proc/%d/stat" % self.d.proc.pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[7])

        for i in range(1, 101):
            call(i)
        before = minflt()
        for i in range(101, 2101):
            call(i)
        faults = minflt() - before
        c.close()
        self.assertLess(faults, 200, "%d minor faults in the daemon over 2000 hot calls" % faults)

    def test_client_leaving_mid_job_disturbs_no_one(self):
        self.d.start()
        started, release, code = gate(self)
        a = Conn(self.d.socket)
        a.send({"v": 1, "id": 1, "op": "exec", "spec": "base", "python": "3.11",
                "code": code + "result = 1"})
        wait_until(self, "the job to start", lambda: os.path.exists(started))
        a.close()
        b = Conn(self.d.socket)
        b.send({"v": 1, "id": 7, "op": "exec", "spec": "base", "python": "3.11", "code": "result = 2"})
        open(release, "w").close()
        m = b.recv()
        self.assertEqual((m["id"], m["ok"], m["result"]), (7, True, 2))
        b.close()

    def test_bad_frames_get_errors_and_the_daemon_serves_on(self):
        self.d.start()
        c = Conn(self.d.socket)
        c.send({"v": 2, "id": 1, "op": "hello"})
        m = c.recv()
        self.assertEqual((m["id"], m["ok"]), (1, False))
        self.assertIn("version", m["error"])
        c.send_raw(struct.pack(">I", 9) + b"not json!")
        m = c.recv()
        self.assertFalse(m["ok"])
        c.send({"v": 1, "id": 3, "op": "frobnicate"})
        self.assertEqual(c.recv()["id"], 3)
        c.send({"v": 1, "id": 4, "op": "exec", "spec": "base", "code": 5})
        m = c.recv()
        self.assertEqual((m["id"], m["ok"]), (4, False))
        c.send_raw(struct.pack(">I", 0xFFFFFFF0))
        m = c.recv()
        self.assertFalse(m["ok"])
        self.assertIn("larger", m["error"])
        with self.assertRaises((EOFError, ConnectionError)):
            c.recv()
        c.close()
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "-c", "print('alive')")
        self.assertEqual(r.stdout, "alive\n")


class TestLifecycle(DaemonTest):
    def test_single_instance_and_stale_socket(self):
        self.d.start()
        second = subprocess.run([self.d.daemon_bin, "--foreground"], env=self.d.env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        self.assertEqual(second.returncode, 1)
        self.assertIn("already running", second.stderr)
        self.d.crash()
        self.assertTrue(os.path.exists(self.d.socket), "a killed daemon leaves its socket")
        self.assertEqual(self.d.reap_leftovers(), [], "the killed daemon's workers must die with it")
        self.d.start()
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "-c", "print('again')")
        self.assertEqual(r.stdout, "again\n")

    def test_sigterm_fails_running_jobs_and_cleans_up(self):
        self.d.start()
        started, release, code = gate(self)
        c = Conn(self.d.socket)
        c.send({"v": 1, "id": 1, "op": "exec", "spec": "base", "python": "3.11", "code": code})
        wait_until(self, "the job to start", lambda: os.path.exists(started))
        with open(started) as f:
            worker = int(f.read())
        self.d.proc.send_signal(signal.SIGTERM)
        m = c.recv()
        self.assertEqual((m["id"], m["ok"], m["reason"]), (1, False, "shutdown"))
        self.assertEqual(self.d.proc.wait(15), 0)
        for f in ("omnipkgd.sock", "omnipkgd.pid", "worker", "shm"):
            self.assertFalse(os.path.exists(os.path.join(self.d.runtime, f)), f + " left behind")
        wait_until(self, "worker %d to exit" % worker, lambda: pid_gone(worker), timeout=15)
        c.close()


class TestPool(DaemonTest):
    def workers(self):
        return json.loads(self.d.cli("workers", "--json").stdout)["workers"]

    def run_tag(self, tag):
        r = self.d.cli("exec", "--spec", "base", "--python", "3.11", "--tag", tag, "-c", "pass")
        self.assertEqual(r.returncode, 0, r.stderr)


class TestLru(TestPool):
    # Idle eviction off, so a worker that goes was evicted for room.
    config = {"idle_timeout": 0, "max_workers": 2,
              "prewarm": [{"spec": "base", "python": "3.11"}]}

    def test_prewarm_then_least_recently_used_goes(self):
        self.d.start()
        wait_until(self, "the prewarmed worker",
                   lambda: any(w["state"] == "idle" for w in self.workers()))
        self.assertEqual([(w["spec"], w["tag"]) for w in self.workers()], [("base", "")],
                         "the prewarmed worker is up before any job")
        for tag in ("a", "b"):
            self.run_tag(tag)
        self.assertEqual(sorted(w["tag"] for w in self.workers()), ["a", "b"],
                         "the prewarmed worker, used least recently, was evicted")
        # "a" is older than "b" but used later: "b" is the one to go.
        self.run_tag("a")
        self.run_tag("c")
        self.assertEqual(sorted(w["tag"] for w in self.workers()), ["a", "c"])


class TestIdleTimeout(TestPool):
    # Room for many workers, so a worker that goes was idle too long.
    config = {"idle_timeout": 1, "max_workers": 32}

    def test_idle_worker_is_stopped(self):
        self.d.start()
        self.run_tag("a")
        pids = [w["pid"] for w in self.workers()]
        self.assertEqual(len(pids), 1)
        wait_until(self, "the idle worker to be stopped", lambda: self.workers() == [])
        wait_until(self, "worker %d to exit" % pids[0], lambda: pid_gone(pids[0]))


class TestHarness(DaemonTest):
    """The fixture's own promises: what a daemon leaves behind fails."""

    def tearDown(self):
        shutil.rmtree(self.d.tmp, ignore_errors=True)   # kept by a failed stop()
        super().tearDown()

    def test_process_outliving_the_daemon_is_killed_and_reported(self):
        # The daemon itself kills what its jobs leave running, so the
        # stray is planted from here, marked as one of this daemon's.
        self.d.start()
        env = dict(self.d.env, OMNIPKG_DAEMON_CHILD="1")
        stray = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
        self.addCleanup(stray.wait)
        self.addCleanup(stray.kill)
        problems = self.d.stop()
        self.assertTrue(any(p.startswith("pid %d outlived the daemon" % stray.pid)
                            for p in problems), problems)
        stray.wait(10)

    def test_sanitizer_report_in_the_log_fails(self):
        self.d.start()
        with open(self.d.log_path, "a") as f:
            f.write("==1==ERROR: LeakSanitizer: detected memory leaks\n")
        problems = self.d.stop()
        self.assertTrue(any("sanitizer report" in p and "LeakSanitizer" in p for p in problems),
                        problems)


class TestPythonClient(DaemonTest):
    def test_daemon_client_api(self):
        self.d.start()
        code = r"""
import json, sys
sys.path.insert(0, %r)
from omnipkg.isolation.worker_daemon import DaemonClient
c = DaemonClient(socket_path=%r, auto_start=False)
r = c.execute_shm("base", "print('hi'); result = {'x': 1}", {}, {}, python_exe="3.11")
o = c.run_once("base", "import os; result = {'pid': os.getpid()}", python_exe="3.11")
e = c.execute("base", "1/0", python_exe="3.11")
s = c.status()
print(json.dumps([r["success"], r["stdout"], r["x"], o["success"], e["success"], e["error"], s["success"] if "success" in s else s.get("ok")]))
""" % (os.path.join(harness.REPO, "src", "python"), self.d.socket)
        p = subprocess.run([PY["3.11"], "-c", code], capture_output=True, text=True, timeout=120, env=self.d.env)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = json.loads(p.stdout)
        self.assertEqual(got, [True, "hi\n", 1, True, False, "ZeroDivisionError: division by zero", True])


if __name__ == "__main__":
    unittest.main()
