"""The data plane as the daemon enforces it: segments of the registry,
array descriptors checked before any code runs, leases, lifetimes, views
under real numpy workers, result arrays and unmapping.

Speaks the raw protocol (tests/integration/test_server_abuse.py's Conn), so
it depends on no client library.
"""

import json
import os
import struct
import tempfile
import time
import unittest

import harness
from test_server_abuse import Conn

PY = harness.find_pythons()
CI = os.environ.get("CI") == "true"
MIB = 1 << 20
BUBBLES = os.path.join(os.path.expanduser("~"), ".local", "share", "omnipkg", "bubbles")


def have_bubble(tag, name):
    return os.path.isdir(os.path.join(BUBBLES, tag, name))


def wait_until(test, what, cond, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            test.fail("timed out waiting for " + what)
        time.sleep(0.02)


def exec_req(rid, code, spec="base", python="3.11", **kw):
    req = {"v": 1, "id": rid, "op": "exec", "spec": spec, "python": python, "code": code}
    req.update(kw)
    return req


def view(name, segment, dtype="<f4", shape=(4,), **kw):
    d = {"name": name, "segment": segment, "dtype": dtype, "shape": list(shape)}
    d.update(kw)
    return d


class DataPlaneTest(unittest.TestCase):
    config = {"shm_quota": 256 * MIB}

    def setUp(self):
        why = harness.DaemonFixture.available()
        if why:
            self.fail(why)
        if "3.11" not in PY:
            self.fail("python 3.11 not installed")
        self.d = harness.DaemonFixture(config=self.config)
        self.conns = []
        self.d.start()
        self.tmp = tempfile.mkdtemp(prefix="omnipkg-dp-")

    def tearDown(self):
        for c in self.conns:
            c.close()
        problems = self.d.stop()
        self.assertEqual(problems, [])

    def connect(self):
        c = Conn(self.d.socket)
        self.conns.append(c)
        return c

    def create(self, c, size, rid=1, **kw):
        m = c.call(dict({"v": 1, "id": rid, "op": "shm_create", "size": size}, **kw))
        self.assertTrue(m["ok"], m)
        return m["segment"]

    def names(self, c):
        m = c.call({"v": 1, "id": 99, "op": "shm_list"})
        self.assertTrue(m["ok"], m)
        return {s["name"]: s for s in m["segments"]}

    def gate(self):
        """Code that waits for the test to create a file, and that file."""
        go = os.path.join(self.tmp, "go-%d" % len(os.listdir(self.tmp)))
        code = "import os, time\nwhile not os.path.exists(%r):\n    time.sleep(0.01)\n" % go
        return code, go

    def release(self, go):
        open(go, "w").close()


class TestSegments(DataPlaneTest):
    def test_create_list_remove(self):
        a, b = self.connect(), self.connect()
        seg = self.create(a, MIB, name="frame", dtype="float32", shape=[512, 512])
        self.assertEqual((seg["name"], seg["size"], seg["persist"]), ("frame", MIB, False))
        st = os.stat(seg["path"])
        self.assertEqual(st.st_size, MIB)
        self.assertGreaterEqual(st.st_blocks * 512, MIB, "pages not reserved")
        listed = self.names(a)["frame"]
        self.assertEqual((listed["mine"], listed["dtype"], listed["shape"]), (True, "<f4", [512, 512]))
        self.assertFalse(self.names(b)["frame"]["mine"])
        m = b.call({"v": 1, "id": 2, "op": "shm_remove", "name": "frame"})
        self.assertEqual((m["ok"], m["reason"]), (False, "nosegment"))
        self.assertIn("another client", m["error"])
        m = a.call({"v": 1, "id": 3, "op": "shm_create", "size": 1, "name": "frame"})
        self.assertEqual((m["ok"], m["reason"]), (False, "badarg"))
        m = a.call({"v": 1, "id": 4, "op": "shm_remove", "name": "frame"})
        self.assertTrue(m["ok"], m)
        self.assertFalse(os.path.exists(seg["path"]))
        m = a.call({"v": 1, "id": 5, "op": "shm_remove", "name": "frame"})
        self.assertEqual((m["ok"], m["reason"]), (False, "nosegment"))

    def test_unnamed_and_over_quota(self):
        c = self.connect()
        seg = self.create(c, 4096)
        self.assertTrue(seg["name"])
        m = c.call({"v": 1, "id": 2, "op": "shm_create", "size": 512 * MIB, "name": "huge"})
        self.assertEqual((m["ok"], m["reason"]), (False, "quota"))
        self.assertNotIn("huge", self.names(c))
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(seg["path"]), "huge")))

    def test_client_segments_go_with_the_client(self):
        a, b = self.connect(), self.connect()
        mine = self.create(a, 4096, name="mine")
        kept = self.create(a, 4096, name="kept", persist=True)
        a.close()
        self.conns.remove(a)
        wait_until(self, "the client's segment to go", lambda: "mine" not in self.names(b))
        self.assertFalse(os.path.exists(mine["path"]))
        self.assertTrue(self.names(b)["kept"]["persist"])
        self.assertTrue(os.path.exists(kept["path"]))


