"""Integration tests of the worker side of the data plane (src/worker/
omniworker/arrays.py), driven over the worker's private socketpair as the
daemon drives it: exec "arrays" and "bind", "unmap", result_array and
omnipkg.array(), with numpy 1.26.4 (3.9, 3.11) and 2.2.6 (3.11, 3.13) from
the real omnipkg home's bubbles, and without numpy.  Segments are files in
a private directory on /dev/shm that this process maps too.

TestDaemonArrays then goes end to end through the real daemon (raw frames):
shm_create, exec with arrays and bind, result_array, shm_list, shm_remove
(refused while leased, then unmapped in the worker).

    python -m unittest tests/integration/test_worker_arrays.py
"""

import ctypes
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
import unittest

import test_daemon as td
from test_worker_runtime import INTERPRETERS, PR_SET_CHILD_SUBREAPER, TIMEOUT, WORKER, \
    recv, send

MiB = 1 << 20
PYENV = os.environ.get("PYENV_ROOT", "/root/.pyenv")
REAL_HOME = os.environ.get("OMNIPKG_HOME") or os.path.join(
    os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "omnipkg")
# (interpreter version, bubble tag, numpy version)
NUMPY_MATRIX = [("3.11.7", "cp311", "1.26.4"), ("3.9.18", "cp39", "1.26.4"),
                ("3.11.7", "cp311", "2.2.6"), ("3.13.0", "cp313", "2.2.6")]
SHM = "/dev/shm"


def setUpModule():
    # Zygote-forked workers are re-parented to this process, standing in
    # for the daemon (a child subreaper).
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def c_strides(shape, itemsize):
    out, step = [], itemsize
    for n in reversed(shape):
        out.append(step)
        step *= n
    return out[::-1]


def mapped(pid, path):
    """How many lines of /proc/<pid>/maps name path."""
    with open("/proc/%d/maps" % pid) as f:
        return sum(1 for line in f if line.rstrip("\n").split(" (deleted)")[0].endswith(" " + path))


