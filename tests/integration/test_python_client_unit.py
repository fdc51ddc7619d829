"""Unit tests of the Python client (src/python/omnipkg) against a small fake
daemon served by a thread on a temporary Unix socket.  Stdlib only.

    python -m unittest tests/integration/test_python_client_unit.py
"""

import gc
import glob
import json
import mmap
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
OMNIPKG_H = os.path.normpath(os.path.join(HERE, "..", "..", "src", "omnipkg.h"))
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..", "src", "python")))

from omnipkg import client as omc  # noqa: E402
from omnipkg import DaemonClient  # noqa: E402
from omnipkg.isolation.worker_daemon import DaemonClient as CompatClient  # noqa: E402

TIMEOUT = 10.0


def find_numpy():
    """numpy for this interpreter: importable already, or from the newest
    numpy bubble of its tag in the omnipkg home (put on sys.path); None
    when there is none."""
    try:
        import numpy
        return numpy
    except ImportError:
        pass
    home = os.environ.get("OMNIPKG_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "omnipkg")
    tag = "cp%d%d" % sys.version_info[:2]
    for d in sorted(glob.glob(os.path.join(home, "bubbles", tag, "numpy-*")), reverse=True):
        sys.path.append(d)
        try:
            import numpy
            return numpy
        except ImportError:
            sys.path.remove(d)
    return None


def need_numpy(test):
    """numpy, else skip (fail under CI=true, where a bubble must be there)."""
    n = find_numpy()
    if n is None:
        msg = "no numpy for Python %d.%d (scripts/bubbles.sh)" % sys.version_info[:2]
        if os.environ.get("CI") == "true":
            test.fail(msg)
        test.skipTest(msg)
    return n


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class FakeDaemon:
    """Serves protocol 1 on path.  Each request is recorded, then answered by
    self.handle(conn_state, msg) -> reply dict (v and id are added), or None
    for no reply.  Exec requests are handled on their own thread, so a slow
    one does not hold back the replies of later ones."""

    def __init__(self, path):
        self.path = path
        self.requests = []
        self.raw_headers = []
        self.raw_bodies = []
        self.connections = 0
        self.lock = threading.Lock()
        self.exec_delay = {}         # code -> seconds before replying
        self.hold = None             # a threading.Barrier every exec waits on
        self.close_after_reply = False
        # Shared segments: files in shm_dir, as the daemon's registry.
        self.shm_dir = tempfile.mkdtemp(prefix="omnipkg-fake-shm-")
        self.segments = {}           # name -> {"size", "path", "id"}
        self.leased = set()          # names shm_remove refuses as leased
        self.quota = None            # bytes shm_create may still reserve
        self.next_seg = 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(16)
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        try:
            self.srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.srv.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        shutil.rmtree(self.shm_dir, ignore_errors=True)

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        wlock = threading.Lock()
        while True:
            try:
                hdr = recv_exact(conn, 4)
                if hdr is None:
                    return
                n = struct.unpack(">I", hdr)[0]
                body = recv_exact(conn, n)
            except OSError:
                return
            msg = json.loads(body.decode("utf-8"))
            with self.lock:
                self.raw_headers.append((n, len(body)))
                self.raw_bodies.append(body)
                self.requests.append(msg)
            if msg.get("op") == "exec":
                threading.Thread(target=self._answer, args=(conn, wlock, msg),
                                 daemon=True).start()
            else:
                self._answer(conn, wlock, msg)

    def _answer(self, conn, wlock, msg):
        if msg.get("op") == "exec":
            if self.hold is not None:
                self.hold.wait(TIMEOUT)
            time.sleep(self.exec_delay.get(msg.get("code"), 0))
        rep = self.handle(msg)
        if rep is None:
            return
        rep = dict(rep, v=1, id=msg["id"])
        data = frame(rep) if not isinstance(rep.get("_raw"), bytes) else rep["_raw"]
        with wlock:
            try:
                if rep.get("_trickle"):
                    for i in range(len(data)):        # one byte at a time
                        conn.sendall(data[i:i + 1])
                        if i % 7 == 0:
                            time.sleep(0.001)
                else:
                    conn.sendall(data)
                if rep.get("_close") or (self.close_after_reply and msg.get("op") == "exec"):
                    conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def shm_new(self, name, size):
        with self.lock:
            self.next_seg += 1
            name = name or "s%d" % self.next_seg
            path = os.path.join(self.shm_dir, name)
            with open(path, "wb") as f:
                f.truncate(size)
            self.segments[name] = {"size": size, "path": path, "id": self.next_seg}
        return {"name": name, "id": self.next_seg, "gen": 1, "size": size, "path": path}

    def run_job(self, msg):
        """Runs "py:<code>" as a worker would: arrays bound as numpy views of
        the segment files, bind values as globals; a numpy `result` comes
        back as result_array (a view of a segment it lives in, else a new
        segment r<id>-res)."""
        import numpy as np
        g, spans = {"np": np}, []
        for e in msg.get("arrays") or []:
            seg = self.segments.get(e["segment"])
            if seg is None:
                return {"ok": False, "error": "no segment %s" % e["segment"], "reason": "nosegment"}
            with open(seg["path"], "r+b") as f:
                m = mmap.mmap(f.fileno(), seg["size"])
            a = np.ndarray(e["shape"], np.dtype(e["dtype"]), buffer=m, offset=e.get("offset", 0),
                           strides=e.get("strides"))
            base = np.frombuffer(m, np.uint8).__array_interface__["data"][0]
            spans.append((e["segment"], base, seg["size"]))
            g[e["name"]] = a

        def unjson(v):
            if isinstance(v, dict) and set(v) == {"__ndarray__"}:
                d = v["__ndarray__"]
                return np.array(d["data"], dtype=d["dtype"]).reshape(d["shape"])
            return v
        g.update({k: unjson(v) for k, v in (msg.get("bind") or {}).items()})
        out = []
        g["print"] = lambda *a: out.append(" ".join(map(str, a)) + "\n")
        try:
            exec(msg["code"][3:], g)
        except Exception as e:
            return {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "traceback": "tb",
                    "reason": "exception", "stdout": "", "stderr": ""}
        rep = {"ok": True, "stdout": "".join(out), "stderr": "", "worker_pid": 42}
        res = g.get("result")
        if isinstance(res, np.ndarray):
            ptr = res.__array_interface__["data"][0]
            for name, base, size in spans:
                if base <= ptr < base + size:
                    rep["result_array"] = {"segment": name, "dtype": res.dtype.str,
                                           "shape": list(res.shape),
                                           "strides": list(res.strides), "offset": ptr - base}
                    break
            else:
                c = np.ascontiguousarray(res)
                seg = self.shm_new("r%d-res" % msg["id"], max(1, c.nbytes))
                with open(seg["path"], "r+b") as f:
                    f.write(c.tobytes())
                rep["result_array"] = {"segment": seg["name"], "dtype": c.dtype.str,
                                       "shape": list(c.shape), "strides": list(c.strides),
                                       "offset": 0}
        elif "result" in g:
            rep["result"] = res
        return rep

    def handle(self, msg):
        op = msg.get("op")
        if op == "shm_create":
            if self.quota is not None:
                if msg["size"] > self.quota:
                    return {"ok": False, "error": "over quota", "errno": 122, "reason": "quota"}
                self.quota -= msg["size"]
            return {"ok": True, "segment": self.shm_new(msg.get("name"), msg["size"])}
        if op == "shm_list":
            return {"ok": True, "segments": [dict(v, name=k) for k, v in self.segments.items()]}
        if op == "shm_remove":
            name = msg["name"]
            if name in self.leased:
                return {"ok": False, "error": "leased", "errno": 16, "reason": "leased"}
            with self.lock:
                seg = self.segments.pop(name, None)
            if seg is None:
                return {"ok": False, "error": "no segment", "errno": 2, "reason": "nosegment"}
            os.unlink(seg["path"])
            if self.quota is not None:
                self.quota += seg["size"]
            return {"ok": True}
        if op == "exec" and msg["code"].startswith("py:"):
            return self.run_job(msg)
        if op == "hello":
            return {"ok": True, "daemon": "fake", "version": "0", "proto": 1, "pid": os.getpid()}
        if op == "status":
            return {"ok": True, "pid": os.getpid(), "workers": 2, "jobs": 7}
        if op == "shutdown":
            return {"ok": True}
        if op == "exec":
            code = msg["code"]
            if code == "no reply":
                return None
            if code == "hang up":
                return {"_raw": b"\x00\x00", "_close": True}   # half a header
            if code.startswith("badspec"):
                return {"ok": False, "error": "bad spec 'x==': no version", "errno": 22,
                        "reason": "badspec"}
            if code == "raise":
                return {"ok": False, "error": "ValueError: nope", "traceback": "Traceback...\n",
                        "reason": "exception", "stdout": "", "stderr": "", "worker_pid": 42}
            if code == "bad frame":
                return {"_raw": struct.pack(">I", 0)}
            rep = {"ok": True, "stdout": "out:" + code, "stderr": "", "worker_pid": 42,
                   "duration": 0.001, "spec": msg["spec"], "python": "/usr/bin/python3",
                   "echo": msg}
            if code.startswith("result="):
                rep["result"] = json.loads(code[len("result="):])
            if code == "trickle":
                rep["_trickle"] = True
            return rep
        return {"ok": False, "error": "unknown op", "errno": 95}


class ReasonTableTest(unittest.TestCase):
    def test_mirror_matches_omnipkg_h(self):
        with open(OMNIPKG_H) as f:
            text = f.read()
        rows = re.findall(r'X\(\s*(\w+),\s*(\d+),\s*"(\w+)",\s*(JOB|REFUSED|SYSTEM)\s*\)', text)
        self.assertGreater(len(rows), 10, "no OMNI_REASONS rows found in %s" % OMNIPKG_H)
        table = {name: cls.lower() for _, _, name, cls in rows}
        self.assertEqual(len(table), len(rows))
        self.assertEqual(omc.REASONS, table)
        self.assertEqual(omc.reason_class("busy"), "refused")
        self.assertIsNone(omc.reason_class("no such reason"))


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-cli-")
        self.path = os.path.join(self.tmp, "omnipkgd.sock")
        self.fake = FakeDaemon(self.path)
        self.client = DaemonClient(socket_path=self.path, timeout=TIMEOUT, auto_start=False, raise_errors=True)
        self.children = []

    def tearDown(self):
        self.client.close()
        self.fake.stop()
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def execs(self):
        return [m for m in self.fake.requests if m.get("op") == "exec"]

    # ------------------------------------------------------------ framing

    def test_framing_and_request_shape(self):
        rep = self.client.execute("numpy==1.26.4", "print('é')", python_exe="3.11")
        self.assertTrue(rep["success"])
        first, ex = self.fake.requests[0], self.execs()[0]
        self.assertEqual(first["op"], "hello")        # protocol check on connect
        for n, got in self.fake.raw_headers:
            self.assertEqual(n, got)
        self.assertEqual(ex["v"], 1)
        self.assertIsInstance(ex["id"], int)
        self.assertEqual((ex["spec"], ex["code"], ex["python"]),
                         ("numpy==1.26.4", "print('é')", "3.11"))
        for absent in ("tag", "once", "timeout"):
            self.assertNotIn(absent, ex)
        ids = [m["id"] for m in self.fake.requests]
        self.assertEqual(len(ids), len(set(ids)))

    def test_reply_split_into_bytes(self):
        rep = self.client.execute("base", "trickle")
        self.assertTrue(rep["success"])
        self.assertEqual(rep["stdout"], "out:trickle")
        self.assertTrue(self.client.execute("base", "after")["success"])
        self.assertEqual(self.fake.connections, 1)    # one persistent connection

    def test_options_passed_through(self):
        self.client.run_once("a==1,b==2", "x", python_exe="/usr/bin/python3.11",
                             worker_tag="gpu0", timeout=5)
        self.client.execute("base", "y", timeout=2.5, worker_tag="t")
        a, b = self.execs()
        self.assertEqual((a["once"], a["tag"], a["python"], a["timeout"]),
                         (True, "gpu0", "/usr/bin/python3.11", 5))
        self.assertEqual((b["timeout"], b["tag"]), (2.5, "t"))
        self.assertNotIn("once", b)

    # --------------------------------------------- out-of-order id matching

    def test_out_of_order_replies(self):
        # Three threads share one connection; the daemon holds all three
        # requests, then answers the slowest-named first.
        self.client.hello()
        self.fake.hold = threading.Barrier(3)
        self.fake.exec_delay = {"c0": 0.4, "c1": 0.2, "c2": 0.0}
        out, order = {}, []

        def run(i):
            r = self.client.execute("base", "c%d" % i)
            out[i] = r
            order.append(i)

        ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(TIMEOUT)
        self.assertEqual(sorted(out), [0, 1, 2])
        for i, r in out.items():
            self.assertEqual(r["stdout"], "out:c%d" % i)
            self.assertEqual(r["echo"]["code"], "c%d" % i)
        self.assertEqual(order, [2, 1, 0])
        self.assertEqual(self.fake.connections, 1)

    def test_late_reply_to_abandoned_request_is_dropped(self):
        c = DaemonClient(socket_path=self.path, timeout=0.3, auto_start=False, raise_errors=True)
        self.addCleanup(c.close)
        self.fake.exec_delay = {"slow": 0.6}
        with self.assertRaises(omc.DaemonTimeout):
            c.execute("base", "slow")
        time.sleep(0.5)                                    # its reply arrives now
        r = c.execute("base", "fast")
        self.assertEqual(r["stdout"], "out:fast")

    # --------------------------------------------------------- reply shape

    def test_result_merging(self):
        rep = self.client.execute(
            "base", 'result={"a": 1, "b": [1, 2], "stdout": "not this", "success": false}')
        self.assertTrue(rep["success"])
        self.assertTrue(rep["ok"])
        self.assertEqual((rep["a"], rep["b"]), (1, [1, 2]))
        self.assertEqual(rep["stdout"].split(":")[0], "out")      # not replaced
        self.assertEqual((rep["status"], rep["success"]), ("COMPLETED", True))
        self.assertEqual(rep["job_result"], {"a": 1, "b": [1, 2], "stdout": "not this",
                                             "success": False})
        self.assertEqual(rep["worker_pid"], 42)
        self.assertNotIn("v", rep)
        self.assertNotIn("result", rep)       # omnipkg has none: "result" is the user's key
        rep = self.client.execute("base", "result=5.5")
        self.assertEqual(rep["job_result"], 5.5)
        self.assertNotIn("result", rep)
        rep = self.client.execute("base", 'result={"result": 3}')
        self.assertEqual((rep["result"], rep["job_result"]), (3, {"result": 3}))

    def test_failures_are_replies(self):
        rep = self.client.execute("base", "raise")
        self.assertFalse(rep["success"])
        self.assertEqual(rep["error"], "ValueError: nope")
        self.assertEqual(rep["traceback"], "Traceback...\n")
        self.assertEqual(rep["reason"], "exception")
        rep = self.client.execute("x==", "badspec")
        self.assertFalse(rep["success"])
        self.assertIn("bad spec", rep["error"])
        self.assertEqual(rep["reason"], "badspec")
        self.assertEqual((rep["stdout"], rep["stderr"], rep["traceback"]), ("", "", ""))

    def test_status_and_shutdown(self):
        st = self.client.status()
        self.assertTrue(st["success"])
        self.assertEqual((st["workers"], st["jobs"]), (2, 7))
        self.assertTrue(self.client.shutdown()["success"])
        self.assertEqual(self.fake.requests[-1]["op"], "shutdown")

    # ------------------------------------------------------ shared memory

    def test_shm_without_arrays_is_a_plain_exec(self):
        rep = self.client.execute_shm("base", "x", {}, {}, worker_tag="w", pin=True,
                                      max_memory_mb=100)
        self.assertTrue(rep["success"])
        ex = self.execs()[0]
        self.assertEqual(ex["tag"], "w")
        self.assertNotIn("arrays", ex)
        self.assertEqual(ex["bind"], {"input_data": {"shm_in": {}, "shm_out": {}}})

    def test_numpy_not_imported_by_the_client(self):
        code = ("import sys, omnipkg; from omnipkg.isolation.worker_daemon import DaemonClient; "
                "DaemonClient(socket_path=%r, auto_start=False, raise_errors=True).execute('base', 'x'); "
                "print('numpy' in sys.modules)" % self.path)
        r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                           timeout=60)
        self.assertEqual(r.stdout.strip(), "False")

    # ------------------------------------------------- connection handling

    def test_reconnect_after_daemon_closes(self):
        self.fake.close_after_reply = True
        self.assertTrue(self.client.execute("base", "one")["success"])
        time.sleep(0.1)
        self.assertTrue(self.client.execute("base", "two")["success"])
        self.assertEqual(self.fake.connections, 2)

    def test_lost_connection_raises(self):
        with self.assertRaises(ConnectionError) as cm:
            self.client.execute("base", "hang up")
        self.assertIsInstance(cm.exception, omc.DaemonConnectionError)

    def test_bad_frame_raises(self):
        with self.assertRaises(omc.DaemonProtocolError):
            self.client.execute("base", "bad frame")
        self.assertTrue(self.client.execute("base", "fine")["success"])   # reconnects

    def test_timeout(self):
        c = DaemonClient(socket_path=self.path, timeout=0.3, auto_start=False, raise_errors=True)
        self.addCleanup(c.close)
        t0 = time.monotonic()
        with self.assertRaises(TimeoutError):
            c.execute("base", "no reply")
        self.assertLess(time.monotonic() - t0, 3)

    def test_ids_exact_up_to_2_53(self):
        self.client.hello()
        self.client._next_id = (1 << 53) - 2
        for want in ((1 << 53) - 1, 1 << 53, 1):      # then it wraps to 1
            self.assertTrue(self.client.execute("base", "id")["success"])
            body = self.fake.raw_bodies[-1].decode()
            self.assertRegex(body, r'"id":%d[,}]' % want)
            self.assertEqual(self.execs()[-1]["id"], want)

    def test_compat_import(self):
        self.assertIs(CompatClient, DaemonClient)

    # ----------------------------------------------------------- auto-start

    def write_fake_binary(self, body):
        path = os.path.join(self.tmp, "fake-omnipkgd")
        with open(path, "w") as f:
            f.write("#!%s\n" % sys.executable + textwrap.dedent(body))
        os.chmod(path, 0o755)
        return path

    def test_no_auto_start_inside_worker(self):
        marker = os.path.join(self.tmp, "started")
        binary = self.write_fake_binary("open(%r, 'w').close()\n" % marker)
        missing = os.path.join(self.tmp, "none", "omnipkgd.sock")
        env = {"OMNIPKG_DAEMON_CHILD": "1", "OMNIPKGD": binary}
        with mock.patch.dict(os.environ, env):
            c = DaemonClient(socket_path=missing, timeout=2, auto_start=True, raise_errors=True)
            with self.assertRaises(ConnectionError) as cm:
                c.execute("base", "x")
            self.assertIn("OMNIPKG_DAEMON_CHILD", str(cm.exception))
            with self.assertRaises(omc.DaemonStartError):
                omc.start_daemon(missing)
        self.assertFalse(os.path.exists(marker))

    def test_auto_start_failure_is_clear(self):
        binary = self.write_fake_binary("import sys; sys.exit(3)\n")
        missing = os.path.join(self.tmp, "none", "omnipkgd.sock")
        with mock.patch.dict(os.environ, {"OMNIPKGD": binary, "OMNIPKG_DAEMON_CHILD": "0"}):
            c = DaemonClient(socket_path=missing, timeout=2, auto_start=True, raise_errors=True)
            with self.assertRaises(omc.DaemonStartError) as cm:
                c.execute("base", "x")
        self.assertIn("status 3", str(cm.exception))

    def test_start_refuses_a_socket_name_the_daemon_never_uses(self):
        marker = os.path.join(self.tmp, "started")
        binary = self.write_fake_binary("open(%r, 'w').close()\n" % marker)
        with mock.patch.dict(os.environ, {"OMNIPKGD": binary, "OMNIPKG_DAEMON_CHILD": ""}):
            with self.assertRaises(omc.DaemonStartError) as cm:
                omc.start_daemon(os.path.join(self.tmp, "other.sock"))
        self.assertIn("OMNIPKG_RUNTIME_DIR", str(cm.exception))
        self.assertFalse(os.path.exists(marker))

    def test_auto_start(self):
        # A stand-in for `omnipkgd --daemon`: forks a server on
        # $OMNIPKG_RUNTIME_DIR/omnipkgd.sock, as omnipkgd does, that answers
        # hello and exec, and returns once the socket accepts.
        pidfile = os.path.join(self.tmp, "pid")
        binary = self.write_fake_binary("""
            import json, os, socket, struct, sys
            assert sys.argv[1:] == ["--daemon"], sys.argv
            path = os.path.join(os.environ["OMNIPKG_RUNTIME_DIR"], "omnipkgd.sock")
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            s.listen(4)
            if os.fork():
                os._exit(0)
            open(%r, "w").write(str(os.getpid()))
            os.setsid()
            s.settimeout(30)
            while True:                  # one connection at a time
                c, _ = s.accept()
                c.settimeout(30)
                while True:
                    h = c.recv(4, socket.MSG_WAITALL)
                    if len(h) < 4:
                        break
                    m = json.loads(c.recv(struct.unpack(">I", h)[0], socket.MSG_WAITALL))
                    r = {"v": 1, "id": m["id"], "ok": True, "proto": 1,
                         "stdout": "started:" + m.get("code", "")}
                    b = json.dumps(r).encode()
                    c.sendall(struct.pack(">I", len(b)) + b)
                    if m["op"] == "shutdown":
                        os._exit(0)
                c.close()
            """ % pidfile)
        os.mkdir(os.path.join(self.tmp, "auto"), 0o700)
        path = os.path.join(self.tmp, "auto", "omnipkgd.sock")
        with mock.patch.dict(os.environ, {"OMNIPKGD": binary, "OMNIPKG_DAEMON_CHILD": ""}):
            c = DaemonClient(socket_path=path, timeout=5, auto_start=True, raise_errors=True)
            self.addCleanup(c.close)
            try:
                rep = c.execute("base", "hi")
            finally:
                if os.path.exists(pidfile):
                    with open(pidfile) as f:
                        self.children.append(int(f.read()))
        self.assertEqual(rep["stdout"], "started:hi")
        self.assertTrue(c.shutdown()["success"])

    def test_default_socket_path(self):
        with mock.patch.dict(os.environ, {"OMNIPKG_RUNTIME_DIR": "/r", "XDG_RUNTIME_DIR": "/x"}):
            self.assertEqual(omc.default_socket_path(), "/r/omnipkgd.sock")
            self.assertEqual(DaemonClient().socket_path, "/r/omnipkgd.sock")
        with mock.patch.dict(os.environ, {"OMNIPKG_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": "/x"}):
            self.assertEqual(omc.default_socket_path(), "/x/omnipkg/omnipkgd.sock")
        with mock.patch.dict(os.environ, {"OMNIPKG_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": ""}):
            self.assertEqual(omc.default_socket_path(),
                             "/tmp/omnipkg-%d/omnipkgd.sock" % os.getuid())