class TestDescriptors(DataPlaneTest):
    def test_every_bad_descriptor_is_refused_before_code_runs(self):
        a, b = self.connect(), self.connect()
        self.create(a, 4096, name="seg")
        self.create(b, 4096, name="theirs")
        gone = self.create(a, 4096, name="gone")
        self.assertTrue(a.call({"v": 1, "id": 2, "op": "shm_remove", "name": "gone"})["ok"])
        marker = os.path.join(self.tmp, "ran")
        code = "open(%r, 'w').close()" % marker
        cases = [
            (view("x", "seg", shape=[1], offset=4096), "badarg", "reaches byte"),
            (view("x", "seg", shape=[1025]), "badarg", "reaches byte"),
            (view("x", "seg", dtype="<f8", shape=[2 ** 62, 2 ** 62]), "badarg", "shape"),
            (view("x", "seg", shape=[-1]), "badarg", "shape[0]"),
            (view("x", "seg", shape=[2 ** 63]), "badarg", "shape[0]"),
            (view("x", "seg", dtype="<U4"), "badarg", "dtype"),
            (view("x", "seg", dtype="O"), "badarg", "dtype"),
            (view("x", "seg", dtype="complex256"), "badarg", "dtype"),
            (view("x", "theirs"), "nosegment", "another client"),
            (view("x", "gone"), "nosegment", "gone"),
            (view("x", "seg", offset=2), "badarg", "offset"),
            (view("x", "seg", strides=[6]), "badarg", "strides[0]"),
            (view("x", "seg", strides=[-4]), "badarg", "before"),
            (dict(view("x", "seg"), shpae=[1]), "badarg", "shpae"),
        ]
        for i, (desc, reason, word) in enumerate(cases, start=10):
            m = a.call(exec_req(i, code, arrays=[desc]))
            self.assertEqual((m["id"], m["ok"], m.get("reason")), (i, False, reason), (desc, m))
            self.assertIn(word, m["error"], (desc, m))
        m = a.call(exec_req(50, code, bind={"not an identifier": 1}))
        self.assertEqual((m["ok"], m["reason"]), (False, "badarg"))
        self.assertFalse(os.path.exists(marker), "code ran despite a bad descriptor")
        # A good one runs.
        m = a.call(exec_req(51, code, arrays=[view("x", "seg", shape=[1024])]))
        self.assertTrue(m["ok"], m)
        self.assertTrue(os.path.exists(marker))

    def test_a_leased_segment_cannot_be_removed(self):
        c = self.connect()
        seg = self.create(c, 4096, name="busy")
        code, go = self.gate()
        c.send(exec_req(2, code, arrays=[view("x", "busy")]))
        wait_until(self, "the lease", lambda: self.names(c)["busy"]["leases"] == 1)
        m = c.call({"v": 1, "id": 3, "op": "shm_remove", "name": "busy"})
        self.assertEqual((m["id"], m["ok"], m["reason"]), (3, False, "leased"))
        self.assertTrue(os.path.exists(seg["path"]))
        self.release(go)
        self.assertTrue(c.recv()["ok"])
        self.assertEqual(self.names(c)["busy"]["leases"], 0)
        self.assertTrue(c.call({"v": 1, "id": 4, "op": "shm_remove", "name": "busy"})["ok"])

    def test_a_vanished_client_leaks_nothing_once_its_jobs_end(self):
        a, b = self.connect(), self.connect()
        seg = self.create(a, MIB, name="held")
        code, go = self.gate()
        a.send(exec_req(2, code, arrays=[view("x", "held")]))
        wait_until(self, "the lease", lambda: self.names(b).get("held", {}).get("leases") == 1)
        a.close()
        self.conns.remove(a)
        # The job still runs on it: the segment stays until the job ends.
        self.assertIn("held", self.names(b))
        self.release(go)
        wait_until(self, "the segment to go", lambda: "held" not in self.names(b))
        self.assertFalse(os.path.exists(seg["path"]))
        self.assertEqual(os.listdir(os.path.dirname(seg["path"])), [])

    def test_a_worker_killed_mid_job_leaks_nothing(self):
        c = self.connect()
        seg = self.create(c, MIB, name="k")
        before = sorted(os.listdir(os.path.dirname(seg["path"])))
        m = c.call(exec_req(2, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
                            arrays=[view("x", "k")]))
        self.assertEqual((m["ok"], m["reason"]), (False, "signal"))
        self.assertEqual(self.names(c)["k"]["leases"], 0)
        self.assertEqual(sorted(os.listdir(os.path.dirname(seg["path"]))), before)
        self.assertTrue(c.call({"v": 1, "id": 3, "op": "shm_remove", "name": "k"})["ok"])