class ArraysBase:
    python = None
    bubble = None             # a numpy bubble directory, or None

    def setUp(self):
        if not os.access(self.python, os.X_OK):
            self.skipTest("%s is not installed" % self.python)
        if self.bubble is not None and not os.path.isdir(self.bubble):
            msg = "bubble %s missing (scripts/bubbles.sh)" % self.bubble
            if os.environ.get("CI") == "true":
                self.fail(msg)
            self.skipTest(msg)
        self.pgids = set()
        self.procs = []
        self.jid = 0
        self.sid = 0
        self.shm = tempfile.mkdtemp(prefix="omnipkg-wa-", dir=SHM)
        self.addCleanup(shutil.rmtree, self.shm, True)

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
        for pid in self.pgids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def spawn(self, mode="worker"):
        ours, theirs = socket.socketpair()
        ours.settimeout(TIMEOUT)
        self.addCleanup(ours.close)
        paths = [self.bubble] if self.bubble and mode == "worker" else []
        p = subprocess.Popen([self.python, "-E", "-s", WORKER, mode, str(theirs.fileno())] + paths,
                             pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.procs.append(p)
        self.pgids.add(p.pid)
        ready = recv(ours)
        self.assertEqual((ready["op"], ready["pid"]), ("ready", p.pid))
        return p.pid, ours

    def job(self, sock, code, **fields):
        self.jid += 1
        msg = {"op": "exec", "id": self.jid, "code": code, "cap": MiB, "shm_dir": self.shm}
        msg.update(fields)
        if msg["shm_dir"] is None:
            del msg["shm_dir"]
        send(sock, msg)
        rep = recv(sock)
        self.assertEqual((rep["op"], rep["id"]), ("done", self.jid))
        return rep

    def ok(self, sock, code, **fields):
        rep = self.job(sock, code, **fields)
        self.assertTrue(rep["ok"], rep)
        return rep

    def segment(self, data, name=None):
        """A segment file holding data; returns (path, our own mmap of it)."""
        self.sid += 1
        path = os.path.join(self.shm, name or "s%d" % self.sid)
        with open(path, "w+b") as f:
            f.write(data)
            f.flush()
            m = mmap.mmap(f.fileno(), len(data))
        self.addCleanup(m.close)
        return path, m

    def desc(self, name, path, dtype, shape, itemsize, strides=None, offset=0,
             access="inout", sid=None, gen=1, size=None):
        return {"name": name, "path": path, "segment": os.path.basename(path),
                "id": sid if sid is not None else self.sid, "gen": gen,
                "size": os.path.getsize(path) if size is None else size,
                "dtype": dtype, "shape": shape,
                "strides": c_strides(shape, itemsize) if strides is None else strides,
                "offset": offset, "access": access}

    def shm_files(self):
        return sorted(os.listdir(self.shm))

    # ------------------------------------------------ both with and without numpy

    def test_bad_mapping_fails_only_the_job(self):
        pid, s = self.spawn()
        path, _ = self.segment(b"\0" * 64)
        bad = [self.desc("a", os.path.join(self.shm, "missing"), "float32", [4], 4, sid=90,
                         size=64),
               self.desc("a", path, "float32", [4], 4, size=128, sid=91)]
        for d in bad:
            with self.subTest(d=d):
                rep = self.job(s, "print('ran')", arrays=[d])
                self.assertFalse(rep["ok"])
                self.assertIn("array 'a'", rep["error"])
                self.assertIn(d["path"], rep["error"])
                self.assertEqual(rep["stdout"], "")       # the code never ran
                self.assertEqual(self.ok(s, "import os; result = os.getpid()")["result"], pid)

    def test_bind_plain_values(self):
        pid, s = self.spawn()
        bind = {"flag": True, "nothing": None, "nested": {"a": [1, {"b": None}], "c": "x"}}
        rep = self.ok(s, "result = [flag is True, nothing is None, nested]", bind=bind)
        self.assertEqual(rep["result"], [True, True, bind["nested"]])


class NumpyMixin(ArraysBase):

    def test_write_in_place(self):
        pid, s = self.spawn()
        path, m = self.segment(struct.pack("<20f", *range(20)))
        d = self.desc("a", path, "<f4", [4, 5], 4)
        rep = self.ok(s, "a *= 2\na[0, 0] = 7.5\n"
                         "result = [a.dtype.str, list(a.shape), a.flags.writeable]", arrays=[d])
        self.assertEqual(rep["result"], ["<f4", [4, 5], True])
        self.assertEqual(list(struct.unpack("<20f", m[:80])), [7.5] + [2.0 * i for i in range(1, 20)])

    def test_in_is_read_only(self):
        pid, s = self.spawn()
        path, m = self.segment(struct.pack("<4f", 1, 2, 3, 4))
        d = self.desc("a", path, "float32", [4], 4, access="in")
        rep = self.job(s, "result = a.flags.writeable\na[0] = 9", arrays=[d])
        self.assertFalse(rep["ok"])
        self.assertIn("read-only", rep["error"])
        rep = self.job(s, "a.flags.writeable = True", arrays=[d])
        self.assertFalse(rep["ok"])
        self.assertEqual(struct.unpack("<4f", m[:16]), (1, 2, 3, 4))
        d["access"] = "inout"
        self.ok(s, "a[0] = 9", arrays=[d])
        self.assertEqual(struct.unpack("<f", m[:4]), (9,))

    def test_byte_order_and_strides(self):
        pid, s = self.spawn()
        big, _ = self.segment(struct.pack(">12d", *range(12)))
        nat, _ = self.segment(struct.pack("<12f", *range(12)))
        f8, _ = self.segment(struct.pack("<12d", *range(12)))
        grid = [list(range(r * 4, r * 4 + 4)) for r in range(3)]
        cases = [
            ("big-endian", self.desc("a", big, ">f8", [3, 4], 8, sid=1), grid),
            ("Fortran", self.desc("a", nat, "<f4", [3, 4], 4, strides=[4, 12], sid=2),
             [[i + 3 * j for j in range(4)] for i in range(3)]),
            ("negative", self.desc("a", f8, "float64", [12], 8, strides=[-8], offset=88, sid=3),
             list(range(11, -1, -1))),
            ("negative 2-d", self.desc("a", f8, "<f8", [3, 4], 8, strides=[-32, -8], offset=88,
                                       sid=3), [row[::-1] for row in grid[::-1]]),
        ]
        for what, d, want in cases:
            with self.subTest(what):
                rep = self.ok(s, "result = a.tolist()", arrays=[d])
                self.assertEqual(rep["result"], want)

    def test_mapping_serves_later_jobs(self):
        pid, s = self.spawn()
        path, _ = self.segment(b"\0" * 4096)
        a = self.desc("a", path, "<f8", [8], 8)
        b = self.desc("b", path, "<u1", [16], 1, offset=64)
        code = "result = [a.__array_interface__['data'][0], b.__array_interface__['data'][0]]"
        one = self.ok(s, code, arrays=[a, b])["result"]
        self.assertEqual(one[1] - one[0], 64)
        self.assertEqual(self.ok(s, code, arrays=[a, b])["result"], one)
        self.assertEqual(mapped(pid, path), 1)
        # The job's array globals go with the job (its leases end with it).
        self.assertEqual(self.ok(s, "result = 'a' in globals()")["result"], False)
        # A new generation of the segment id is mapped anew.
        self.ok(s, "pass", arrays=[dict(a, gen=2)])
        self.assertEqual(mapped(pid, path), 1)

    def test_unmap(self):
        pid, s = self.spawn()
        path, m = self.segment(struct.pack("<4d", 1, 2, 3, 4))
        d = self.desc("a", path, "<f8", [4], 8)
        self.ok(s, "pass", arrays=[d])
        self.assertEqual(mapped(pid, path), 1)
        send(s, {"op": "unmap", "ids": [d["id"]]})
        self.ok(s, "pass")              # unmap has no answer: this job orders it
        self.assertEqual(mapped(pid, path), 0)
        # A view the job kept keeps its pages until it goes.
        self.ok(s, "keep = a[1:]", arrays=[d])
        send(s, {"op": "unmap", "ids": [d["id"]]})
        self.assertEqual(self.ok(s, "result = keep.tolist()")["result"], [2, 3, 4])
        self.assertEqual(mapped(pid, path), 1)
        self.ok(s, "del keep")
        self.assertEqual(mapped(pid, path), 0)

    def test_result_view_of_given_segment(self):
        pid, s = self.spawn()
        path, m = self.segment(struct.pack("<12i", *range(12)))
        d = self.desc("a", path, "<i4", [3, 4], 4)
        rep = self.ok(s, "result = a[1:, ::-2]", arrays=[d])
        self.assertNotIn("result", rep)
        self.assertEqual(rep["result_array"], {"segment": os.path.basename(path), "dtype": "<i4",
                                               "shape": [2, 2], "strides": [16, -8],
                                               "offset": 28})
        self.assertEqual(self.shm_files(), [os.path.basename(path)])     # no copy made

    def test_result_new_segment(self):
        pid, s = self.spawn()
        rep = self.ok(s, "import numpy as np\n"
                         "result = np.arange(6, dtype='>i4').reshape(2, 3).T")
        self.assertNotIn("result", rep)
        ra = rep["result_array"]
        self.assertRegex(ra["segment"], r"\Ar%d-[0-9a-f]+\Z" % self.jid)
        self.assertEqual({k: ra[k] for k in ("dtype", "shape", "strides", "offset")},
                         {"dtype": ">i4", "shape": [3, 2], "strides": [8, 4], "offset": 0})
        path = os.path.join(self.shm, ra["segment"])
        st = os.stat(path)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.assertGreaterEqual(st.st_blocks * 512, 24)      # pages reserved
        with open(path, "rb") as f:
            self.assertEqual(struct.unpack(">6i", f.read()), (0, 3, 1, 4, 2, 5))
        # An array that only partly lies in a given segment is copied.
        seg, _ = self.segment(struct.pack("<4d", 1, 2, 3, 4))
        d = self.desc("a", seg, "<f8", [4], 8)
        rep = self.ok(s, "import numpy as np\nresult = np.concatenate([a, a])", arrays=[d])
        self.assertTrue(rep["result_array"]["segment"].startswith("r%d-" % self.jid))

    def test_result_without_shm_dir(self):
        pid, s = self.spawn()
        rep = self.job(s, "import numpy as np\nresult = np.zeros(3)", shm_dir=None)
        self.assertFalse(rep["ok"])
        self.assertIn("no shared memory directory for an array result", rep["error"])
        self.assertNotIn("result_array", rep)
        self.assertEqual(self.shm_files(), [])
        self.assertEqual(self.ok(s, "result = 1", shm_dir=None)["result"], 1)

    def test_result_over_quota(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a small tmpfs needs root")
        small = tempfile.mkdtemp(prefix="omnipkg-wa-q-")
        self.addCleanup(os.rmdir, small)
        subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "none", small])
        self.addCleanup(subprocess.call, ["umount", "-l", small])
        pid, s = self.spawn()
        rep = self.job(s, "import numpy as np\nresult = np.zeros(1 << 20)", shm_dir=small)
        self.assertFalse(rep["ok"])
        self.assertIn("shared memory quota", rep["error"])
        self.assertEqual(os.listdir(small), [])
        rep = self.ok(s, "import numpy as np\nresult = np.ones(4)", shm_dir=small)
        self.assertEqual(len(os.listdir(small)), 1)

    def test_bind_ndarray(self):
        pid, s = self.spawn()
        small = {"__ndarray__": {"dtype": "int8", "shape": [2, 2], "data": [1, -2, 3, 127]}}
        rep = self.ok(s, "result = [small.dtype.str, list(small.shape), small.tolist()]",
                      bind={"small": small})
        self.assertEqual(rep["result"], ["|i1", [2, 2], [[1, -2], [3, 127]]])

    def test_omnipkg_array(self):
        pid, s = self.spawn()
        path, m = self.segment(b"\0" * 32, name="named")
        code = ("v = omnipkg.array('named', 'float32', [4], offset=16)\n"
                "v[:] = [1, 2, 3, 4]\n"
                "result = [omnipkg.shm_dir, v.__array_interface__['data'][0]]")
        one = self.ok(s, code)["result"]
        self.assertEqual(one[0], self.shm)
        self.assertEqual(struct.unpack("<4f", m[16:32]), (1, 2, 3, 4))
        self.assertEqual(self.ok(s, code)["result"], one)         # mapped once
        self.assertEqual(mapped(pid, path), 1)
        rep = self.job(s, "omnipkg.array('../x', 'u1', [1])")
        self.assertFalse(rep["ok"])
        self.assertIn("not a file name", rep["error"])
        # The job's own `omnipkg` is its business, and stays.
        self.ok(s, "omnipkg = 'mine'")
        self.assertEqual(self.ok(s, "result = omnipkg")["result"], "mine")

    def test_numpy_imported_only_for_arrays(self):
        pid, s = self.spawn()
        self.assertFalse(self.ok(s, "import sys; result = 'numpy' in sys.modules")["result"])
        path, _ = self.segment(b"\0" * 8)
        rep = self.ok(s, "import sys; result = type(a).__module__",
                      arrays=[self.desc("a", path, "<u1", [8], 1)])
        self.assertEqual(rep["result"], "numpy")

    def test_zygote_never_maps(self):
        zpid, zs = self.spawn("zygote")
        ours, theirs = socket.socketpair()
        ours.settimeout(TIMEOUT)
        self.addCleanup(ours.close)
        send(zs, {"op": "fork", "id": 1, "paths": [self.bubble], "tag": ""},
             fds=[theirs.fileno()])
        theirs.close()
        ready = recv(ours)
        self.assertEqual(ready["op"], "ready")
        self.pgids.add(ready["pid"])
        path, m = self.segment(struct.pack("<2d", 1, 2))
        rep = self.ok(ours, "a += 1\nresult = a.tolist()",
                      arrays=[self.desc("a", path, "<f8", [2], 8)])
        self.assertEqual(rep["result"], [2, 3])
        self.assertEqual(struct.unpack("<2d", m[:16]), (2, 3))
        self.assertEqual(mapped(ready["pid"], path), 1)
        self.assertEqual(mapped(zpid, path), 0)
        with open("/proc/%d/maps" % zpid) as f:
            self.assertNotIn("numpy", f.read())


