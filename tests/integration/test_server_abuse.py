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


    def test_nul_in_a_string_is_refused(self):
        # cJSON would end the string at the NUL and run only what precedes it.
        c = self.connect()
        c.send_payload(b'{"v":1,"id":1,"op":"exec","spec":"base","python":"3.11",'
                       b'"code":"result = 1\\u0000import os"}')
        m = c.recv()
        self.assertEqual((m["id"], m["ok"], m["reason"]), (1, False, "badcode"))
        # An escaped backslash before "u0000" is text, not a NUL.
        m = c.call(exec_req(2, "result = 1  # \\u0000"))
        self.assertEqual((m["id"], m["ok"], m["result"]), (2, True, 1))

    def test_cancel(self):
        c = self.connect()
        c.send(exec_req(7, "import time; print('started', flush=True); time.sleep(120)"))
        m = c.call({"v": 1, "id": 8, "op": "cancel", "target": 99})
        self.assertEqual((m["id"], m["ok"], m["errno"]), (8, False, 2))
        # Cancel once the job runs: its reply comes with reason "cancelled".
        deadline = time.monotonic() + 60
        while not any(w["state"] == "busy" for w in self.workers()):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        c.send({"v": 1, "id": 9, "op": "cancel", "target": 7})
        replies = {m["id"]: m for m in (c.recv(), c.recv())}
        self.assertTrue(replies[9]["ok"], replies[9])
        self.assertEqual((replies[7]["ok"], replies[7]["reason"]), (False, "cancelled"))
        m = c.call(exec_req(10, "result = 1"))
        self.assertEqual((m["ok"], m["result"]), (True, 1))

    def workers(self):
        c = self.connect()
        return c.call({"v": 1, "id": 1, "op": "workers"})["workers"]


class TestDescriptors(ServerTest):
    def test_out_of_descriptors_does_not_spin(self):
        busy = self.connect()
        m = busy.call(exec_req(1, "result = 1"))
        self.assertTrue(m["ok"], m)
        # Leave the daemon a few descriptors beyond those it holds now.
        used = len(os.listdir("/proc/%d/fd" % self.pid))
        limit = used + 8
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (limit, limit))
        extra = []
        refused = False
        for _ in range(limit + 8):
            c = Conn(self.d.socket, timeout=10)
            extra.append(c)
            self.conns.append(c)
            try:
                c.send({"v": 1, "id": 1, "op": "hello"})
                c.recv()
            except (EOFError, ConnectionError):
                refused = True
                break
        self.assertTrue(refused, "no connection was refused at %d descriptors" % limit)
        # Out of descriptors, with connections still arriving: the daemon idles.
        waiting = [Conn(self.d.socket, timeout=10) for _ in range(4)]
        self.conns.extend(waiting)
        t0 = cpu_seconds(self.pid)
        m = busy.call(exec_req(2, "result = 2"))
        self.assertEqual((m["id"], m["ok"], m["result"]), (2, True, 2))
        time.sleep(1.0)   # a window for measuring CPU time, not a wait for an event
        self.assertLess(cpu_seconds(self.pid) - t0, 0.5, "the daemon spins when out of fds")
        for c in extra + waiting:
            c.close()
        self.conns = [busy]
        # Closed connections give their descriptors back: a newcomer is served.
        fresh = self.connect()
        m = fresh.call({"v": 1, "id": 9, "op": "hello"})
        self.assertEqual((m["id"], m["ok"]), (9, True))


@unittest.skipIf(os.environ.get("OMNIPKG_TEST_SANITIZED") == "1",
                 "under ASan the daemon's RSS holds the sanitizer's quarantine, not its buffers")
class TestMemory(ServerTest):
    def rss_mib(self):
        return proc_status(self.pid, "VmRSS") / 1024.0

    def test_partial_frames_bounded(self):
        base = self.rss_mib()
        well = self.connect()
        body = b"x" * (15 * MIB)
        holders = []
        for _ in range(20):
            c = self.connect(timeout=30)
            holders.append(c)
            try:
                # Announces a 16 MiB frame and sends all but the last MiB.
                c.s.sendall(struct.pack(">I", 16 * MIB) + body)
            except (BrokenPipeError, ConnectionResetError):
                pass
        m = well.call({"v": 1, "id": 1, "op": "hello"})
        self.assertEqual((m["id"], m["ok"]), (1, True))
        # SERVER_RBUF_MAX (64 MiB), plus one frame read before the check,
        # plus the realloc that grows it (the old copy): 64 + 2 x 16.
        self.assertLess(self.rss_mib() - base, 64 + 2 * 17, "partial frames are not bounded")
        # Each holder was refused, or finishes its frame and is answered.
        dropped = 0
        for c in holders:
            try:
                c.s.sendall(b"x" * MIB)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                m = c.recv()
            except (EOFError, ConnectionError):
                dropped += 1
                continue
            if m["reason"] == "toolarge":
                dropped += 1
            else:
                self.assertEqual((m["ok"], m["reason"]), (False, "proto"))
        self.assertGreaterEqual(dropped, 20 - 64 // 15)

    def test_unread_replies_bounded(self):
        base = self.rss_mib()
        greedy = self.connect()
        code = "import sys; sys.stdout.write('y' * (1 << 20))"
        m = greedy.call(exec_req(1, code))
        self.assertTrue(m["ok"], m)
        for rid in range(2, 302):
            greedy.send(exec_req(rid, code))
        # A well-behaved client on another worker is served meanwhile, while
        # the greedy one's replies pile up unread: up to 300 round trips, or
        # until every greedy job ran (which only an unbounded daemon allows).
        well = self.connect()
        peak = 0.0
        for rid in range(1, 301):
            m = well.call(exec_req(rid, "result = %d" % rid, tag="other"))
            self.assertEqual((m["id"], m["ok"], m["result"]), (rid, True, rid))
            ws = well.call({"v": 1, "id": 1000 + rid, "op": "workers"})["workers"]
            peak = max(peak, self.rss_mib())
            if any(w["tag"] == "" and w["jobs"] >= 301 for w in ws):
                break
        # CONN_WBUF_MAX (32 MiB) + CONN_MAX_JOBS (16) replies of ~1 MiB in
        # flight, each held twice on its way (worker frame and JSON text).
        self.assertLess(peak - base, 32 + 2 * 16 + 16, "unread replies are not bounded")
        # Everything is still delivered once the client reads.
        got = set()
        while len(got) < 300:
            m = greedy.recv()
            self.assertTrue(m["ok"], m)
            got.add(m["id"])
        self.assertEqual(got, set(range(2, 302)))
