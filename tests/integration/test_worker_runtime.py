"""Integration tests of src/worker/, the worker runtime, driven over its
private socketpair exactly as the daemon drives it, on every interpreter in
INTERPRETERS that exists here.

    python -m unittest tests/integration/test_worker_runtime.py
"""

import array
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.normpath(os.path.join(HERE, "..", "..", "src", "worker", "worker.py"))
PYENV = os.environ.get("PYENV_ROOT", "/root/.pyenv")
INTERPRETERS = [os.path.join(PYENV, "versions", v, "bin", "python")
                for v in ("3.9.18", "3.11.7", "3.13.0")]
for extra in os.environ.get("OMNIPKG_TEST_PYTHONS", "").split(os.pathsep):
    if extra:
        INTERPRETERS.append(extra)
TIMEOUT = 20.0
MiB = 1 << 20
PR_SET_CHILD_SUBREAPER = 36


def setUpModule():
    # This process stands in for the daemon, a child subreaper: zygote-forked
    # workers are re-parented to it, and go when their parent is not it.
    import ctypes
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def send(sock, obj, fds=None):
    send_raw(sock, json.dumps(obj).encode(), fds)


def send_raw(sock, body, fds=None):
    data = struct.pack(">I", len(body)) + body
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", fds))])
    else:
        sock.sendall(data)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("channel closed")
        buf += chunk
    return bytes(buf)


