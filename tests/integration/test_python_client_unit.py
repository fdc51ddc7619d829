"""Unit tests of the Python client (src/python/omnipkg) against a small fake
daemon served by a thread on a temporary Unix socket.  Stdlib only.

    python -m unittest tests/integration/test_python_client_unit.py
"""

import json
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

    def handle(self, msg):
        op = msg.get("op")
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
        self.client = DaemonClient(socket_path=self.path, timeout=TIMEOUT, auto_start=False)
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
        c = DaemonClient(socket_path=self.path, timeout=0.3, auto_start=False)
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
        self.assertEqual(rep["result"], {"a": 1, "b": [1, 2], "stdout": "not this",
                                         "success": False})
        self.assertEqual(rep["worker_pid"], 42)
        self.assertNotIn("v", rep)
        rep = self.client.execute("base", "result=5")
        self.assertEqual(rep["result"], 5)

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

    def test_shm_nonempty_is_an_error(self):
        rep = self.client.execute_shm("base", "x", {"name": "seg", "shape": [4],
                                                    "dtype": "float64"}, {})
        self.assertFalse(rep["success"])
        self.assertEqual(rep["error"], "shared-memory transfer is not available yet")
        rep = self.client.execute_shm("base", "x", {}, {"out": {"shape": [1]}})
        self.assertFalse(rep["success"])
        self.assertEqual(self.execs(), [])                 # nothing was sent
        rep = self.client.execute_shm("base", "x", {}, {}, worker_tag="w", pin=True,
                                      max_memory_mb=100)
        self.assertTrue(rep["success"])
        self.assertEqual(self.execs()[0]["tag"], "w")

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
        c = DaemonClient(socket_path=self.path, timeout=0.3, auto_start=False)
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
            c = DaemonClient(socket_path=missing, timeout=2, auto_start=True)
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
            c = DaemonClient(socket_path=missing, timeout=2, auto_start=True)
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
            c = DaemonClient(socket_path=path, timeout=5, auto_start=True)
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


if __name__ == "__main__":
    unittest.main()