class NoNumpyMixin(ArraysBase):

    def test_memoryview(self):
        pid, s = self.spawn()
        path, m = self.segment(struct.pack("<6f", *range(6)))
        d = self.desc("a", path, "float32", [2, 3], 4)
        rep = self.ok(s, "a[1, 2] = 9.5\n"
                         "result = [type(a).__name__, a.format, list(a.shape), a.readonly,"
                         " a.tolist()]", arrays=[d])
        self.assertEqual(rep["result"], ["memoryview", "f", [2, 3], False,
                                         [[0, 1, 2], [3, 4, 9.5]]])
        self.assertEqual(struct.unpack("<f", m[20:24]), (9.5,))
        d = self.desc("b", path, "<i2", [4], 2, offset=4, access="in")
        rep = self.ok(s, "result = [b.format, b.readonly]", arrays=[d])
        self.assertEqual(rep["result"], ["h", True])

    def test_memoryview_refuses_what_it_cannot_show(self):
        pid, s = self.spawn()
        path, _ = self.segment(b"\0" * 64)
        other = ">" if sys.byteorder == "little" else "<"
        cases = [(self.desc("a", path, other + "f8", [4], 8), "byte order"),
                 (self.desc("a", path, "<f4", [2, 2], 4, strides=[4, 8]), "C order"),
                 (self.desc("a", path, "complex64", [2], 8), "memoryview format")]
        for d, why in cases:
            with self.subTest(why):
                rep = self.job(s, "print('ran')", arrays=[d])
                self.assertFalse(rep["ok"])
                self.assertIn("array 'a'", rep["error"])
                self.assertIn(why, rep["error"])
                self.assertEqual(rep["stdout"], "")
        self.assertEqual(self.ok(s, "import os; result = os.getpid()")["result"], pid)

    def test_bind_ndarray_is_a_list(self):
        pid, s = self.spawn()
        small = {"__ndarray__": {"dtype": "int8", "shape": [2, 2], "data": [1, -2, 3, 127]}}
        rep = self.ok(s, "result = small", bind={"small": small})
        self.assertEqual(rep["result"], [1, -2, 3, 127])