def recv(sock):
    n = struct.unpack(">I", recv_exact(sock, 4))[0]
    return json.loads(recv_exact(sock, n).decode())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class RuntimeMixin:
    python = None

    def setUp(self):
        if not os.access(self.python, os.X_OK):
            self.skipTest("%s is not installed" % self.python)
        self.procs = []       # Popen objects we started
        self.pgids = set()    # process groups of workers we made
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-wrt-")

    def tearDown(self):
        for pg in self.pgids:
            try:
                os.killpg(pg, signal.SIGKILL)
            except OSError:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(TIMEOUT)
        for pid in self.pgids:    # forked workers are our children: reap them
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, mode, paths=()):
        ours, theirs = socket.socketpair()
        ours.settimeout(TIMEOUT)
        self.addCleanup(ours.close)
        p = subprocess.Popen(
            [self.python, "-E", "-s", WORKER, mode, str(theirs.fileno())] + list(paths),
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.procs.append(p)
        self.pgids.add(p.pid)
        ready = recv(ours)
        self.assertEqual(ready["op"], "ready")
        self.assertEqual(ready["pid"], p.pid)
        return p, ours, ready

    def job(self, sock, code, cap=MiB, jid=[0]):
        jid[0] += 1
        send(sock, {"op": "exec", "id": jid[0], "code": code, "cap": cap})
        rep = recv(sock)
        self.assertEqual(rep["op"], "done")
        self.assertEqual(rep["id"], jid[0])
        return rep

    # ------------------------------------------------------------ worker

    def test_ready(self):
        p, s, ready = self.spawn("worker")
        ver = subprocess.check_output(
            [self.python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        self.assertEqual(ready["python"], ver.decode().strip())
        self.assertTrue(ready["executable"])
        rep = self.job(s, "import os; result = [os.environ.get('OMNIPKG_DAEMON_CHILD'),"
                          " os.getpgrp() == os.getpid(), os.read(0, 10).decode()]")
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["result"], ["1", True, ""])

    def test_capture_separate_and_in_order(self):
        p, s, _ = self.spawn("worker")
        code = ("import os, sys\n"
                "print('one')\n"
                "os.write(1, b'two\\n')\n"
                "print('three')\n"
                "os.write(2, b'err1\\n')\n"
                "print('err2', file=sys.stderr)\n"
                "os.write(2, b'err3\\n')\n")
        rep = self.job(s, code)
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["stdout"], "one\ntwo\nthree\n")
        self.assertEqual(rep["stderr"], "err1\nerr2\nerr3\n")
        self.assertEqual(rep["stdout_bytes"], len("one\ntwo\nthree\n"))
        self.assertFalse(rep["stdout_truncated"])
        # The next job starts with empty captures, and so does a subprocess's output.
        rep = self.job(s, "import subprocess, sys\n"
                          "subprocess.run([sys.executable, '-c', 'print(42)'])")
        self.assertEqual((rep["stdout"], rep["stderr"]), ("42\n", ""))

    def test_result_and_persistent_globals(self):
        p, s, _ = self.spawn("worker")
        rep = self.job(s, "model = {'w': 3}\nresult = {'x': 1, 'y': [1.5, None, True]}")
        self.assertEqual(rep["result"], {"x": 1, "y": [1.5, None, True]})
        rep = self.job(s, "model['w'] += 1")
        self.assertTrue(rep["ok"])
        self.assertNotIn("result", rep)        # each job's result is its own
        rep = self.job(s, "result = model['w']")
        self.assertEqual(rep["result"], 4)
        self.assertGreaterEqual(rep["duration"], 0)

    def test_exception(self):
        p, s, _ = self.spawn("worker")
        rep = self.job(s, "def f():\n    raise ValueError('bad value')\nprint('before')\nf()")
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["error"], "ValueError: bad value")
        self.assertIn("<omnipkg>", rep["traceback"])
        self.assertIn("in f", rep["traceback"])
        self.assertIn("ValueError: bad value", rep["traceback"])
        self.assertNotIn("worker.py", rep["traceback"])
        self.assertEqual(rep["stdout"], "before\n")
        rep = self.job(s, "def (")
        self.assertFalse(rep["ok"])
        self.assertTrue(rep["error"].startswith("SyntaxError"), rep["error"])
        self.assertTrue(self.job(s, "result = 1")["ok"])

    def test_cap_truncation(self):
        p, s, _ = self.spawn("worker")
        rep = self.job(s, "import os\nfor _ in range(5):\n    os.write(1, b'x' * 1000000)",
                       cap=MiB)
        self.assertTrue(rep["ok"])
        self.assertEqual(rep["stdout_bytes"], 5000000)
        self.assertTrue(rep["stdout_truncated"])
        self.assertEqual(len(rep["stdout"]), MiB)
        self.assertFalse(rep["stderr_truncated"])
        rep = self.job(s, "print('small')", cap=MiB)
        self.assertEqual((rep["stdout"], rep["stdout_bytes"]), ("small\n", 6))

    def test_system_exit_and_keyboard_interrupt(self):
        p, s, _ = self.spawn("worker")
        rep = self.job(s, "import sys; sys.exit(3)")
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["error"], "SystemExit: 3")
        rep = self.job(s, "raise KeyboardInterrupt")
        self.assertFalse(rep["ok"])
        self.assertTrue(rep["error"].startswith("KeyboardInterrupt"))
        self.assertEqual(self.job(s, "result = 'alive'")["result"], "alive")
        self.assertIsNone(p.poll())

    def test_non_serialisable_result(self):
        p, s, _ = self.spawn("worker")
        rep = self.job(s, "print('hi')\nresult = {1, 2}")
        self.assertFalse(rep["ok"])
        self.assertTrue(rep["error"].startswith("TypeError: result is not JSON-serialisable"),
                        rep["error"])
        self.assertNotIn("result", rep)
        self.assertEqual(rep["stdout"], "hi\n")
        self.assertFalse(self.job(s, "result = float('nan')")["ok"])
        self.assertTrue(self.job(s, "result = 2")["ok"])

    def test_bubble_first(self):
        bubble = os.path.join(self.tmp, "bubble")
        os.makedirs(os.path.join(bubble, "pip"))
        with open(os.path.join(bubble, "pip", "__init__.py"), "w") as f:
            f.write("__version__ = '0.0-bubble'\n")
        other = os.path.join(self.tmp, "second")
        os.makedirs(other)
        p, s, _ = self.spawn("worker", [bubble, other])
        rep = self.job(s, "import sys, pip\nresult = [pip.__file__, pip.__version__, sys.path[:2]]")
        self.assertTrue(rep["ok"], rep)
        f, v, head = rep["result"]
        self.assertTrue(f.startswith(bubble + os.sep), f)
        self.assertEqual(v, "0.0-bubble")
        self.assertEqual(head, [bubble, other])

    def test_channel_fd_private(self):
        p, s, _ = self.spawn("worker")
        rep = self.job(s, "import os, subprocess\n"
                          "r = subprocess.run(['ls', '/proc/self/fd'], close_fds=False,"
                          " stdout=subprocess.PIPE)\n"
                          "result = sorted(int(x) for x in r.stdout.split())")
        self.assertTrue(rep["ok"], rep)
        # A child sees only 0/1/2, plus the fd `ls` opens for the directory itself.
        self.assertLessEqual(len([fd for fd in rep["result"] if fd > 2]), 1, rep["result"])

    # A job that breaks its output streams, then one that checks that every
    # way of writing to fds 1 and 2 is captured again.
    BREAKERS = [
        "import sys; sys.stdout.close()",
        "import os; os.close(1)",
        "import os; os.dup2(os.open('/dev/null', os.O_WRONLY), 1)",
        "import io, sys; sys.stdout = io.StringIO()",
        "import os; os.close(2)",
        "import sys; sys.stderr.close(); sys.__stdout__.detach()",
        "import io, sys; sys.stdout = sys.__stdout__ = io.StringIO(); sys.stderr = None",
        # The capture files themselves, whatever their fd numbers.
        "import os\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        if 'omnipkg-std' in os.readlink('/proc/self/fd/' + fd):\n"
        "            os.close(int(fd))\n"
        "    except OSError:\n"
        "        pass\n",
    ]
    CHECK = ("import os, sys\n"
             "print('p')\n"
             "os.write(1, b'w\\n')\n"
             "os.system('echo c')\n"
             "print('e', file=sys.stderr)\n"
             "os.write(2, b'f\\n')\n"
             "os.system('echo g >&2')\n"
             "print('u', file=sys.__stdout__)\n"
             "result = os.getpid()\n")

    def test_capture_survives_broken_streams(self):
        p, s, ready = self.spawn("worker")
        for code in self.BREAKERS:
            with self.subTest(code=code):
                self.assertEqual(self.job(s, code)["op"], "done")
                rep = self.job(s, self.CHECK)
                self.assertTrue(rep["ok"], rep)
                self.assertEqual(rep["result"], ready["pid"])
                self.assertEqual((rep["stdout"], rep["stderr"]), ("p\nw\nc\nu\n", "e\nf\ng\n"))
                self.assertEqual(rep["stdout_bytes"], 8)
        self.assertIsNone(p.poll())

    def test_capture_survives_broken_streams_forked(self):
        z, zs, _ = self.spawn("zygote")
        w, ready = self.fork(zs, 1)
        for code in self.BREAKERS[:3]:
            with self.subTest(code=code):
                self.job(w, code)
                rep = self.job(w, self.CHECK)
                self.assertEqual(rep["result"], ready["pid"])
                self.assertEqual((rep["stdout"], rep["stderr"]), ("p\nw\nc\nu\n", "e\nf\ng\n"))

    # Messages the worker cannot use are answered, and it serves the next.
    BAD_PAYLOADS = [
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json", "JSON"),
        (b"[" * 100000, "JSON"),          # nested past the recursion limit
        (b"[1, 2]", "object"),
        (b"\"exec\"", "object"),
    ]

    def test_bad_payloads(self):
        p, s, ready = self.spawn("worker")
        for body, why in self.BAD_PAYLOADS:
            with self.subTest(body=body[:20]):
                send_raw(s, body)
                rep = recv(s)
                self.assertEqual((rep["op"], rep["id"]), ("error", None))
                self.assertIn(why, rep["error"])
                self.assertEqual(self.job(s, "import os; result = os.getpid()")["result"],
                                 ready["pid"])
        self.assertIsNone(p.poll())

    def test_exec_without_code(self):
        p, s, ready = self.spawn("worker")
        for jid, msg in enumerate([{"op": "exec"}, {"op": "exec", "code": 5},
                                   {"op": "exec", "code": None, "cap": "x"},
                                   {"op": "run", "code": "pass"}, {}], 100):
            with self.subTest(msg=msg):
                msg["id"] = jid
                send(s, msg)
                rep = recv(s)
                self.assertEqual((rep["op"], rep["id"]), ("error", jid))
                self.assertIn("code", rep["error"])
        rep = self.job(s, "result = 'served'")
        self.assertEqual(rep["result"], "served")
        # Odd but usable fields: the job runs, with the default cap.
        send(s, {"op": "exec", "id": [1], "code": "print(1)", "cap": -1, "extra": {}})
        rep = recv(s)
        self.assertEqual((rep["op"], rep["id"], rep["ok"], rep["stdout"]), ("done", [1], True, "1\n"))
        rep = self.job(s, "x = '\\0'\nresult = 1\0")     # a NUL in the source
        self.assertFalse(rep["ok"])
        self.assertEqual(self.job(s, "import os; result = os.getpid()")["result"], ready["pid"])

    def test_unmap_message(self):
        p, s, ready = self.spawn("worker")
        # Unknown and odd ids are dropped silently: the next frame is the job's.
        send(s, {"op": "unmap", "ids": [5, "x", [1], {"a": 1}, None]})
        send(s, {"op": "unmap", "ids": []})
        self.assertEqual(self.job(s, "import os; result = os.getpid()")["result"], ready["pid"])
        send(s, {"op": "unmap", "id": 3, "ids": "all"})
        rep = recv(s)
        self.assertEqual((rep["op"], rep["id"]), ("error", 3))
        self.assertIn("unmap", rep["error"])
        self.assertEqual(self.job(s, "result = 1")["result"], 1)

    def test_exit_and_eof(self):
        p, s, _ = self.spawn("worker")
        send(s, {"op": "exit"})
        self.assertEqual(p.wait(TIMEOUT), 0)
        p, s, _ = self.spawn("worker")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(p.wait(TIMEOUT), 0)

    # ------------------------------------------------------------ zygote

    def fork(self, zsock, jid, paths=()):
        ours, theirs = socket.socketpair()
        ours.settimeout(TIMEOUT)
        self.addCleanup(ours.close)
        send(zsock, {"op": "fork", "id": jid, "paths": list(paths), "tag": ""},
             fds=[theirs.fileno()])
        theirs.close()
        ready = recv(ours)
        self.assertEqual(ready["op"], "ready")
        self.pgids.add(ready["pid"])    # setsid: its pid is its group
        return ours, ready

    def test_zygote(self):
        z, zs, zready = self.spawn("zygote")
        self.assertTrue(zready["zygote"])
        bubble = os.path.join(self.tmp, "b1")
        os.makedirs(bubble)
        with open(os.path.join(bubble, "bubblemod.py"), "w") as f:
            f.write("X = 'from bubble'\n")
        w1, r1 = self.fork(zs, 1, [bubble])
        w2, r2 = self.fork(zs, 2)
        pids = {r1["pid"], r2["pid"]}
        self.assertEqual(len(pids), 2)
        self.assertNotIn(z.pid, pids)
        rep = self.job(w1, "import ctypes, os, bubblemod\nprint('w1')\n"
                           "sig = ctypes.c_int(0)\n"
                           "ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)\n"
                           "result = [bubblemod.X, os.getpid(), os.getsid(0), os.getppid(),"
                           " sig.value]")
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["result"][:3], ["from bubble", r1["pid"], r1["pid"]])
        # Re-parented to its "daemon" (us), and set to die with it (SIGKILL).
        self.assertEqual(rep["result"][3:], [os.getpid(), signal.SIGKILL])
        self.assertEqual(rep["stdout"], "w1\n")
        rep = self.job(w2, "import os\nresult = os.getpid()\nos.write(1, b'w2')")
        self.assertEqual((rep["result"], rep["stdout"]), (r2["pid"], "w2"))
        # The workers outlive their zygote.
        z.kill()
        z.wait(TIMEOUT)
        time.sleep(0.1)
        for pid in pids:
            self.assertTrue(alive(pid), pid)
        self.assertEqual(self.job(w1, "result = 7")["result"], 7)
        self.assertEqual(self.job(w2, "result = 8")["result"], 8)

    def test_zygote_bad_payloads(self):
        z, zs, _ = self.spawn("zygote")
        for body, why in self.BAD_PAYLOADS:
            with self.subTest(body=body[:20]):
                r, w = os.pipe()
                send_raw(zs, body, fds=[r])
                os.close(r)
                os.close(w)
                rep = recv(zs)
                self.assertEqual((rep["op"], rep["id"]), ("error", None))
                self.assertIn(why, rep["error"])
        w1, ready = self.fork(zs, 9)                   # still serving
        self.assertEqual(self.job(w1, "import os; result = os.getpid()")["result"], ready["pid"])
        self.assertIsNone(z.poll())

    def test_zygote_bad_request(self):
        z, zs, _ = self.spawn("zygote")
        send(zs, {"op": "fork", "id": 5, "paths": []})        # no fd
        rep = recv(zs)
        self.assertEqual((rep["op"], rep["id"]), ("error", 5))
        self.assertIn("fd", rep["error"])
        r, w = os.pipe()
        send(zs, {"op": "nonsense", "id": 6}, fds=[r])
        os.close(r)
        os.close(w)
        rep = recv(zs)
        self.assertEqual((rep["op"], rep["id"]), ("error", 6))
        w1, _ = self.fork(zs, 7)                       # still serving
        self.assertEqual(self.job(w1, "result = 1")["result"], 1)
        zs.shutdown(socket.SHUT_WR)
        self.assertEqual(z.wait(TIMEOUT), 0)


def _make(python):
    name = "Test_" + "".join(c if c.isalnum() else "_"
                             for c in os.path.basename(os.path.dirname(os.path.dirname(python)))
                             or python)
    return name, type(name, (RuntimeMixin, unittest.TestCase), {"python": python})


for _py in INTERPRETERS:
    _n, _cls = _make(_py)
    globals()[_n] = _cls
del _py, _n, _cls

if __name__ == "__main__":
    unittest.main()