class DataPlaneTest(unittest.TestCase):
    """Arrays in shared segments, against the fake daemon's registry and its
    in-process stand-in for a worker (FakeDaemon.run_job)."""

    def setUp(self):
        self.np = need_numpy(self)
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-dp-")
        self.path = os.path.join(self.tmp, "omnipkgd.sock")
        self.fake = FakeDaemon(self.path)
        self.c = DaemonClient(socket_path=self.path, timeout=TIMEOUT, auto_start=False, raise_errors=True)

    def tearDown(self):
        self.c.close()
        self.fake.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ops(self, op):
        return [m for m in self.fake.requests if m.get("op") == op]

    def file_bytes(self, name):
        with open(self.fake.segments[name]["path"], "rb") as f:
            return f.read()

    def collect(self):
        gc.collect()
        self.c.shm_pool.collect()

    # ------------------------------------------------------------ segments

    def test_empty_is_backed_by_a_created_segment(self):
        np = self.np
        x = self.c.empty((4, 5), "float32")
        self.assertEqual((x.shape, x.dtype), ((4, 5), np.float32))
        (cr,) = self.ops("shm_create")
        self.assertGreaterEqual(cr["size"], 80)
        self.assertEqual(cr["size"] % mmap.PAGESIZE, 0)
        x[:] = np.arange(20, dtype=np.float32).reshape(4, 5)
        (name,) = self.fake.segments
        data = np.frombuffer(self.file_bytes(name)[:80], np.float32)
        self.assertEqual(data.tolist(), list(range(20)))      # same pages as the file
        z = self.c.zeros(7, "int16")
        self.assertEqual(z.tolist(), [0] * 7)
        a = self.c.array([[1, 2], [3, 4]], dtype="uint8")
        self.assertEqual((a.dtype, a.tolist()), (np.uint8, [[1, 2], [3, 4]]))
        self.assertEqual(len(self.ops("shm_create")), 3)

    def test_freed_segment_is_reused_once_every_view_is_gone(self):
        x = self.c.empty(1000, "float64")
        first = self.ops("shm_create")
        v = x[10:]
        del x
        self.collect()
        y = self.c.empty(1000, "float64")            # v still holds x's segment
        self.assertEqual(len(self.ops("shm_create")), 2)
        del v
        self.collect()
        z = self.c.empty(900, "float64")             # fits: reused
        self.assertEqual(len(self.ops("shm_create")), 2)
        self.assertEqual(self.c.shm_pool.locate(z)[0], "s1")
        self.assertEqual(len(first), 1)
        self.assertIsNotNone(y)

    def test_free_list_is_bounded(self):
        self.c.shm_pool.max_count = 2
        arrays = [self.c.empty(1000 * (1 << i), "uint8") for i in range(5)]  # sizes too far apart to share
        self.assertEqual(len(self.ops("shm_create")), 5)
        del arrays
        self.collect()
        self.assertEqual(len(self.ops("shm_remove")), 3)
        self.assertEqual(len(self.fake.segments), 2)
        self.c.shm_pool.max_bytes = 0
        self.c.shm_pool.collect()
        self.assertEqual(self.fake.segments, {})

    def test_quota_refusal(self):
        self.fake.quota = 1 << 20
        with self.assertRaises(omc.DaemonShmError) as cm:
            self.c.empty(1 << 21, "uint8")
        self.assertEqual(cm.exception.reason, "quota")
        r = self.c.execute_shm("base", "py:pass", {"arr_in": self.np.zeros(1 << 19)}, {})
        self.assertFalse(r["success"])
        self.assertEqual(r["reason"], "quota")
        self.assertEqual(self.ops("exec"), [])
        # Free segments of ours count against the quota: they go first.
        x = self.c.empty(1 << 19, "uint8")
        del x
        gc.collect()
        self.c.empty(1 << 20, "uint8")
        self.assertEqual([m["name"] for m in self.ops("shm_remove")], ["s1"])

    # --------------------------------------------------------- execute_shm

    def test_request_names_views_exactly(self):
        np = self.np
        x = self.c.empty((8, 8), "float32")
        x[:] = np.arange(64, dtype=np.float32).reshape(8, 8)
        y = x[::2, 1:]
        r = self.c.execute_shm("numpy==2.2.6", "py:arr_out[...] = arr_in * 2",
                               {"arr_in": y}, {"arr_out": {"shape": (4, 7), "dtype": "float32"}},
                               python_exe="3.11")
        self.assertTrue(r["success"], r)
        ex = self.ops("exec")[0]
        self.assertEqual(ex["arrays"], [
            {"name": "arr_in", "segment": "s1", "dtype": "<f4", "shape": [4, 7],
             "strides": [64, 4], "offset": 4, "access": "in"},
            {"name": "arr_out", "segment": "s2", "dtype": "<f4", "shape": [4, 7],
             "strides": [28, 4], "offset": 0, "access": "out"}])
        self.assertEqual(ex["bind"], {"input_data": {
            "shm_in": {"arr_in": {"name": "s1", "shape": [4, 7], "dtype": "<f4", "offset": 4,
                                  "strides": [64, 4]}},
            "shm_out": {"arr_out": {"name": "s2", "shape": [4, 7], "dtype": "<f4", "offset": 0,
                                    "strides": [28, 4]}}}})
        self.assertNotIn(str(x[0, 1]), ex["code"])
        out = r["outputs"]["arr_out"]
        self.assertEqual(out.tolist(), (y * 2).tolist())
        self.assertEqual(np.frombuffer(self.file_bytes("s2")[:112], np.float32).tolist(),
                         (y * 2).ravel().tolist())                  # written in place
        self.assertEqual(len(self.ops("shm_create")), 2)
        with self.assertRaises(TypeError):
            self.c.execute_shm("base", "py:pass", {"arr_in": [1, 2]}, {})
        with self.assertRaises(TypeError):
            self.c.execute_shm("base", "py:pass", {"arr_in": np.array([object()])}, {})
        self.assertEqual(len(self.ops("exec")), 1)

    def test_single_descriptors_bind_arr_and_tensor(self):
        np = self.np
        seg = self.c.call("shm_create", size=4096, name="frame")["segment"]
        with open(seg["path"], "r+b") as f:
            f.write(np.arange(4, dtype=np.float64).tobytes())
        r = self.c.execute_shm("base", "py:arr_out[:] = tensor_in + arr_in + 1",
                               {"name": "frame", "shape": [4], "dtype": "float64"},
                               {"shape": (4,), "dtype": "float64"})
        self.assertTrue(r["success"], r)
        arrays = self.ops("exec")[0]["arrays"]
        self.assertEqual(arrays[:2], [
            {"name": "arr_in", "segment": "frame", "dtype": "float64", "shape": [4],
             "access": "in"},
            {"name": "tensor_in", "segment": "frame", "dtype": "float64", "shape": [4],
             "access": "in"}])
        self.assertEqual([(a["name"], a["segment"], a["access"]) for a in arrays[2:]],
                         [("arr_out", "s2", "out"), ("tensor_out", "s2", "out")])
        data = self.ops("exec")[0]["bind"]["input_data"]
        self.assertEqual(data["shm_in"], {"name": "frame", "shape": [4], "dtype": "float64"})
        self.assertEqual(data["shm_out"]["name"], "s2")
        self.assertIs(r["outputs"]["arr_out"], r["outputs"]["tensor_out"])
        self.assertEqual(r["outputs"]["arr_out"].tolist(), [1, 3, 5, 7])

    def test_named_output_is_mapped_here(self):
        self.c.call("shm_create", size=4096, name="out")
        r = self.c.execute_shm("base", "py:arr_out[:] = 7", {},
                               {"arr_out": {"shm_name": "out", "shape": [3], "dtype": "int32"}})
        self.assertEqual(self.ops("exec")[0]["arrays"][0]["access"], "inout")
        self.assertEqual(r["outputs"]["arr_out"].tolist(), [7, 7, 7])

    def test_foreign_arrays_copied_in_and_back(self):
        np = self.np
        a = np.arange(10.0)
        b = np.zeros(10)
        r = self.c.execute_shm("base", "py:arr_out[:] = arr_in + arr_out + 1",
                               {"arr_in": a}, {"arr_out": b})
        self.assertTrue(r["success"], r)
        self.assertIs(r["outputs"]["arr_out"], b)
        self.assertEqual(b.tolist(), (a + 1).tolist())
        self.assertEqual(self.ops("exec")[0]["arrays"][1]["access"], "inout")
        self.assertEqual(len(self.ops("shm_create")), 2)
        for _ in range(3):                            # the pool serves the next calls
            self.c.execute_shm("base", "py:pass", {"arr_in": np.arange(10.0)},
                               {"arr_out": np.zeros(10)})
        self.assertEqual(len(self.ops("shm_create")), 2)

    def test_ten_thousand_calls_create_a_bounded_number_of_segments(self):
        np = self.np
        src = np.ones(256, np.float32)
        for i in range(10000):
            x = self.c.empty(256, "float32")
            x[:] = src
            out, meta = self.c.execute_zero_copy("base", "py:arr_out[0] = arr_in.sum()",
                                                 x, (1,), "float32")
            self.assertEqual(out[0], 256.0)
        self.assertLessEqual(self.c.shm_pool.created, 4)
        self.assertLessEqual(len(self.fake.segments), 4)
        self.assertEqual(len(self.ops("shm_create")), self.c.shm_pool.created)

    def test_old_connection_segments_are_not_named_again(self):
        x = self.c.empty(16, "uint8")
        self.c.close()                               # the daemon drops s1 with it
        r = self.c.execute_shm("base", "py:pass", {"arr_in": x}, {})
        self.assertTrue(r["success"])
        self.assertEqual(self.ops("exec")[0]["arrays"][0]["segment"], "s2")

    # --------------------------------------------------------- result_array

    def test_result_array_view_of_an_input(self):
        np = self.np
        x = self.c.array(np.arange(10, dtype=np.int64))
        r = self.c.execute_shm("base", "py:result = arr_in[::2]", {"arr_in": x}, {})
        res = r["job_result"]
        self.assertEqual(res.tolist(), [0, 2, 4, 6, 8])
        self.assertTrue(np.shares_memory(res, x))
        del x, r
        self.collect()
        self.c.empty(80, "uint8")                    # res still holds the segment
        self.assertEqual(len(self.ops("shm_create")), 2)
        self.assertEqual(res.tolist(), [0, 2, 4, 6, 8])

    def test_result_array_in_a_new_segment_removed_when_garbage(self):
        np = self.np
        r = self.c.execute("numpy==2.2.6", "py:result = np.arange(6, dtype=np.float32) * 3")
        res = r["job_result"]
        self.assertEqual((res.dtype, res.tolist()), (np.float32, [0, 3, 6, 9, 12, 15]))
        name = [n for n in self.fake.segments if n.startswith("r")]
        self.assertEqual(len(name), 1)
        self.c.shm_pool.collect()
        self.assertEqual(self.ops("shm_remove"), [])
        del res, r
        self.collect()
        self.assertEqual([m["name"] for m in self.ops("shm_remove")], name)
        self.assertEqual(self.fake.segments, {})

    # ------------------------------------------------- zero_copy and smart

    def test_execute_zero_copy(self):
        np = self.np
        a = np.arange(1e6)
        out, meta = self.c.execute_zero_copy("numpy==2.2.6", "py:arr_out[:] = tensor_in.sum()",
                                             a, (1,), "float64")
        self.assertEqual((out.shape, out.dtype, out[0]), ((1,), np.float64, a.sum()))
        self.assertTrue(meta["success"])
        self.assertIs(meta["outputs"]["arr_out"], out)
        names = [e["name"] for e in self.ops("exec")[0]["arrays"]]
        self.assertEqual(names, ["arr_in", "tensor_in", "arr_out", "tensor_out"])
        with self.assertRaises(RuntimeError) as cm:
            self.c.execute_zero_copy("base", "py:raise ValueError('bad')", a, (1,), "float64")
        self.assertEqual(str(cm.exception), "Worker Error: ValueError: bad")

    def test_smart_json_keeps_values(self):
        data = {"t": True, "n": None, "nested": {"a": [1, {"b": False}], "s": "x'y"}}
        s = self.c.execute_smart("numpy==2.2.6", "py:result = {'ok': arr_in['t'] is True "
                                 "and arr_in['n'] is None, 'b': arr_in['nested']['a'][1]['b']}",
                                 data=data)
        self.assertEqual(s["transport"], "JSON")
        self.assertTrue(s["success"])
        self.assertEqual(s["meta"]["job_result"], {"ok": True, "b": False})
        self.assertEqual((s["meta"]["ok"], s["meta"]["b"]), (True, False))   # merged, too
        self.assertEqual(s["result"], s["meta"]["stdout"].strip())   # JSON: stripped stdout
        ex = self.ops("exec")[0]
        self.assertEqual(ex["bind"], {"arr_in": data})
        self.assertNotIn("arrays", ex)
        self.assertIs(s["meta"]["success"], True)
        s = self.c.execute_smart("base", "py:print(' ', len(arr_in), ' ')", data=[1, True, None])
        self.assertEqual(s["result"], "3")                        # stripped stdout

    def test_smart_small_array_keeps_its_dtype(self):
        np = self.np
        a = np.array([[-1, 2], [3, 127]], dtype=np.int8)
        s = self.c.execute_smart("numpy==2.2.6", "py:result = [arr_in.dtype.str, "
                                 "arr_in.tolist()]", data=a)
        self.assertEqual(s["transport"], "JSON")
        self.assertEqual(s["meta"]["job_result"], ["|i1", [[-1, 2], [3, 127]]])
        self.assertEqual(self.ops("exec")[0]["bind"]["arr_in"], {"__ndarray__": {
            "dtype": "|i1", "shape": [2, 2], "data": [-1, 2, 3, 127]}})

    def test_smart_large_array_goes_shm(self):
        np = self.np
        a = np.arange(8192, dtype=np.float64)          # 64 KiB
        s = self.c.execute_smart("numpy==2.2.6", "py:arr_out[:] = arr_in[::-1]", data=a,
                                 output_shape=a.shape, output_dtype="float64")
        self.assertEqual(s["transport"], "SHM")
        self.assertEqual(s["result"].tolist(), a[::-1].tolist())
        self.assertEqual(list(self.ops("exec")[0]["bind"]), ["input_data"])   # no data in JSON
        self.assertEqual([e["name"] for e in self.ops("exec")[0]["arrays"]],
                         ["arr_in", "tensor_in", "arr_out", "tensor_out"])
        s = self.c.execute_smart("base", "py:result = {'n': len(arr_in)}", data=a[:8191])
        self.assertEqual((s["transport"], s["meta"]["n"]), ("JSON", 8191))
        nan = np.array([float("nan")])
        s = self.c.execute_smart("base", "py:result = {'nan': bool(np.isnan(arr_in[0]))}",
                                 data=nan)
        self.assertEqual((s["transport"], s["meta"]["nan"]), ("SHM", True))
        self.assertEqual((s["result"].shape, s["result"].dtype), (nan.shape, nan.dtype))


if __name__ == "__main__":
    unittest.main()
