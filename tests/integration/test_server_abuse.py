"""The socket front under abuse, and its strict contracts, on the real daemon.

Each test starts its own omnipkgd (harness.DaemonFixture) and takes it
down, pass or fail.  Replies are read as raw frames so that nothing on the
way (a client library) rounds or repairs what the daemon wrote.
"""

import json
import os
import re
import resource
import socket
import struct
import time
import unittest

import harness

PY = harness.find_pythons(("3.11",))
MIB = 1 << 20


class Conn:
    """A raw protocol connection: frames in, frames out."""

    def __init__(self, path, timeout=60):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def send_payload(self, payload):
        self.s.sendall(struct.pack(">I", len(payload)) + payload)

    def send(self, obj):
        self.send_payload(json.dumps(obj).encode())

    def recv_raw(self):
        """The next frame's payload, as bytes."""
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    p, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return p
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("daemon closed the connection")
            self.buf += chunk

    def recv(self):
        return json.loads(self.recv_raw())

    def call(self, obj):
        self.send(obj)
        return self.recv()

    def close(self):
        self.s.close()


def exec_req(rid, code, **kw):
    req = {"v": 1, "id": rid, "op": "exec", "spec": "base", "python": "3.11", "code": code}
    req.update(kw)
    return req


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerTest(unittest.TestCase):
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
        self.conns = []
        self.d.start()
        self.pid = self.d.proc.pid

    def tearDown(self):
        for c in self.conns:
            c.close()
        problems = self.d.stop()
        self.assertEqual(problems, [])

    def connect(self, **kw):
        c = Conn(self.d.socket, **kw)
        self.conns.append(c)
        return c


class TestContracts(ServerTest):
    def test_unknown_key_refused_with_badarg(self):
        c = self.connect()
        m = c.call(exec_req(1, "result = 1", pyhton="3.12"))
        self.assertEqual((m["id"], m["ok"], m["reason"]), (1, False, "badarg"))
        self.assertIn('"pyhton"', m["error"])
        self.assertIn("exec", m["error"])
        m = c.call(exec_req(2, "result = 1", timeout="5"))
        self.assertEqual((m["ok"], m["reason"]), (False, "badarg"))
        self.assertIn('"timeout"', m["error"])
        self.assertIn("a number", m["error"])
        m = c.call({"v": 1, "id": 3, "op": "status", "verbose": True})
        self.assertEqual((m["ok"], m["reason"]), (False, "badarg"))
        m = c.call(exec_req(4, "result = 1"))
        self.assertEqual((m["id"], m["ok"], m["result"]), (4, True, 1))

    def test_hello_lists_features(self):
        c = self.connect()
        m = c.call({"v": 1, "id": 1, "op": "hello"})
        self.assertTrue(m["ok"])
        for word in ("hello", "exec", "status", "workers", "pythons", "list", "shutdown",
                     "exec.tag", "exec.once", "exec.timeout", "exec.python", "args.strict",
                     "id.exact"):
            self.assertIn(word, m["features"])

    def test_ids_round_trip_exactly(self):
        c = self.connect()
        for rid in (1, 2 ** 53 - 1, 2 ** 53):
            c.send({"v": 1, "id": rid, "op": "hello"})
            raw = c.recv_raw()
            self.assertIn(b'"id":%d' % rid, raw)
            self.assertEqual(json.loads(raw)["id"], rid)
            # An error reply carries the exact id too.
            c.send(exec_req(rid, "1", bogus=1))
            raw = c.recv_raw()
            self.assertIn(b'"id":%d' % rid, raw)
            self.assertEqual(json.loads(raw)["reason"], "badarg")
        for bad in (0, 2 ** 53 + 2, 1.5):
            m = c.call({"v": 1, "id": bad, "op": "hello"})
            self.assertEqual((m["id"], m["ok"], m["reason"]), (0, False, "proto"))

    def test_invalid_text_refused_and_worker_lives(self):
        c = self.connect()
        m = c.call(exec_req(1, "import os; result = os.getpid()"))
        self.assertTrue(m["ok"], m)
        pid = m["worker_pid"]
        head = b'{"v":1,"id":2,"op":"exec","spec":"base","python":"3.11","code":"'
        c.send_payload(head + b"print(1)\xff" + b'"}')
        m = c.recv()
        self.assertEqual((m["id"], m["ok"], m["reason"]), (2, False, "badcode"))
        self.assertIn('"code"', m["error"])
        # Raw control bytes are written back as \u0001, six times larger.
        c.send_payload(head.replace(b'"id":2', b'"id":3') + b"\x01" * (3 * MIB) + b'"}')
        m = c.recv()
        self.assertEqual((m["id"], m["ok"], m["reason"]), (3, False, "toolarge"))
        m = c.call(exec_req(4, "import os; result = os.getpid()"))
        self.assertEqual((m["id"], m["ok"], m["worker_pid"], m["result"]), (4, True, pid, pid))