@unittest.skipUnless(have_bubble("cp311", "numpy-2.2.6") and have_bubble("cp311", "numpy-1.26.4"),
                     "numpy bubbles for 3.11 are not installed (scripts/bubbles.sh)")
class TestViews(DataPlaneTest):
    def setUp(self):
        import test_daemon
        super().setUp()
        for version in ("1.26.4", "2.2.6"):
            test_daemon.link_bubble(self, self.d, "3.11", "numpy", version)

    def fill(self, path, fmt, values, offset=0):
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(struct.pack(fmt, *values))

    def test_in_place_views_of_every_layout(self):
        c = self.connect()
        seg = self.create(c, 4096, name="v")
        self.fill(seg["path"], ">4d", [1.0, 2.0, 3.0, 4.0])           # big-endian at 0
        self.fill(seg["path"], "<6i", [0, 1, 2, 3, 4, 5], offset=64)  # 2x3 C order at 64
        arrays = [view("be", "v", dtype=">f8", shape=[4], access="in"),
                  view("f", "v", dtype="<i4", shape=[3, 2], offset=64, strides=[4, 12]),
                  view("rev", "v", dtype="<i4", shape=[6], offset=84, strides=[-4]),
                  view("out", "v", dtype="<f4", shape=[4], offset=256, access="out")]
        code = ("result = [be.tolist(), f.tolist(), rev.tolist(), be.flags.writeable]\n"
                "out[:] = be[::-1]\n")
        for rid, spec in enumerate(("numpy==1.26.4", "numpy==2.2.6"), start=2):
            m = c.call(exec_req(rid, code, spec=spec, arrays=arrays))
            self.assertTrue(m["ok"], m)
            self.assertEqual(m["result"], [[1.0, 2.0, 3.0, 4.0], [[0, 3], [1, 4], [2, 5]],
                                           [5, 4, 3, 2, 1, 0], False])
            with open(seg["path"], "rb") as f:
                f.seek(256)
                self.assertEqual(struct.unpack("<4f", f.read(16)), (4.0, 3.0, 2.0, 1.0))

    def test_result_arrays_come_back_in_segments(self):
        c = self.connect()
        seg = self.create(c, 4096, name="src")
        self.fill(seg["path"], "<4f", [1.0, 2.0, 3.0, 4.0])
        arrays = [view("a", "src", shape=[4])]
        m = c.call(exec_req(2, "result = a[1:]", spec="numpy==2.2.6", arrays=arrays))
        self.assertTrue(m["ok"], m)
        ra = m["result_array"]
        self.assertNotIn("result", m)
        self.assertEqual((ra["segment"], ra["offset"], ra["shape"], ra["dtype"]),
                         ("src", 4, [3], "<f4"))
        m = c.call(exec_req(3, "import numpy as np\nresult = np.arange(6, dtype='<i8')",
                            spec="numpy==2.2.6"))
        self.assertTrue(m["ok"], m)
        ra = m["result_array"]
        listed = self.names(c)[ra["segment"]]
        self.assertTrue(listed["mine"])
        with open(ra["path"], "rb") as f:
            self.assertEqual(struct.unpack("<6q", f.read(48)), (0, 1, 2, 3, 4, 5))
        # A new result segment is the client's: it goes with the client.
        c.close()
        self.conns.remove(c)
        other = self.connect()
        wait_until(self, "the result segment to go", lambda: ra["segment"] not in self.names(other))

    def test_workers_drop_mappings_of_removed_segments(self):
        c = self.connect()
        seg = self.create(c, MIB, name="m")
        m = c.call(exec_req(2, "import os\nresult = os.getpid()", spec="numpy==2.2.6",
                            arrays=[view("x", "m", shape=[16])]))
        self.assertTrue(m["ok"], m)
        pid = m["result"]

        def mapped():
            with open("/proc/%d/maps" % pid) as f:
                return seg["path"] in f.read()
        self.assertTrue(mapped())
        self.assertTrue(c.call({"v": 1, "id": 3, "op": "shm_remove", "name": "m"})["ok"])
        wait_until(self, "the worker to unmap the removed segment", lambda: not mapped())


if __name__ == "__main__":
    unittest.main()