def _ident(s):
    return re.sub(r"\W", "_", s)


for _ver, _tag, _np in NUMPY_MATRIX:
    _py = os.path.join(PYENV, "versions", _ver, "bin", "python")
    _n = "TestNumpy_%s_%s" % (_ident(_ver), _ident(_np))
    globals()[_n] = type(_n, (NumpyMixin, unittest.TestCase), {
        "python": _py,
        "bubble": os.path.join(REAL_HOME, "bubbles", _tag, "numpy-" + _np)})
for _py in INTERPRETERS:
    _n = "TestNoNumpy_" + _ident(os.path.basename(os.path.dirname(os.path.dirname(_py))) or _py)
    globals()[_n] = type(_n, (NoNumpyMixin, unittest.TestCase), {"python": _py})

if __name__ == "__main__":
    unittest.main()


class TestDaemonArrays(td.DaemonTest):
    SPEC = {"spec": "numpy==1.26.4", "python": "3.11"}

    def setUp(self):
        super().setUp()
        td.link_bubble(self, self.d, "3.11", "numpy", "1.26.4")
        self.d.start()
        self.c = td.Conn(self.d.socket)
        self.maps = []
        self.rid = 0
        self.early = {}       # replies read while waiting for another id

    def tearDown(self):
        # Our mappings and connection go first: the daemon unmounts its tmpfs.
        for m in self.maps:
            m.close()
        self.c.close()
        super().tearDown()

    def send(self, op, **args):
        self.rid += 1
        self.c.send(dict(args, v=1, id=self.rid, op=op))
        return self.rid

    def reply(self, rid):
        while rid not in self.early:
            rep = self.c.recv()
            self.early[rep["id"]] = rep
        return self.early.pop(rid)

    def call(self, op, **args):
        return self.reply(self.send(op, **args))

    def exec(self, code, **args):
        return self.call("exec", code=code, **dict(self.SPEC, **args))

    def create(self, data):
        rep = self.call("shm_create", size=len(data))
        self.assertTrue(rep["ok"], rep)
        seg = rep["segment"]
        self.assertEqual(seg["size"], len(data))
        m = self.map(seg["path"], len(data))
        m[:] = data
        return seg, m

    def map(self, path, size):
        with open(path, "r+b") as f:
            m = mmap.mmap(f.fileno(), size)
        self.maps.append(m)
        return m

    def segments(self):
        rep = self.call("shm_list")
        self.assertTrue(rep["ok"], rep)
        return {s["name"]: s for s in rep["segments"]}

    def test_array_written_in_place(self):
        seg, m = self.create(struct.pack("<20f", *range(20)))
        rep = self.exec("a *= 2\nresult = float(a.sum())",
                        arrays=[{"name": "a", "segment": seg["name"], "dtype": "<f4",
                                 "shape": [4, 5]}])
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["result"], 380.0)
        self.assertEqual(struct.unpack("<20f", m[:80]), tuple(2.0 * i for i in range(20)))
        # Read-only, Fortran order, through the registry's checks.
        rep = self.exec("result = [a.flags.writeable, a[1, 0].item()]",
                        arrays=[{"name": "a", "segment": seg["name"], "dtype": "float32",
                                 "shape": [4, 5], "strides": [4, 16], "access": "in"}])
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["result"], [False, 2.0])

    def test_result_array_new_segment(self):
        rep = self.exec("import numpy as np\nresult = np.arange(6, dtype='<i8').reshape(2, 3)")
        self.assertTrue(rep["ok"], rep)
        self.assertNotIn("result", rep)
        ra = rep["result_array"]
        self.assertEqual({k: ra[k] for k in ("dtype", "shape", "strides", "offset")},
                         {"dtype": "<i8", "shape": [2, 3], "strides": [24, 8], "offset": 0})
        seg = self.segments()[ra["segment"]]
        self.assertEqual(seg["size"], 48)
        m = self.map(seg["path"], 48)
        self.assertEqual(struct.unpack("<6q", m[:48]), tuple(range(6)))
        self.assertTrue(self.call("shm_remove", name=ra["segment"])["ok"])
        self.assertNotIn(ra["segment"], self.segments())

    def test_result_view_of_given_segment(self):
        seg, m = self.create(struct.pack("<5d", *range(5)))
        before = set(self.segments())
        rep = self.exec("result = a[::-1]",
                        arrays=[{"name": "a", "segment": seg["name"], "dtype": "<f8",
                                 "shape": [5]}])
        self.assertTrue(rep["ok"], rep)
        ra = rep["result_array"]
        self.assertEqual({k: ra[k] for k in ("segment", "dtype", "shape", "strides", "offset")},
                         {"segment": seg["name"], "dtype": "<f8", "shape": [5], "strides": [-8],
                          "offset": 32})
        self.assertEqual((ra["path"], ra["size"]), (seg["path"], 40))
        self.assertEqual(set(self.segments()), before)

    def test_bind(self):
        small = {"__ndarray__": {"dtype": "int8", "shape": [3], "data": [1, -2, 127]}}
        rep = self.exec("result = [x.dtype.str, x.tolist(), flag, none, nested]",
                        bind={"x": small, "flag": True, "none": None, "nested": {"k": [1, 2]}})
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["result"], ["|i1", [1, -2, 127], True, None, {"k": [1, 2]}])

    def test_remove_refused_while_leased_then_unmapped(self):
        seg, m = self.create(b"\0" * 64)
        arrays = [{"name": "a", "segment": seg["name"], "dtype": "|u1", "shape": [64]}]
        started, release, code = td.gate(self)
        rid = self.send("exec", code=code + "a[0] = 7\nimport os\nresult = os.getpid()",
                        arrays=arrays, **self.SPEC)
        td.wait_until(self, "the job to start", lambda: os.path.exists(started))
        rep = self.call("shm_remove", name=seg["name"])
        self.assertFalse(rep["ok"])
        self.assertEqual(rep["reason"], "leased")
        open(release, "w").close()
        rep = self.reply(rid)
        self.assertTrue(rep["ok"], rep)
        pid = rep["result"]
        self.assertEqual(m[0], 7)
        self.assertEqual(mapped(pid, seg["path"]), 1)
        self.assertTrue(self.call("shm_remove", name=seg["name"])["ok"])
        td.wait_until(self, "the worker to unmap the removed segment",
                      lambda: mapped(pid, seg["path"]) == 0)

    def test_bad_descriptors_refused(self):
        seg, m = self.create(b"\0" * 64)
        cases = [({"name": "a", "segment": "no-such-segment", "dtype": "<f4", "shape": [4]},
                  "nosegment"),
                 ({"name": "a", "segment": seg["name"], "dtype": "<f4", "shape": [17]},
                  "badarg")]
        for d, reason in cases:
            with self.subTest(reason):
                rep = self.exec("print('ran')", arrays=[d])
                self.assertFalse(rep["ok"])
                self.assertEqual(rep["reason"], reason)
                self.assertIn("a", rep["error"])
